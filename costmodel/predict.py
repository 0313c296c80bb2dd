"""Spec x target -> Prediction: latency, the bound that wins, energy and memory fit.

The counts come from `counts.count`; this module only says how long and how much
energy they take on a target. The model (docs/targets.md has it with its equations):

    latency = call overhead
            + per layer, once:   the hoisted input GEMM over all T steps
            + per layer and step: step overhead
                                  + max(recurrent product at the compute rate,
                                        weight bytes / bandwidth of the level holding them
                                        + activation bytes / bandwidth of theirs)
                                  + epilogue (transcendentals, elementwise FLOPs)

The compute rate is the target's measured GEMM table when it has one (host), else
clock x MACs per cycle x threads. Weights live in the smallest memory level that holds
them (`place_weights`); activations in the fastest level they fit (`place_activations`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

from edgelstm.spec import ModelSpec

from .counts import ACT_BYTES, MAX_LAYER_ROWS, Counts, check_dtype, count, lstm_layer_macs
from .target import OFF_CHIP, MemoryLevel, Target, TargetError, load_target

IMPLEMENTATIONS = ("fused", "persistent")
# A cache holds a working set up to this fraction of its capacity: other data (the
# activations, the gate buffer, code) and conflict misses share it. SRAM and TCM are
# addressed directly and hold their full capacity. A modelling assumption, stated here.
CACHE_USABLE_FRACTION = 0.75


class PredictError(ValueError):
    """Bad arguments to predict()."""


# -- placement: the one place that decides where bytes live ------------------------------
def _usable(level: MemoryLevel, threads: int) -> float:
    cap = level.capacity_for(threads)
    return cap * CACHE_USABLE_FRACTION if level.kind == "cache" else cap


def place_weights(target: Target, nbytes: int, threads: int, on_chip_ok: bool = False) -> MemoryLevel:
    """The smallest level whose capacity holds `nbytes` of weights. Levels that do not
    survive a kernel launch (GPU registers, shared memory) count only for a persistent
    kernel (`on_chip_ok`). Weights that fit nowhere are read from the largest level."""
    levels = [m for m in target.memory if m.persistent or on_chip_ok]
    fitting = [m for m in levels if nbytes <= _usable(m, threads)]
    if fitting:
        return min(fitting, key=lambda m: m.capacity_for(threads))
    return max(levels, key=lambda m: m.capacity_bytes)


def place_activations(target: Target, nbytes: int, threads: int) -> MemoryLevel:
    """The fastest (first listed) level that holds `nbytes` of states and buffers."""
    levels = [m for m in target.memory if m.persistent]
    for m in levels:
        if nbytes <= _usable(m, threads):
            return m
    return levels[-1]


def storage_level(target: Target) -> MemoryLevel:
    """Where the weights are stored: the largest off-chip level (flash, DRAM, HBM), or
    the largest level of a target with no off-chip memory."""
    off = [m for m in target.memory if m.kind in OFF_CHIP]
    return max(off or target.memory, key=lambda m: m.capacity_bytes)


def on_chip_capacity(target: Target, threads: int) -> int:
    """Bytes of on-chip memory for states and buffers: separate SRAMs add up; caches
    nest, so the largest counts."""
    srams = sum(m.capacity_for(threads) for m in target.memory if m.kind in ("sram", "register") and m.persistent)
    caches = [m.capacity_for(threads) for m in target.memory if m.kind == "cache"]
    return max([srams] + caches)


# -- rates ---------------------------------------------------------------------------------
def gemm_flops_per_s(target: Target, dtype: str, threads: int, m: int, kn: int, routine: str = "blas") -> float:
    """FLOP/s of an (m x k) @ (k x n) product with k*n = kn. From the target's measured
    table for `routine` (bilinear in log m and log kn, clamped at its edges) when it has
    points for the dtype, else 2 x peak MACs/s."""
    pts = [g for g in target.gemm if g.dtype == dtype and g.routine == routine]
    if not pts:
        return 2 * target.peak_macs_per_s(dtype, threads)
    counts_ = sorted({g.threads for g in pts})
    th = max([t for t in counts_ if t <= threads] or counts_[:1])
    table = {(g.m, g.k * g.n): g.GFLOP_per_s * 1e9 for g in pts if g.threads == th}
    ms, kns = sorted({k[0] for k in table}), sorted({k[1] for k in table})
    if len(table) != len(ms) * len(kns):
        raise TargetError(f"{target.name}: gemm points for {dtype} do not form an m x (k*n) grid")
    (m0, m1, fm), (k0, k1, fk) = _bracket(ms, m), _bracket(kns, kn)
    if routine == "matvec" and k0 != k1 and target.memory and dtype in ACT_BYTES:
        # The matvec (one row: one FMA per weight loaded) streams its k x n matrix, so its
        # rate is a property of the level holding that matrix (place_weights, one core's
        # copy): never interpolate it across a level boundary. (The block and projection
        # GEMMs reuse each loaded weight across rows; their tables interpolate as measured.) Between a point measured in L2 and one in L3, a matrix that lives in L3
        # takes the L3 point's rate (e.g. W_hh of H=256 float64, 2 MB, was given a rate
        # interpolated half-way from its 512 KB L2 point).
        # Only at the boundary to a shared level (L3, DRAM): between private levels (L1, L2)
        # the rate depends on the matrix's shape (dot length, loop trips) as much as on the
        # level, and the log-log interpolation follows both.
        nb = ACT_BYTES[dtype]
        lv = lambda x: place_weights(target, x * nb, 1)
        here, lo, hi = lv(kn), lv(k0), lv(k1)
        if lo.name != hi.name and here.name in (lo.name, hi.name) and (lo.shared or hi.shared):
            k0 = k1 = k0 if here.name == lo.name else k1
            fk = 0.0
    logr = ((1 - fm) * (1 - fk) * math.log(table[m0, k0]) + fm * (1 - fk) * math.log(table[m1, k0])
            + (1 - fm) * fk * math.log(table[m0, k1]) + fm * fk * math.log(table[m1, k1]))
    return math.exp(logr)


def _bracket(xs, x):
    """Neighbours of x in sorted xs and the log-space weight of the upper one."""
    if x <= xs[0]:
        return xs[0], xs[0], 0.0
    if x >= xs[-1]:
        return xs[-1], xs[-1], 0.0
    for lo, hi in zip(xs, xs[1:]):
        if lo <= x <= hi:
            return lo, hi, (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
    raise AssertionError("unreachable")


def transcendental_s(target: Target, dtype: str, threads: int) -> float:
    """Seconds per transcendental: measured ns per element (host) or cycles / clock,
    shared among `threads` cores."""
    ns = target.transcendental_ns.get(dtype) or target.transcendental_ns.get("float32")
    one = ns * 1e-9 if ns else target.transcendental_cycles / (target.clock_MHz * 1e6)
    t = max(1, min(threads, target.cores))
    return one / (t * (target.parallel_efficiency if t > 1 else 1.0))


# -- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerTerms:
    """One row of counts (an LSTM layer and direction, a head, an embedding), in seconds.
    Per-step terms are for the whole batch; `input_gemm_s` is once per sequence."""

    name: str
    weights_level: str
    activations_level: str
    weight_bytes_per_step: int
    activation_bytes_per_step: int
    input_gemm_s: float
    overhead_s: float
    compute_s: float
    weights_s: float
    activations_s: float
    epilogue_s: float
    step_s: float
    bound: str
    every_step: bool = True


@dataclass(frozen=True)
class Prediction:
    target: str
    spec: object
    batch: int
    seq_len: int
    dtype: str
    hoisted: bool
    threads: int
    implementation: str
    latency_s: float              # the whole sequence, one call
    step_latency_s: float         # one step on its own (streaming: a call per step)
    max_step_rate_hz: float       # 1 / step_latency_s: the highest real-time step rate
    bound: str                    # of the sequence: compute, memory:<level> or overhead
    step_bound: str               # of one streamed step
    breakdown: Dict[str, float]   # seconds per sequence, by term; they add up to latency_s
    bound_breakdown: Dict[str, float]  # the same seconds, by the bound they belong to
    energy_j: float               # the whole sequence
    step_energy_j: float          # one streamed step
    energy_breakdown: Dict[str, float]
    weight_bytes: int
    weights_level: str            # where the step reads its recurrent weights from
    weights_home: str             # where the weights are stored (flash, DRAM, HBM)
    weights_fit: bool
    buffer_bytes: int             # states + the largest layer's per-step buffers
    on_chip_bytes: int
    state_fits: bool
    fits: bool
    weight_bytes_per_step: int    # from counts.traffic (the case this prediction uses)
    bytes_per_step: int
    layers: Tuple[LayerTerms, ...]
    notes: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("spec", "layers")}
        d["spec"] = str(self.spec)
        d["layers"] = [asdict(l) for l in self.layers]
        return d


# -- the model -----------------------------------------------------------------------------
def _flags(row) -> Tuple[int, int]:
    return int(bool(row.params.get("projection"))), int(bool(row.params.get("peepholes")))


def _input_macs(row, B: int) -> int:
    """MACs of the input projection per step (counts.lstm_layer_macs with and without E)."""
    proj, peep = _flags(row)
    H, E, P = row.hidden_size, row.input_size, row.out_size
    return B * (lstm_layer_macs(E, H, P, proj, peep) - lstm_layer_macs(0, H, P, proj, peep))


def _row_split(target: Target, B: int, threads: int):
    """(rows per thread, threads busy) when the target's kernel runs this batch as
    per-row matvecs (B < kernel.gemm_min_batch), else None."""
    k = target.kernel
    if not k or B >= k.get("gemm_min_batch", 1):
        return None
    t = max(1, min(threads, target.cores))
    per_block = max(1, min(k.get("rows_per_block", B), -(-B // t)))
    blocks = -(-B // per_block)
    return per_block, min(t, blocks)


def kernel_config(target: Target) -> Optional[dict]:
    """How the CPU kernel splits the work, for a target that runs it (one with a [kernel]
    table): read from edgelstm.kernels.cpu.config itself, so the model and the kernel share
    one set of thresholds; the file's [kernel] table only records them."""
    if not target.kernel:
        return None
    try:
        from edgelstm.kernels.cpu import config as kc
    except Exception:  # no kernels module: what calibration recorded
        return {"gemm_min_batch": target.kernel.get("gemm_min_batch", 1),
                "max_rows_per_block": target.kernel.get("rows_per_block", 8),
                "parallel_projection_min_macs": 1 << 62, "parallel_epilogue_min_elements": 1 << 62,
                "parallel_single_block_min_steps": 1 << 62}
    return {"gemm_min_batch": kc.gemm_min_batch, "max_rows_per_block": kc.max_rows_per_block,
            "parallel_projection_min_macs": kc.parallel_projection_min_macs,
            "parallel_epilogue_min_elements": kc.parallel_epilogue_min_elements,
            "parallel_single_block_min_steps": getattr(kc, "parallel_single_block_min_steps", 1 << 62)}


def _has_routines(target: Target, dtype: str) -> bool:
    have = {g.routine for g in target.gemm if g.dtype == dtype}
    return {"dot", "own", "block", "matvec"} <= have


def njit_call_s(target: Target, n_args: int) -> float:
    """A Python call of an @njit function with n_args arguments (dispatch unboxes each)."""
    return target.njit_call_s + max(n_args - 1, 0) * target.njit_arg_s


def activation_s(target: Target, dtype: str, n: int, passes: int) -> float:
    """`passes` vectorized sigmoid/tanh passes over n elements in all, on one core."""
    ns = target.transcendental_ns.get(dtype) or target.transcendental_ns.get("float32")
    fixed = target.transcendental_pass_ns.get(dtype, 0.0)
    return (passes * fixed + n * ns) * 1e-9


# Arguments of the kernel's per-call JIT entry points (kernels/cpu.py): the rows recurrence,
# the gemm path's per-step epilogue, the projection GEMM.
_ROWS_ARGS, _GEMM_STEP_ARGS = 15, 17
# Inside the JIT code, per batch row and step: calls to the epilogue (8 arguments), the exp
# (3, twice) and the row finish (5); per block and step, one product call (4 or 5 arguments);
# per block, 7 scratch arrays allocated once per call.
_ROW_CALLS = (4, 8 + 3 + 3 + 5)
_PRODUCT_ARGS = 4
_ROWS_ALLOCS = 7


def elementwise_row_s(target: Target, routine: str, dtype: str, H: int, threads: int) -> Optional[float]:
    """Seconds per batch row of the kernel's elementwise block `routine` ("rows": gate copy,
    `_epilogue`, `_finish_row` from JIT code; "gemm_step": `_epilogue_gemm_step` per row) at
    hidden size H: the target's measured table, log-log interpolated in H, proportional to H
    past its largest H, clamped below its smallest. None when the target has no such table."""
    pts = [e for e in target.elementwise if e.routine == routine and e.dtype == dtype]
    if not pts:
        return None
    counts_ = sorted({e.threads for e in pts})
    th = max([t for t in counts_ if t <= threads] or counts_[:1])
    table = sorted((e.hidden, e.ns_per_row) for e in pts if e.threads == th)
    hs = [h for h, _ in table]
    if H > hs[-1]:
        return table[-1][1] * H / hs[-1] * 1e-9
    lo, hi, f = _bracket(hs, H)
    ns = dict(table)
    return math.exp((1 - f) * math.log(ns[lo]) + f * math.log(ns[hi])) * 1e-9


def wrapper_once_s(target: Target) -> float:
    """The lstm() wrapper's fixed Python-side cost per call, counted from edgelstm/run.py and
    kernels/cpu.py:lstm_cpu: one input validation (check_s), one numba.get_num_threads()
    (py_threads_s), five allocations (h_n, c_n, lengths, the gate buffer xp, the output y:
    py_alloc_s each) and two views (ascontiguousarray of x, xp's reshape: py_view_s each).
    Without these figures: the target's call_s. When calibration timed the wrapper's Python
    side as a whole (wrapper_s, its JIT calls stood in for), that figure is used instead: it
    holds these pieces and the interpreter's own statements between them."""
    if target.wrapper_s:
        return target.wrapper_s
    if not target.check_s:
        return target.call_overhead_s
    return target.check_s + target.py_threads_s + 5 * target.py_alloc_s + 2 * target.py_view_s


def wrapper_row_s(target: Target, D: int) -> float:
    """lstm_cpu's Python work for one layer and direction (the layer's part shared by its D
    directions): the measured wrapper_layer_s / wrapper_dir_s when calibration has them,
    else the views counted (_LAYER_PY_VIEWS, _DIR_PY_VIEWS)."""
    if target.wrapper_s:
        return target.wrapper_layer_s / D + target.wrapper_dir_s
    return _LAYER_PY_ALLOCS * target.py_alloc_s + (_LAYER_PY_VIEWS + _DIR_PY_VIEWS) * target.py_view_s


# Per layer, lstm_cpu takes one reshape view of the layer's input (py_view_s); the gemm path's
# _layer_gemm allocates 5 scratch arrays, calls numba.get_num_threads() once, and per step
# slices xp[t] and y[t] (two views).
_LAYER_PY_ALLOCS, _LAYER_PY_VIEWS = 0, 1
# Per layer and direction, lstm_cpu indexes h_n[l*D+d] and c_n[l*D+d] for the recurrence call
# (two views, py_view_s each). (The layer's reshape is counted per direction row too: for a
# bidirectional layer that counts it twice, 0.1 µs.)
_DIR_PY_VIEWS = 2
_GEMM_LAYER_ALLOCS, _GEMM_STEP_VIEWS = 5, 2


def inner_calls_s(target: Target, calls: int, args: int) -> float:
    """`calls` JIT-to-JIT calls passing `args` array views in all."""
    return calls * target.inner_call_s + max(args - calls, 0) * target.inner_arg_s


def _host_kernel_row(r, D: int, T: int, B: int, dt: str, target: Target, threads: int, cfg: dict,
                     ws: int, peak_1: float) -> dict:
    """Seconds for one layer and direction of the CPU kernel (kernels/cpu.py), following its
    algorithm: which path a batch takes, how rows are split over threads, what is hoisted.
    Every rate is a calibrated figure of the routine the kernel calls, at this shape."""
    H, P, E = r.hidden_size, r.out_size, r.input_size
    G = 4 * H
    proj, peep = _flags(r)
    t_all = max(1, min(threads, target.cores))
    out = {}
    # Hoisted projection: one GEMM per layer for both directions, T*B rows; attributed per direction.
    rows_in = T * B
    if B >= cfg["gemm_min_batch"]:
        rate = gemm_flops_per_s(target, dt, target.cores, rows_in, E * G * D, "dot")
        out["projection"] = 2 * rows_in * E * G / rate
    else:
        par = t_all > 1 and rows_in * E * G * D >= cfg["parallel_projection_min_macs"]
        rate = gemm_flops_per_s(target, dt, t_all if par else 1, rows_in, E * G * D, "own")
        out["projection"] = 2 * rows_in * E * G / rate      # measured per call: dispatch included
    # Per row of the batch and step: the epilogue (sigmoid/tanh passes over 3H then 2H
    # elements, the cell update) and, with a projection, h = W_hr h.
    elementwise = (r.flops_per_step - 2 * r.macs_per_step) / B
    composed = (activation_s(target, dt, r.transcendentals_per_step // B, 2) + elementwise / peak_1
                + inner_calls_s(target, *_ROW_CALLS))
    # Measured tables (no projection, no peepholes): add the peephole FMAs (3H) and the
    # projection matvec h = W_hr hf when the spec has them.
    extra = (6 * H / peak_1 if peep else 0.0) + (
        2 * H * P / gemm_flops_per_s(target, dt, 1, 1, H * P, "matvec") if proj else 0.0)
    py = wrapper_row_s(target, D)
    if B >= cfg["gemm_min_batch"]:
        # A BLAS GEMM per step (np.dot from Python) and a JIT epilogue call over all rows.
        dot = 2 * B * P * G / gemm_flops_per_s(target, dt, target.cores, B, P * G, "dot")
        par_epi = t_all > 1 and B * H >= cfg["parallel_epilogue_min_elements"]
        rows_busy = -(-B // t_all) if par_epi else B
        table = None if par_epi else elementwise_row_s(target, "gemm_step", dt, H, 1)
        epi_row = (table if table is not None else composed + (2 * H * P / gemm_flops_per_s(
            target, dt, 1, 1, H * P, "matvec") if proj else 0.0)) + (extra if table is not None else 0.0)
        out["step_overhead"] = (njit_call_s(target, _GEMM_STEP_ARGS) + _GEMM_STEP_VIEWS * target.py_view_s
                                + (target.parallel_step_overhead_s if par_epi else 0.0))
        out["product"] = dot
        out["epilogue"] = rows_busy * epi_row
        out["layer"] = py + _GEMM_LAYER_ALLOCS * target.py_alloc_s + target.py_threads_s
        out["product_level_threads"] = target.cores
        return out
    # Rows path: blocks of rows per thread over the whole sequence, one region per layer.
    rpb = max(1, min(cfg["max_rows_per_block"], -(-B // t_all)))
    nblk = -(-B // rpb)
    active = 1 if rpb >= B else min(t_all, nblk)
    blocks_busy = -(-nblk // active)
    rows_busy = min(B, blocks_busy * rpb)
    product = 0.0
    left = rows_busy
    while left > 0:
        nr = min(rpb, left)
        product += inner_calls_s(target, 1, _PRODUCT_ARGS)
        if nr >= 4:
            product += 2 * nr * P * G / gemm_flops_per_s(target, dt, active, nr, P * G, "block")
        else:
            product += nr * 2 * P * G / gemm_flops_per_s(target, dt, active, 1, P * G, "matvec")
        left -= nr
    # The per-row epilogue figure of the code that runs: the parallel variant's loop body is
    # parfor-lowered (its gate copy z[r,:] = xp[..] becomes a vector loop) even for one block,
    # so it takes the "rows" table measured as a prange loop (threads = t_all); the serial
    # variant takes the serial table (threads = 1). Measured: the prange table is 0.1-0.2 µs
    # per row faster at H=16-256, as the parallel variant was faster than the serial one.
    region = active > 1 or (t_all > 1 and T >= cfg["parallel_single_block_min_steps"])
    table = elementwise_row_s(target, "rows", dt, H, t_all if region else 1)
    epi_row = (table + extra) if table is not None else composed + (
        2 * H * P / gemm_flops_per_s(target, dt, 1, 1, H * P, "matvec") if proj else 0.0)
    out["product"] = product
    out["epilogue"] = rows_busy * epi_row
    out["step_overhead"] = 0.0
    # A parallel region per layer: several blocks, or one block of a long sequence (the kernel
    # runs the parallel variant there: cpu.config.parallel_single_block_min_steps). Its cost is
    # parallel_step_s (a prange region of `threads` trips; one trip measured ~1 µs less).
    out["layer"] = (py + njit_call_s(target, _ROWS_ARGS) + blocks_busy * _ROWS_ALLOCS * target.alloc_s
                    + (target.parallel_step_overhead_s if region else 0.0))
    out["product_level_threads"] = active
    return out


def _energy_op(target: Target, kind: str, dtype: str) -> float:
    return target.energy[f"{kind}_pJ_{dtype}"] * 1e-12


def _model(c: Counts, target: Target, hoisted: bool, threads: int, implementation: str):
    """Latency terms, energy terms and placements for counts `c` (T = c.seq_len)."""
    B, T, dt = c.batch, c.seq_len, c.dtype
    persistent = implementation == "persistent"
    lstm_rows = [r for r in c.layers if r.kind == "lstm"]
    peak_flops = 2 * target.peak_macs_per_s(dt, threads)
    t_trans = transcendental_s(target, dt, threads)
    if persistent:
        step_over = target.persistent_step_overhead_s
    else:
        step_over = target.parallel_step_overhead_s if min(threads, target.cores) > 1 else target.step_overhead_s

    def w_step(r):
        return r.weight_bytes - r.input_weight_bytes if (r.kind == "lstm" and hoisted) else r.weight_bytes

    # Hoisted, the kernel runs layer by layer over all T steps: one layer's recurrent
    # weights are the working set. Not hoisted, it runs step by step through every layer.
    total_w_step = sum(w_step(r) for r in c.layers if r.kind != "embedding" and r.every_step)
    buffer_bytes = c.state_bytes + max((r.activation_bytes_per_step + r.gate_buffer_bytes_per_step
                                        for r in c.layers), default=0)
    act_level = place_activations(target, buffer_bytes, threads)
    home_fused = lambda n: place_weights(target, n, threads)
    terms, energy = [], {"macs": 0.0, "elementwise": 0.0, "transcendentals": 0.0,
                         "weight_reads": 0.0, "activation_reads": 0.0}
    # The host CPU kernel's wrapper: its Python-side pieces counted (wrapper_once_s); else call_s.
    host_call = (hoisted and not persistent and kernel_config(target) is not None and _has_routines(target, dt))
    call_s = wrapper_once_s(target) if host_call else target.call_overhead_s
    breakdown = {"call_overhead": call_s, "step_overhead": 0.0, "input_gemm": 0.0,
                 "weight_load": 0.0, "recurrent_compute": 0.0, "weight_memory": 0.0,
                 "activation_memory": 0.0, "epilogue": 0.0}
    by_bound: Dict[str, float] = {"overhead": call_s, "compute": 0.0}
    if persistent:  # one launch per layer for the whole sequence
        launches = target.step_overhead_s * len(lstm_rows)
        breakdown["call_overhead"] += launches
        by_bound["overhead"] += launches
    for r in c.layers:
        ws = w_step(r)
        working_set = ws if hoisted else total_w_step
        w_level = (place_weights(target, working_set, threads, on_chip_ok=True) if persistent and r.kind == "lstm"
                   else home_fused(working_set))
        a_step = r.activation_bytes_per_step + (r.gate_buffer_bytes_per_step if (r.kind == "lstm" and hoisted) else 0)
        gemm_s = 0.0
        in_macs = _input_macs(r, B) if r.kind == "lstm" else 0
        cfg = kernel_config(target) if (r.kind == "lstm" and hoisted and not persistent) else None
        host = cfg is not None and _has_routines(target, dt)
        if r.kind == "lstm" and hoisted and in_macs and not host:
            in_level = home_fused(r.input_weight_bytes)
            g_compute = 2 * in_macs * T / gemm_flops_per_s(target, dt, threads, T * B, in_macs // B)
            g_memory = r.input_weight_bytes / in_level.bandwidth_for(threads)
            gemm_s = max(g_compute, g_memory)
            by_bound["compute" if g_compute >= g_memory else f"memory:{in_level.name}"] = (
                by_bound.get("compute" if g_compute >= g_memory else f"memory:{in_level.name}", 0.0) + gemm_s)
            energy["weight_reads"] += r.input_weight_bytes * in_level.energy_pJ_per_byte * 1e-12
        if persistent and r.kind == "lstm":  # recurrent weights loaded on chip once
            home = home_fused(ws)
            load = ws / home.bandwidth_for(threads)
            breakdown["weight_load"] += load
            by_bound[f"memory:{home.name}"] = by_bound.get(f"memory:{home.name}", 0.0) + load
            energy["weight_reads"] += ws * home.energy_pJ_per_byte * 1e-12
        rec_macs = r.macs_per_step - (in_macs if hoisted else 0)
        elementwise = r.flops_per_step - 2 * r.macs_per_step
        over = step_over if r.kind != "embedding" else 0.0
        rows = _row_split(target, B, threads) if (r.kind == "lstm" and not persistent and not host) else None
        if host:
            D = 2 if (r.name.endswith(".reverse") or any(o.name == r.name + ".reverse" for o in c.layers)) else 1
            hk = _host_kernel_row(r, D, T, B, dt, target, threads, cfg, ws, 2 * target.peak_macs_per_s(dt, 1))
            gemm_s = hk["projection"]
            in_level = home_fused(r.input_weight_bytes)
            by_bound["compute"] += gemm_s
            energy["weight_reads"] += r.input_weight_bytes * in_level.energy_pJ_per_byte * 1e-12
            if B >= cfg["gemm_min_batch"]:   # the bias pass over the gate buffer
                buf_level = place_activations(target, T * r.gate_buffer_bytes_per_step // 2, threads)
                bias_s = T * r.gate_buffer_bytes_per_step / buf_level.bandwidth_for(1)
                gemm_s += bias_s
                by_bound[f"memory:{buf_level.name}"] = by_bound.get(f"memory:{buf_level.name}", 0.0) + bias_s
            w_level = place_weights(target, ws, 1)
            over = hk["step_overhead"]
            compute_s = hk["product"]
            weights_s = acts_s = 0.0
            epilogue_s = hk["epilogue"]
            layer_s = hk["layer"]
        elif rows is not None:
            # Per-row matvecs: each thread runs `per_thread` rows, reading W_hh once per row,
            # from the level holding one copy per core (private caches are not pooled).
            per_thread, active = rows
            w_level = place_weights(target, working_set, 1)
            core_bw = w_level.bandwidth_for(active) / active
            compute_s = 2 * rec_macs * per_thread / B / (2 * target.peak_macs_per_s(dt, 1)) if rec_macs else 0.0
            weights_s = per_thread * ws / core_bw
            acts_s = per_thread * a_step / B / (act_level.bandwidth_for(active) / active)
            epilogue_s = per_thread * (r.transcendentals_per_step * transcendental_s(target, dt, 1)
                                       + elementwise / (2 * target.peak_macs_per_s(dt, 1))) / B
            over = target.step_overhead_s
            layer_s = target.call_overhead_s + target.parallel_step_overhead_s
        else:
            compute_s = (2 * rec_macs / gemm_flops_per_s(target, dt, threads, B, max(rec_macs // B, 1))
                         if rec_macs else 0.0)
            weights_s = ws / w_level.bandwidth_for(threads) if r.kind != "embedding" else 0.0
            acts_s = a_step / act_level.bandwidth_for(threads)
            epilogue_s = r.transcendentals_per_step * t_trans + elementwise / peak_flops
            layer_s = 0.0
            if r.kind == "lstm" and target.kernel and not persistent:  # a BLAS call + a parallel epilogue per step
                over = target.call_overhead_s + target.parallel_step_overhead_s
        if r.kind == "lstm" and hoisted and target.kernel and not host:
            # The bias pass over the gate buffer (xp += b): read and written once per step.
            buf_level = place_activations(target, T * r.gate_buffer_bytes_per_step // 2, threads)
            bias_s = T * r.gate_buffer_bytes_per_step / buf_level.bandwidth_for(1)
            gemm_s += bias_s
            by_bound[f"memory:{buf_level.name}"] = by_bound.get(f"memory:{buf_level.name}", 0.0) + bias_s
        gemm_s += layer_s
        by_bound["overhead"] += layer_s
        memory_s = weights_s + acts_s
        if host and not (w_level.kind == "cache" and not w_level.shared):
            # the product streams W from a shared level (L3, DRAM): its measured rate is that level's
            weights_s, compute_s, memory_s = compute_s, 0.0, compute_s
        step_s = over + max(compute_s, memory_s) + epilogue_s
        mem_bound = f"memory:{w_level.name}" if weights_s >= acts_s else f"memory:{act_level.name}"
        winner = "compute" if compute_s >= memory_s else mem_bound
        parts = {"overhead": over, "compute": epilogue_s + (compute_s if winner == "compute" else 0.0)}
        if winner != "compute":
            parts[winner] = parts.get(winner, 0.0) + memory_s
        row_bound = max(parts, key=parts.get)
        n = T if r.every_step else 1
        for k, v in parts.items():
            by_bound[k] = by_bound.get(k, 0.0) + n * v
        breakdown["input_gemm"] += gemm_s
        breakdown["step_overhead"] += n * over
        if winner == "compute":
            breakdown["recurrent_compute"] += n * compute_s
        else:
            breakdown["weight_memory"] += n * weights_s
            breakdown["activation_memory"] += n * acts_s
        breakdown["epilogue"] += n * epilogue_s
        energy["macs"] += n * r.macs_per_step * _energy_op(target, "mac", dt)
        energy["elementwise"] += n * elementwise * _energy_op(target, "flop", dt)
        energy["transcendentals"] += n * r.transcendentals_per_step * _energy_op(target, "transcendental", dt)
        energy["weight_reads"] += n * ws * w_level.energy_pJ_per_byte * 1e-12
        energy["activation_reads"] += n * a_step * act_level.energy_pJ_per_byte * 1e-12
        terms.append(LayerTerms(
            name=r.name, weights_level=w_level.name, activations_level=act_level.name,
            weight_bytes_per_step=ws, activation_bytes_per_step=a_step, input_gemm_s=gemm_s,
            overhead_s=over, compute_s=compute_s, weights_s=weights_s, activations_s=acts_s,
            epilogue_s=epilogue_s, step_s=step_s, bound=row_bound, every_step=r.every_step))
    latency = sum(breakdown.values())
    by_bound = {k: v for k, v in by_bound.items() if v > 0 or k in ("overhead", "compute")}
    return latency, breakdown, by_bound, energy, terms, buffer_bytes


def predict(spec, target, batch: int = 1, seq_len: int = 1, dtype: str = "float32", *,
            hoisted: bool = True, threads: Optional[int] = None, implementation: str = "fused") -> Prediction:
    """Latency, bound, energy and memory fit of `spec` on `target`.

    target: a Target, a catalog name, "host", or a TOML path. hoisted: the input
    projection of all steps is one GEMM before the recurrence. threads: cores (SMs on a
    GPU) used; None for all. implementation: "fused" (the step reads the weights from the
    level holding them) or "persistent" (a GPU kernel keeping the recurrent weights on
    chip across steps: one launch per layer, a grid barrier per step)."""
    target = load_target(target)
    check_dtype(dtype)
    if implementation not in IMPLEMENTATIONS:
        raise PredictError(f"implementation: expected one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
    if threads is None:
        threads = target.cores
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise PredictError(f"threads: expected an integer >= 1 or None, got {threads!r}")
    if not isinstance(hoisted, bool):
        raise PredictError(f"hoisted: expected True or False, got {hoisted!r}")
    threads = min(threads, target.cores)
    c = count(spec, batch=batch, seq_len=seq_len, dtype=dtype)
    if any(r.repeat > 1 for r in c.layers):   # counts.MAX_LAYER_ROWS: the model walks every layer
        raise PredictError(f"spec: predict takes stacks of at most {MAX_LAYER_ROWS} layer-directions, got "
                           f"{max(s.num_layers * s.num_directions for s in ModelSpec.of(spec).stacks):,}")
    c1 = c if seq_len == 1 else count(spec, batch=batch, seq_len=1, dtype=dtype)
    latency, breakdown, by_bound, energy, terms, buffer_bytes = _model(c, target, hoisted, threads, implementation)
    step_latency, _, step_by_bound, step_energy, _, _ = _model(c1, target, hoisted, threads, implementation)

    notes = []
    case = ("resident" if implementation == "persistent" else "streamed") + ("_hoisted" if hoisted else "")
    traffic = c.traffic[case]
    home = storage_level(target)
    weights_fit = c.weight_bytes <= home.capacity_bytes
    on_chip = on_chip_capacity(target, threads)
    state_fits = buffer_bytes <= on_chip
    if implementation == "persistent":
        off = [t.name for t in terms if t.weights_level in {m.name for m in target.memory if m.persistent}
               and t.name.startswith("lstm")]
        if off:
            notes.append(f"persistent: the recurrent weights of {', '.join(off)} do not fit on chip; "
                         f"they are read from the cache or memory every step")
    if not weights_fit:
        notes.append(f"the weights ({c.weight_bytes:,} B) exceed {home.name} ({home.capacity_bytes:,} B)")
    if not state_fits:
        notes.append(f"states and buffers ({buffer_bytes:,} B) exceed on-chip memory ({on_chip:,} B)")
    lstm_terms = [t for t in terms if t.name.startswith("lstm")] or terms
    pred = Prediction(
        target=target.name, spec=spec, batch=c.batch, seq_len=c.seq_len, dtype=dtype, hoisted=hoisted,
        threads=threads, implementation=implementation,
        latency_s=latency, step_latency_s=step_latency, max_step_rate_hz=1.0 / step_latency,
        bound=max(by_bound, key=by_bound.get), step_bound=max(step_by_bound, key=step_by_bound.get),
        breakdown=breakdown, bound_breakdown=by_bound,
        energy_j=sum(energy.values()), step_energy_j=sum(step_energy.values()), energy_breakdown=energy,
        weight_bytes=c.weight_bytes, weights_level=max(lstm_terms, key=lambda t: t.weight_bytes_per_step).weights_level,
        weights_home=home.name, weights_fit=weights_fit, buffer_bytes=buffer_bytes, on_chip_bytes=on_chip,
        state_fits=state_fits, fits=weights_fit and state_fits,
        weight_bytes_per_step=traffic.weight_bytes_per_step, bytes_per_step=traffic.bytes_per_step,
        layers=tuple(terms), notes=tuple(notes))
    return pred if target.array is None else _on_array(pred, c, target)


def _on_array(pred: Prediction, c: Counts, target: Target) -> Prediction:
    """A target with an [array]: latency and energy from the systolic-array model
    (costmodel/array.py) instead of the roofline; memory fit as before."""
    from dataclasses import replace
    from .array import ArrayError, lstm_cost, merge_tech
    a = target.array
    try:
        r = {k: v[0].item() for k, v in lstm_cost(c, a.designs(target.clock_MHz), merge_tech(a.tech)).items()}
    except ArrayError as e:
        raise PredictError(f"{target.name}: {e}") from None
    hz = target.clock_MHz * 1e6
    bound = "compute" if r["fits"] else f"memory:{storage_level(target).name}"
    return replace(pred, latency_s=r["latency_s"], step_latency_s=r["step_latency_s"],
                   max_step_rate_hz=1.0 / r["step_latency_s"], bound=bound, step_bound=bound,
                   breakdown={k[7:]: v / hz for k, v in r.items() if k.startswith("cycles_")},
                   bound_breakdown={bound: r["latency_s"]}, energy_j=r["energy_j"], step_energy_j=r["step_energy_j"],
                   energy_breakdown={k[7:-2]: v for k, v in r.items() if k.startswith("energy_") and k.endswith("_j")},
                   notes=pred.notes + (f"systolic array {a.rows}x{a.cols} {a.dataflow}: utilization "
                                       f"{r['utilization']:.1%}, area {r['area_mm2']:.3g} mm2 (costmodel/array.py)",))
