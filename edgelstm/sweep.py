"""The sweep behind `edgelstm bench`: measured kernel time beside the model's prediction.

For each configuration (an LSTMSpec with batch, seq_len and dtype) it runs the Numba
CPU kernel (`edgelstm.lstm`), times it (warm-up first, JIT compile time reported apart,
repeated runs, median), and asks for two predictions of the same work: the host kernel
model (`load_target("host")`, which follows kernels/cpu.py) and the generic roofline on
this machine's generic figures (`load_target("host", generic=True)`: peak, bandwidth per
level, overheads, as any edge target is described). The generic model's error here is the
uncertainty band of its edge predictions. Both come from calibration micro-benchmarks
only, never from these timings.

It writes results.json (schema below), results.md (a Markdown table) and two PNG plots
(a roofline with the measured points; predicted against measured on log axes).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import numpy as np

from .spec import LSTMSpec, SpecError

SCHEMA = "edgelstm.bench/1"
WITHIN = 0.15          # the target band: |predicted - measured| <= 15% of measured
WITHIN_GENERIC = 0.25  # the generic roofline's band
SPEC_KEYS = ("input_size", "hidden_size", "num_layers", "bidirectional", "proj_size", "bias", "peephole")
RUN_KEYS = ("batch", "seq_len", "dtype")
BENCH_DTYPES = ("float32", "float64")
# A grid's size is counted from its axes before any configuration is built, and refused
# above this (EDGELSTM_MAX_CONFIGS, or max_configs=): a 15 KB file can name 1e9 of them.
MAX_CONFIGS_ENV = "EDGELSTM_MAX_CONFIGS"
DEFAULT_MAX_CONFIGS = 10_000
MAX_GRID_FILE_BYTES = 4 * 2**20


class BenchError(ValueError):
    """Bad bench input (a --spec string, a --grid file)."""


@dataclass(frozen=True)
class Config:
    spec: LSTMSpec
    batch: int
    seq_len: int
    dtype: str

    def label(self) -> str:
        s = self.spec
        extra = "".join([" bi" if s.bidirectional else "", f" P={s.proj_size}" if s.proj_size else ""])
        return (f"E={s.input_size} H={s.hidden_size} L={s.num_layers}{extra} "
                f"B={self.batch} T={self.seq_len} {self.dtype}")


# -- grids -------------------------------------------------------------------------------
def _config(d: dict, where: str) -> Config:
    unknown = set(d) - set(SPEC_KEYS) - set(RUN_KEYS)
    if unknown:
        raise BenchError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected "
                         f"{', '.join(SPEC_KEYS + RUN_KEYS)}")
    try:
        spec = LSTMSpec(**{k: d[k] for k in SPEC_KEYS if k in d})
    except TypeError as e:
        raise BenchError(f"{where}: expected input_size and hidden_size ({e})") from None
    except SpecError as e:
        raise BenchError(f"{where}: {e}") from None
    batch, seq_len, dtype = d.get("batch", 1), d.get("seq_len", 100), d.get("dtype", "float32")
    for name, v in (("batch", batch), ("seq_len", seq_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BenchError(f"{where}: {name}: expected an integer >= 1, got {v!r}")
    if dtype not in BENCH_DTYPES:
        raise BenchError(f"{where}: dtype: expected one of {', '.join(BENCH_DTYPES)} (the kernels' dtypes), "
                         f"got {dtype!r}")
    return Config(spec, batch, seq_len, dtype)


def max_configs(override: Optional[int] = None) -> int:
    """The grid size limit: `override`, else $EDGELSTM_MAX_CONFIGS, else 10,000."""
    if override is not None:
        v = override
    else:
        env = os.environ.get(MAX_CONFIGS_ENV)
        if not env:
            return DEFAULT_MAX_CONFIGS
        try:
            v = int(env)
        except ValueError:
            raise BenchError(f"{MAX_CONFIGS_ENV}: expected an integer >= 1, got {env!r}") from None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise BenchError(f"max_configs: expected an integer >= 1, got {v!r}")
    return v


def _check_count(n: int, where: str, limit: Optional[int]) -> None:
    limit = max_configs(limit)
    if n > limit:
        raise BenchError(f"{where}: {n:,} configurations, above the limit of {limit:,}; set {MAX_CONFIGS_ENV} "
                         f"(or bench --max-configs) to allow more")


def _product(axes: dict, where: str, limit: Optional[int] = None) -> List[Config]:
    if not isinstance(axes, dict):
        raise BenchError(f"{where}: expected a table of key: [values], got {_brief(axes)}")
    keys = list(axes)
    values = [v if isinstance(v, list) else [v] for v in axes.values()]
    for k, v in zip(keys, values):
        if not v:
            raise BenchError(f"{where}: {k}: expected one or more values, got an empty list")
        bad = [x for x in v if isinstance(x, (list, dict))]
        if bad:
            raise BenchError(f"{where}: {k}: expected a value or a list of values, got {_brief(bad[0])}")
    n = 1
    for v in values:             # counted from the axes, before anything is built
        n *= len(v)
    _check_count(n, where, limit)
    out = []
    for combo in itertools.product(*values):
        d = dict(zip(keys, combo))
        if "input_size" not in d:
            H = d.get("hidden_size")
            if isinstance(H, bool) or not isinstance(H, int) or H < 1:
                raise BenchError(f"{where}: hidden_size: expected an integer >= 1, got {H!r}")
            d["input_size"] = H   # E = H unless given
        out.append(_config(d, where))
    return out


def config_bytes(config: Config) -> int:
    """What timing one configuration allocates, estimated: the weights and their packed
    copy, the input, the output, and the hoisted gate buffer (T x B x 4H) of a layer."""
    from .weights import weight_count
    s, item = config.spec, np.dtype(config.dtype).itemsize
    TB = config.seq_len * config.batch
    return item * (2 * weight_count(s) + TB * (s.input_size + s.output_size + 4 * s.hidden_size * s.num_directions))


def check_sizes(configs: List[Config], limit: Optional[int] = None) -> None:
    """Refuse, before the sweep starts, a configuration whose arrays exceed the byte limit
    (edgelstm._files.max_bytes: EDGELSTM_MAX_BYTES)."""
    from ._files import check_bytes
    for c in configs:
        check_bytes(config_bytes(c), f"bench: configuration {c.label()}", limit, error=BenchError)


def default_grid(quick: bool = False) -> List[Config]:
    """H 32-1024, B 1-64, T 1-200, 1-3 layers, float32 and float64."""
    if quick:
        axes = [
            dict(hidden_size=[32, 128, 512], batch=[1, 16], seq_len=[50], num_layers=1, dtype="float32"),
            dict(hidden_size=[64], batch=[1], seq_len=[1, 200], num_layers=2, dtype=["float32", "float64"]),
            dict(hidden_size=[256], batch=[64], seq_len=[20], num_layers=3, dtype="float32"),
        ]
    else:
        axes = [
            dict(hidden_size=[32, 64, 128, 256, 512, 1024], batch=[1, 8, 64], seq_len=[100], num_layers=1,
                 dtype=["float32", "float64"]),
            dict(hidden_size=[64, 256], batch=[1, 16], seq_len=[1, 10, 200], num_layers=[2, 3], dtype="float32"),
        ]
    configs = []
    for a in axes:
        configs += _product(a, "default grid")
    return configs


def _brief(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def parse_spec_string(text: str, max_configs: Optional[int] = None) -> List[Config]:
    """'hidden_size=128,batch=1,seq_len=100' (values may be a|b|c lists: a product)."""
    axes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise BenchError(f"--spec: expected key=value pairs separated by commas, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in SPEC_KEYS + RUN_KEYS:
            raise BenchError(f"--spec: unknown key {k!r}; expected {', '.join(SPEC_KEYS + RUN_KEYS)}")
        axes[k] = [_scalar(x, k) for x in v.split("|")]
    if "hidden_size" not in axes:
        raise BenchError(f"--spec: expected at least hidden_size=N, got {text!r}")
    return _product(axes, "--spec", max_configs)


def _scalar(v: str, key: str):
    if key in ("bias", "dtype"):
        return v
    if key in ("bidirectional", "peephole"):
        if v.lower() not in ("true", "false", "1", "0"):
            raise BenchError(f"--spec: {key}: expected true or false, got {v!r}")
        return v.lower() in ("true", "1")
    try:
        return int(v)
    except ValueError:
        raise BenchError(f"--spec: {key}: expected an integer, got {v!r}") from None


def load_grid(path, max_configs: Optional[int] = None) -> List[Config]:
    """A JSON or TOML file: {"configs": [{...}, ...]} and/or {"axes": {key: [values]}}.

    Read with a size limit (4 MiB, a regular file); the number of configurations is
    counted before they are built and refused above max_configs (EDGELSTM_MAX_CONFIGS)."""
    from ._files import max_bytes, read_text
    p = Path(path).absolute()
    try:
        text = read_text(p, "grid file", min(MAX_GRID_FILE_BYTES, max_bytes()), error=BenchError,
                         fixed_limit=max_bytes() > MAX_GRID_FILE_BYTES)
    except FileNotFoundError:
        raise BenchError(f"--grid {p}: cannot read it (no such file)") from None
    try:
        if p.suffix == ".toml":
            from .costmodel._toml import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except RecursionError:
        raise BenchError(f"--grid {p}: nested too deeply to be a grid") from None
    except Exception as e:  # tomllib.TOMLDecodeError, json.JSONDecodeError
        raise BenchError(f"--grid {p}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'} ({e})") from None
    if not isinstance(data, dict) or not ({"configs", "axes"} & set(data)):
        raise BenchError(f"--grid {p}: expected a 'configs' list and/or an 'axes' table")
    listed = data.get("configs", [])
    if not isinstance(listed, list) or not all(isinstance(d, dict) for d in listed):
        raise BenchError(f"--grid {p}: configs: expected a list of tables, got {_brief(listed)}")
    if "axes" in data and not isinstance(data["axes"], dict):
        raise BenchError(f"--grid {p}: axes: expected a table of key: [values], got {_brief(data['axes'])}")
    _check_count(len(listed), f"--grid {p}: configs", max_configs)
    configs = [_config(d, f"--grid {p}: configs[{i}]") for i, d in enumerate(listed)]
    if "axes" in data:
        configs += _product(data["axes"], f"--grid {p}: axes", max_configs)
    _check_count(len(configs), f"--grid {p}", max_configs)
    if not configs:
        raise BenchError(f"--grid {p}: no configurations")
    return configs


# -- measuring ---------------------------------------------------------------------------
@dataclass
class Result:
    label: str
    spec: dict
    batch: int
    seq_len: int
    dtype: str
    threads: int
    measured_s: float            # median of the repeats
    repeats: int
    compile_s: float             # first call minus a warm call: JIT compile and packing
    predicted_s: float
    bound: str
    flops: int
    bytes: int
    best_s: float = 0.0          # the fastest repeat: on a shared machine, the least disturbed
    generic_predicted_s: float = 0.0   # the generic roofline on this machine's generic figures
    generic_bound: str = ""
    error_pct: float = 0.0       # (predicted - measured) / measured x 100
    generic_error_pct: float = 0.0
    gflops_per_s: float = 0.0    # reached
    gbytes_per_s: float = 0.0
    flops_per_byte: float = 0.0
    breakdown: Optional[dict] = None

    def __post_init__(self):
        self.error_pct = 100.0 * (self.predicted_s - self.measured_s) / self.measured_s
        if self.generic_predicted_s:
            self.generic_error_pct = 100.0 * (self.generic_predicted_s - self.measured_s) / self.measured_s
        self.gflops_per_s = self.flops / self.measured_s / 1e9
        self.gbytes_per_s = self.bytes / self.measured_s / 1e9
        self.flops_per_byte = self.flops / self.bytes if self.bytes else math.inf


def time_call(fn: Callable[[], object], min_time_s: float, min_repeats: int = 5, max_repeats: int = 200):
    """Warm-up once (returns its time), then repeat until min_time_s and min_repeats."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < min_time_s and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, times


def _workload(config: Config):
    """The call a configuration times: lstm(x, w) on seeded random weights and input (the
    same arrays on every build)."""
    from . import lstm
    from .weights import LSTMWeights
    s = config.spec
    w = LSTMWeights.random(s, seed=0, dtype=config.dtype)
    x = np.random.default_rng(1).standard_normal((config.seq_len, config.batch, s.input_size)).astype(config.dtype)
    return lambda: lstm(x, w)


def result(config: Config, target, threads: int, first_s: float, times: List[float], generic=None) -> Result:
    """A Result from a configuration's timed repeats: their median beside the predictions of
    `target` (the host kernel model) and of `generic` (the roofline; default: target's
    generic figures)."""
    from .costmodel.api import load_target, predict
    from .costmodel.counts import count
    s = config.spec
    measured = statistics.median(times)
    kw = dict(batch=config.batch, seq_len=config.seq_len, dtype=config.dtype, threads=threads)
    p = predict(s, target, **kw)
    g = predict(s, generic if generic is not None else load_target(target, generic=True), **kw)
    c = count(s, batch=config.batch, seq_len=config.seq_len, dtype=config.dtype)
    breakdown = getattr(p, "breakdown", None)
    return Result(label=config.label(), spec=asdict(s), batch=config.batch, seq_len=config.seq_len,
                  dtype=config.dtype, threads=threads, measured_s=measured, repeats=len(times),
                  compile_s=max(first_s - measured, 0.0), predicted_s=p.latency_s, bound=p.bound,
                  generic_predicted_s=g.latency_s, generic_bound=g.bound, best_s=min(times),
                  flops=c.flops_per_sequence, bytes=c.traffic["streamed_hoisted"].bytes_per_sequence,
                  breakdown=dict(breakdown) if isinstance(breakdown, dict) else None)


ROUNDS = 3   # passes over the grid (run): each configuration is timed in this many windows


def summarize(results: Iterable[Result]) -> dict:
    """The host kernel model's and the generic roofline's errors: median |error|, and the
    shares within ±15% (both) and ±25% (the generic model's band)."""
    results = list(results)
    if not results:
        return {"n": 0, "median_abs_error_pct": None, "within_15pct_share": None,
                "generic_median_abs_error_pct": None, "generic_within_15pct_share": None,
                "generic_within_25pct_share": None}
    n = len(results)
    host = [abs(r.error_pct) for r in results]
    gen = [abs(r.generic_error_pct) for r in results]
    within = sum(e <= 100 * WITHIN for e in host)
    g15 = sum(e <= 100 * WITHIN for e in gen)
    g25 = sum(e <= 100 * WITHIN_GENERIC for e in gen)
    return {"n": n, "median_abs_error_pct": statistics.median(host), "within_15pct": within,
            "within_15pct_share": within / n,
            "generic_median_abs_error_pct": statistics.median(gen), "generic_within_15pct": g15,
            "generic_within_15pct_share": g15 / n, "generic_within_25pct": g25, "generic_within_25pct_share": g25 / n}


def summary_line(summary: dict) -> str:
    if not summary["n"]:
        return "no configurations were run"
    n = summary["n"]
    return (f"host kernel model: median |error| {summary['median_abs_error_pct']:.1f}%, "
            f"{100 * summary['within_15pct_share']:.0f}% within ±15% ({summary['within_15pct']}/{n}); "
            f"generic roofline: median |error| {summary['generic_median_abs_error_pct']:.1f}%, "
            f"{100 * summary['generic_within_15pct_share']:.0f}% within ±15% ({summary['generic_within_15pct']}/{n}), "
            f"{100 * summary['generic_within_25pct_share']:.0f}% within ±25% ({summary['generic_within_25pct']}/{n}) "
            f"(the generic model's error here is the uncertainty band of its edge predictions)")


def machine_info(threads: int, target=None) -> dict:
    import numba
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    if target is not None:
        info["target"] = getattr(target, "name", str(target))
        # What the target file says of itself: its path, and for a calibrated host file the
        # [calibration] table's date, method and CPU (Target keeps that table as .calibration).
        if getattr(target, "path", ""):
            info["target_path"] = target.path
        calib = getattr(target, "calibration", None) or {}
        for key, name in (("date", "calibrated_at"), ("method", "method"), ("cpu_model", "calibrated_on"),
                          ("quick", "quick_calibration")):
            if key in calib:
                info[f"target_{name}"] = calib[key]
    return info


class Progress:
    """A tqdm progress bar on stderr over the timed windows, the last one's figures beside it."""

    def __init__(self, total: int, stream=None):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc="bench", unit="run", file=stream or sys.stderr, dynamic_ncols=True)

    def update(self, label: str, note: str = "") -> None:
        self.bar.set_postfix_str(f"{label} {note}", refresh=False)
        self.bar.update(1)
        if self.bar.n >= self.bar.total:
            self.bar.close()


def run(configs: List[Config], target, threads: int, min_time_s: float = 0.3, progress: bool = True,
        rounds: int = ROUNDS, generic=None) -> List[Result]:
    """Time every configuration in `rounds` passes over the whole list, min_time_s / rounds
    of repeats per pass, and report each one's median over all its repeats.

    Passes rather than one window per configuration: on a shared machine a disturbance
    (another tenant's burst, a descheduled vCPU) lasts seconds, long enough to spoil every
    repeat of whichever configuration is being timed then. Spread over passes a whole grid
    apart, it spoils one window of a configuration at most, and the median sees through it.
    (A state of the host that lasts minutes still moves every pass: docs/targets.md.)
    JIT compile time is the first call's excess in the first pass; later passes rebuild the
    same arrays and warm up with one untimed call. `generic`: the target of the generic
    roofline's prediction (default: `target`'s generic figures)."""
    if generic is None:
        from .costmodel.api import load_target
        generic = load_target(target, generic=True)
    rounds = max(1, int(rounds))
    bar = Progress(len(configs) * rounds) if progress else None
    first = [0.0] * len(configs)
    times: List[List[float]] = [[] for _ in configs]
    per_window = min_time_s / rounds
    for rnd in range(rounds):
        for i, cfg in enumerate(configs):
            f, t = time_call(_workload(cfg), per_window, min_repeats=max(1, -(-5 // rounds)))
            if rnd == 0:
                first[i] = f
            times[i] += t
            if bar:
                r = result(cfg, target, threads, first[i], times[i], generic)
                bar.update(cfg.label(), f"pass {rnd + 1}/{rounds}: measured {r.measured_s * 1e3:.3g} ms, "
                                        f"host model {r.error_pct:+.0f}%, generic {r.generic_error_pct:+.0f}%")
    return [result(cfg, target, threads, first[i], times[i], generic) for i, cfg in enumerate(configs)]


# -- reports -----------------------------------------------------------------------------
def to_json(results: List[Result], machine: dict) -> dict:
    return {"schema": SCHEMA, "machine": machine, "threads": machine.get("threads"),
            "summary": summarize(results), "results": [asdict(r) for r in results]}


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s >= 1e-4 else f"{s * 1e6:.3g} µs"


def to_markdown(results: List[Result], machine: dict) -> str:
    lines = [f"# edgelstm bench: measured against predicted", "",
             f"Machine: {machine.get('cpu', '?')}, {machine.get('threads')} thread(s); "
             f"prediction target `{machine.get('target', 'host')}`: the host kernel model, and the "
             f"generic roofline on the same machine's generic figures.", "",
             "| config | measured | predicted | error % | bound | generic | generic error % | GFLOP/s | compile |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.label} | {_ms(r.measured_s)} | {_ms(r.predicted_s)} | {r.error_pct:+.1f} | {r.bound} "
                     f"| {_ms(r.generic_predicted_s)} | {r.generic_error_pct:+.1f} "
                     f"| {r.gflops_per_s:.3g} | {r.compile_s:.2f} s |")
    lines += ["", summary_line(summarize(results)), ""]
    return "\n".join(lines)


def plot(results: List[Result], out_dir: Path, target=None) -> List[Path]:
    """Two PNG files: the roofline with measured points, and predicted against measured."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def scatter_by_dtype(ax, x, y, label):
        for dt, color in (("float32", "tab:blue"), ("float64", "tab:orange")):
            pts = [r for r in results if r.dtype == dt]
            if pts:
                ax.scatter([x(r) for r in pts], [y(r) for r in pts], label=label + dt, color=color, s=18)

    def save(fig, ax, name, title, legend_size):
        ax.set(xscale="log", yscale="log", title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=legend_size)
        fig.savefig(out_dir / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return out_dir / name

    fig, ax = plt.subplots(figsize=(7, 5))
    scatter_by_dtype(ax, lambda r: r.flops_per_byte, lambda r: r.gflops_per_s, "measured ")
    xs = np.logspace(-2, 4, 200)
    for name, peak_gflops, bw_gbs in roofline_lines(target):
        ax.plot(xs, np.minimum(peak_gflops, xs * bw_gbs), lw=1, label=name)
    ax.set(xlabel="arithmetic intensity (FLOP / byte moved)", ylabel="GFLOP/s")
    paths = [save(fig, ax, "roofline.png", "Roofline of this machine with the measured LSTM kernels", 7)]

    fig, ax = plt.subplots(figsize=(6, 6))
    scatter_by_dtype(ax, lambda r: r.measured_s, lambda r: r.predicted_s, "host kernel model ")
    gen = [r for r in results if r.generic_predicted_s]
    if gen:
        ax.scatter([r.measured_s for r in gen], [r.generic_predicted_s for r in gen], marker="x", s=18,
                   color="tab:green", label="generic roofline")
    if results:
        lo = min(min(r.measured_s, r.predicted_s, r.generic_predicted_s or r.predicted_s) for r in results) / 2
        hi = max(max(r.measured_s, r.predicted_s, r.generic_predicted_s) for r in results) * 2
        line = np.array([lo, hi])
        ax.plot(line, line, "k-", lw=1, label="predicted = measured")
        ax.fill_between(line, line * (1 - WITHIN), line * (1 + WITHIN), color="grey", alpha=0.2, label="±15%")
    ax.set(xlabel="measured (s)", ylabel="predicted (s)")
    paths.append(save(fig, ax, "predicted_vs_measured.png", "Predicted against measured", 8))
    return paths


def roofline_lines(target) -> list:
    """(label, peak GFLOP/s, bandwidth GB/s) per memory level of the target, if it says."""
    if target is None:
        return []
    fn = getattr(target, "roofline", None)
    return list(fn()) if callable(fn) else []


def write_reports(results: List[Result], machine: dict, out_dir, target=None, plots: bool = True) -> List[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md"]
    paths[0].write_text(json.dumps(to_json(results, machine), indent=2))
    paths[1].write_text(to_markdown(results, machine))
    if plots:
        paths += plot(results, out, target)
    return paths
