"""Benchmarks are collected apart from tests/ (pyproject's testpaths = ["tests"]). Files named
bench_*.py are collected by the hook below, so `python -m pytest bench --benchmark-only` finds them;
`python -m pytest` from the repo root never looks in bench/."""
from __future__ import annotations


def pytest_collect_file(parent, file_path):
    # bench_*.py is not in pytest's default python_files (test_*.py, *_test.py).
    # A file named on the command line is collected by pytest itself: do not add it twice.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        import pytest
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_terminal_summary(terminalreporter, config):
    """Per group: each peer's median, GFLOP/s, and edgelstm's speed-up over it."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        peer = bench.name.split("[")[-1].split("-")[-1].rstrip("]")
        groups.setdefault(bench.group, {})[peer] = bench
    tr = terminalreporter
    tr.write_sep("-", "edgelstm vs peers (medians)")
    for group, peers in groups.items():
        mine = peers.get("edgelstm")
        parts = []
        for peer, b in sorted(peers.items()):
            med = b.stats.median
            gf = b.extra_info.get("GFLOP_per_s", float("nan"))
            txt = f"{peer} {med * 1e6:.1f} us ({gf:.2f} GFLOP/s)"
            if mine is not None and peer != "edgelstm":
                txt += f" [x{med / mine.stats.median:.2f}]"
            parts.append(txt)
        tr.write_line(f"{group}: " + "; ".join(parts))
