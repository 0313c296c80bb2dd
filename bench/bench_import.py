"""ONNX import time against graph size (issue 16, section 6): N chained LSTM nodes took
4.5 s at N=1000, 18.8 s at 2000 and 78 s at 4000 (quadratic). Linear import means the
4N/N time ratio is about 4.

Both sizes are timed in one process, interleaved, and the ratio of medians reported.
Run: python -m pytest bench/bench_import.py --benchmark-only -s
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hostile_files import onnx_chain  # noqa: E402

from edgelstm.importers import load_model  # noqa: E402

N = 1000
ROUNDS = 7


def test_onnx_chain_import_scaling(benchmark, tmp_path):
    paths = {}
    for n in (N, 4 * N):
        paths[n] = tmp_path / f"chain{n}.onnx"
        paths[n].write_bytes(onnx_chain(n).SerializeToString())
    times = {N: [], 4 * N: []}
    for _ in range(ROUNDS):                       # interleaved: a slow moment hits both sizes
        for n, p in paths.items():
            t0 = time.perf_counter()
            load_model(p)
            times[n].append(time.perf_counter() - t0)
    benchmark.pedantic(load_model, args=(paths[4 * N],), rounds=3, iterations=1)
    small, large = statistics.median(times[N]), statistics.median(times[4 * N])
    benchmark.extra_info.update(nodes_small=2 * N, nodes_large=8 * N, median_s_small=small,
                                median_s_large=large, ratio_4x=large / small)
    print(f"\nONNX chain import: N={N} {small * 1e3:.0f} ms, N={4 * N} {large * 1e3:.0f} ms, "
          f"ratio {large / small:.2f} (linear: 4; the quadratic importer took 78 s at N=4000)")
