"""Numba CPU fused-gate LSTM kernels.

Versions (all numerically interchangeable with kernels/reference.py):
- every product is a panel GEMM (kernels/gemm.py): the weights packed in panels of four
  vectors of gate rows, register tiles of up to four rows of X against one panel;
- the input projection W_ih x + (b_ih + b_hh) for every time step, both directions, is one
  GEMM hoisted out of the recurrence (`_projection`, `_gemm_panel`); large ones in two halves
  on two cores (guard.run_two), or as a prange (`_gemm_panel_parallel`) when there are more
  than two blocks of rows;
- "rows" recurrence (`_layer_rows`): small batches. Each block of rows runs the whole time
  loop (rows are independent, so no per-step barrier); each step does the recurrent product
  (`_gemm_panel_acc`), all rows of a block sharing each pass over W_hh, then the fused epilogue. One block (B=1) runs serially; a bidirectional
  layer's two directions, or two blocks, run on two cores through guard.run_two; more blocks
  as a prange region;
- B=1, one direction, large projection (`_layer_pipelined`): the helper thread computes
  chunks of the projection while the caller runs the recurrence; whoever claims a chunk
  (CAS) computes it, so a helper that is not scheduled costs nothing;
- B=1 two-thread team (team.py): hidden units split between two threads with a per-step
  barrier, each computing its units' share of the projection; taken from config.team_min_macs
  recurrent MACs per layer (1.1-1.9x serial measured from H=128 to H=1024 at T=100);
- "gemm" recurrence, large batches whose W_hh overflows several L2s (config.gemm_min_batch,
  gemm_min_l2_multiple): without a projection `_layer_gemm_split` (per step, each
  half of the hidden units does its own GEMM and epilogue on its core); with one
  `_layer_gemm` (a BLAS GEMM per step, then the row epilogue, threaded when large);
- `stream_step`: one step of every layer for a streaming caller, no allocation.

The fused epilogue (rowops.py) computes in the model's precision (activations.py's float32
or float64 exp); guard.py makes the kernels safe under fork, Python threads and an unusable
Numba cache. fastmath choices are explained in rowops.py.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from . import guard, resident, team
from .atomics import cas, store_release
from .guard import njit_cached
from .rowops import FASTMATH, _axpy_rows, _epilogue  # noqa: F401

# error_model="numpy" everywhere: Python's model checks every float division for zero and
# raises, and that branch stops LLVM from vectorizing the epilogue.


# Tunables and the choice of path live in kernels/plan.py, read by the host cost model too.
from .plan import CPUConfig, config, plan_layer  # noqa: E402,F401  (cpu.config is the public handle)
# The small GEMMs (kernels/gemm.py), used here and by the team; re-exported under their old names.
from .gemm import (_gemm_panel, _gemm_panel_acc, _gemm_panel_impl, _gemm_panel_parallel, _jit_variant,  # noqa: E402,F401
                   pack_panels, pad_panels, panel_row_block)


# ---------------------------------------------------------------------------------------
# elementwise pieces
# ---------------------------------------------------------------------------------------
@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _finish_row(hf, whrT, has_proj, h, yrow):
    """h = W_hr hf (or hf), and the same values into this step's output row."""
    if has_proj:
        h[:] = 0.0
        _axpy_rows(h, whrT, hf)
    else:
        h[:] = hf
    yrow[:] = h


# ---------------------------------------------------------------------------------------
# recurrences
# ---------------------------------------------------------------------------------------
def _layer_rows_impl(xp, g_off, whhP, whrT, peep, has_proj, has_peep, lengths, reverse,
                     rows_per_block, b0, b1, h, c, y, y_off):
    """One layer and direction, rows path, batch rows b0:b1. xp (T,B,D*4H) holds W_ih x + bias;
    this direction's gates are columns g_off:g_off+4H. whhP: W_hh (4H, P) packed by
    gemm.pack_panels. h (B,P), c (B,H) hold h0/c0 and receive the final state. y (T,B,D*P):
    this direction writes columns y_off:y_off+P (rows past their end untouched). (A row range,
    not views of the rows: views of a batch's rows are 'A'-layout arrays, whose row copies
    Numba does not vectorize: two groups of 32 rows at H=32 ran 1.57x slower as views.)"""
    T = xp.shape[0]
    P = h.shape[1]
    H = c.shape[1]
    G = 4 * H
    Gp = whhP.shape[0] // P        # 4H rounded up to whole panels
    nblk = (b1 - b0 + rows_per_block - 1) // rows_per_block
    for blk in prange(nblk):
        r0 = b0 + blk * rows_per_block
        nr = min(b1, r0 + rows_per_block) - r0
        z = np.empty((nr, Gp), dtype=xp.dtype)
        hf = np.empty(H, dtype=xp.dtype)     # activations in the model's precision
        act = np.empty(nr, dtype=np.int64)
        hact = np.empty((nr, P), dtype=xp.dtype)
        for step in range(T):
            t = T - 1 - step if reverse else step
            if nr == 1:
                # one row (B=1, or the last block): its h row is the product's input, no
                # bookkeeping of active rows (0.96 against 1.13 µs per step at H=64)
                if t < lengths[r0]:
                    z[0, :G] = xp[t, r0, g_off:g_off + G]
                    _gemm_panel_acc(h[r0:r0 + 1], 1, whhP, z)
                    _epilogue(z[0], c[r0], peep, has_peep, hf)
                    _finish_row(hf, whrT, has_proj, h[r0], y[t, r0, y_off:y_off + P])
            else:
                na = 0
                for r in range(nr):
                    if t < lengths[r0 + r]:
                        act[na] = r0 + r
                        z[na, :G] = xp[t, r0 + r, g_off:g_off + G]
                        hact[na, :] = h[r0 + r]
                        na += 1
                _gemm_panel_acc(hact, na, whhP, z)      # register tiles of rows x one panel of W_hh
                for q in range(na):
                    b = act[q]
                    _epilogue(z[q], c[b], peep, has_peep, hf)
                    _finish_row(hf, whrT, has_proj, h[b], y[t, b, y_off:y_off + P])


# One block of rows runs serially for short sequences (config.parallel_single_block_min_steps):
# a parallel region costs a wake-up and a join even with one iteration.
_layer_rows = _jit_variant(_layer_rows_impl, "_parallel", fastmath=FASTMATH, parallel=True)
_layer_rows_serial = _jit_variant(_layer_rows_impl, "_serial", fastmath=FASTMATH)


# ---------------------------------------------------------------------------------------
# B=1, one direction: the input projection pipelined beside the recurrence
# ---------------------------------------------------------------------------------------
_PIPE_BASE = 32        # sync slots below are team.py's (ABORT at 24); chunk c: claim, done


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _proj_rows(x2, wp, bp, xp2, r0, r1):
    """xp2[r0:r1] = x2[r0:r1] W_ih^T + bias (W_ih packed in panels)."""
    _gemm_panel(x2[r0:r1], wp, bp, xp2[r0:r1], r1 - r0)


@njit_cached(nogil=True)
def _proj_chunks_helper(x2, wp, bp, xp2, chunk, sync):
    """The helper's side: every chunk of rows it can claim (CAS 0 -> 1), in order."""
    N = x2.shape[0]
    nch = (N + chunk - 1) // chunk
    for ci in range(nch):
        if cas(sync, _PIPE_BASE + 16 * ci, 0, 1) == 0:
            _proj_rows(x2, wp, bp, xp2, ci * chunk, min(N, (ci + 1) * chunk))
            store_release(sync, _PIPE_BASE + 16 * ci + 8, 1)
    return 0


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _layer_one_pipelined(x2, wp, bp, chunk, sync, spin_limit, max_yields,
                         xp, xp2, whhP, whrT, peep, has_proj, has_peep, n, h, c, y, y_off):
    """B=1, forward, one direction: the recurrence over steps 0..n-1, each chunk of the input
    projection either computed here (when the helper has not claimed it: CAS 0 -> 2) or waited
    for (claimed by the helper). Before returning, every chunk the helper could still touch is
    claimed or waited for, so xp is free for the next layer. Returns the yields spent waiting,
    or team.ABORTED."""
    N = x2.shape[0]
    nch = (N + chunk - 1) // chunk
    P = h.shape[1]
    H = c.shape[1]
    G = 4 * H
    z = np.empty((1, whhP.shape[0] // P), dtype=xp.dtype)
    hf = np.empty(H, dtype=xp.dtype)
    waits = 0
    for t in range(n):
        if t % chunk == 0:
            ci = t // chunk
            if cas(sync, _PIPE_BASE + 16 * ci, 0, 2) == 0:
                _proj_rows(x2, wp, bp, xp2, ci * chunk, min(N, (ci + 1) * chunk))
            else:
                r = team._wait_at_least(sync, _PIPE_BASE + 16 * ci + 8, 1, spin_limit, max_yields)
                if r < 0:
                    return team.ABORTED
                waits += r
        z[0, :G] = xp[t, 0]
        _gemm_panel_acc(h, 1, whhP, z)
        _epilogue(z[0], c[0], peep, has_peep, hf)
        _finish_row(hf, whrT, has_proj, h[0], y[t, 0, y_off:y_off + P])
    for ci in range((n + chunk - 1) // chunk, nch):     # chunks past the sequence's end
        if cas(sync, _PIPE_BASE + 16 * ci, 0, 2) != 0:
            r = team._wait_at_least(sync, _PIPE_BASE + 16 * ci + 8, 1, spin_limit, max_yields)
            if r < 0:
                return team.ABORTED
    return waits


_pipe_state = {"serial_until": 0.0, "runs": 0, "fallbacks": 0}


def _layer_pipelined(x2, pk, xp, lens, hd, cd, y, spec):
    """One unidirectional layer at B=1 with its projection chunks shared with the helper
    thread (see _layer_one_pipelined). Falls back to the plain order from saved state if the
    wait ever aborts; backs off to the plain order for a while after any wait had to yield."""
    n = int(lens[0])
    chunk = config.pipeline_chunk_steps
    sync = np.zeros(_PIPE_BASE + 16 * (-(-x2.shape[0] // chunk)), np.int64)
    cfg = config
    helper_done = threading.Event()
    xp2 = xp.reshape(xp.shape[0] * xp.shape[1], xp.shape[2])

    def helper():
        try:
            _proj_chunks_helper(x2, pk.wihP, pk.biasP, xp2, chunk, sync)
        finally:
            helper_done.set()
    h_saved, c_saved = hd.copy(), cd.copy()
    posted = guard.post_to_helper(helper)
    r = _layer_one_pipelined(x2, pk.wihP, pk.biasP, chunk, sync, cfg.team_spin_limit,
                             cfg.team_max_yields, xp, xp2, pk.whhP[0], pk.whrT[0], pk.peep[0], spec.proj_size > 0,
                             spec.peephole, n, hd, cd, y, 0)
    _pipe_state["runs"] += 1
    if r < 0:
        if posted:
            helper_done.wait()
        _pipe_state["fallbacks"] += 1
        _pipe_state["serial_until"] = time.monotonic() + cfg.team_backoff_s
        hd[:], cd[:] = h_saved, c_saved
        _projection_serial(x2, pk, xp2)
        _layer_rows_serial(xp, 0, pk.whhP[0], pk.whrT[0], pk.peep[0], spec.proj_size > 0, spec.peephole,
                           lens, False, 1, 0, 1, hd, cd, y, 0)
    elif r > 0:
        _pipe_state["serial_until"] = time.monotonic() + cfg.team_backoff_s


def _epilogue_gemm_step_impl(zb, xp_t, g_off, whrT, peep, has_proj, has_peep, lengths, t,
                        h, c, y_t, y_off, hf):
    """The gemm path's fused epilogue for step t: zb (B,4H) = h W_hh^T from BLAS; adds
    xp_t's gates, then updates c, h and y_t for every row still inside its sequence."""
    B, G = zb.shape
    P = h.shape[1]
    for b in prange(B):
        if t < lengths[b]:
            zr = zb[b]
            xr = xp_t[b, g_off:g_off + G]
            for j in range(G):
                zr[j] += xr[j]
            _epilogue(zr, c[b], peep, has_peep, hf[b])
            _finish_row(hf[b], whrT, has_proj, h[b], y_t[b, y_off:y_off + P])


_epilogue_gemm_step = _jit_variant(_epilogue_gemm_step_impl, "_parallel", fastmath=FASTMATH, parallel=True)
_epilogue_gemm_step_serial = _jit_variant(_epilogue_gemm_step_impl, "_serial", fastmath=FASTMATH)


def _layer_gemm(xp, g_off, whhT, whrT, peep, has_proj, has_peep, lengths, reverse, h, c, y, y_off,
                parallel=False):
    """One layer and direction, gemm path: same contract as `_layer_rows`."""
    T, B = xp.shape[0], xp.shape[1]
    G = whhT.shape[1]
    H = G // 4
    zb = np.empty((B, G), dtype=xp.dtype)
    hf = np.empty((B, H), dtype=xp.dtype)
    epilogue = _epilogue_gemm_step if parallel else _epilogue_gemm_step_serial
    with guard.parallel_lock() if parallel else guard.NULL_LOCK:
        for step in range(T):
            t = T - 1 - step if reverse else step
            np.dot(h, whhT, out=zb)
            epilogue(zb, xp[t], g_off, whrT, peep, has_proj, has_peep, lengths, t,
                     h, c, y[t], y_off, hf)



@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _gemm_step_part(hcur, wpart, zero_bias, xp_t, g_off, H, k0, k1, peep_part, has_peep, lengths, t,
                    c, hnext, y_t, y_off, zb, hf, row_block):
    """One thread's half of a large-batch step, hidden units k0:k1 of every row: their gate
    pre-activations h W_part^T (W_part (4*hk, P), the 4 gates' rows of those units, packed by
    gemm.pack_panels; zero_bias: pad_panels of zeros), the input
    gates from xp_t, the fused epilogue, then hnext, c and y_t for those units. Rows past their
    end carry their state over (h is double-buffered)."""
    B = hcur.shape[0]
    hk = k1 - k0
    _gemm_panel(hcur, wpart, zero_bias, zb, row_block)
    for b in range(B):
        if t < lengths[b]:
            zr = zb[b]
            xr = xp_t[b]
            for q in range(4):
                src = g_off + q * H + k0
                for j in range(hk):
                    zr[q * hk + j] += xr[src + j]
            _epilogue(zr, c[b, k0:k1], peep_part, has_peep, hf)
            for j in range(hk):
                hnext[b, k0 + j] = hf[j]
                y_t[b, y_off + k0 + j] = hf[j]
        else:
            for j in range(hk):
                hnext[b, k0 + j] = hcur[b, k0 + j]


def _gemm_parts(weights):
    """Per layer and direction: the two threads' (k0, k1), W_part (4*hk, P) in panels and peepholes."""
    def build(w):
        out = []
        for pk in packed_layers(w):
            H = pk.whhT[0].shape[1] // 4
            dirs = []
            for d in range(len(pk.whhT)):
                parts = []
                for k0, k1 in team.split_units(H):
                    wT, pp = team.pack_part(pk.whhT[d], pk.peep[d], H, k0, k1, w.spec.peephole)
                    parts.append((k0, k1, pack_panels(wT.T), pp))
                dirs.append(tuple(parts))
            out.append(tuple(dirs))
        return tuple(out)
    return weights.packed("cpu-gemm-parts-v2", build)


def _layer_gemm_split(parts, xp, g_off, has_peep, lengths, reverse, h, c, y, y_off):
    """One layer and direction of the large-batch path without projection: per step, the two
    halves of the hidden units on two cores (guard.run_two: the helper takes the second half if
    it is free, else the caller does), each with its own GEMM and epilogue."""
    T, B = xp.shape[0], xp.shape[1]
    H = c.shape[1]
    dt = xp.dtype
    hbuf = np.empty((2, B, h.shape[1]), dt)
    hbuf[0] = h
    scratch = []
    for k0, k1, wpart, pp in parts:
        G = 4 * (k1 - k0)
        scratch.append((pad_panels(np.zeros(G, dt)), np.empty((B, G), dt), np.empty(k1 - k0, dt)))
    rb = config.gemm_row_block
    for step in range(T):
        t = T - 1 - step if reverse else step
        hcur, hnext = hbuf[step & 1], hbuf[(step + 1) & 1]
        calls = [functools.partial(_gemm_step_part, hcur, wpart, zb0, xp[t], g_off, H, k0, k1, pp, has_peep,
                                   lengths, t, c, hnext, y[t], y_off, zb, hf, rb)
                 for (k0, k1, wpart, pp), (zb0, zb, hf) in zip(parts, scratch)]
        guard.run_two(calls[0], calls[1])
    h[:] = hbuf[T & 1]


# ---------------------------------------------------------------------------------------
# packing and the stack driver
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackedLayer:
    wih: np.ndarray     # (D*4H, E_l): both directions' input weights stacked (BLAS projection)
    wihP: np.ndarray    # the same packed in panels (gemm.pack_panels): the own projection GEMMs
    bias: np.ndarray    # (D*4H,): b_ih + b_hh per direction
    biasP: np.ndarray   # the same padded to whole panels (gemm.pad_panels)
    whhT: tuple         # D x (P, 4H): the BLAS step, the stream step and the split paths' packing
    whhP: tuple         # D x W_hh (4H, P) packed in panels: the rows kernel's recurrent product
    whrT: tuple         # D x (H, P), or (1, 1) placeholders without projection
    peep: tuple         # D x (3, H), or (3, 1) placeholders without peepholes


def _pack(weights) -> tuple:
    spec = weights.spec
    dt = weights.dtype
    out = []
    for dirs in weights.layers:
        wih = np.ascontiguousarray(np.concatenate([lw.w_ih for lw in dirs], axis=0))
        bias = np.concatenate([lw.bias_sum() for lw in dirs]).astype(dt)
        out.append(PackedLayer(
            wih=wih,
            wihP=pack_panels(wih),
            bias=bias,
            biasP=pad_panels(bias),
            whhT=tuple(np.ascontiguousarray(lw.w_hh.T) for lw in dirs),
            whhP=tuple(pack_panels(lw.w_hh) for lw in dirs),
            # writable copies of the frozen weights: a read-only array is another Numba type,
            # and every kernel would be compiled a second time for it
            whrT=tuple(np.ascontiguousarray(lw.w_hr.T) if spec.proj_size else np.zeros((1, 1), dt)
                       for lw in dirs),
            peep=tuple(np.array(lw.peep) if spec.peephole else np.zeros((3, 1), dt) for lw in dirs),
        ))
    return tuple(out)


def packed_layers(weights) -> tuple:
    """The kernels' layout, built once and cached on the weights object."""
    return weights.packed("cpu-v4", _pack)


def project_serial(x2, wp, bp, xp2):
    """xp2 = x2 W_ih^T + bias on one thread: the panel GEMM (W_ih packed by gemm.pack_panels,
    the bias by pad_panels), rows in blocks that stay in L2. The host model's "own" table
    times this."""
    _gemm_panel(x2, wp, bp, xp2, panel_row_block(x2.shape[1], x2.itemsize))


def parallel_row_block(N: int, K: int, itemsize: int) -> int:
    """Rows per block of the prange projection: at least four blocks per thread (so a slow
    thread's share can be taken by the others), at most panel_row_block's L2 budget."""
    return max(4, min(panel_row_block(K, itemsize), -(-N // (16 * numba.get_num_threads())) * 4))


def _projection_serial(x2, pk, xp2):
    """project_serial with a layer's packed weights."""
    project_serial(x2, pk.wihP, pk.biasP, xp2)


def _projection(x2, pk, xp2, kind):
    """The hoisted input projection xp2 = x2 W_ih^T + bias: one GEMM over all T*B rows and
    both directions, in the form plan_layer chose (`kind`): "own_halves" splits the rows in two
    halves over guard.run_two, "blas" is np.dot, "own_parallel" the prange GEMM (over blocks of
    rows, parallel_row_block), "own_serial" one thread. No Numba team for the first two:
    a join that a busy core can stall."""
    N = x2.shape[0]
    if kind == "own_halves":
        half = (N // 2 + 3) // 4 * 4
        guard.run_two(lambda: _projection_serial(x2[:half], pk, xp2[:half]),
                      lambda: _projection_serial(x2[half:], pk, xp2[half:]))
    elif kind == "blas":
        np.dot(x2, pk.wih.T, out=xp2)
        xp2 += pk.bias
    elif kind == "own_parallel":
        with guard.parallel_lock():
            _gemm_panel_parallel(x2, pk.wihP, pk.biasP, xp2, parallel_row_block(N, x2.shape[1], x2.itemsize))
    else:
        _projection_serial(x2, pk, xp2)


# The team backs off (runs the serial plan) for config.team_backoff_s after a call that aborted,
# or the second call in a row whose helper did not claim in time; or when its last two calls of
# a layer shape were both slower per step than the serial plan's median over its last three
# timed calls of that shape (serial_hist, timed during back-offs), or, before there is such a
# time, after a call that yielded its core on more than half of its steps: a core shared with
# another process makes the team slower than one core alone. Two calls, not one: a single slow
# call (a page fault, a preempted vCPU) sent the team to the serial plan for 0.2 s, which in a
# benchmark loop was the whole run.
_team_state = {"serial_until": 0.0, "runs": 0, "resident_runs": 0, "resident_failures": 0, "fallbacks": 0, "slower": 0, "busy": 0, "cancels": 0,
               "cancel_streak": 0,
               "serial_hist": {}, "team_hist": {}}


def _record_serial_step(E: int, H: int, P: int, B: int, itemsize: int, t0, lens) -> None:
    """The serial plan's seconds per step (of max(lens) steps) for this layer shape, timed from
    t0 (None: not timed); the last three are kept."""
    n = int(lens.max()) if t0 is not None else 0
    if n > 0:
        hist = _team_state["serial_hist"].setdefault((E, H, P, B, itemsize), [])
        hist.append((time.perf_counter() - t0) / n)
        del hist[:-3]


def _serial_step_s(key):
    """The median of the serial plan's last three timed seconds per step for this layer shape
    (E, H, P, B, itemsize), or None before the first."""
    hist = _team_state["serial_hist"].get(key)
    return sorted(hist)[len(hist) // 2] if hist else None


def _team_parts(weights):
    """Per layer: (k0, k1) twice and each thread's (W_hh rows, peepholes, W_ih rows, bias) for its
    units, the weights packed in panels and the bias padded (gemm.pack_panels, pad_panels), cached."""
    def build(w):
        out = []
        for pk in packed_layers(w):
            H = pk.whhT[0].shape[1] // 4
            splits = team.split_units(H)
            parts = []
            for k0, k1 in splits:
                wpart, pp = team.pack_part(pk.whhT[0], pk.peep[0], H, k0, k1, w.spec.peephole)
                cols = team.unit_columns(H, k0, k1)
                # with a projection, this thread's columns of W_hr (P, H) for team_layer_proj
                whr = (pack_panels(np.ascontiguousarray(pk.whrT[0][k0:k1].T)) if w.spec.proj_size
                       else pk.whrT[0])
                parts.append((pack_panels(wpart.T), pp, pack_panels(pk.wih[cols]), pad_panels(pk.bias[cols]), whr))
            out.append((splits, tuple(parts)))
        return tuple(out)
    return weights.packed("cpu-team-v4", build)


def _layer_team_or_serial(weights, l, x2, pk, xp, lens, hd, cd, y, spec, rpb=1):
    """One unidirectional layer (projection and recurrence) through the two-thread team
    (team.py: team_layer at B=1, team_layer_proj with a projection, team_layer_rows for B > 1
    rows), or serially (blocks of rpb rows) when the helper is busy, does not claim in time, or
    the team aborts (then from saved state)."""
    B = cd.shape[0]
    n = int(lens.max())
    ((k0, k1), (k2, k3)), parts = _team_parts(weights)[l]
    H, P = cd.shape[1], hd.shape[1]
    proj = spec.proj_size > 0
    if B > 1:
        hbuf = np.empty((2, B, H), xp.dtype)
        hbuf[0] = hd
    elif proj:    # partial projections per thread (team_layer_proj): h0 + 0 is h0
        hbuf = np.zeros((2, 2, P), xp.dtype)
        hbuf[0, 0] = hd[0]
    else:
        hbuf = np.empty((2, H), xp.dtype)
        hbuf[0] = hd[0]
    halves = ((0, P // 2), (P // 2, P))
    c = cd[0] if B == 1 else cd
    c_saved = c.copy()
    sync = team.new_sync()
    cfg = config
    helper_done = threading.Event()

    def run(tid, k_lo, k_hi):
        wpart, pp, wih_p, bias_p, whr_p = parts[tid]
        if B > 1:
            return team.team_layer_rows(x2, wih_p, bias_p, xp, 0, wpart, pp, spec.peephole, k_lo, k_hi, lens,
                                        n, hbuf, c, y, 0, sync, tid, cfg.team_claim_spins, cfg.team_spin_limit,
                                        cfg.team_max_yields)
        if proj:
            return team.team_layer_proj(x2, wih_p, bias_p, xp, 0, wpart, pp, spec.peephole, whr_p, k_lo, k_hi,
                                        *halves[tid], n, False, hbuf, c, y, 0, sync, tid, cfg.team_claim_spins,
                                        cfg.team_spin_limit, cfg.team_max_yields)
        return team.team_layer(x2, wih_p, bias_p, xp, 0, wpart, pp, spec.peephole, k_lo, k_hi,
                               n, False, hbuf, c, y, 0, sync, tid, cfg.team_claim_spins, cfg.team_spin_limit,
                               cfg.team_max_yields)

    def helper():
        try:
            run(1, k2, k3)
        finally:
            helper_done.set()
    t0 = time.perf_counter()
    helper_res = resident.get(cfg) if resident.awake() and not proj and B == 1 else None
    if helper_res is not None and guard.claim_helper():
        # the resident helper (kernels/resident.py) takes thread 1's half from a mailbox; when
        # team_lead returns, the helper is done with this call's arrays (or never took them)
        try:
            helper_res.nudge()      # (spinning: nothing; dozed off since the check: wake it)
            (w0, pp0, wih0, b0, _), (w1, pp1, wih1, b1, _) = parts
            r = resident.team_lead(helper_res.mail, x2, xp, spec.peephole, n, False, hbuf, c, y, 0, sync,
                                   cfg.resident_claim_spins, cfg.team_spin_limit, cfg.team_max_yields,
                                   wih0, b0, w0, pp0, k0, k1, wih1, b1, w1, pp1, k2, k3)
        finally:
            guard.release_helper()
        helper_done.set()
        _team_state["resident_runs"] += 1
    else:
        r = run(0, k0, k1) if guard.post_to_helper(helper) else team.CANCELLED
    per_step = (time.perf_counter() - t0) / max(n, 1)
    _team_state["runs"] += 1
    # A resident team that failed costs little to try again: its back-off starts short and
    # doubles with every failure in a row (a core kept busy elsewhere), up to team_backoff_s x 8.
    if helper_res is not None:
        backoff = min(cfg.resident_backoff_s * 2.0 ** _team_state["resident_failures"], 8 * cfg.team_backoff_s)
    else:
        backoff = cfg.team_backoff_s
    if r < 0:
        # cancelled (the helper never started, or will return at once) or aborted: the layer
        # serially, from the saved state; after an early abort or a cancel xp is recomputed
        if r != team.CANCELLED:
            helper_done.wait()                      # once the helper has stopped writing
            _team_state["fallbacks"] += 1
        _team_state["cancels"] += r == team.CANCELLED
        _team_state["cancel_streak"] = _team_state["cancel_streak"] + 1 if r == team.CANCELLED else 0
        # an abort backs off at once (a partner that stopped for 200,000 yields); a helper that
        # did not claim in time, on the second call in a row (one late claim is a preempted
        # vCPU: at H=512 single cancels had sent 12% of the calls to the serial plan)
        if r != team.CANCELLED or _team_state["cancel_streak"] >= 2:
            _team_state["serial_until"] = time.monotonic() + backoff
            _team_state["resident_failures"] += helper_res is not None
            _team_state["cancel_streak"] = 0
        c[:] = c_saved
        if r != team.ABORTED:
            _projection_serial(x2, pk, xp.reshape(xp.shape[0] * xp.shape[1], xp.shape[2]))
        _layer_rows_serial(xp, 0, pk.whhP[0], pk.whrT[0], pk.peep[0], proj, spec.peephole, lens, False,
                           rpb, 0, B, hd, cd, y, 0)
        return
    key = (x2.shape[1], H, P, B, xp.itemsize)
    ref = _serial_step_s(key)
    recent = _team_state["team_hist"].setdefault(key, [])
    recent.append(per_step)
    del recent[:-2]
    # Against the serial plan's time when there is one; else yields on half the steps (a core
    # taken away) send the next calls to the serial plan, which measures it. Yields alone are
    # noise at long steps: at H=1024 (a 100 µs step streaming W_hh from L3) the two halves run
    # at uneven speeds on the idle VM and a thread waited past the spin limit on many steps,
    # which sent most calls to the serial plan: 36 ms against 19.5 ms.
    # A resident team call twice as slow per step as the serial plan is a failure on its own:
    # the helper lost its core to another process, and its back-off doubles (one core busy
    # elsewhere had made B=1 H=64 calls 3.5x slower when only pairs of slow calls counted).
    strike = helper_res is not None and ref is not None and per_step > 2 * ref
    if strike or ((len(recent) == 2 and min(recent) > ref) if ref is not None else (r > n // 2)):
        _team_state["slower"] += ref is not None
        _team_state["busy"] += ref is None
        _team_state["serial_until"] = time.monotonic() + backoff
        _team_state["resident_failures"] += helper_res is not None
        recent.clear()
    elif helper_res is not None and r == 0:
        _team_state["resident_failures"] = 0       # a call without a single yield
    if B > 1:
        hd[:] = hbuf[n & 1]
    else:
        hd[0] = hbuf[n & 1, 0] + hbuf[n & 1, 1] if proj else hbuf[n & 1]


def lstm_cpu(x, weights, h0, c0, lengths):
    """Run the stack. x (T,B,E) C-contiguous in weights.dtype; h0 (L*D,B,P), c0 (L*D,B,H) or
    None; lengths (B,) int64 or None. Inputs must already be validated (edgelstm._checks).
    Returns (y (T,B,D*P), (h_n, c_n)) in torch.nn.LSTM semantics."""
    spec = weights.spec
    T, B, _ = x.shape
    L, D, H, P = spec.num_layers, spec.num_directions, spec.hidden_size, spec.out_size
    dt = weights.dtype
    h_n = np.zeros((L * D, B, P), dt) if h0 is None else np.array(h0, dtype=dt, order="C")
    c_n = np.zeros((L * D, B, H), dt) if c0 is None else np.array(c0, dtype=dt, order="C")
    if lengths is None:     # np.empty + fill: np.full costs 0.4 µs more per call
        lens = np.empty(B, np.int64)
        lens.fill(T)
    else:
        lens = lengths
    nthreads = numba.get_num_threads()
    forked = not guard.parallel_allowed() and nthreads > 1     # a forked child: no Numba region
    awake = resident.awake()
    layer_in = x
    # One gate buffer and one output buffer for the whole stack: every layer's xp and y have
    # the same shape, and layer l's projection has read y (its input) before its recurrence
    # overwrites it. Fresh buffers per layer cost a page fault per 4 KB page (per 2 MB huge
    # page above 4 MB) on first touch whenever the allocator hands back new pages, which it
    # did for every layer after the first (1-10 ms per call measured at H=64-256, B=16, T=200).
    # Rows past a sequence's end are never written by any layer, so they stay zero.
    xp = np.empty((T, B, D * 4 * H), dt)
    xp2 = xp.reshape(T * B, D * 4 * H)
    y = (np.zeros if lengths is not None else np.empty)((T, B, D * P), dt)
    for l, pk in enumerate(packed_layers(weights)):
        E_l = layer_in.shape[2]
        x2 = layer_in.reshape(T * B, E_l)
        plan = plan_layer(T, B, E_l, H, D, nthreads, proj=spec.proj_size, forked=forked,
                          itemsize=dt.itemsize, resident=awake)
        # A layer the team takes when the resident helper spins (kernels/resident.py): no
        # pipelined projection for it (guard.py's helper, whose post sends the resident one to
        # sleep; the two had taken turns on the second core), and a sleeping resident helper is
        # woken for the next calls while this one runs serially.
        resident_layer = (B == 1 and config.resident_spin > 0 and not forked and not spec.proj_size
                          and (plan.recurrence == "team" if awake else
                               plan_layer(T, B, E_l, H, D, nthreads, proj=spec.proj_size, forked=forked,
                                          itemsize=dt.itemsize, resident=True).recurrence == "team"))
        # (not while the team backs off: a helper spinning beside a busy core slows this call)
        if resident_layer and not awake and time.monotonic() >= _team_state["serial_until"]:
            helper = resident.get(config)
            if helper is not None:
                helper.nudge()
        t_serial = None
        if plan.recurrence == "team":
            if time.monotonic() >= _team_state["serial_until"]:
                _layer_team_or_serial(weights, l, x2, pk, xp, lens, h_n[l], c_n[l], y, spec, plan.rows_per_block)
                layer_in = y
                continue
            # backing off: the serial plan, timed, for the team's next comparison
            plan = plan_layer(T, B, E_l, H, D, nthreads, proj=spec.proj_size, forked=forked, team=False,
                              itemsize=dt.itemsize)
            t_serial = time.perf_counter()
        if (plan.projection == "own_pipelined" and not resident_layer
                and time.monotonic() >= _pipe_state["serial_until"]):
            _layer_pipelined(x2, pk, xp, lens, h_n[l], c_n[l], y, spec)
            _record_serial_step(E_l, H, P, B, dt.itemsize, t_serial, lens)
            layer_in = y
            continue
        kind = "own_serial" if plan.projection == "own_pipelined" else plan.projection
        _projection(x2, pk, xp2, kind)
        rpb = plan.rows_per_block
        for d in range(D):
            args = (xp, d * 4 * H, pk.whhP[d], pk.whrT[d], pk.peep[d], spec.proj_size > 0,
                    spec.peephole, lens, d == 1)
            hd, cd = h_n[l * D + d], c_n[l * D + d]
            rec = plan.recurrence
            if rec == "split":
                _layer_gemm_split(_gemm_parts(weights)[l][d], xp, d * 4 * H, spec.peephole, lens, d == 1,
                                  hd, cd, y, d * P)
            elif rec == "blas":
                _layer_gemm(xp, d * 4 * H, pk.whhT[d], *args[3:], hd, cd, y, d * P, plan.epilogue_parallel)
            elif rec == "two_blocks":
                # the blocks in two groups of rows, one per core through guard.run_two, not a
                # Numba region whose join a busy core stalls
                sp = -(-plan.blocks // 2) * rpb
                guard.run_two(lambda: _layer_rows_serial(*args, rpb, 0, sp, hd, cd, y, d * P),
                              lambda: _layer_rows_serial(*args, rpb, sp, B, hd, cd, y, d * P))
            elif rec == "prange":
                with guard.parallel_lock():
                    _layer_rows(*args, rpb, 0, B, hd, cd, y, d * P)
            elif rec == "two_directions":
                if d == 0:
                    args1 = (xp, 4 * H, pk.whhP[1], pk.whrT[1], pk.peep[1], spec.proj_size > 0,
                             spec.peephole, lens, True)
                    h1, c1 = h_n[l * D + 1], c_n[l * D + 1]
                    guard.run_two(lambda: _layer_rows_serial(*args, B, 0, B, hd, cd, y, 0),
                                  lambda: _layer_rows_serial(*args1, B, 0, B, h1, c1, y, P))
            else:
                _layer_rows_serial(*args, rpb, 0, B, hd, cd, y, d * P)
        _record_serial_step(E_l, H, P, B, dt.itemsize, t_serial, lens)
        layer_in = y
    return layer_in, (h_n, c_n)


# ---------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------
@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def stream_step(x, wih0T, wihT_up, whhT, bias, whrT, peep, has_proj, has_peep,
                h, c, z, hf, out):
    """One time step of every layer (unidirectional), in place.

    x (B,E); wih0T (E,4H) layer 0; wihT_up (max(L-1,1),P,4H) layers above; whhT (L,P,4H);
    bias (L,4H); whrT (L,H,P) or (L,1,1); peep (L,3,H) or (L,3,1); h (L,B,P), c (L,B,H)
    updated in place; scratch z (4H), hf (H) in the model's precision;
    out (B,P) receives the top layer's h.
    """
    L, B = h.shape[0], h.shape[1]
    for b in range(B):
        for l in range(L):
            z[:] = bias[l]
            if l == 0:
                _axpy_rows(z, wih0T, x[b])
            else:
                _axpy_rows(z, wihT_up[l - 1], h[l - 1, b])
            _axpy_rows(z, whhT[l], h[l, b])
            _epilogue(z, c[l, b], peep[l], has_peep, hf)
            if has_proj:
                h[l, b, :] = 0.0
                _axpy_rows(h[l, b], whrT[l], hf)
            else:
                h[l, b, :] = hf
        out[b, :] = h[L - 1, b]


def pack_stream(weights) -> tuple:
    """(wih0T, wihT_up, whhT, bias, whrT, peep) for `stream_step`, cached on the weights."""
    def build(w):
        pk = packed_layers(w)
        spec, dt = w.spec, w.dtype
        P, H = spec.out_size, spec.hidden_size
        up = [p.wih.T for p in pk[1:]] or [np.zeros((P, 4 * H), dt)]
        return (np.ascontiguousarray(pk[0].wih.T), np.ascontiguousarray(np.stack(up)),
                np.ascontiguousarray(np.stack([p.whhT[0] for p in pk])),
                np.ascontiguousarray(np.stack([p.bias for p in pk])),
                np.ascontiguousarray(np.stack([p.whrT[0] for p in pk])),
                np.ascontiguousarray(np.stack([p.peep[0] for p in pk])))
    return weights.packed("cpu-stream-v1", build)
