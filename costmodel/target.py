"""Hardware targets: one TOML file per target, loaded into frozen dataclasses.

A target is a catalog name (a file in `costmodel/targets/`), `host` (this machine,
measured by `edgelstm calibrate`), or the path of a TOML file of one's own. The schema,
with the unit of every value in its key, is in docs/targets.md; every figure taken from
a datasheet carries a `source`. Errors name the file and the key.

Energy defaults come from M. Horowitz, "Computing's energy problem (and what we can do
about it)", ISSCC 2014, the 45 nm, 0.9 V table (`HOROWITZ_2014`); a target overrides
any entry in its `[energy]` table, and any memory level's `energy_pJ_per_byte`.
"""
from __future__ import annotations

import math
import os
import sys
from ._toml import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Dict, Optional, Tuple

from .array import ArrayConfig, ArrayError, parse_array

KINDS = ("mcu", "cpu", "gpu", "accelerator", "host")
MEMORY_KINDS = ("register", "sram", "cache", "dram", "hbm", "flash")
ON_CHIP = ("register", "sram", "cache")
OFF_CHIP = ("dram", "hbm", "flash")
HOST_ENV = "EDGELSTM_HOST_TARGET"

HOROWITZ_SOURCE = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
                   "ISSCC 2014, 45 nm 0.9 V table")
# Energy per operation in pJ. Horowitz gives adds and multiplies for int8, int32, fp16 and
# fp32; a MAC is one multiply and one add. float64 is not in the table: it is extrapolated
# (multiplier area ~ mantissa bits squared: 4x the fp32 multiply, 2x the fp32 add).
# bfloat16 uses the fp16 figures and int4 the int8 ones. A transcendental is not in the
# table either: taken as 10 multiply-adds (a polynomial approximation), an assumption.
_OPS_PJ = {  # dtype: (add, multiply)
    "int8": (0.03, 0.2), "int4": (0.03, 0.2),
    "float16": (0.4, 1.1), "bfloat16": (0.4, 1.1),
    "float32": (0.9, 3.7), "float64": (1.8, 14.8),
}
HOROWITZ_2014: Dict[str, float] = {}
for _dt, (_add, _mul) in _OPS_PJ.items():
    HOROWITZ_2014[f"mac_pJ_{_dt}"] = _mul + _add
    HOROWITZ_2014[f"flop_pJ_{_dt}"] = (_mul + _add) / 2  # elementwise: adds and products, mixed
    HOROWITZ_2014[f"transcendental_pJ_{_dt}"] = 10 * (_mul + _add)
# Memory reads per 64-bit word: SRAM 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ; DRAM 1.3-2.6 nJ.
HOROWITZ_SRAM_PJ_PER_BYTE = ((8 * 1024, 10 / 8), (32 * 1024, 20 / 8), (1024 * 1024, 100 / 8))
HOROWITZ_DRAM_PJ_PER_BYTE = (1300 + 2600) / 2 / 8  # the middle of the range


class TargetError(ValueError):
    """A target that cannot be found or whose file is malformed; names the file and key."""


def sram_energy_pJ_per_byte(capacity_bytes: int) -> float:
    """Horowitz's SRAM read energy, log-log interpolated in capacity. Below 8 KB the
    first segment is extrapolated; above 1 MB the 1 MB figure is kept (a large cache is
    banked into arrays of about that size; the wires to reach them are not counted)."""
    pts = HOROWITZ_SRAM_PJ_PER_BYTE
    x = math.log(max(min(capacity_bytes, pts[2][0]), 1))
    seg = (pts[0], pts[1]) if capacity_bytes < pts[1][0] else (pts[1], pts[2])
    (c0, e0), (c1, e1) = seg
    slope = (math.log(e1) - math.log(e0)) / (math.log(c1) - math.log(c0))
    return math.exp(math.log(e0) + slope * (x - math.log(c0)))


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    kind: str                        # register, sram, cache, dram, hbm, flash
    capacity_bytes: int
    bandwidth_GB_per_s: float        # all cores together (GB = 1e9 bytes)
    bandwidth_1thread_GB_per_s: float  # one core (= bandwidth_GB_per_s unless given)
    energy_pJ_per_byte: float
    shared: bool = True              # False: private per core (capacity per core)
    persistent: bool = True          # False: cleared between kernel launches (GPU smem)
    source: str = ""

    @property
    def on_chip(self) -> bool:
        return self.kind in ON_CHIP

    def capacity_for(self, threads: int) -> int:
        """What `threads` cores hold together: private levels add up."""
        return self.capacity_bytes * (1 if self.shared else threads)

    def bandwidth_for(self, threads: int) -> float:
        """Bytes per second for `threads` cores: linear in cores up to the aggregate."""
        one = self.bandwidth_1thread_GB_per_s * 1e9
        return min(self.bandwidth_GB_per_s * 1e9, one * max(threads, 1))


@dataclass(frozen=True)
class GemmPoint:
    """A measured matrix product (M x K) @ (K x N): host calibration. `routine` says what
    computed it: "blas" (np.dot inside @njit, the machine's BLAS rate), or one of the CPU
    kernel's routines timed on random matrices: "dot" (np.dot called from Python, per call),
    "own" (the register-blocked projection GEMM, one call; threads > 1: a prange region),
    "block" (the small GEMM on a block of m rows, per thread with `threads` running),
    "matvec" (z += W v, per thread with `threads` running)."""
    dtype: str
    threads: int
    m: int
    k: int
    n: int
    GFLOP_per_s: float
    routine: str = "blas"


@dataclass(frozen=True)
class ElementwisePoint:
    """Measured seconds per batch row of one of the CPU kernel's elementwise building blocks
    at hidden size `hidden`, timed on random vectors (host calibration): "rows" (the rows
    path's per-row sequence: gate copy, `_epilogue`, `_finish_row`, called from a JIT loop;
    per thread with `threads` running), "gemm_step" (the gemm path's per-step epilogue
    `_epilogue_gemm_step`, one Python call over `batch` rows, its dispatch taken out)."""
    routine: str
    dtype: str
    threads: int
    hidden: int
    ns_per_row: float
    batch: int = 1


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    kind: str
    clock_MHz: float
    cores: int
    macs_per_cycle: Dict[str, float]     # per core, per data type it supports
    memory: Tuple[MemoryLevel, ...]      # fastest first
    call_overhead_s: float               # once per call (wrapper, dispatch, or launch)
    step_overhead_s: float               # per layer and time step (loop trip or kernel launch)
    persistent_step_overhead_s: float    # per layer and step inside a persistent kernel (grid sync)
    parallel_step_overhead_s: float      # per layer and step when threads > 1 (fork/join)
    transcendental_cycles: float         # per element on one core, when no measured ns
    transcendental_ns: Dict[str, float]  # measured per element and dtype on one core (host)
    parallel_efficiency: float           # all cores' throughput / (cores x one core's)
    energy: Dict[str, float]             # Horowitz defaults merged with the file's [energy]
    gemm: Tuple[GemmPoint, ...] = ()
    # How the CPU kernel splits the work (host): batches below gemm_min_batch run as
    # per-row matvecs, rows_per_block rows per thread; empty: one product per step.
    kernel: Dict[str, int] = field(default_factory=dict)
    njit_call_s: float = 0.0             # a Python call of an @njit function with one array argument
    njit_arg_s: float = 0.0              # each further array argument of such a call
    inner_call_s: float = 0.0            # a call between JIT functions with one array-view argument
    inner_arg_s: float = 0.0             # each further view argument of such a call
    alloc_s: float = 0.0                 # a small array allocated inside JIT code
    py_alloc_s: float = 0.0              # a small np.empty / np.zeros called from Python
    py_view_s: float = 0.0               # a reshape (a view) from Python
    py_threads_s: float = 0.0            # numba.get_num_threads() from Python
    check_s: float = 0.0                 # the lstm() input validation (edgelstm._checks), one call
    # The lstm() wrapper's Python side timed alone (its JIT calls stood in for): per call,
    # per layer, per direction. Zero when not measured: the pieces above are composed instead.
    wrapper_s: float = 0.0
    wrapper_layer_s: float = 0.0
    wrapper_dir_s: float = 0.0
    elementwise: Tuple[ElementwisePoint, ...] = ()
    transcendental_pass_ns: Dict[str, float] = field(default_factory=dict)  # fixed cost of a vectorized pass
    sources: Dict[str, str] = field(default_factory=dict)
    calibration: Dict[str, object] = field(default_factory=dict)
    path: str = ""
    array: Optional[ArrayConfig] = None  # an accelerator's systolic array (costmodel/array.py)

    def peak_macs_per_s(self, dtype: str, threads: int = 1) -> float:
        rate = self.macs_per_cycle.get(dtype)
        if rate is None and dtype == "int4":
            rate = self.macs_per_cycle.get("int8")  # unpacked to int8 before the MAC
        if rate is None:
            raise TargetError(f"{self.name}: no macs_per_cycle.{dtype} (the target supports "
                              f"{', '.join(sorted(self.macs_per_cycle))})")
        t = max(1, min(threads, self.cores))
        return self.clock_MHz * 1e6 * rate * t * (self.parallel_efficiency if t > 1 else 1.0)

    def roofline(self):
        """(label, peak GFLOP/s, bandwidth GB/s) per memory level, for a roofline plot: the
        all-core peak of the widest float type the target has, and each level's bandwidth
        with all cores."""
        dt = next((d for d in ("float32", "float16", "bfloat16", "int8", "float64") if d in self.macs_per_cycle),
                  next(iter(self.macs_per_cycle)))
        peak = 2 * self.peak_macs_per_s(dt, self.cores) / 1e9
        out = []
        for m in self.memory:
            bw = m.bandwidth_for(self.cores) / 1e9
            out.append((f"{m.name} {bw:.3g} GB/s, {dt} peak {peak:.3g} GFLOP/s", peak, bw))
        return out

    def level(self, name: str) -> MemoryLevel:
        for m in self.memory:
            if m.name == name:
                return m
        raise TargetError(f"{self.name}: no memory level {name!r}")

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "clock_MHz": self.clock_MHz, "cores": self.cores,
                "macs_per_cycle": dict(self.macs_per_cycle), "path": self.path,
                "memory": [{"name": m.name, "kind": m.kind, "capacity_bytes": m.capacity_bytes,
                            "bandwidth_GB_per_s": m.bandwidth_GB_per_s} for m in self.memory]}


# -- loading --------------------------------------------------------------------------------
class _Reader:
    """Reads keys of one TOML table, naming the file and key in every error."""

    def __init__(self, fname: str, table: dict, prefix: str = ""):
        self.fname, self.table, self.prefix = fname, table, prefix

    def _err(self, key, msg):
        return TargetError(f"{self.fname}: {self.prefix}{key}: {msg}")

    def raw(self, key, default=...):
        if key not in self.table:
            if default is ...:
                raise self._err(key, "missing")
            return default
        return self.table[key]

    def number(self, key, default=..., positive=True):
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (v <= 0 if positive else v < 0):
            want = "a positive number" if positive else "a number >= 0"
            raise self._err(key, f"expected {want}, got {v!r}")
        return v

    def integer(self, key, default=...):
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self._err(key, f"expected an integer >= 1, got {v!r}")
        return v

    def string(self, key, default=..., choices=None):
        v = self.raw(key, default)
        if not isinstance(v, str) or (choices and v not in choices):
            want = f"one of {', '.join(choices)}" if choices else "a string"
            raise self._err(key, f"expected {want}, got {v!r}")
        return v

    def boolean(self, key, default):
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise self._err(key, f"expected true or false, got {v!r}")
        return v

    def sub(self, key, required=True):
        v = self.raw(key, ... if required else None)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self._err(key, f"expected a table, got {v!r}")
        return _Reader(self.fname, v, f"{self.prefix}{key}.")


def _memory_level(r: _Reader) -> MemoryLevel:
    kind = r.string("kind", choices=MEMORY_KINDS)
    cap = r.integer("capacity_bytes")
    bw = r.number("bandwidth_GB_per_s")
    bw1 = r.number("bandwidth_1thread_GB_per_s", None) or bw
    energy = r.number("energy_pJ_per_byte", None)
    if energy is None:
        if kind in ON_CHIP:
            energy = sram_energy_pJ_per_byte(cap)
        elif kind == "dram":
            energy = HOROWITZ_DRAM_PJ_PER_BYTE
        else:  # Horowitz has no HBM or flash figure: the file must give one
            raise r._err("energy_pJ_per_byte", f"missing (no default for kind {kind!r})")
    return MemoryLevel(name=r.string("name"), kind=kind, capacity_bytes=cap, bandwidth_GB_per_s=bw,
                       bandwidth_1thread_GB_per_s=bw1, energy_pJ_per_byte=energy,
                       shared=r.boolean("shared", True), persistent=r.boolean("persistent", True),
                       source=r.string("source", ""))


def _tables(r: _Reader, key: str) -> list:
    """An optional array of tables ([[key]]), each checked to be a table."""
    v = r.raw(key, [])
    if not isinstance(v, list):
        raise r._err(key, f"expected an array of tables ([[{key}]]), got {v!r}")
    for i, t in enumerate(v):
        if not isinstance(t, dict):
            raise r._err(f"{key}[{i}]", f"expected a table, got {t!r}")
    return v


def _require_source(r: _Reader) -> str:
    return r.string("source")


def parse_target(data: dict, fname: str, path: str = "") -> Target:
    """A Target from a parsed TOML document; `fname` names the file in errors."""
    r = _Reader(fname, data)
    sources = {"clock_MHz": _require_source(r)}
    macs_r = r.sub("macs_per_cycle")
    macs = {}
    for key in macs_r.table:
        if key == "source":
            continue
        if key not in _OPS_PJ:
            raise macs_r._err(key, f"expected a dtype ({', '.join(_OPS_PJ)})")
        macs[key] = macs_r.number(key)
    if not macs:
        raise r._err("macs_per_cycle", "expected at least one dtype")
    sources["macs_per_cycle"] = _require_source(macs_r)
    ov = r.sub("overhead")
    sources["overhead"] = _require_source(ov)
    mem_raw = r.raw("memory")
    if not isinstance(mem_raw, list) or not mem_raw:
        raise r._err("memory", "expected one or more [[memory]] tables")
    memory = []
    for i, m in enumerate(mem_raw):
        if not isinstance(m, dict):
            raise r._err(f"memory[{i}]", "expected a table")
        lr = _Reader(fname, m, f"memory[{i}].")
        lvl = _memory_level(lr)
        if not lvl.source:
            raise lr._err("source", "missing")
        memory.append(lvl)
    tr = r.sub("transcendental", required=False) or _Reader(fname, {}, "transcendental.")
    energy = dict(HOROWITZ_2014)
    er = r.sub("energy", required=False)
    if er is not None:
        for key in er.table:
            if key == "source":
                continue
            if key not in HOROWITZ_2014:
                raise er._err(key, f"unknown energy key (known: {', '.join(sorted(HOROWITZ_2014))})")
            energy[key] = er.number(key)
        sources["energy"] = _require_source(er)
    else:
        sources["energy"] = HOROWITZ_SOURCE
    gemm = []
    for i, g in enumerate(_tables(r, "gemm")):
        gr = _Reader(fname, g, f"gemm[{i}].")
        gemm.append(GemmPoint(dtype=gr.string("dtype", choices=tuple(_OPS_PJ)), threads=gr.integer("threads"),
                              m=gr.integer("m"), k=gr.integer("k"), n=gr.integer("n"),
                              GFLOP_per_s=gr.number("GFLOP_per_s"),
                              routine=gr.string("routine", "blas",
                                                choices=("blas", "dot", "own", "block", "matvec"))))
    elementwise = []
    for i, g in enumerate(_tables(r, "elementwise")):
        gr = _Reader(fname, g, f"elementwise[{i}].")
        elementwise.append(ElementwisePoint(
            routine=gr.string("routine", choices=("rows", "gemm_step")),
            dtype=gr.string("dtype", choices=tuple(_OPS_PJ)), threads=gr.integer("threads"),
            hidden=gr.integer("hidden"), ns_per_row=gr.number("ns_per_row"), batch=gr.integer("batch", 1)))
    kr = r.sub("kernel", required=False)
    kernel = {k: kr.integer(k) for k in ("gemm_min_batch", "rows_per_block") if k in kr.table} if kr else {}
    t_ns = {k[3:]: tr.number(k) for k in tr.table if k.startswith("ns_")}
    t_pass = {k[8:]: tr.number(k, positive=False) for k in tr.table if k.startswith("pass_ns_")}
    calib = r.raw("calibration", {})
    try:
        array = parse_array(data["array"], fname) if "array" in data else None
    except ArrayError as e:
        raise TargetError(str(e)) from None
    return Target(
        name=r.string("name"), description=r.string("description", ""),
        kind=r.string("kind", choices=KINDS), clock_MHz=r.number("clock_MHz"), cores=r.integer("cores", 1),
        macs_per_cycle=macs, memory=tuple(memory),
        call_overhead_s=ov.number("call_s", 0.0, positive=False),
        step_overhead_s=ov.number("step_s", positive=False),
        persistent_step_overhead_s=ov.number("persistent_step_s", 0.0, positive=False),
        parallel_step_overhead_s=ov.number("parallel_step_s", None, positive=False)
        if "parallel_step_s" in ov.table else ov.number("step_s", positive=False),
        transcendental_cycles=tr.number("cycles", 20.0), transcendental_ns=t_ns,
        parallel_efficiency=r.number("parallel_efficiency", 1.0),
        energy=energy, gemm=tuple(gemm), kernel=kernel, sources=sources,
        njit_call_s=ov.number("njit_call_s", 0.0, positive=False),
        njit_arg_s=ov.number("njit_arg_s", 0.0, positive=False), transcendental_pass_ns=t_pass,
        inner_call_s=ov.number("inner_call_s", 0.0, positive=False),
        inner_arg_s=ov.number("inner_arg_s", 0.0, positive=False),
        alloc_s=ov.number("alloc_s", 0.0, positive=False),
        py_alloc_s=ov.number("py_alloc_s", 0.0, positive=False),
        py_view_s=ov.number("py_view_s", 0.0, positive=False),
        py_threads_s=ov.number("py_threads_s", 0.0, positive=False),
        check_s=ov.number("check_s", 0.0, positive=False), elementwise=tuple(elementwise),
        wrapper_s=ov.number("wrapper_s", 0.0, positive=False),
        wrapper_layer_s=ov.number("wrapper_layer_s", 0.0, positive=False),
        wrapper_dir_s=ov.number("wrapper_dir_s", 0.0, positive=False),
        calibration=dict(calib) if isinstance(calib, dict) else {}, path=path, array=array)


MAX_TARGET_FILE_BYTES = 4 * 2**20


def load_target_file(path) -> Target:
    """A target TOML file, read with a size limit (a regular file of at most 4 MiB: not
    /dev/zero); errors name the file's full path and the key."""
    from edgelstm._files import read_text
    p = Path(path).absolute()
    try:
        text = read_text(p, "target file", MAX_TARGET_FILE_BYTES, error=TargetError, fixed_limit=True)
    except FileNotFoundError:
        raise TargetError(f"{p}: no such target file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{p}: not valid TOML ({e})") from None
    return parse_target(data, str(p), str(p))


def catalog_dir():
    return resources.files("edgelstm.costmodel.targets")


def list_targets() -> Tuple[str, ...]:
    """Catalog names, and `host`."""
    names = sorted(f.name[:-5] for f in catalog_dir().iterdir() if f.name.endswith(".toml"))
    return tuple(names) + ("host",)


def host_target_path() -> Path:
    """Where `host` lives: $EDGELSTM_HOST_TARGET, else ~/.cache/edgelstm/host.toml
    (under $XDG_CACHE_HOME when set)."""
    env = os.environ.get(HOST_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgelstm" / "host.toml"


def load_target(name_or_path) -> Target:
    """A catalog name (`cortex-m7`), `host`, or the path of a TOML file."""
    if isinstance(name_or_path, Target):
        return name_or_path
    s = str(name_or_path)
    if s == "host":
        path = host_target_path()
        if not path.exists():
            from edgelstm._files import check_writable
            from .calibrate import calibrate
            check_writable(path, f"host target file (${HOST_ENV} or the default)", error=TargetError)
            print(f"edgelstm: no host calibration at {path}; calibrating this machine now "
                  f"(quick mode, about 25 s, more on a first run that compiles the kernels; `edgelstm calibrate` for the full run)", file=sys.stderr)
            calibrate(quick=True, out=path)
        return load_target_file(path)
    if s.endswith(".toml") or os.sep in s:
        return load_target_file(s)
    f = catalog_dir() / f"{s}.toml"
    if not f.is_file():
        raise TargetError(f"target: no target named {s!r} (known: {', '.join(list_targets())}; "
                          f"or give the path of a .toml file)")
    with resources.as_file(f) as p:
        return load_target_file(p)
