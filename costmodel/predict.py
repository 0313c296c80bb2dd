"""Spec x target -> Prediction: the generic roofline model of any target.

The counts come from `counts.count`; this module only says how long and how much
energy they take on a target described as a catalog file describes one (peak, bandwidth
per level, overheads). It knows nothing of edgelstm's own kernels: the model of the CPU
kernel on this machine is `costmodel/host/` (docs/host-model.md). The model
(docs/targets.md has it with its equations):

    latency = call overhead
            + per layer, once:   the hoisted input GEMM over all T steps
            + per layer and step: step overhead
                                  + max(recurrent product at the compute rate,
                                        weight bytes / bandwidth of the level holding them
                                        + activation bytes / bandwidth of theirs)
                                  + epilogue (transcendentals, elementwise FLOPs)

The compute rate is clock x MACs per cycle x threads. Weights live in the smallest memory level that holds
them (`place_weights`); activations in the fastest level they fit (`place_activations`). A call's
first pass over a layer's weights (the input GEMM's one read of W_ih, the first step's of W_hh)
finds them where the previous call left them: in the level that holds the whole call's weights,
when that is larger than a cache holding the layer's (`call_home`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

from edgelstm.spec import ModelSpec

from .counts import ACT_BYTES, MAX_LAYER_ROWS, Counts, check_dtype, count, lstm_layer_macs
from .target import OFF_CHIP, MemoryLevel, Target, TargetError, load_target

IMPLEMENTATIONS = ("fused", "persistent-block", "persistent-grid")
# "persistent-block" is the shipped CUDA kernel (kernels/cuda.py, lstm_persistent): one thread
# block per direction keeps W_hh in that SM's shared memory within the static budget below
# (kernels/cuda.py: PERSISTENT_SMEM_BYTES; tests/test_predict.py checks the two agree).
# "persistent-grid" is the design-study case: a grid-wide kernel spreading W_hh over every
# SM's on-chip memory, with a grid barrier per step (not implemented in kernels/).
PERSISTENT_BLOCK_SMEM_BYTES = 48 * 1024
# A cache holds a working set up to this fraction of its capacity: other data (the
# activations, the gate buffer, code) and conflict misses share it. SRAM and TCM are
# addressed directly and hold their full capacity. A modelling assumption, stated here.
CACHE_USABLE_FRACTION = 0.75
# Targets whose steps run on CPU cores: a step is spread over them only when that is faster.
CPU_KINDS = ("cpu", "host")


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
def transcendental_s(target: Target, dtype: str, threads: int) -> float:
    """Seconds per transcendental: measured ns per element (a calibrated target) or
    cycles / clock, shared among `threads` cores."""
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


def input_macs(row, B: int) -> int:
    """MACs of the input projection per step (counts.lstm_layer_macs with and without E)."""
    proj, peep = _flags(row)
    H, E, P = row.hidden_size, row.input_size, row.out_size
    return B * (lstm_layer_macs(E, H, P, proj, peep) - lstm_layer_macs(0, H, P, proj, peep))


@dataclass(frozen=True)
class Context:
    """What every row of one prediction shares."""
    target: Target
    counts: Counts
    hoisted: bool
    threads: int
    implementation: str
    total_w_step: int              # recurrent bytes of every layer (the not-hoisted working set)
    buffer_bytes: int              # states + the largest layer's per-step buffers
    act_level: MemoryLevel

    def w_step(self, r) -> int:
        """Weight bytes a row reads per step: its recurrent weights when hoisted."""
        return r.weight_bytes - r.input_weight_bytes if (r.kind == "lstm" and self.hoisted) else r.weight_bytes

    def a_step(self, r) -> int:
        return r.activation_bytes_per_step + (r.gate_buffer_bytes_per_step if (r.kind == "lstm" and self.hoisted) else 0)


def context(c: Counts, target: Target, hoisted: bool, threads: int, implementation: str) -> Context:
    # Hoisted, the kernel runs layer by layer over all T steps: one layer's recurrent
    # weights are the working set. Not hoisted, it runs step by step through every layer.
    w_step = Context(target, c, hoisted, threads, implementation, 0, 0, target.memory[0]).w_step
    total = sum(w_step(r) for r in c.layers if r.kind != "embedding" and r.every_step)
    buffer_bytes = c.state_bytes + max((r.activation_bytes_per_step + r.gate_buffer_bytes_per_step
                                        for r in c.layers), default=0)
    return Context(target, c, hoisted, threads, implementation, total, buffer_bytes,
                   place_activations(target, buffer_bytes, threads))


@dataclass
class RowCost:
    """One row's seconds before they are summed: `once_s` per sequence (attributed to the
    bounds in `once_bound`), the rest per step."""
    w_level: MemoryLevel
    over: float = 0.0
    compute_s: float = 0.0
    weights_s: float = 0.0
    acts_s: float = 0.0
    epilogue_s: float = 0.0
    once_s: float = 0.0               # the input GEMM and per-layer costs
    load_s: float = 0.0               # a persistent kernel's one load of the recurrent weights
    once_bound: Dict[str, float] = field(default_factory=dict)
    once_energy_j: float = 0.0        # weights read once per sequence (input GEMM, a persistent load)

    def add_once(self, bound: str, seconds: float, load: bool = False) -> None:
        if load:
            self.load_s += seconds
        else:
            self.once_s += seconds
        self.once_bound[bound] = self.once_bound.get(bound, 0.0) + seconds


def persistent_row(ctx: Context, r) -> bool:
    return ctx.implementation != "fused" and r.kind == "lstm"


def call_home(ctx: Context, level: MemoryLevel, threads: int) -> MemoryLevel:
    """Where a call's first pass finds weights that `level` holds between steps. A cache
    holds one layer's weights while that layer runs, but not from one call to the next when
    the whole call's weights need a larger level: the previous call left them there (a
    software-managed SRAM keeps what was put in it, so it is its own home)."""
    if level.kind != "cache":
        return level
    home = place_weights(ctx.target, ctx.counts.weight_bytes, threads)
    return home if home.capacity_for(threads) > level.capacity_for(threads) else level


def roofline_row(ctx: Context, r) -> RowCost:
    """The roofline terms of one row (module docstring)."""
    t, B, T, dt, th = ctx.target, ctx.counts.batch, ctx.counts.seq_len, ctx.counts.dtype, ctx.threads
    ws = ctx.w_step(r)
    working_set = ws if ctx.hoisted else ctx.total_w_step
    persistent = persistent_row(ctx, r)
    # persistent-block: one block (one SM) per direction runs the row; persistent-grid: all of them.
    row_th = 1 if (persistent and ctx.implementation == "persistent-block") else th
    if persistent:
        smem = [m for m in t.memory if m.kind == "sram" and not m.persistent]
        # persistent-block keeps W_hh in its block's shared memory (predict() checked the fit)
        w_level = (smem[0] if (smem and ctx.implementation == "persistent-block")
                   else place_weights(t, working_set, row_th, on_chip_ok=True))
        step_over = t.persistent_step_overhead_s
    else:
        w_level = place_weights(t, working_set, th)
        step_over = t.parallel_step_overhead_s if min(th, t.cores) > 1 else t.step_overhead_s
    cost = RowCost(w_level=w_level)
    if r.kind == "lstm" and t.layer_overhead_s:
        cost.add_once("overhead", t.layer_overhead_s)    # the operator's invoke, once per call
    in_macs = input_macs(r, B) if r.kind == "lstm" else 0
    if r.kind == "lstm" and ctx.hoisted and in_macs:
        def gemm_terms(n_th):
            # the GEMM reads W_ih once per call: from where the previous call left it
            level = call_home(ctx, place_weights(t, r.input_weight_bytes, n_th), n_th)
            return (2 * in_macs * T / (2 * t.peak_macs_per_s(dt, n_th)),
                    r.input_weight_bytes / level.bandwidth_for(n_th), level)
        g_compute, g_memory, in_level = gemm_terms(th)
        fork = 0.0
        # On CPU cores the GEMM is spread over them only when that is faster, and spreading
        # it costs one fork/join (parallel_step_overhead_s), as a step's does.
        if t.kind in CPU_KINDS and min(th, t.cores) > 1:
            one = gemm_terms(1)
            if max(one[0], one[1]) <= max(g_compute, g_memory) + t.parallel_step_overhead_s:
                g_compute, g_memory, in_level = one
            else:
                fork = t.parallel_step_overhead_s
        cost.add_once("compute" if g_compute >= g_memory else f"memory:{in_level.name}", max(g_compute, g_memory))
        if fork:
            cost.add_once("overhead", fork)
        cost.once_energy_j += r.input_weight_bytes * in_level.energy_pJ_per_byte * 1e-12
    if persistent:  # recurrent weights loaded on chip once
        home = place_weights(t, ws, th)
        cost.add_once(f"memory:{home.name}", ws / home.bandwidth_for(th), load=True)
        cost.once_energy_j += ws * home.energy_pJ_per_byte * 1e-12
    rec_macs = r.macs_per_step - (in_macs if ctx.hoisted else 0)
    elementwise = r.flops_per_step - 2 * r.macs_per_step

    def step_terms(n_th, level, over):
        pk = 2 * t.peak_macs_per_s(dt, n_th)
        return (over if r.kind != "embedding" else 0.0,
                2 * rec_macs / pk if rec_macs else 0.0,
                ws / level.bandwidth_for(n_th) if r.kind != "embedding" else 0.0,
                ctx.a_step(r) / ctx.act_level.bandwidth_for(n_th),
                r.transcendentals_per_step * transcendental_s(t, dt, n_th) + elementwise / pk)
    terms = step_terms(row_th, w_level, step_over)
    step_th = row_th
    # A CPU runtime spreads a step over its cores only when that is faster than one core
    # (a parallel region per step costs parallel_step_overhead_s): the faster of the two.
    if not persistent and t.kind in CPU_KINDS and min(th, t.cores) > 1:
        one_level = place_weights(t, working_set, 1)
        one = step_terms(1, one_level, t.step_overhead_s)
        step_s = lambda x: x[0] + max(x[1], x[2] + x[3]) + x[4]
        if step_s(one) < step_s(terms):
            terms, cost.w_level, step_th = one, one_level, 1
    cost.over, cost.compute_s, cost.weights_s, cost.acts_s, cost.epilogue_s = terms
    # The first step reads W_hh from where the previous call left it (call_home), the later
    # steps from the level holding this layer's weights.
    home = call_home(ctx, cost.w_level, step_th) if ctx.hoisted and r.kind == "lstm" and not persistent else cost.w_level
    if home is not cost.w_level:
        first = ws / home.bandwidth_for(step_th) + cost.acts_s
        extra = max(cost.compute_s, first) - max(cost.compute_s, cost.weights_s + cost.acts_s)
        if extra > 0:
            cost.add_once(f"memory:{home.name}", extra)
            cost.once_energy_j += ws * (home.energy_pJ_per_byte - cost.w_level.energy_pJ_per_byte) * 1e-12
    return cost


def _energy_op(target: Target, kind: str, dtype: str) -> float:
    return target.energy[f"{kind}_pJ_{dtype}"] * 1e-12


def sum_rows(ctx: Context, costs, call_s: float):
    """Latency terms, energy terms and per-row terms from each row's cost: every row's
    once-per-sequence seconds, and T x (overhead + max(compute, memory) + epilogue)."""
    c, t, T, dt = ctx.counts, ctx.target, ctx.counts.seq_len, ctx.counts.dtype
    breakdown = {"call_overhead": call_s, "step_overhead": 0.0, "input_gemm": 0.0,
                 "weight_load": 0.0, "recurrent_compute": 0.0, "weight_memory": 0.0,
                 "activation_memory": 0.0, "epilogue": 0.0}
    by_bound: Dict[str, float] = {"overhead": call_s, "compute": 0.0}
    energy = {"macs": 0.0, "elementwise": 0.0, "transcendentals": 0.0, "weight_reads": 0.0, "activation_reads": 0.0}
    if ctx.implementation != "fused":   # one launch per layer for the whole sequence
        launches = t.step_overhead_s * sum(1 for r in c.layers if r.kind == "lstm")
        breakdown["call_overhead"] += launches
        by_bound["overhead"] += launches
    terms = []
    for r, k in zip(c.layers, costs):
        ws, a_step = ctx.w_step(r), ctx.a_step(r)
        memory_s = k.weights_s + k.acts_s
        step_s = k.over + max(k.compute_s, memory_s) + k.epilogue_s
        mem_bound = f"memory:{k.w_level.name}" if k.weights_s >= k.acts_s else f"memory:{ctx.act_level.name}"
        winner = "compute" if k.compute_s >= memory_s else mem_bound
        parts = {"overhead": k.over, "compute": k.epilogue_s + (k.compute_s if winner == "compute" else 0.0)}
        if winner != "compute":
            parts[winner] = parts.get(winner, 0.0) + memory_s
        n = T if r.every_step else 1
        for b, v in parts.items():
            by_bound[b] = by_bound.get(b, 0.0) + n * v
        for b, v in k.once_bound.items():
            by_bound[b] = by_bound.get(b, 0.0) + v
        breakdown["input_gemm"] += k.once_s
        breakdown["weight_load"] += k.load_s
        breakdown["step_overhead"] += n * k.over
        if winner == "compute":
            breakdown["recurrent_compute"] += n * k.compute_s
        else:
            breakdown["weight_memory"] += n * k.weights_s
            breakdown["activation_memory"] += n * k.acts_s
        breakdown["epilogue"] += n * k.epilogue_s
        energy["macs"] += n * r.macs_per_step * _energy_op(t, "mac", dt)
        energy["elementwise"] += n * (r.flops_per_step - 2 * r.macs_per_step) * _energy_op(t, "flop", dt)
        energy["transcendentals"] += n * r.transcendentals_per_step * _energy_op(t, "transcendental", dt)
        energy["weight_reads"] += n * ws * k.w_level.energy_pJ_per_byte * 1e-12 + k.once_energy_j
        energy["activation_reads"] += n * a_step * ctx.act_level.energy_pJ_per_byte * 1e-12
        terms.append(LayerTerms(
            name=r.name, weights_level=k.w_level.name, activations_level=ctx.act_level.name,
            weight_bytes_per_step=ws, activation_bytes_per_step=a_step, input_gemm_s=k.once_s,
            overhead_s=k.over, compute_s=k.compute_s, weights_s=k.weights_s, activations_s=k.acts_s,
            epilogue_s=k.epilogue_s, step_s=step_s, bound=max(parts, key=parts.get), every_step=r.every_step))
    latency = sum(breakdown.values())
    by_bound = {k: v for k, v in by_bound.items() if v > 0 or k in ("overhead", "compute")}
    return latency, breakdown, by_bound, energy, terms


def model(ctx: Context, row_cost=roofline_row, call_s: Optional[float] = None):
    """sum_rows over every row's cost (`row_cost(ctx, row)`; the roofline by default)."""
    costs = [row_cost(ctx, r) for r in ctx.counts.layers]
    return sum_rows(ctx, costs, ctx.target.call_overhead_s if call_s is None else call_s)


def check_args(target: Target, dtype: str, hoisted, threads, implementation) -> int:
    """Validates predict()'s arguments; returns the threads used."""
    check_dtype(dtype)
    if implementation == "persistent":
        raise PredictError("implementation: 'persistent' has two meanings; expected 'persistent-block' "
                           "(the shipped CUDA kernel: one block per direction, 48 KiB of shared memory) "
                           "or 'persistent-grid' (a grid-wide kernel over every SM's on-chip memory)")
    if implementation not in IMPLEMENTATIONS:
        raise PredictError(f"implementation: expected one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
    if threads is None:
        threads = target.cores
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise PredictError(f"threads: expected an integer >= 1 or None, got {threads!r}")
    if not isinstance(hoisted, bool):
        raise PredictError(f"hoisted: expected True or False, got {hoisted!r}")
    return min(threads, target.cores)


def count_for_prediction(spec, batch: int, seq_len: int, dtype: str) -> Counts:
    """counts.count, refusing the stacks counts abbreviates (a prediction walks every layer)."""
    c = count(spec, batch=batch, seq_len=seq_len, dtype=dtype)
    if any(r.repeat > 1 for r in c.layers):   # counts.MAX_LAYER_ROWS: the model walks every layer
        raise PredictError(f"spec: predict takes stacks of at most {MAX_LAYER_ROWS} layer-directions, got "
                           f"{max(s.num_layers * s.num_directions for s in ModelSpec.of(spec).stacks):,}")
    return c


def persistent_block_fits(c: Counts) -> bool:
    """Whether the shipped persistent kernel runs this model: per LSTM row, W_hh (4H x P),
    W_hr (P x H) and the batch's h, c and pre-projection h (B x (P + 2H)) within one
    block's shared-memory budget (the rule of kernels/cuda.py: persistent_smem_bytes, which
    tests/test_predict.py checks this against)."""
    nb = ACT_BYTES[c.dtype]
    for r in c.layers:
        if r.kind == "lstm":
            H, P, B = r.hidden_size, r.out_size, c.batch
            proj = P * H if r.params.get("projection") else 0
            if (4 * H * P + proj + B * P + 2 * B * H) * nb > PERSISTENT_BLOCK_SMEM_BYTES:
                return False
    return True


def predict(spec, target, batch: int = 1, seq_len: int = 1, dtype: str = "float32", *,
            hoisted: bool = True, threads: Optional[int] = None, implementation: str = "fused") -> Prediction:
    """Latency, bound, energy and memory fit of `spec` on `target` by the roofline model.

    target: a Target, a catalog name, "host" (this machine's generic figures), or a TOML
    path. hoisted: the input projection of all steps is one GEMM before the recurrence.
    threads: cores (SMs on a GPU) used; None for all. implementation: "fused" (the step
    reads the weights from the level holding them), "persistent-block" (the shipped CUDA
    kernel: one block per direction keeps W_hh in its SM's shared memory, 48 KiB; when the
    weights do not fit, the device path runs the fused kernels and so does this prediction,
    with a note) or "persistent-grid" (a grid-wide kernel keeping W_hh on every SM's chip:
    one launch per layer, a grid barrier per step)."""
    target = load_target(target)
    threads = check_args(target, dtype, hoisted, threads, implementation)
    c = count_for_prediction(spec, batch, seq_len, dtype)
    notes = []
    if implementation == "persistent-block" and not persistent_block_fits(c):
        notes.append(f"persistent-block: W_hh and the state exceed the kernel's {PERSISTENT_BLOCK_SMEM_BYTES // 1024} KiB "
                     f"shared-memory budget; lstm_cuda runs the fused step kernels, and this is their prediction")
        implementation = "fused"
    c1 = c if seq_len == 1 else count(spec, batch=batch, seq_len=1, dtype=dtype)
    ctx, ctx1 = (context(x, target, hoisted, threads, implementation) for x in (c, c1))
    pred = finish(spec, ctx, model(ctx), model(ctx1), notes)
    return pred if target.array is None else _on_array(pred, c, target)


def finish(spec, ctx: Context, seq, step, notes=()) -> Prediction:
    """The Prediction from the sequence's and one step's model results (`model`)."""
    target, c, threads = ctx.target, ctx.counts, ctx.threads
    latency, breakdown, by_bound, energy, terms = seq
    step_latency, _, step_by_bound, step_energy, _ = step
    notes = list(notes)
    persistent = ctx.implementation != "fused"
    case = ("resident" if persistent else "streamed") + ("_hoisted" if ctx.hoisted else "")
    traffic = c.traffic[case]
    home = storage_level(target)
    weights_fit = c.weight_bytes <= home.capacity_bytes
    on_chip = on_chip_capacity(target, threads)
    state_fits = ctx.buffer_bytes <= on_chip
    if persistent:
        off = [t.name for t in terms if t.weights_level in {m.name for m in target.memory if m.persistent}
               and t.name.startswith("lstm")]
        if off:
            notes.append(f"{ctx.implementation}: the recurrent weights of {', '.join(off)} do not fit on chip; "
                         f"they are read from the cache or memory every step")
    if not weights_fit:
        notes.append(f"the weights ({c.weight_bytes:,} B) exceed {home.name} ({home.capacity_bytes:,} B)")
    if not state_fits:
        notes.append(f"states and buffers ({ctx.buffer_bytes:,} B) exceed on-chip memory ({on_chip:,} B)")
    lstm_terms = [t for t in terms if t.name.startswith("lstm")] or terms
    return Prediction(
        target=target.name, spec=spec, batch=c.batch, seq_len=c.seq_len, dtype=c.dtype, hoisted=ctx.hoisted,
        threads=threads, implementation=ctx.implementation,
        latency_s=latency, step_latency_s=step_latency, max_step_rate_hz=1.0 / step_latency,
        bound=max(by_bound, key=by_bound.get), step_bound=max(step_by_bound, key=step_by_bound.get),
        breakdown=breakdown, bound_breakdown=by_bound,
        energy_j=sum(energy.values()), step_energy_j=sum(step_energy.values()), energy_breakdown=energy,
        weight_bytes=c.weight_bytes, weights_level=max(lstm_terms, key=lambda t: t.weight_bytes_per_step).weights_level,
        weights_home=home.name, weights_fit=weights_fit, buffer_bytes=ctx.buffer_bytes, on_chip_bytes=on_chip,
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
