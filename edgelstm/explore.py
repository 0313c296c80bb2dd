"""Accelerator design studies: sweep systolic-array designs for one LSTM, keep the Pareto front.

    import edgelstm as el
    from edgelstm import explore
    spec = el.LSTMSpec(input_size=40, hidden_size=64)
    designs = explore.grid(rows=[8, 16, 32], cols=[8, 16, 32], dataflow=["os", "ws", "is"],
                           ifmap_sram_kB=[1, 4], filter_sram_kB=[8, 32, 64], ofmap_sram_kB=[1, 4],
                           dram_words_per_cycle=[1, 4], clock_MHz=[50, 200])
    r = explore.sweep(spec, designs, batch=1, seq_len=100, dtype="int8")
    ok = explore.constraints(r, step_deadline_s=10e-3, power_w=1e-3, rate_hz=100)
    front = explore.pareto(r, objectives=("step_latency_s", "step_energy_j", "area_mm2"), where=ok)

The model is costmodel/array.py (SCALE-Sim's fold mapping, buffer and bandwidth stalls,
the recurrence between steps; area and energy from costmodel/array_tech.toml). Its memory
model is 'stream' (a weight-streaming design) unless memory_model="scalesim" asks for
SCALE-Sim 3.0.0's own read and write buffers (costmodel.array.window_prefetches).
Everything is vectorized over designs: a sweep is a few hundred NumPy operations per
LSTM layer, whatever the number of designs.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from edgelstm.costmodel.array import (ArrayError, DATAFLOWS, MAX_DESIGNS, OPTIONAL_KEYS, REQUIRED_KEYS,
                                      ARRAY_DTYPES, MEMORY_MODELS, gemm_cycles, gemm_memory_cycles, lstm_cost,
                                      merge_tech, normalize_designs)
from edgelstm.costmodel.counts import count

__all__ = ["gemm_cycles", "gemm_memory_cycles", "sweep", "pareto", "constraints", "grid", "ExploreError", "DATAFLOWS",
           "REQUIRED_KEYS", "OPTIONAL_KEYS", "OBJECTIVES",
           "MEMORY_MODELS"]

ExploreError = ArrayError
# Result keys a front can be taken over, and whether larger is better.
OBJECTIVES = {"latency_s": False, "step_latency_s": False, "energy_j": False, "step_energy_j": False,
              "area_mm2": False, "power_w": False, "leakage_w": False, "utilization": True}


def grid(**values: Sequence) -> Dict[str, np.ndarray]:
    """The full cartesian product of per-key value lists, as a designs dict for sweep().
    Refuses products larger than MAX_DESIGNS before allocating them."""
    if not values:
        raise ExploreError("grid: expected at least one key")
    sizes = {}
    for k, v in values.items():
        if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
            v = [v]
        values[k] = list(v)
        if not values[k]:
            raise ExploreError(f"grid: {k}: expected at least one value, got an empty list")
        sizes[k] = len(values[k])
    total = int(np.prod([float(s) for s in sizes.values()]))
    if total > MAX_DESIGNS:
        raise ExploreError(f"grid: expected at most {MAX_DESIGNS:,} designs, got {total:,} "
                           f"({' x '.join(f'{k}={n}' for k, n in sizes.items())})")
    keys = list(values)
    idx = np.indices([sizes[k] for k in keys]).reshape(len(keys), -1)
    out = {}
    for i, k in enumerate(keys):
        vals = np.asarray(values[k])
        out[k] = vals[idx[i]]
    return out


def sweep(spec, designs, batch: int = 1, seq_len: int = 1, dtype: str = "int8",
          tech: Optional[dict] = None, breakdown: bool = False,
          memory_model: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Evaluate every design of `designs` for `spec` (an LSTMSpec or ModelSpec).

    designs: a dict of equal-length 1-D arrays with keys rows, cols, dataflow ('os', 'ws',
    'is'), ifmap_sram_kB, filter_sram_kB, ofmap_sram_kB (KiB), dram_words_per_cycle,
    clock_MHz, and optionally sigmoid_per_cycle, tanh_per_cycle, vector_lanes (default:
    cols), memory_model ('stream' or 'scalesim' per design). tech: overrides of
    costmodel/array_tech.toml ({section: {key: value}}). memory_model: the memory model of
    every design without its own: 'stream' (the default: an operand that does not fit its
    buffer is streamed once per pass, as a weight-streaming design would) or 'scalesim'
    (SCALE-Sim 3.0.0's read-buffer window, which goes round the operand again whenever the
    demand order turns back; see costmodel.array.window_prefetches).

    Returns a dict of arrays, one value per design: latency_s (the whole sequence),
    step_latency_s (one streamed step), energy_j and step_energy_j (dynamic), area_mm2,
    leakage_w (static), power_w (busy: energy_j / latency_s + leakage_w), utilization,
    fits; with breakdown=True also cycles_* (input_gemm, recurrent_gemm,
    projection_gemm, epilogue, weight_load, head), energy_*_j (mac, sram, dram, vector)
    and area_*_mm2 (pe, sram, vector)."""
    if dtype not in ARRAY_DTYPES:
        raise ExploreError(f"dtype: expected one of {', '.join(ARRAY_DTYPES)}, got {dtype!r}")
    c = count(spec, batch=batch, seq_len=seq_len, dtype=dtype)
    if memory_model is not None:
        if memory_model not in MEMORY_MODELS:
            raise ExploreError(f"memory_model: expected one of {', '.join(MEMORY_MODELS)}, got {memory_model!r}")
        if not isinstance(designs, dict):
            raise ExploreError(f"designs: expected a dict of equal-length arrays, got {type(designs).__name__}")
        if "memory_model" not in designs:
            n = len(np.asarray(next(iter(designs.values())))) if designs else 0
            designs = dict(designs, memory_model=np.full(n, memory_model))
    d = normalize_designs(designs)
    return lstm_cost(c, d, merge_tech(tech), breakdown=breakdown)


def _result_len(result) -> int:
    if not isinstance(result, dict) or "latency_s" not in result:
        raise ExploreError("result: expected the dict returned by explore.sweep()")
    return np.asarray(result["latency_s"]).shape[0]


def constraints(result, step_deadline_s: Optional[float] = None, area_mm2: Optional[float] = None,
                power_w: Optional[float] = None, rate_hz: Optional[float] = None,
                require_fit: bool = False) -> np.ndarray:
    """A boolean mask of the designs that meet every given budget.

    step_deadline_s: one streamed step must finish within it (a real-time deadline; with
    rate_hz, the default deadline is 1 / rate_hz). area_mm2: the area budget. power_w: the
    power budget: with rate_hz, the average power of running one step every 1/rate_hz
    seconds (step_energy_j x rate_hz); without, the busy power (energy_j / latency_s).
    require_fit: keep only designs whose recurrent weights and states stay on chip."""
    n = _result_len(result)
    ok = np.ones(n, dtype=bool)
    for name, v in (("step_deadline_s", step_deadline_s), ("area_mm2", area_mm2), ("power_w", power_w),
                    ("rate_hz", rate_hz)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ExploreError(f"{name}: expected a number > 0 or None, got {v!r}")
    if step_deadline_s is None and rate_hz is not None:
        step_deadline_s = 1.0 / rate_hz
    if step_deadline_s is not None:
        ok &= result["step_latency_s"] <= step_deadline_s
    if area_mm2 is not None:
        ok &= result["area_mm2"] <= area_mm2
    if power_w is not None:
        avg = result["step_energy_j"] * rate_hz + result["leakage_w"] if rate_hz is not None else result["power_w"]
        ok &= avg <= power_w
    if require_fit:
        ok &= result["fits"]
    return ok


def pareto(result, objectives: Sequence[str] = ("latency_s", "energy_j", "area_mm2"),
           where: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices (into the sweep's designs) of the non-dominated designs: no other design is
    at least as good in every objective and better in one. Objectives are result keys
    (OBJECTIVES); all are minimized except utilization. where: a boolean mask (e.g. from
    constraints) restricting the candidates. Sorted by the first objective."""
    n = _result_len(result)
    if isinstance(objectives, str) or not objectives:
        raise ExploreError(f"objectives: expected a non-empty sequence of result keys, got {objectives!r}")
    for o in objectives:
        if o not in OBJECTIVES:
            raise ExploreError(f"objectives: expected keys among {', '.join(OBJECTIVES)}, got {o!r}")
    cand = np.arange(n)
    if where is not None:
        where = np.asarray(where)
        if where.dtype != bool or where.shape != (n,):
            raise ExploreError(f"where: expected a boolean mask of length {n}, got {where.dtype} {where.shape}")
        cand = cand[where]
    if cand.size == 0:
        return cand
    # Minimize every column (negate the ones where larger is better).
    pts = np.stack([np.asarray(result[o], dtype=np.float64)[cand] * (-1.0 if OBJECTIVES[o] else 1.0)
                    for o in objectives], axis=1)
    # Identical points: keep one. Sorted lexicographically, the first remaining point is
    # never dominated by a later one: it is on the front. Take it, drop everything it
    # dominates, repeat on what remains (each pass shrinks the arrays).
    order = np.lexsort(pts.T[::-1])  # by the first objective, then the next, ...
    pts, cand = pts[order], cand[order]
    distinct = np.ones(len(pts), dtype=bool)
    distinct[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    pts, cand = pts[distinct], cand[distinct]
    out = []
    while len(cand):
        out.append(cand[0])
        rest = ~np.all(pts[1:] >= pts[0], axis=1)
        pts, cand = pts[1:][rest], cand[1:][rest]
    return np.asarray(out, dtype=np.int64)


# -- grid files and reports (used by `edgelstm explore`) -----------------------------------
MAX_GRID_DESIGNS = 5_000_000   # the CLI's bound: results of 5 M designs take ~0.3 GB
CSV_ALL_MAX = 200_000          # designs.csv holds every design up to this many
BUDGET_KEYS = ("step_deadline_s", "area_mm2", "power_w", "rate_hz")


MAX_GRID_FILE_BYTES = 4 << 20    # a design grid is a few lists of values; 4 MiB is ample


def load_grid(path, max_designs: int = MAX_GRID_DESIGNS):
    """(grid values, budget) from a TOML grid file: one list (or value) per design key, and
    an optional [budget] table (step_deadline_s, area_mm2, power_w, rate_hz). The size of
    the product is checked before anything is allocated. Errors name the file and key."""
    from ._files import read_toml
    from pathlib import Path
    p = Path(path)
    # bounded, regular files only (no /dev/zero), UTF-8 errors with the offset
    data = read_toml(p, "grid file", MAX_GRID_FILE_BYTES, error=ExploreError)
    budget = data.pop("budget", {})
    if not isinstance(budget, dict):
        raise ExploreError(f"{p.name}: budget: expected a table, got {budget!r}")
    for k, v in budget.items():
        if k not in BUDGET_KEYS:
            raise ExploreError(f"{p.name}: budget.{k}: unknown key (known: {', '.join(BUDGET_KEYS)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ExploreError(f"{p.name}: budget.{k}: expected a number > 0, got {v!r}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ExploreError(f"{p.name}: missing key(s) {', '.join(missing)} (required: {', '.join(REQUIRED_KEYS)})")
    values, total = {}, 1
    for k, v in data.items():
        if k not in REQUIRED_KEYS + OPTIONAL_KEYS:
            raise ExploreError(f"{p.name}: {k}: unknown key (known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}, budget)")
        v = v if isinstance(v, list) else [v]
        if not v:
            raise ExploreError(f"{p.name}: {k}: expected at least one value, got an empty list")
        names = {"dataflow": DATAFLOWS, "memory_model": MEMORY_MODELS}.get(k)
        for x in v:
            ok = (x in names) if names else (isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0)
            if not ok:
                want = f"one of {', '.join(names)}" if names else "numbers > 0"
                raise ExploreError(f"{p.name}: {k}: expected {want}, got {x!r}")
        values[k] = v
        total *= len(v)
    if total > max_designs:
        raise ExploreError(f"{p.name}: the grid has {total:,} designs; expected at most {max_designs:,} "
                           f"({' x '.join(f'{k} {len(v)}' for k, v in values.items())})")
    return values, budget


def sweep_chunked(spec, designs, batch=1, seq_len=1, dtype="int8", chunk=1 << 18, progress=None):
    """sweep() in chunks of `chunk` designs, calling progress(done, total) after each."""
    n = len(next(iter(designs.values())))
    out = None
    for i in range(0, n, chunk):
        part = sweep(spec, {k: np.asarray(v)[i:i + chunk] for k, v in designs.items()},
                     batch=batch, seq_len=seq_len, dtype=dtype)
        if out is None:
            out = {k: np.empty(n, dtype=v.dtype) for k, v in part.items()}
        for k, v in part.items():
            out[k][i:i + chunk] = v
        if progress is not None:
            progress(min(i + chunk, n), n)
    return out


RESULT_COLUMNS = ("step_latency_s", "step_energy_j", "latency_s", "energy_j", "area_mm2", "power_w",
                  "leakage_w", "utilization", "fits")


def _columns(designs, result, idx):
    idx = np.asarray(idx, dtype=np.int64)
    cols = {k: np.asarray(designs[k])[idx].tolist() for k in designs}
    cols.update({k: np.asarray(result[k])[idx].tolist() for k in RESULT_COLUMNS})
    return cols


def _rows(designs, result, idx):
    cols = _columns(designs, result, idx)
    keys = list(cols)
    return [dict(zip(keys, vals)) for vals in zip(*cols.values())]


def write_csv(path, designs, result, idx):
    import csv
    cols = _columns(designs, result, idx)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        w.writerows(zip(*cols.values()))


UNITS = {"latency_s": ("latency (ms)", 1e3), "step_latency_s": ("latency per step (ms)", 1e3),
         "energy_j": ("energy (µJ)", 1e6), "step_energy_j": ("energy per step (µJ)", 1e6),
         "area_mm2": ("area (mm²)", 1.0), "power_w": ("busy power (mW)", 1e3),
         "leakage_w": ("leakage (mW)", 1e3), "utilization": ("utilization", 1.0)}


def plot_study(out_dir, designs, result, ok, front, objectives=("step_latency_s", "step_energy_j"), title=""):
    """The three plots of a study: the designs and the Pareto front in the first two
    objectives, utilization against array size, and the fastest step against filter SRAM
    size. Returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pathlib import Path
    out = Path(out_dir)
    n = len(result["latency_s"])
    rng = np.random.default_rng(0)
    sample = rng.choice(n, size=min(n, 20000), replace=False)
    code = np.asarray(designs["dataflow"])
    paths = []
    x, y = (list(objectives) + ["step_energy_j", "area_mm2"])[:2] if len(objectives) < 2 else objectives[:2]
    (xl, xs), (yl, ys) = UNITS[x], UNITS[y]

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    s_ok, s_no = sample[ok[sample]], sample[~ok[sample]]
    ax.scatter(result[x][s_no] * xs, result[y][s_no] * ys, s=3, c="0.8", label="over budget (sample)")
    ax.scatter(result[x][s_ok] * xs, result[y][s_ok] * ys, s=3, c="tab:blue", label="within budget (sample)")
    f = front[np.argsort(result[x][front])]
    ax.plot(result[x][f] * xs, result[y][f] * ys, "o-", c="tab:red", ms=4,
            label=f"Pareto front over {', '.join(objectives)}")
    ax.set(xscale="log", yscale="log", xlabel=xl, ylabel=yl, title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "pareto.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pes = np.asarray(designs["rows"]) * np.asarray(designs["cols"])
    for df, color in zip(DATAFLOWS, ("tab:blue", "tab:orange", "tab:green")):
        m = code == df
        if not m.any():
            continue
        sizes = np.unique(pes[m])
        best = [result["utilization"][m & (pes == s)].max() for s in sizes]
        med = [np.median(result["utilization"][m & (pes == s)]) for s in sizes]
        ax.plot(sizes, best, "o-", c=color, label=f"{df} best")
        ax.plot(sizes, med, "x--", c=color, alpha=0.6, label=f"{df} median")
    ax.set(xscale="log", yscale="log", xlabel="array size (PEs = rows x cols)", ylabel="utilization (MACs / PE-cycles)",
           title="utilization against array size")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    paths.append(out / "utilization.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    fk = np.asarray(designs["filter_sram_kB"], dtype=float)
    for df, color in zip(DATAFLOWS, ("tab:blue", "tab:orange", "tab:green")):
        m = code == df
        if not m.any():
            continue
        sizes = np.unique(fk[m])
        best = [result["step_latency_s"][m & (fk == s)].min() * 1e3 for s in sizes]
        ax.plot(sizes, best, "o-", c=color, label=f"{df}: fastest design")
    ax.set(xscale="log", yscale="log", xlabel="filter (weight) SRAM (KiB)", ylabel="latency per step (ms)",
           title="latency against SRAM size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "latency_sram.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
