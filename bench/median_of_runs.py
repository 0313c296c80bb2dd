"""Judge the host and generic models on several `edgelstm bench` runs at once: per
configuration, the median measured time over the runs against the median of the runs'
predictions (each run predicts with its own calibration). One run on a shared machine moves
as much as the ±15% band; the issue that set the targets judges the median over three runs.

    edgelstm bench --calibrate full --out runs/1   # and runs/2, runs/3
    python bench/median_of_runs.py runs/1 runs/2 runs/3

Prints one summary line (host within ±15%, generic within ±25%, median |errors|) and the
configurations outside the host band with each run's measured time.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def median_of_runs(results: list) -> dict:
    """results: the parsed results.json of each run. Returns {"n", "host_within_15",
    "generic_within_25", "host_median_abs_pct", "generic_median_abs_pct", "rows"}; each row is
    (label, host_error_pct, generic_error_pct, [measured_s per run])."""
    if len(results) < 2:
        raise ValueError(f"runs: expected at least 2 results.json files, got {len(results)}")
    per = [{r["label"]: r for r in res["results"]} for res in results]
    labels = list(per[0])
    for i, p in enumerate(per[1:], 2):
        if set(p) != set(labels):
            raise ValueError(f"runs: run {i} measured other configurations than run 1 "
                             f"({len(set(p) ^ set(labels))} differ); give runs of the same grid")
    rows = []
    for k in labels:
        meas = [p[k]["measured_s"] for p in per]
        m = statistics.median(meas)
        host = statistics.median(p[k]["predicted_s"] for p in per) / m - 1
        gen = statistics.median(p[k]["generic_predicted_s"] for p in per) / m - 1
        rows.append((k, 100 * host, 100 * gen, meas))
    return {"n": len(rows),
            "host_within_15": sum(abs(h) <= 15 for _, h, _, _ in rows),
            "generic_within_25": sum(abs(g) <= 25 for _, _, g, _ in rows),
            "host_median_abs_pct": statistics.median(abs(h) for _, h, _, _ in rows),
            "generic_median_abs_pct": statistics.median(abs(g) for _, _, g, _ in rows),
            "rows": rows}


def main(argv=None) -> int:
    dirs = list(sys.argv[1:] if argv is None else argv)
    try:
        results = []
        for d in dirs:
            f = Path(d) / "results.json"
            try:
                results.append(json.loads(f.read_text()))
            except (OSError, ValueError) as e:
                raise ValueError(f"runs: cannot read {f}: {e}") from None
        s = median_of_runs(results)
    except ValueError as e:
        print(f"median_of_runs: {e}", file=sys.stderr)
        return 2
    n = s["n"]
    print(f"median of {len(dirs)} runs, {n} configurations: host kernel model within ±15%: "
          f"{s['host_within_15']}/{n} ({100 * s['host_within_15'] / n:.0f}%), median |error| "
          f"{s['host_median_abs_pct']:.1f}%; generic roofline within ±25%: {s['generic_within_25']}/{n} "
          f"({100 * s['generic_within_25'] / n:.0f}%), median |error| {s['generic_median_abs_pct']:.1f}%")
    for label, h, g, meas in sorted(s["rows"], key=lambda r: -abs(r[1])):
        if abs(h) > 15:
            print(f"  {label}: host {h:+.0f}%, generic {g:+.0f}% (runs: "
                  f"{', '.join(f'{x * 1e3:.3f}' for x in meas)} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
