"""B=1 recurrence on two cores: a team of two threads splits the hidden units of one layer and
direction, and meets once per step.

Thread `tid` owns hidden units [k0, k1): the 4 gate columns of those units are packed into
its own W_hh^T panel (P, 4*(k1-k0)), so each thread streams half of W_hh (at H=256 float32
that is 512 KB per core instead of 1 MB on one) and runs the fused epilogue for its units
only. Each thread also computes its own units' share of the layer's input projection (their
4*(k1-k0) rows of W_ih) before the first step, so a layer is one call per thread and the
helper's wake-up overlaps the caller's share. h is double-buffered: step s reads hbuf[s % 2] whole and writes its half of
hbuf[(s + 1) % 2]; a thread starts step s+1 only once its partner has published step s
(store_release / load_acquire on per-thread counters, each on its own cache line), so no
thread overwrites a buffer its partner is still reading.

With a projection (h = W_hr m, P < H: `team_layer_proj`) each thread also multiplies its units'
m by their columns of W_hr, a partial h of size P, and the two partials are added after the
step's barrier: still one barrier per step, and each core streams half of W_hh and of W_hr.

Never a deadlock, never a collapse:
- the partner is the guard helper thread; it must claim the work (a CAS on the claim word)
  before it starts. If it has not within `claim_spins` of the caller finishing its share of
  the projection, the caller cancels the claim
  (the same CAS) and the layer runs serially: a helper that is not scheduled costs a bounded
  spin, never a time slice;
- a waiting thread spins with `pause`, then yields its core (sched_yield) after `spin_limit`
  spins, so a partner preempted by another process gets the core back; the number of yields is
  returned, and the caller (kernels/cpu.py) runs the next calls serially for a while when the
  team had to yield often (a core is busy elsewhere);
- after `max_yields` yields the waiting thread raises the abort word and both threads stop;
  the caller then recomputes the layer serially from its saved initial state.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .atomics import cas, cpu_relax, load_acquire, sched_yield, store_release
from .guard import njit_cached
from .gemm import _gemm_panel, _gemm_panel_acc
from .rowops import FASTMATH, _epilogue
from .simd import data_ptr
CLAIM, FLAG0, FLAG1, ABORT = 0, 8, 16, 24        # int64 slots, 64 bytes apart
SYNC_LEN = 32
CANCELLED = -2
ABORTED = -1
EARLY_ABORT = -3


def new_sync() -> np.ndarray:
    return np.zeros(SYNC_LEN, np.int64)


def split_units(H: int) -> tuple:
    """(k0, k1) of each thread: halves, the first rounded to a multiple of 16 lanes if it can be."""
    mid = H // 2
    if H >= 64:
        mid = (mid + 8) // 16 * 16
    return (0, mid), (mid, H)


def unit_columns(H: int, k0: int, k1: int) -> np.ndarray:
    """The gate columns (of 4H, gates i, f, g, o) of hidden units k0:k1."""
    return np.concatenate([np.arange(q * H + k0, q * H + k1) for q in range(4)])


def pack_part(whhT: np.ndarray, peep: np.ndarray, H: int, k0: int, k1: int, has_peep: bool):
    """(W_hh^T columns of units k0:k1 for the 4 gates, (P, 4*(k1-k0)); their peepholes)."""
    part = np.ascontiguousarray(whhT[:, unit_columns(H, k0, k1)])
    pp = np.ascontiguousarray(peep[:, k0:k1]) if has_peep else peep
    return part, pp


@njit_cached(nogil=True)
def _wait_at_least(sync, idx, target, spin_limit, max_yields):
    """Wait until sync[idx] >= target. Returns the yields spent, or ABORTED."""
    spins = 0
    yields = 0
    while load_acquire(sync, idx) < target:
        if load_acquire(sync, ABORT) != 0:
            return ABORTED
        if spins < spin_limit:
            spins += 1
            cpu_relax()
        else:
            sched_yield()
            yields += 1
            if yields > max_yields:
                store_release(sync, ABORT, 1)
                return ABORTED
    return yields


@njit(inline="always")
def cross(sync, tid, count, spin_limit, max_yields):
    """The team's step barrier for thread tid: publish `count` on its flag (release), then wait
    until the partner's flag reaches it. Returns the yields spent, or ABORTED."""
    store_release(sync, FLAG0 if tid == 0 else FLAG1, count)
    return _wait_at_least(sync, FLAG1 if tid == 0 else FLAG0, count, spin_limit, max_yields)


@njit_cached(nogil=True)
def claim_as_helper(sync):
    """The helper's side of the claim: True if it may start (the caller has not cancelled)."""
    return cas(sync, CLAIM, 0, 1) == 0


@njit_cached(nogil=True)
def claim_wait(sync, claim_spins):
    """The caller's side: wait up to claim_spins for the helper's claim, else cancel it.
    True when the team is on."""
    for _ in range(claim_spins):
        if load_acquire(sync, CLAIM) == 1:
            return True
        cpu_relax()
    return cas(sync, CLAIM, 0, 2) == 1      # the helper claimed at the last moment


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _team_start(x2, wih_p, bias_p, xp, g_off, H, k0, k1, sync, tid, claim_spins, spin_limit, max_yields):
    """Both team kernels' start: the claim (tid 1), this thread's units' share of the input
    projection (xl (T, 4*hk), also scattered into xp's columns for a serial fallback), the
    caller's wait for the claim (tid 0), and the meeting before the first step.
    Returns (0 or CANCELLED or EARLY_ABORT, xl)."""
    hk = k1 - k0
    G = 4 * hk
    N = x2.shape[0]
    xl = np.empty((N, G), dtype=xp.dtype)
    if tid == 1 and not claim_as_helper(sync):
        return CANCELLED, xl
    _gemm_panel(x2, wih_p, bias_p, xl, N)
    # (through pointers: indexing xp[t, 0] made a view per row, reference-counted, and the
    # scatter had cost 6 µs per thread at T=100 H=64, more than the projection it copies)
    Xq, Lq = data_ptr(xp), data_ptr(xl)
    xrow = xp.shape[2]          # (row r of x2 is step r // B, batch row r % B of xp)
    for t in range(N):
        for q in range(4):
            dst = t * xrow + g_off + q * H + k0
            src = t * G + q * hk
            for j in range(hk):
                Xq[dst + j] = Lq[src + j]
    if tid == 0 and not claim_wait(sync, claim_spins):
        return CANCELLED, xl
    # (not counted in the yields returned: this wait covers the helper's wake-up and its share
    # of the projection, tens of µs on an idle machine, not a partner that lost its core)
    if cross(sync, tid, 1, spin_limit, max_yields) < 0:
        return EARLY_ABORT, xl
    return 0, xl


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def team_layer(x2, wih_p, bias_p, xp, g_off, wpart, peep_part, has_peep, k0, k1,
               n_steps, reverse, hbuf, c, y, y_off, sync, tid, claim_spins, spin_limit, max_yields):
    """Thread `tid`'s half of one layer and direction at B=1: first its own units' share of the
    input projection (x2 (T, E) W_ih_p^T + bias_p, W_ih_p (4*hk, E): the 4 gates' rows of units
    k0:k1, packed by gemm.pack_panels, bias_p padded by pad_panels), also scattered into xp's
    columns for a serial fallback; then steps 0..n_steps-1
    (t reversed for the reverse direction). hbuf (2, H): hbuf[0] holds h0; the final h is in
    hbuf[n_steps % 2]. c (H,): this thread updates c[k0:k1].

    The helper (tid 1) claims the team before it starts (CANCELLED if the caller has given up);
    the caller (tid 0) waits up to claim_spins for that claim once its projection is done, else
    cancels. Both then meet once before the first step (x2 may be y, which the steps overwrite)
    and once per step. Returns the yields spent waiting, or CANCELLED, EARLY_ABORT (aborted
    before any step: x2 is intact, xp may be incomplete) or ABORTED (xp is complete)."""
    H = c.shape[0]
    hk = k1 - k0
    G = 4 * hk
    status, xl = _team_start(x2, wih_p, bias_p, xp, g_off, H, k0, k1, sync, tid, claim_spins, spin_limit,
                             max_yields)
    if status != 0:
        return status
    z = np.empty((1, wpart.shape[0] // H), dtype=xp.dtype)     # 4*hk rounded up to whole panels
    hf = np.empty(hk, dtype=xp.dtype)
    cpart = c[k0:k1]
    yields = 0
    for step in range(n_steps):
        t = n_steps - 1 - step if reverse else step
        hnext = hbuf[(step + 1) & 1]
        z[0, :G] = xl[t]
        _gemm_panel_acc(hbuf[step & 1:(step & 1) + 1], 1, wpart, z)    # (1, H): this step's h
        _epilogue(z[0], cpart, peep_part, has_peep, hf)
        yrow = y[t, 0]
        for j in range(hk):
            hnext[k0 + j] = hf[j]
            yrow[y_off + k0 + j] = hf[j]
        r = cross(sync, tid, step + 2, spin_limit, max_yields)
        if r < 0:
            return ABORTED
        yields += r
    return yields


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def team_layer_proj(x2, wih_p, bias_p, xp, g_off, wpart, peep_part, has_peep, whr_p, k0, k1, p0, p1,
                    n_steps, reverse, pbuf, c, y, y_off, sync, tid, claim_spins, spin_limit, max_yields):
    """team_layer for a layer with a projection (h = W_hr m, m = o * tanh(c), h of size P < H).
    Thread `tid` owns hidden units k0:k1 as there (wpart: their gate columns of W_hh, K = P) and
    also computes its units' part of the projection, W_hr[:, k0:k1] m[k0:k1] (whr_p: those
    columns packed by gemm.pack_panels, P rows of K = hk), into pbuf[(step + 1) % 2, tid]
    (pbuf (2, 2, P)). After the step's one barrier both threads read h = pbuf[., 0] + pbuf[., 1]
    (the same sum in the same order, so the same h), and each writes its rows p0:p1 of h into
    y. pbuf[0, 0] holds h0 and pbuf[0, 1] zeros; the final h is pbuf[n % 2, 0] + pbuf[n % 2, 1].
    The claim, the start and the return values are team_layer's."""
    H = c.shape[0]
    P = pbuf.shape[2]
    hk = k1 - k0
    G = 4 * hk
    status, xl = _team_start(x2, wih_p, bias_p, xp, g_off, H, k0, k1, sync, tid, claim_spins, spin_limit,
                             max_yields)
    if status != 0:
        return status
    z = np.empty((1, wpart.shape[0] // P), dtype=xp.dtype)     # 4*hk rounded up to whole panels
    zp = np.empty((1, whr_p.shape[0] // hk), dtype=xp.dtype)   # P rounded up to whole panels
    hloc = np.empty((1, P), dtype=xp.dtype)
    mf = np.empty((1, hk), dtype=xp.dtype)
    cpart = c[k0:k1]
    for p in range(P):
        hloc[0, p] = pbuf[0, 0, p] + pbuf[0, 1, p]
    yields = 0
    for step in range(n_steps):
        t = n_steps - 1 - step if reverse else step
        z[0, :G] = xl[t]
        _gemm_panel_acc(hloc, 1, wpart, z)
        _epilogue(z[0], cpart, peep_part, has_peep, mf[0])
        zp[0, :] = 0.0
        _gemm_panel_acc(mf, 1, whr_p, zp)
        nxt = (step + 1) & 1
        pbuf[nxt, tid, :] = zp[0, :P]
        r = cross(sync, tid, step + 2, spin_limit, max_yields)
        if r < 0:
            return ABORTED
        yields += r
        yrow = y[t, 0]
        for p in range(P):
            hloc[0, p] = pbuf[nxt, 0, p] + pbuf[nxt, 1, p]
        for p in range(p0, p1):
            yrow[y_off + p] = hloc[0, p]
    return yields


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def team_layer_rows(x2, wih_p, bias_p, xp, g_off, wpart, peep_part, has_peep, k0, k1, lengths,
                    n_steps, hbuf, c, y, y_off, sync, tid, claim_spins, spin_limit, max_yields):
    """team_layer for B > 1 rows, forward direction (a unidirectional layer): thread `tid` runs
    hidden units k0:k1 of every row, so each core streams half of W_hh once per step for all
    rows (two groups of rows would each stream all of it). x2 (T*B, E); hbuf (2, B, H):
    hbuf[0] holds h0, the final h of every row is in hbuf[n_steps % 2]; c (B, H). A row
    past its length (lengths (B,)) carries its h and c over and its y rows are not written.
    The claim, the start, the one barrier per step and the return values are team_layer's."""
    B, H = c.shape[0], c.shape[1]
    hk = k1 - k0
    G = 4 * hk
    status, xl = _team_start(x2, wih_p, bias_p, xp, g_off, H, k0, k1, sync, tid, claim_spins, spin_limit,
                             max_yields)
    if status != 0:
        return status
    z = np.empty((B, wpart.shape[0] // H), dtype=xp.dtype)     # 4*hk rounded up to whole panels
    hf = np.empty(hk, dtype=xp.dtype)
    yields = 0
    for step in range(n_steps):
        t = step
        hcur, hnext = hbuf[step & 1], hbuf[(step + 1) & 1]
        for b in range(B):
            z[b, :G] = xl[t * B + b]
        _gemm_panel_acc(hcur, B, wpart, z)
        for b in range(B):
            if t < lengths[b]:
                _epilogue(z[b], c[b, k0:k1], peep_part, has_peep, hf)
                yrow = y[t, b]
                for j in range(hk):
                    hnext[b, k0 + j] = hf[j]
                    yrow[y_off + k0 + j] = hf[j]
            else:
                for j in range(hk):
                    hnext[b, k0 + j] = hcur[b, k0 + j]
        r = cross(sync, tid, step + 2, spin_limit, max_yields)
        if r < 0:
            return ABORTED
        yields += r
    return yields
