"""A dataflow-aware model of a systolic-array accelerator, vectorized over designs.

An accelerator target may declare an `[array]`: a rows x cols MAC array with a dataflow
(os: output stationary, ws: weight stationary, is: input stationary), three
double-buffered operand SRAMs (ifmap, filter, ofmap), a DRAM interface in words per
cycle, and a vector unit for the LSTM's elementwise epilogue. This module maps each of
an LSTM's GEMMs onto such an array and returns cycles, energy and area. It is pure
NumPy: every function broadcasts over arrays of designs, with no Python loop per design.

The GEMM is A[M x K] @ B[K x N] (ifmap A, filter B, ofmap the M x N result), and the
mapping is SCALE-Sim's (Samajdar et al., "A Systematic Methodology for Characterizing
Scalability of DNN Accelerators using SCALE-Sim", ISPASS 2020; version 3.0.0):

    dataflow  array rows  array cols  streamed (T)  cycles per fold
    os        M           N           K             T + R + C - 2
    ws        K           N           M             T + 2R + C - 2   (R cycles load the weights)
    is        K           M           N             T + 2R + C - 2   (R cycles load the inputs)

with ceil(rows-dim / R) x ceil(cols-dim / C) folds run one after another, and one cycle
less in all (the last fold's final drain cycle). tests/test_scalesim.py checks that
these equal SCALE-Sim's reported cycles by running the simulator.

Memory (see docs/design-study.md): each operand is stored as array-sized tiles (its
dimension on the array padded to R or C, as SCALE-Sim's prefetch matrices are). An
operand that fits the active half of its double buffer is loaded once; one that does
not is streamed from DRAM, once per pass over it the dataflow makes, overlapped with
compute. Each buffer has its own DRAM port of `dram_words_per_cycle` words per cycle
(SCALE-Sim's convention). GEMM cycles = the first fill of the active halves + max(compute,
each operand's streaming) + the ofmap's final drain.

Area and energy come from `array_tech.toml` (45 nm, Horowitz ISSCC 2014 and the other
sources named there); a target overrides any key in its `[array.tech]` table.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, Optional

import numpy as np

DATAFLOWS = ("os", "ws", "is")
# Bytes per word on the array, and which row of the tech table a dtype uses.
WORD_BYTES = {"int8": 1, "int4": 1, "float16": 2, "bfloat16": 2, "float32": 4}
TECH_DTYPE = {"int8": "int8", "int4": "int8", "float16": "float16", "bfloat16": "float16",
              "float32": "float32"}
ARRAY_DTYPES = tuple(WORD_BYTES)


class ArrayError(ValueError):
    """Bad arguments to the array model; names the argument, what was expected and what was given."""


# -- validation ---------------------------------------------------------------------------
def dataflow_codes(dataflow) -> np.ndarray:
    """0, 1, 2 for os, ws, is: from a string, a sequence or array of strings, or of codes."""
    a = np.asarray(dataflow)
    if a.dtype.kind in "US":
        a = a.astype(str)
        codes = np.full(a.shape, -1, dtype=np.int64)
        for i, name in enumerate(DATAFLOWS):
            codes[a == name] = i
        if (codes < 0).any():
            bad = a[codes < 0].ravel()[0]
            raise ArrayError(f"dataflow: expected one of {', '.join(DATAFLOWS)}, got {bad!r}")
        return codes
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 2):
            raise ArrayError(f"dataflow: expected codes 0 (os), 1 (ws) or 2 (is), got values "
                             f"from {a.min()} to {a.max()}")
        return a.astype(np.int64)
    raise ArrayError(f"dataflow: expected 'os', 'ws', 'is' (or an array of them), got {dataflow!r}")


def positive_ints(name: str, value) -> np.ndarray:
    """`value` as an int64 array of integers >= 1, or an ArrayError naming `name`."""
    a = np.asarray(value)
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise ArrayError(f"{name}: expected integers >= 1, got {value!r}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.floor(a)):
            raise ArrayError(f"{name}: expected integers >= 1, got non-integer values")
    if a.size and a.min() < 1:
        raise ArrayError(f"{name}: expected integers >= 1, got {a.min()}")
    return a.astype(np.int64)


def positive_floats(name: str, value, allow_zero: bool = False) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise ArrayError(f"{name}: expected numbers > 0, got {value!r}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)) or (a.size and (a.min() < 0 if allow_zero else a.min() <= 0)):
        want = ">= 0" if allow_zero else "> 0"
        raise ArrayError(f"{name}: expected finite numbers {want}, got values from {a.min()} to {a.max()}")
    return a


def _cdiv(a, b):
    return -(-a // b)


# -- compute: folds and cycles ---------------------------------------------------------------
def fold_geometry(M, N, K, rows, cols, code):
    """(row_folds, col_folds, cycles_per_fold) of A[M x K] @ B[K x N] on a rows x cols
    array, per dataflow code (0 os, 1 ws, 2 is). Arrays broadcast; no validation."""
    is_os = code == 0
    is_is = code == 2
    # The dimension on the array's rows, on its columns, and the one streamed through.
    dim_r = np.where(is_os, M, K)
    dim_c = np.where(is_is, M, N)
    t = np.where(is_os, K, np.where(is_is, N, M))
    # os fills and drains through the array (R + C - 2); ws and is also spend R cycles
    # loading the stationary operand before streaming.
    per_fold = t + cols - 2 + np.where(is_os, rows, 2 * rows)
    return _cdiv(dim_r, rows), _cdiv(dim_c, cols), per_fold


def gemm_cycles(M, N, K, rows, cols, dataflow):
    """Compute cycles of A[M x K] @ B[K x N] on a rows x cols systolic array, with ample
    buffers and no stalls: SCALE-Sim 3.0.0's 'Total Cycles' (see the module docstring).
    All arguments broadcast; dataflow is 'os', 'ws', 'is' or an array of them."""
    M, N, K = positive_ints("M", M), positive_ints("N", N), positive_ints("K", K)
    rows, cols = positive_ints("rows", rows), positive_ints("cols", cols)
    code = dataflow_codes(dataflow)
    rf, cf, per_fold = fold_geometry(M, N, K, rows, cols, code)
    return rf * cf * per_fold - 1


def operand_traffic(M, N, K, rows, cols, code):
    """Words of each operand as stored (array-sized tiles), SRAM reads and writes the
    array makes, and how many passes over each operand the dataflow makes.

    ifmap_words, filter_words: the operand padded along its array dimension.
    ifmap_reads, filter_reads: words the array reads from the SRAM (a tile is re-read for
    every fold it meets). ofmap_writes: words written, partial sums included (ws and is
    write a partial result per fold of K). ifmap_passes, filter_passes: whole passes over
    the operand when it does not fit its buffer (os re-reads a K x C filter tile for each
    row fold only when the tile itself does not fit: see `filter_tile_words`)."""
    is_os, is_ws, is_is = code == 0, code == 1, code == 2
    rf, cf, _ = fold_geometry(M, N, K, rows, cols, code)
    ifmap_words = np.where(is_os, rf * rows * K, np.where(is_ws, M * rf * rows, cf * cols * K))
    filter_words = np.where(is_is, rf * rows * N, cf * cols * K)
    mk, kn, mn = M * K, K * N, M * N
    ifmap_reads = np.where(is_is, mk, cf * mk)
    filter_reads = np.where(is_os, rf * kn, np.where(is_ws, kn, cf * kn))
    ofmap_writes = np.where(is_os, mn, rf * mn)
    ifmap_passes = np.where(is_is, 1, cf)
    filter_passes = np.where(is_os, rf, np.where(is_ws, 1, cf))
    filter_tile_words = np.where(is_os, K * cols, 0)
    return dict(ifmap_words=ifmap_words, filter_words=filter_words, ifmap_reads=ifmap_reads,
                filter_reads=filter_reads, ofmap_writes=ofmap_writes, ifmap_passes=ifmap_passes,
                filter_passes=filter_passes, filter_tile_words=filter_tile_words)


def gemm_memory_cycles(M, N, K, rows, cols, code, ifmap_cap_words, filter_cap_words, ofmap_cap_words,
                       dram_words_per_cycle, ifmap_dram=True, filter_dram=True, ofmap_dram=True):
    """Cycles of one GEMM with its memory traffic, vectorized (no validation: callers validate).

    *_cap_words: each double buffer's capacity in words (half is active). *_dram: the
    operand comes from (goes to) DRAM; an on-chip operand that does not fit the active
    half of its buffer spills to DRAM anyway. Returns a dict: cycles, compute, fill,
    stream, drain (cycles) and dram_words, plus the operand_traffic entries."""
    tr = operand_traffic(M, N, K, rows, cols, code)
    compute = fold_geometry(M, N, K, rows, cols, code)
    compute = compute[0] * compute[1] * compute[2] - 1
    bw = dram_words_per_cycle
    a_if, a_f, a_o = np.ceil(ifmap_cap_words / 2), np.ceil(filter_cap_words / 2), np.ceil(ofmap_cap_words / 2)

    def read_side(words, valid, active, passes, from_dram, tile_ok=None):
        # Whether it fits counts the operand's real words; fetching moves the padded tiles.
        fits = valid <= active
        dram = from_dram | ~fits
        first = np.where(dram, np.minimum(words, active), 0)
        p = passes if tile_ok is None else np.where(tile_ok, 1, passes)
        streamed = np.where(fits | ~dram, 0, p * words - first)
        return first, streamed

    f_if, s_if = read_side(tr["ifmap_words"], M * K, a_if, tr["ifmap_passes"], ifmap_dram)
    tile_ok = (code == 0) & (tr["filter_tile_words"] <= a_f) | (code != 0)
    f_f, s_f = read_side(tr["filter_words"], K * N, a_f, tr["filter_passes"], filter_dram, tile_ok)
    w = tr["ofmap_writes"]
    o_out = ofmap_dram | (w > a_o)
    tail = np.where(o_out, np.minimum(w, a_o), 0)
    s_o = np.where(o_out, w - tail, 0)
    fill = np.maximum(f_if, f_f) / bw
    stream = np.maximum(np.maximum(s_if, s_f), s_o) / bw
    drain = tail / bw
    cycles = fill + np.maximum(compute, stream) + drain
    dram_words = f_if + s_if + f_f + s_f + tail + s_o
    return dict(tr, cycles=cycles, compute=compute, fill=fill, stream=stream, drain=drain,
                dram_words=dram_words, ifmap_dram_words=f_if + s_if, filter_dram_words=f_f + s_f,
                ofmap_dram_words=tail + s_o)


# -- technology: area and energy --------------------------------------------------------------
def _load_default_tech() -> dict:
    text = resources.files("edgelstm.costmodel").joinpath("array_tech.toml").read_text()
    return tomllib.loads(text)


DEFAULT_TECH = _load_default_tech()


def merge_tech(overrides: Optional[dict], fname: str = "tech") -> dict:
    """The default tech table with `overrides` ({section: {key: value}}) applied; unknown
    sections or keys are an error naming them."""
    tech = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_TECH.items()}
    for sec, vals in (overrides or {}).items():
        if sec in ("node_nm", "node_source"):
            tech[sec] = vals
            continue
        if sec not in tech or not isinstance(tech[sec], dict) or not isinstance(vals, dict):
            raise ArrayError(f"{fname}: array.tech.{sec}: unknown section (known: "
                             f"{', '.join(k for k, v in DEFAULT_TECH.items() if isinstance(v, dict))})")
        for key, v in vals.items():
            if key not in tech[sec]:
                raise ArrayError(f"{fname}: array.tech.{sec}.{key}: unknown key (known: {', '.join(tech[sec])})")
            tech[sec][key] = v
    return tech


def mac_pJ(tech: dict, dtype: str) -> float:
    """Energy of one multiply-accumulate in a PE, registers included."""
    t, pe = TECH_DTYPE[dtype], tech["pe"]
    bits = 2 * 8 * WORD_BYTES[dtype] + pe[f"acc_bits_{t}"]
    return pe[f"mult_pJ_{t}"] + pe[f"add_pJ_{t}"] + bits * tech["register"]["pJ_per_bit"]


def pe_um2(tech: dict, dtype: str) -> float:
    """Area of one PE: multiplier, accumulating adder, operand and accumulator registers."""
    t, pe = TECH_DTYPE[dtype], tech["pe"]
    bits = 2 * 8 * WORD_BYTES[dtype] + pe[f"acc_bits_{t}"]
    return pe[f"mult_um2_{t}"] + pe[f"add_um2_{t}"] + bits * tech["register"]["um2_per_bit"]


def sram_pJ_per_byte(tech: dict, capacity_bytes):
    """Read energy per byte of an SRAM of `capacity_bytes`, log-log interpolated between the
    table's points (extrapolated below the first, held above the last). Broadcasts."""
    xs = np.log(np.asarray(tech["sram"]["points_bytes"], dtype=np.float64))
    ys = np.log(np.asarray(tech["sram"]["points_pJ_per_byte"], dtype=np.float64))
    x = np.log(np.clip(np.asarray(capacity_bytes, dtype=np.float64), 1.0, np.exp(xs[-1])))
    slope0 = (ys[1] - ys[0]) / (xs[1] - xs[0])
    y = np.where(x < xs[0], ys[0] + slope0 * (x - xs[0]), np.interp(x, xs, ys))
    return np.exp(y)


def sram_um2_per_byte(tech: dict) -> float:
    s = tech["sram"]
    return 8 * s["bitcell_um2"] / s["array_efficiency"]


# -- a target's [array] table -------------------------------------------------------------
@dataclass(frozen=True)
class ArrayConfig:
    """The array of an accelerator target (one design point)."""
    rows: int
    cols: int
    dataflow: str
    ifmap_sram_bytes: int
    filter_sram_bytes: int
    ofmap_sram_bytes: int
    dram_words_per_cycle: float
    sigmoid_per_cycle: int          # activation results per cycle (sigmoid)
    tanh_per_cycle: int             # activation results per cycle (tanh)
    vector_lanes: int               # elementwise operations per cycle (adds, products)
    tech: Dict[str, object] = field(default_factory=dict)
    source: str = ""

    def designs(self, clock_MHz: float) -> dict:
        """This configuration as a one-design dict for `lstm_cost` / explore.sweep."""
        return {"rows": [self.rows], "cols": [self.cols], "dataflow": [self.dataflow],
                "ifmap_sram_kB": [self.ifmap_sram_bytes / 1024], "filter_sram_kB": [self.filter_sram_bytes / 1024],
                "ofmap_sram_kB": [self.ofmap_sram_bytes / 1024],
                "dram_words_per_cycle": [self.dram_words_per_cycle], "clock_MHz": [clock_MHz],
                "sigmoid_per_cycle": [self.sigmoid_per_cycle], "tanh_per_cycle": [self.tanh_per_cycle],
                "vector_lanes": [self.vector_lanes]}


def parse_array(table, fname: str) -> ArrayConfig:
    """An ArrayConfig from a target file's [array] table; errors name the file and key."""
    if not isinstance(table, dict):
        raise ArrayError(f"{fname}: array: expected a table, got {table!r}")

    def num(key, integer=True, default=None):
        if key not in table:
            if default is not None:
                return default
            raise ArrayError(f"{fname}: array.{key}: missing")
        v = table[key]
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or not math.isfinite(v) or v <= 0:
            want = "an integer >= 1" if integer else "a positive number"
            raise ArrayError(f"{fname}: array.{key}: expected {want}, got {v!r}")
        return v

    df = table.get("dataflow")
    if df not in DATAFLOWS:
        raise ArrayError(f"{fname}: array.dataflow: expected one of {', '.join(DATAFLOWS)}, got {df!r}")
    source = table.get("source")
    if not isinstance(source, str) or not source:
        raise ArrayError(f"{fname}: array.source: missing (say where the array's figures come from)")
    cols = num("cols")
    tech = table.get("tech", {})
    merge_tech(tech, fname)  # validates the overrides now
    return ArrayConfig(rows=num("rows"), cols=cols, dataflow=df,
                       ifmap_sram_bytes=num("ifmap_sram_bytes"), filter_sram_bytes=num("filter_sram_bytes"),
                       ofmap_sram_bytes=num("ofmap_sram_bytes"),
                       dram_words_per_cycle=num("dram_words_per_cycle", integer=False),
                       sigmoid_per_cycle=num("sigmoid_per_cycle", default=cols),
                       tanh_per_cycle=num("tanh_per_cycle", default=cols),
                       vector_lanes=num("vector_lanes", default=cols), tech=dict(tech), source=source)


# -- design points -------------------------------------------------------------------------
REQUIRED_KEYS = ("rows", "cols", "dataflow", "ifmap_sram_kB", "filter_sram_kB", "ofmap_sram_kB",
                 "dram_words_per_cycle", "clock_MHz")
OPTIONAL_KEYS = ("sigmoid_per_cycle", "tanh_per_cycle", "vector_lanes")  # default: cols
MAX_DESIGNS = 50_000_000


def normalize_designs(designs) -> dict:
    """Validate a dict of equal-length 1-D arrays (REQUIRED_KEYS, optionally OPTIONAL_KEYS;
    SRAM sizes in KiB = 1024 bytes) and return NumPy arrays: rows, cols, code, the three
    capacities in bytes, bw, clock_hz, sigmoid, tanh, lanes. Errors name the key."""
    if not isinstance(designs, dict):
        raise ArrayError(f"designs: expected a dict of equal-length arrays, got {type(designs).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in designs]
    if missing:
        raise ArrayError(f"designs: missing key(s) {', '.join(missing)} (required: {', '.join(REQUIRED_KEYS)})")
    unknown = [k for k in designs if k not in REQUIRED_KEYS + OPTIONAL_KEYS]
    if unknown:
        raise ArrayError(f"designs: unknown key(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    n = None
    for k, v in designs.items():
        a = np.asarray(v)
        if a.ndim != 1:
            raise ArrayError(f"designs[{k!r}]: expected a 1-D array, got shape {a.shape}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ArrayError(f"designs[{k!r}]: expected length {n} (as designs[{REQUIRED_KEYS[0]!r}]), got {a.shape[0]}")
    if n == 0:
        raise ArrayError("designs: expected at least one design, got arrays of length 0")
    if n > MAX_DESIGNS:
        raise ArrayError(f"designs: expected at most {MAX_DESIGNS:,} designs per call, got {n:,}")
    d = {
        "rows": positive_ints("designs['rows']", designs["rows"]),
        "cols": positive_ints("designs['cols']", designs["cols"]),
        "code": dataflow_codes(designs["dataflow"]),
        "bw": positive_floats("designs['dram_words_per_cycle']", designs["dram_words_per_cycle"]),
        "clock_hz": positive_floats("designs['clock_MHz']", designs["clock_MHz"]) * 1e6,
    }
    for k in ("ifmap", "filter", "ofmap"):
        d[f"{k}_bytes"] = positive_floats(f"designs['{k}_sram_kB']", designs[f"{k}_sram_kB"]) * 1024
    for k, name in (("sigmoid", "sigmoid_per_cycle"), ("tanh", "tanh_per_cycle"), ("lanes", "vector_lanes")):
        d[k] = positive_ints(f"designs[{name!r}]", designs[name]) if name in designs else d["cols"]
    return d


# -- an LSTM on the array -------------------------------------------------------------------
def _epilogue_cycles(H, B, peephole, d):
    """Vector-unit cycles of one step's epilogue for B rows of H units: gate sums, the
    activations (sigmoid and tanh units run in parallel), the cell update, tanh(c'), the
    output product; peepholes add 3 products and 3 sums."""
    hb = H * B
    lanes = d["lanes"]
    act = np.maximum(_cdiv(3 * hb, d["sigmoid"]), _cdiv(hb, d["tanh"]))
    ew = _cdiv(4 * hb, lanes) + _cdiv(3 * hb, lanes) + _cdiv(hb, lanes) + peephole * _cdiv(6 * hb, lanes)
    return act + ew + _cdiv(hb, d["tanh"])


def lstm_cost(counts, designs, tech: Optional[dict] = None) -> dict:
    """Latency, energy, area and utilization of the LSTM described by `counts` (a Counts from
    costmodel.counts: its per-layer rows give E, H, P, batch, steps and dtype) on every
    design of `designs` (see normalize_designs). Returns a dict of arrays, one entry per
    design: latency_s (the sequence), step_latency_s (a streamed step), energy_j,
    step_energy_j, area_mm2, power_w (energy / latency), utilization (MACs / (cycles x
    rows x cols)), fits (the recurrent weights, the states and the step's gates all stay
    in their buffers), and cycle and energy breakdowns."""
    dtype = counts.dtype
    if dtype not in WORD_BYTES:
        raise ArrayError(f"dtype: the array model supports {', '.join(ARRAY_DTYPES)}, got {dtype!r}")
    tech = merge_tech(tech) if tech is None or "pe" not in tech else tech
    d = normalize_designs(designs) if "code" not in designs else designs
    wb = WORD_BYTES[dtype]
    B, T = counts.batch, counts.seq_len
    R, C, code, bw = d["rows"], d["cols"], d["code"], d["bw"]
    caps = {k: np.floor(d[f"{k}_bytes"] / wb) for k in ("ifmap", "filter", "ofmap")}
    a_if, a_f, a_o = (np.ceil(caps[k] / 2) for k in ("ifmap", "filter", "ofmap"))
    e_mac = mac_pJ(tech, dtype)
    e_sram = {k: sram_pJ_per_byte(tech, d[f"{k}_bytes"]) * wb for k in caps}  # pJ per word
    e_dram = tech["dram"]["pJ_per_byte"] * wb
    vec = tech["vector"]

    n = R.shape[0]
    seq_cycles = np.zeros(n)
    step_cycles = np.zeros(n)
    macs_seq = 0
    macs_step = 0
    e = {k: np.zeros(n) for k in ("mac", "sram", "dram", "vector")}
    e_step_total = np.zeros(n)
    fits = np.ones(n, dtype=bool)
    br = {k: np.zeros(n) for k in ("input_gemm", "recurrent_gemm", "projection_gemm", "epilogue", "weight_load", "head")}

    def gemm(M, N, K, if_dram, f_dram, o_dram):
        g = gemm_memory_cycles(M, N, K, R, C, code, caps["ifmap"], caps["filter"], caps["ofmap"], bw,
                               if_dram, f_dram, o_dram)
        sram_pj = (g["ifmap_reads"] + g["ifmap_dram_words"]) * e_sram["ifmap"] \
            + (g["filter_reads"] + g["filter_dram_words"]) * e_sram["filter"] + g["ofmap_writes"] * e_sram["ofmap"]
        return g["cycles"], M * N * K * e_mac, sram_pj, g["dram_words"] * e_dram, g

    def resident(words):
        return words <= a_f

    for row in counts.layers:
        if row.kind == "lstm":
            E, H, P = row.input_size, row.hidden_size, row.out_size
            G = 4 * H
            proj = int(P != H)
            peep = int(row.params.get("peepholes", 0) > 0)
            first = row.layer == 0
            for steps, acc, is_seq in ((T, seq_cycles, True), (1, step_cycles, False)):
                # hoisted input projection: M = steps*B, K = E, N = 4H; x from DRAM on the
                # first layer, the previous layer's outputs (on chip if they fit) after it.
                x_dram = np.full(n, first) | (steps * B * E > a_if)
                gates_dram = steps * B * G > a_o
                c_in, m_in, s_in, d_in, _ = gemm(steps * B, G, E, x_dram, True, gates_dram)
                # recurrent product per step: M = B, K = P, N = 4H; h and the gates stay on chip
                # when they fit, W_hh stays in the filter buffer when it fits, else streams.
                c_rec, m_rec, s_rec, d_rec, g_rec = gemm(B, G, P, False, False, False)
                w_rec_res = resident(g_rec["filter_words"])
                load = np.where(w_rec_res, g_rec["filter_words"] / bw, 0.0)
                c_pr = m_pr = s_pr = d_pr = 0.0
                if proj:
                    c_pr, m_pr, s_pr, d_pr, g_pr = gemm(B, P, H, False, False, False)
                    w_pr_res = resident(g_pr["filter_words"] + g_rec["filter_words"])
                    load = load + np.where(w_pr_res, g_pr["filter_words"] / bw, 0.0)
                readback = np.where(gates_dram, B * G / bw, 0.0)
                epi = _epilogue_cycles(H, B, peep, d)
                step = c_rec + epi + c_pr + readback
                # Resident weights are loaded once per sequence; a streamed step (a call per
                # step on a running device) finds them already in place.
                load = load if is_seq else 0.0
                total = c_in + steps * step + load
                acc += total
                mac_pj = m_in + steps * (m_rec + m_pr + peep * 3 * H * B * e_mac)
                vec_pj = steps * B * H * (5 * vec["transcendental_energy_macs"]
                                          + (12 + 6 * peep) * vec["elementwise_energy_macs"]) * e_mac
                sram_pj = s_in + steps * (s_rec + s_pr)
                dram_pj = d_in + steps * (d_rec + d_pr + np.where(gates_dram, B * G, 0) * e_dram) \
                    + load * bw * e_dram
                if is_seq:
                    macs_seq += steps * B * (G * E + G * P + proj * P * H)
                    e["mac"] += mac_pj
                    e["vector"] += vec_pj
                    e["sram"] += sram_pj
                    e["dram"] += dram_pj
                    br["input_gemm"] += c_in
                    br["recurrent_gemm"] += steps * c_rec
                    br["projection_gemm"] += steps * c_pr
                    br["epilogue"] += steps * (epi + readback)
                    br["weight_load"] += load
                    fits &= w_rec_res & (B * P <= a_if) & (B * G <= a_o)
                else:
                    macs_step += B * (G * E + G * P + proj * P * H)
                    e_step_total += mac_pj + vec_pj + sram_pj + dram_pj
        elif row.kind == "dense":
            # The head: once per sequence on the last output, or every step.
            for steps, acc, is_seq in ((T if row.every_step else 1, seq_cycles, True), (1, step_cycles, False)):
                c_h, m_h, s_h, d_h, _ = gemm(steps * B, row.out_size, row.input_size, False, True, True)
                acc += c_h
                if is_seq:
                    macs_seq += steps * B * row.out_size * row.input_size
                    e["mac"] += m_h
                    e["sram"] += s_h
                    e["dram"] += d_h
                    br["head"] += c_h
                else:
                    macs_step += B * row.out_size * row.input_size
                    e_step_total += m_h + s_h + d_h
        # embedding rows: a table lookup, no arithmetic; not modelled on the array.

    clock = d["clock_hz"]
    latency = seq_cycles / clock
    step_latency = step_cycles / clock
    energy = sum(e.values()) * 1e-12
    pe_area = R * C * pe_um2(tech, dtype)
    sram_area = (d["ifmap_bytes"] + d["filter_bytes"] + d["ofmap_bytes"]) * sram_um2_per_byte(tech)
    t = TECH_DTYPE[dtype]
    lane_um2 = tech["pe"][f"mult_um2_{t}"] + tech["pe"][f"add_um2_{t}"]
    vec_area = ((d["sigmoid"] + d["tanh"]) * vec["activation_lane_macs"]
                + d["lanes"] * vec["elementwise_lane_macs"]) * lane_um2
    area = (pe_area + sram_area + vec_area) * 1e-6
    return {
        "latency_s": latency, "step_latency_s": step_latency,
        "energy_j": energy, "step_energy_j": e_step_total * 1e-12,
        "area_mm2": area, "power_w": energy / latency,
        "utilization": macs_seq / (seq_cycles * R * C),
        "fits": fits,
        "cycles": seq_cycles, "step_cycles": step_cycles,
        **{f"cycles_{k}": v for k, v in br.items()},
        **{f"energy_{k}_j": v * 1e-12 for k, v in e.items()},
        "area_pe_mm2": pe_area * 1e-6, "area_sram_mm2": sram_area * 1e-6, "area_vector_mm2": vec_area * 1e-6,
    }
