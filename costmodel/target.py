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
    transcendental_ns: Dict[str, float]  # measured per element and dtype on one core (optional)
    parallel_efficiency: float           # all cores' throughput / (cores x one core's)
    energy: Dict[str, float]             # Horowitz defaults merged with the file's [energy]
    sources: Dict[str, str] = field(default_factory=dict)
    calibration: Dict[str, object] = field(default_factory=dict)  # a measured target's record
    path: str = ""
    array: Optional[ArrayConfig] = None  # an accelerator's systolic array (costmodel/array.py)
    layer_overhead_s: float = 0.0        # per LSTM layer and direction, once per call (an
                                         # operator's invoke: interpreter or wrapper bookkeeping)

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


# -- the schema: one description, read by parse_target and written by target_document -----------
REQUIRED = ...


@dataclass(frozen=True)
class Key:
    """One key of a table: its TOML name, the _Reader method that checks it (`number`,
    `number0` for >= 0, `integer`, `string`, `boolean`), its default (REQUIRED: none; a
    callable: computed from the values read before it), its dataclass attribute, choices."""
    key: str
    kind: str
    default: object = REQUIRED
    attr: str = ""
    choices: Tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.attr or self.key


@dataclass(frozen=True)
class Table:
    """A TOML table (`name` None: the top level): fixed keys, an optional map of keys that
    share a prefix (`map_prefix` + one of `map_keys`, each a `map_kind` value) into the
    dict attribute `map_attr`, and a `source` key (required, optional or absent)."""
    name: Optional[str]
    keys: Tuple[Key, ...] = ()
    map_attr: str = ""
    map_prefix: str = ""
    map_keys: Tuple[str, ...] = ()
    map_kind: str = "number"
    map_what: str = "a dtype"         # what a map key is, for errors
    source: str = "required"          # "required", "optional" or "none"
    required: bool = True
    array: bool = False               # an array of tables ([[name]])


def read_table(r: "_Reader", table: Table) -> dict:
    """{attribute: value} for every key of `table` (defaults filled in), the map under
    table.map_attr and the source under "source"; unknown map keys are errors."""
    out = {}
    for k in table.keys:
        default = k.default(out) if callable(k.default) else k.default
        if k.kind == "number0":
            out[k.name] = r.number(k.key, default, positive=False)
        elif k.kind == "string" and k.choices:
            out[k.name] = r.string(k.key, default, choices=k.choices)
        else:
            out[k.name] = getattr(r, k.kind)(k.key, default)
    if table.map_attr:
        fixed = {k.key for k in table.keys} | {"source"}
        mp = {}
        for key in r.table:
            if key in fixed or not key.startswith(table.map_prefix):
                continue
            sub = key[len(table.map_prefix):]
            if sub not in table.map_keys:
                raise r._err(key, f"expected {table.map_what} ({', '.join(table.map_keys)})")
            mp[sub] = r.number(key, positive=table.map_kind != "number0")
        out[table.map_attr] = mp
    if table.source != "none":
        out["source"] = r.string("source", ... if table.source == "required" else "")
    return out


def write_table(values: dict, table: Table) -> dict:
    """The TOML table (a dict for tomli_w) of `values` ({attribute: value}, as read_table
    returns): every fixed key, the map's entries, the source when there is one."""
    out = {k.key: values[k.name] for k in table.keys if values.get(k.name) is not None}
    for sub, v in values.get(table.map_attr, {}).items() if table.map_attr else ():
        out[table.map_prefix + sub] = v
    if values.get("source"):
        out["source"] = values["source"]
    return out


DTYPE_KEYS = tuple(_OPS_PJ)
TOP = Table(None, (
    Key("name", "string"), Key("description", "string", ""),
    Key("kind", "string", choices=KINDS), Key("clock_MHz", "number"), Key("cores", "integer", 1),
    Key("parallel_efficiency", "number", 1.0)))
MACS = Table("macs_per_cycle", map_attr="macs_per_cycle", map_keys=DTYPE_KEYS)
OVERHEAD = Table("overhead", (
    Key("call_s", "number0", 0.0, "call_overhead_s"),
    Key("step_s", "number0", attr="step_overhead_s"),
    Key("parallel_step_s", "number0", lambda v: v["step_overhead_s"], "parallel_step_overhead_s"),
    Key("persistent_step_s", "number0", 0.0, "persistent_step_overhead_s"),
    Key("layer_s", "number0", 0.0, "layer_overhead_s")))
TRANSCENDENTAL = Table("transcendental", (Key("cycles", "number", 20.0, "transcendental_cycles"),),
                       map_attr="transcendental_ns", map_prefix="ns_", map_keys=DTYPE_KEYS, map_what="ns_<dtype>",
                       source="optional", required=False)
ENERGY = Table("energy", map_attr="energy", map_keys=tuple(HOROWITZ_2014), map_what="a known energy key",
               required=False)


def _energy_default(v: dict):
    if v["kind"] in ON_CHIP:
        return sram_energy_pJ_per_byte(v["capacity_bytes"])
    if v["kind"] == "dram":
        return HOROWITZ_DRAM_PJ_PER_BYTE
    return REQUIRED           # Horowitz has no HBM or flash figure: the file must give one


MEMORY = Table("memory", (
    Key("name", "string"), Key("kind", "string", choices=MEMORY_KINDS), Key("capacity_bytes", "integer"),
    Key("bandwidth_GB_per_s", "number"),
    Key("bandwidth_1thread_GB_per_s", "number", lambda v: v["bandwidth_GB_per_s"]),
    Key("energy_pJ_per_byte", "number", _energy_default),
    Key("shared", "boolean", True), Key("persistent", "boolean", True)), array=True)
SCHEMA = (TOP, MACS, OVERHEAD, TRANSCENDENTAL, MEMORY, ENERGY)   # the file, in order
# Every top-level key a target file may have: the schema's, a measured target's record, an
# accelerator's [array] (array.py) and a measured host's [host] profile (host/profile.py).
TOP_KEYS = tuple(k.key for k in TOP.keys) + ("source",) + tuple(t.name for t in SCHEMA if t.name) + (
    "calibration", "array", "host")
OLD_HOST_KEYS = ("gemm", "elementwise", "kernel")   # host files before the [host] profile


def read_rows(r: "_Reader", table: Table, required: bool = True) -> list:
    """An array of tables `[[name]]` read with `table`'s keys: one or more when `required`,
    else possibly none (absent reads as none)."""
    raw = r.raw(table.name) if required else r.raw(table.name, [])
    if not isinstance(raw, list) or (required and not raw):
        more = "one or more " if required else ""
        raise r._err(table.name, f"expected {more}[[{r.prefix}{table.name}]] tables")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise r._err(f"{table.name}[{i}]", "expected a table")
        out.append(read_table(_Reader(r.fname, m, f"{r.prefix}{table.name}[{i}]."), table))
    return out


def _read(r: "_Reader", table: Table):
    """read_table on `table` of the document (None when optional and absent)."""
    if table.name is None:
        return read_table(r, table)
    if table.array:
        return read_rows(r, table)
    sub = r.sub(table.name, required=table.required)
    return None if sub is None else read_table(sub, table)


def parse_target(data: dict, fname: str, path: str = "") -> Target:
    """A Target from a parsed TOML document; `fname` names the file in errors. Tables the
    schema does not describe (a measured host's [host] profile) are left to their readers."""
    r = _Reader(fname, data)
    for key in data:
        if key not in TOP_KEYS:
            hint = (" (a host file written by an older edgelstm: run `edgelstm calibrate` again)"
                    if key in OLD_HOST_KEYS else "")
            raise r._err(key, f"not a key of a target file (known: {', '.join(TOP_KEYS)}){hint}")
    top, macs, ov, tr, mem, en = (_read(r, t) for t in SCHEMA)
    if not macs["macs_per_cycle"]:
        raise r._err("macs_per_cycle", "expected at least one dtype")
    tr = tr or {"transcendental_cycles": 20.0, "transcendental_ns": {}}
    energy = dict(HOROWITZ_2014, **(en["energy"] if en else {}))
    sources = {"clock_MHz": top.pop("source"), "macs_per_cycle": macs["source"], "overhead": ov.pop("source"),
               "energy": en["source"] if en else HOROWITZ_SOURCE}
    if tr.get("source"):
        sources["transcendental"] = tr["source"]
    tr.pop("source", None)
    calib = r.raw("calibration", {})
    memory = tuple(MemoryLevel(**m) for m in mem)
    try:
        array = parse_array(data["array"], fname) if "array" in data else None
    except ArrayError as e:
        raise TargetError(str(e)) from None
    return Target(**top, macs_per_cycle=macs["macs_per_cycle"], memory=memory, **ov, **tr, energy=energy,
                  sources=sources, calibration=dict(calib) if isinstance(calib, dict) else {}, path=path,
                  array=array)


def target_document(t: Target) -> dict:
    """The TOML document of a Target (a dict for tomli_w), written from the same schema the
    parser reads: parse_target(target_document(t)) == t (but for `path`)."""
    from dataclasses import asdict
    v = asdict(t)
    doc = write_table(dict(v, source=t.sources.get("clock_MHz", "")), TOP)
    doc["macs_per_cycle"] = write_table(dict(v, source=t.sources.get("macs_per_cycle", "")), MACS)
    doc["overhead"] = write_table(dict(v, source=t.sources.get("overhead", "")), OVERHEAD)
    doc["transcendental"] = write_table(dict(v, source=t.sources.get("transcendental", "")), TRANSCENDENTAL)
    doc["memory"] = [write_table(m, MEMORY) for m in v["memory"]]
    overrides = {k: e for k, e in t.energy.items() if HOROWITZ_2014.get(k) != e}
    if overrides or t.sources.get("energy", HOROWITZ_SOURCE) != HOROWITZ_SOURCE:
        doc["energy"] = write_table({"energy": overrides, "source": t.sources["energy"]}, ENERGY)
    if t.array is not None:   # array.py's parse_array reads these keys (ArrayConfig's fields)
        doc["array"] = {k: a for k, a in asdict(t.array).items() if a != {}}
    if t.calibration:
        doc["calibration"] = dict(t.calibration)
    return doc


def dumps_document(doc: dict, header: str = "") -> str:
    """TOML text of a document (tomli_w), after `header` comment lines."""
    import tomli_w
    head = "".join(f"# {line}\n" for line in header.splitlines())
    return head + tomli_w.dumps(doc)


def write_target_file(t: Target, path, header: str = "", extra: Optional[dict] = None) -> Path:
    """Write `t` (and `extra` tables, e.g. a host profile) to `path` atomically, then check
    that it reads back as a target."""
    doc = target_document(t)
    doc.update(extra or {})
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    tmp.write_text(dumps_document(doc, header))
    os.replace(tmp, p)           # never leave a half-written file behind
    load_target_file(p)
    return p


MAX_TARGET_FILE_BYTES = 4 * 2**20


def load_target_file(path) -> Target:
    """A target TOML file, read with a size limit (a regular file of at most 4 MiB: not
    /dev/zero); errors name the file's full path and the key."""
    p = Path(path).absolute()
    return parse_target(read_document(p), str(p), str(p))


def read_document(p: Path) -> dict:
    """The parsed TOML of a target file (bounded read); errors name the file's full path."""
    from edgelstm._files import read_toml
    return read_toml(p, "target file", MAX_TARGET_FILE_BYTES, error=TargetError)


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
    """A catalog name (`cortex-m7`), `host`, or the path of a TOML file, as a generic Target.
    For `host` that is this machine as any catalog target describes one (peak, bandwidth per
    level, overheads): the host file's [host] profile, the model of edgelstm's own CPU
    kernel, is read by edgelstm.load_target (costmodel/api.py), which also calibrates on
    first use; here a missing host file is an error."""
    if isinstance(name_or_path, Target):
        return name_or_path
    s = str(name_or_path)
    if s == "host":
        path = host_target_path()
        if not path.exists():
            raise TargetError(f"host: no calibration of this machine at {path} (run `edgelstm calibrate`)")
        return load_target_file(path)
    if s.endswith(".toml") or os.sep in s:
        return load_target_file(s)
    f = catalog_dir() / f"{s}.toml"
    if not f.is_file():
        raise TargetError(f"target: no target named {s!r} (known: {', '.join(list_targets())}; "
                          f"or give the path of a .toml file)")
    with resources.as_file(f) as p:
        return load_target_file(p)
