"""predict_host: the model of edgelstm's own CPU kernel (kernels/cpu.py) on this machine.

It follows the kernel's plan (kernels/plan.py: which path a layer takes, how rows are split
over threads, what is allocated, passed and called) and charges every item the price
calibration measured for it on this machine (the host profile). Rows that are not LSTM
layers (an embedding, a dense head), and any request the CPU kernel does not run (not
hoisted, a persistent GPU implementation, a dtype other than float32/float64), get the
generic roofline of costmodel/predict.py on this machine's generic figures.
docs/host-model.md has the equations.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from edgelstm.kernels.plan import FACTS, CPUConfig, config as kernel_config, plan_layer

from ..counts import ACT_BYTES, count
from ..predict import (Context, Prediction, RowCost, _flags, check_args, context, count_for_prediction, finish,
                       model, place_activations, place_weights, roofline_row)
from ..target import TargetError
from .profile import HostProfile, HostTarget, KERNEL_DTYPES


# -- rates from the profile's tables ---------------------------------------------------------
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


def gemm_flops_per_s(host: HostTarget, dtype: str, threads: int, m: int, kn: int, routine: str) -> float:
    """FLOP/s of the kernel routine `routine` on an (m x k) @ (k x n) product with k*n = kn:
    the profile's table, bilinear in log m and log kn, clamped at its edges. A quick
    calibration measures float32 only: float64 is then the float32 rate times the ratio of
    the two measured peaks (one thread)."""
    pts = [g for g in host.profile.gemm if g.dtype == dtype and g.routine == routine]
    if not pts and dtype != "float32" and any(g.dtype == "float32" for g in host.profile.gemm):
        ratio = host.peak_macs_per_s(dtype, 1) / host.peak_macs_per_s("float32", 1)
        return ratio * gemm_flops_per_s(host, "float32", threads, m, kn, routine)
    if not pts:
        raise TargetError(f"{host.name}: no [[host.gemm]] points for routine {routine!r} and {dtype} "
                          f"(run `edgelstm calibrate` again)")
    counts_ = sorted({g.threads for g in pts})
    th = max([t for t in counts_ if t <= threads] or counts_[:1])
    table = {(g.m, g.k * g.n): g.GFLOP_per_s * 1e9 for g in pts if g.threads == th}
    ms, kns = sorted({k[0] for k in table}), sorted({k[1] for k in table})
    if len(table) != len(ms) * len(kns):
        raise TargetError(f"{host.name}: [[host.gemm]] points of {routine} {dtype} do not form an m x (k*n) grid")
    (m0, m1, fm), (k0, k1, fk) = _bracket(ms, m), _bracket(kns, kn)
    if routine in ("matvec", "team") and k0 != k1 and host.memory:
        # The matvec streams its k x n matrix, so its rate is a property of the level holding
        # that matrix (one core's copy): never interpolate it across the boundary to a shared
        # level (L3, DRAM): a matrix held in L3 takes the rate of the neighbouring L3 point.
        # Between private levels the rate depends on the shape as much as on the level, and
        # the log-log interpolation follows both.
        nb = ACT_BYTES[dtype]
        lv = lambda x: place_weights(host, x * nb, 1)
        here, lo, hi = lv(kn), lv(k0), lv(k1)
        if lo.name != hi.name and here.name in (lo.name, hi.name) and (lo.shared or hi.shared):
            k0 = k1 = k0 if here.name == lo.name else k1
            fk = 0.0
    logr = ((1 - fm) * (1 - fk) * math.log(table[m0, k0]) + fm * (1 - fk) * math.log(table[m1, k0])
            + (1 - fm) * fk * math.log(table[m0, k1]) + fm * fk * math.log(table[m1, k1]))
    return math.exp(logr)


def projection_rate(host: HostTarget, dt: str, threads: int, m: int, K: int, N: int, routine: str) -> float:
    """FLOP/s of the own GEMM (routine "own" or "rowblocks", both the panel GEMM) on
    (m x K) @ (K x N). The tables were measured on W of 4k x k, where k is both the reduction
    length and the size; a projection with a short reduction (a narrow input, 4K < N) pays
    each register tile's fixed work (loading and storing its accumulators) over fewer FMAs
    than the point of its size: its rate is at most the point's with the same reduction
    length (k = K)."""
    r = gemm_flops_per_s(host, dt, threads, m, K * N, routine)
    if 4 * K < N:
        r = min(r, gemm_flops_per_s(host, dt, threads, m, 4 * K * K, routine))
    return r


def _has_table(p, routine: str) -> bool:
    """Whether the profile holds [[host.gemm]] points of `routine` (a full calibration's)."""
    return any(g.routine == routine for g in p.gemm)


def elementwise_row_s(host: HostTarget, routine: str, dtype: str, H: int, threads: int) -> Optional[float]:
    """Seconds per batch row of the kernel's elementwise block `routine` at hidden size H:
    the profile's table, log-log interpolated in H, proportional to H past its largest H,
    clamped below its smallest. None when the profile has no such table. Without a table for
    the dtype (a quick calibration measures float32 only), the float32 one: the epilogue
    computes in float64 whatever the storage type."""
    pts = ([e for e in host.profile.elementwise if e.routine == routine and e.dtype == dtype]
           or [e for e in host.profile.elementwise if e.routine == routine and e.dtype == "float32"])
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


def njit_call_s(p: HostProfile, n_args: int) -> float:
    """A Python call of an @njit function with n_args arguments (dispatch unboxes each)."""
    return p.njit_call_s + max(n_args - 1, 0) * p.njit_arg_s


def inner_calls_s(p: HostProfile, calls: int, args: int) -> float:
    """`calls` JIT-to-JIT calls passing `args` array views in all."""
    return calls * p.inner_call_s + max(args - calls, 0) * p.inner_arg_s


def activation_s(p: HostProfile, dtype: str, n: int, passes: int) -> float:
    """`passes` vectorized sigmoid/tanh passes over n elements in all, on one core."""
    # (the sigmoid pass works on float64 scratch: float32's figure stands in when float64 is missing)
    ns = p.sigmoid_ns.get(dtype, p.sigmoid_ns.get("float32", 0.0))
    return (passes * p.sigmoid_pass_ns.get(dtype, p.sigmoid_pass_ns.get("float32", 0.0)) + n * ns) * 1e-9


def wrapper_once_s(p: HostProfile) -> float:
    """lstm()'s fixed Python-side cost per call: wrapper_s when calibration timed it as a
    whole (it holds the pieces and the interpreter's statements between them), else the
    pieces counted from kernels/plan.py: one validation, one get_num_threads, the call's
    allocations and views."""
    if p.wrapper_s:
        return p.wrapper_s
    return p.check_s + p.py_threads_s + FACTS.call_allocs * p.py_alloc_s + FACTS.call_views * p.py_view_s


def wrapper_row_s(p: HostProfile, D: int) -> float:
    """lstm_cpu's Python work for one layer and direction: the measured wrapper_layer_s
    (shared by the layer's D directions) + wrapper_dir_s, else the views counted."""
    if p.wrapper_s:
        return p.wrapper_layer_s / D + p.wrapper_dir_s
    return (FACTS.layer_views + FACTS.dir_views) * p.py_view_s


# -- one layer and direction of the kernel ---------------------------------------------------
def kernel_row(host: HostTarget, r, D: int, T: int, B: int, dt: str, threads: int, cfg: CPUConfig,
               call_kn: int = 0) -> dict:
    """Seconds for one layer and direction of kernels/cpu.py, following its plan: which path
    the batch takes, how rows are split over threads, what is hoisted. Every rate is a
    calibrated figure of the routine the kernel calls, at this shape.

    call_kn: the weights of the whole call, in elements. A table's rate at k*n is that of a
    matrix reused from the level holding it; a call's first pass over a matrix finds it where
    the previous call left it, in the level holding all of the call's weights. So the first
    step's product and a projection of at most 4 rows (one pass over W_ih) are charged at the
    rate for call_kn when that is larger (T=1 calls of stacks whose weights outgrow L2)."""
    p, F = host.profile, FACTS
    H, P, E = r.hidden_size, r.out_size, r.input_size
    G = 4 * H
    proj, peep = _flags(r)
    t_all = max(1, min(threads, host.cores))
    peak_1 = 2 * host.peak_macs_per_s(dt, 1)
    # (repeated calls, as bench times them: the resident helper spins between them, and B=1
    # layers from team_resident_min_macs take the team through it)
    plan = plan_layer(T, B, E, H, D, t_all, cfg, proj=P if proj else 0, itemsize=np.dtype(dt).itemsize,
                      resident=cfg.resident_spin > 0)
    # Work the plan puts on two cores through guard.run_two (no Numba region): halves of the
    # projection, of a large batch, or the two directions side by side. Charged at the
    # t_all-thread rate of the same routine, plus the hand-off: the helper starts its half
    # helper_wake_s after the post (the caller meanwhile runs its own half, and takes the
    # helper's too if it finishes first), so two tasks of X seconds take X + min(X, wake).
    two = plan.two_cores and t_all > 1
    wake = p.helper_wake_s
    nb = ACT_BYTES[dt]
    home = place_weights(host, call_kn * nb, 1)

    def cold_read_s(n_elements):
        """A first pass over n_elements of weights that the previous call left in `home` (the
        level holding the call's weights), read by one core at that level's bandwidth: the
        floor under a table rate measured on a matrix reused from a faster level."""
        return n_elements * nb / home.bandwidth_for(1) if call_kn > n_elements else 0.0
    out = {"path": plan.path}
    # Hoisted projection: one GEMM per layer for both directions, T*B rows; attributed per direction.
    rows_in = T * B
    # the large-batch path's GEMM, with a full calibration's "rowblocks" table
    rowblocks = plan.path == "gemm" and _has_table(p, "rowblocks")
    one_pass = False          # one thread, at most 4 rows: one pass over W_ih, from where the last call left it
    if plan.projection == "blas":
        rate = gemm_flops_per_s(host, dt, host.cores, rows_in, E * G * D, "dot")
    elif rowblocks:
        # the large-batch projection: `_gemm_panel` in the gemm path's row blocks, in halves on two cores when planned
        rate = projection_rate(host, dt, t_all if two else 1, rows_in, E, G * D, "rowblocks")
    else:
        # own_pipelined (B=1: chunks computed beside the recurrence) is charged like the halves:
        # the second core takes part of it, and the overlap with the recurrence is not credited.
        shared = plan.projection == "own_parallel" or (two and plan.projection in ("own_halves", "own_pipelined"))
        one_pass = rows_in <= 4 and not shared
        rate = projection_rate(host, dt, t_all if shared else 1, rows_in, E, G * D, "own")
        if one_pass and call_kn > E * G * D:
            rate = min(rate, gemm_flops_per_s(host, dt, 1, rows_in, call_kn, "own"))
    out["projection"] = 2 * rows_in * E * G / rate      # measured per call: dispatch included
    if one_pass:
        out["projection"] = max(out["projection"], cold_read_s(E * G * D) / D)
    if two and plan.projection == "own_halves" and not rowblocks:
        out["projection"] += min(out["projection"], wake)   # (the rowblocks table's pairs include it)
    # Per row and step: the epilogue (one vectorized loop of 5H sigmoid/tanh and the cell
    # update) and, with a projection, h = W_hr h; composed when there is no measured table.
    elementwise = (r.flops_per_step - 2 * r.macs_per_step) / B
    # the projection h = W_hr hf per row: the "finish_proj" table (measured at P = H/2; the
    # matvec's work grows with P), else at the matvec table's rate
    fp = elementwise_row_s(host, "finish_proj", dt, H, 1) if proj else None
    proj_s = (0.0 if not proj else fp * P / max(H // 2, 1) if fp is not None
              else 2 * H * P / gemm_flops_per_s(host, dt, 1, 1, H * P, "matvec"))
    composed = (activation_s(p, dt, r.transcendentals_per_step // B, 1) + elementwise / peak_1
                + inner_calls_s(p, F.row_calls, F.row_call_args) + proj_s)
    # The tables are measured without projection and peepholes: add the peephole FMAs (3H)
    # and the projection matvec when the spec has them.
    extra = (6 * H / peak_1 if peep else 0.0) + proj_s
    py = wrapper_row_s(p, D)
    if plan.path == "gemm":
        # With a projection ("blas"): a BLAS GEMM per step (np.dot from Python) and a JIT
        # epilogue call over all rows. Without ("split"): edgelstm's own GEMM and the epilogue,
        # each batch half on its own core.
        split = plan.recurrence == "split" and two
        if plan.recurrence == "split":   # own GEMM: on both cores, or on one at threads=1
            dot = 2 * B * P * G / gemm_flops_per_s(host, dt, t_all if split else 1, B, P * G,
                                                   "rowblocks" if rowblocks else "own")
        else:
            dot = 2 * B * P * G / gemm_flops_per_s(host, dt, host.cores, B, P * G, "dot")
        rows_busy = -(-B // t_all) if plan.epilogue_parallel or split else B
        # (a quick calibration has no "gemm_step" table: the rows table's per-row epilogue)
        table = None if plan.epilogue_parallel else (elementwise_row_s(host, "gemm_step", dt, H, 1)
                                                     or elementwise_row_s(host, "rows", dt, H, 1))
        epi_row = composed if table is None else table + extra
        out["step_overhead"] = (njit_call_s(p, F.gemm_step_args) + F.gemm_step_views * p.py_view_s
                                + (host.parallel_step_overhead_s if plan.epilogue_parallel else 0.0))
        out["product"] = dot
        out["epilogue"] = rows_busy * epi_row
        out["layer"] = py + F.gemm_layer_allocs * p.py_alloc_s + p.py_threads_s
        return out
    if plan.recurrence == "team":
        # Two threads, each with its half of the hidden units: its share of the projection
        # (one thread's own GEMM, both halves at once), per step its half of the gate columns
        # (the matvec measured with both threads running) and the epilogue of its units, one
        # barrier crossing; per layer the helper's wake-up and its call. With a projection
        # (team_layer_proj) each thread also multiplies its units by their columns of W_hr
        # (`extra / 2`: half the projection matvec), and the product's K is P.
        # With a "team" table (a full calibration on 2+ cores) the product, the h exchange and
        # the barrier come from the measured team step; else the matvec with both threads
        # running plus a bare barrier crossing.
        # B > 1 rows (team_layer_rows): the "team" table at B rows (measured at 1, 2 and 4),
        # B rows of the half's epilogue.
        half = G // 2
        out["projection"] = 2 * rows_in * E * half / projection_rate(host, dt, 1, rows_in, E, half, "own")
        measured = _has_table(p, "team")
        out["product"] = 2 * B * P * half / gemm_flops_per_s(host, dt, t_all, B, P * half,
                                                             "team" if measured else "block")
        table = elementwise_row_s(host, "rows", dt, max(H // 2, 1), t_all)
        out["epilogue"] = B * (composed / 2 if table is None else table + extra / 2)
        out["step_overhead"] = 0.0 if measured else p.team_barrier_s
        if cfg.resident_spin > 0 and not proj and B == 1:     # the resident helper: one team_lead call, no wake-up
            out["layer"] = py + njit_call_s(p, F.team_lead_args)
        else:
            args = F.team_rows_args if B > 1 else F.team_proj_args if proj else F.team_args
            out["layer"] = py + 2 * njit_call_s(p, args) + p.helper_wake_s
        out["w_share"] = 0.5          # each core streams half of W_hh
        return out
    # Rows path: blocks of rows per thread over the whole sequence, one region per layer.
    rpb, nblk = plan.rows_per_block, plan.blocks
    active = min(t_all, nblk) if plan.recurrence in ("two_blocks", "prange") else 1
    blocks_busy = -(-nblk // active)
    rows_busy = min(B, blocks_busy * rpb)
    def step_product(kn):
        # one `_gemm_panel_acc` call per block and step: its "block" table at the block's rows
        s_, left = 0.0, rows_busy
        while left > 0:
            nr = min(rpb, left)
            s_ += inner_calls_s(p, 1, F.product_args)
            s_ += 2 * nr * P * G / gemm_flops_per_s(host, dt, active, nr, kn, "block")
            left -= nr
        return s_
    product = step_product(P * G)
    # the first step's pass over W_hh, from where the previous call left it
    first_extra = (max(step_product(call_kn), cold_read_s(P * G)) - product) if call_kn > P * G else 0.0
    # The parallel variant's loop body is parfor-lowered even for one block, so it takes the
    # "rows" table measured as a prange loop (threads = t_all); the serial one the serial table.
    region = plan.rows_parallel and t_all > 1
    # Two blocks or two directions over run_two run the serial variant's code on each core, both
    # cores busy: the table measured with all threads running. (Until the fifth session they
    # took the serial table, because the prange table times parfor-lowered code, which had run
    # 15-25% faster per row; with the panel GEMMs the rows path's product shrank and the two-core
    # slowdown of the per-row work showed: B=8 H=64 T=100, 4 rows per core, 0.27 ms for one group
    # alone and 0.39 for both over run_two, of which the helper's start is about 0.06.)
    paired = two and plan.recurrence in ("two_blocks", "two_directions")
    table = elementwise_row_s(host, "rows", dt, H, t_all if region or paired else 1)
    epi_row = composed if table is None else table + extra
    # Two directions side by side (one per core): this direction's share of the wall time.
    share = 0.5 if plan.recurrence == "two_directions" and two and D == 2 else 1.0
    out["product"] = share * product
    out["epilogue"] = share * rows_busy * epi_row
    out["step_overhead"] = 0.0
    out["layer"] = (py + njit_call_s(p, F.rows_args) + blocks_busy * F.rows_block_allocs * p.alloc_s
                    + (host.parallel_step_overhead_s if region else 0.0) + share * max(first_extra, 0.0))
    if two and plan.recurrence in ("two_directions", "two_blocks"):
        task = T * (product + rows_busy * epi_row)      # one of the two run_two tasks
        out["layer"] += share * min(task, wake)
    return out


def _kernel_row_cost(ctx: Context, r, cfg: CPUConfig) -> RowCost:
    """RowCost of an LSTM row run by the CPU kernel."""
    host, c, th = ctx.target, ctx.counts, ctx.threads
    B, T, dt = c.batch, c.seq_len, c.dtype
    D = 2 if (r.name.endswith(".reverse") or any(o.name == r.name + ".reverse" for o in c.layers)) else 1
    k = kernel_row(host, r, D, T, B, dt, th, cfg, call_kn=c.weight_bytes // ACT_BYTES[dt])
    ws = ctx.w_step(r)
    cost = RowCost(w_level=place_weights(host, ws * k.get("w_share", 1.0), 1))
    cost.add_once("compute", k["projection"])
    cost.once_energy_j += r.input_weight_bytes * place_weights(host, r.input_weight_bytes, th).energy_pJ_per_byte * 1e-12
    if k["path"] == "gemm":   # the bias pass over the gate buffer (xp += b), read and written once
        buf = place_activations(host, T * r.gate_buffer_bytes_per_step // 2, th)
        cost.add_once(f"memory:{buf.name}", T * r.gate_buffer_bytes_per_step / buf.bandwidth_for(1))
    cost.add_once("overhead", k["layer"])
    cost.over, cost.epilogue_s = k["step_overhead"], k["epilogue"]
    if cost.w_level.kind == "cache" and not cost.w_level.shared:
        cost.compute_s = k["product"]
    else:  # the product streams W from a shared level (L3, DRAM): its measured rate is that level's
        cost.weights_s = k["product"]
    return cost


def kernel_runs(host: HostTarget, dtype: str, hoisted: bool, implementation: str) -> bool:
    """Whether the CPU kernel runs this request (else the roofline on the generic figures)."""
    return (host.profile is not None and hoisted and implementation == "fused" and dtype in KERNEL_DTYPES)


def predict_host(spec, host: HostTarget, batch: int = 1, seq_len: int = 1, dtype: str = "float32", *,
                 hoisted: bool = True, threads: Optional[int] = None, implementation: str = "fused",
                 cfg: Optional[CPUConfig] = None) -> Prediction:
    """Latency, bound, energy and fit of `spec` run by kernels/cpu.py on this machine.
    cfg: the kernel's tunables (default: the live kernels.plan.config)."""
    threads = check_args(host, dtype, hoisted, threads, implementation)
    c = count_for_prediction(spec, batch, seq_len, dtype)
    c1 = c if seq_len == 1 else count(spec, batch=batch, seq_len=1, dtype=dtype)
    ctxs = [context(x, host, hoisted, threads, implementation) for x in (c, c1)]
    if not kernel_runs(host, dtype, hoisted, implementation):
        return finish(spec, ctxs[0], model(ctxs[0]), model(ctxs[1]),
                      ["the CPU kernel does not run this request: the roofline on this machine's generic figures"])
    cfg = cfg or kernel_config

    def row_cost(ctx, r):
        return _kernel_row_cost(ctx, r, cfg) if r.kind == "lstm" else roofline_row(ctx, r)
    call_s = wrapper_once_s(host.profile)
    return finish(spec, ctxs[0], model(ctxs[0], row_cost, call_s), model(ctxs[1], row_cost, call_s))
