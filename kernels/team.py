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
    N = x2.shape[0]
    if tid == 1 and not claim_as_helper(sync):
        return CANCELLED
    xl = np.empty((N, G), dtype=xp.dtype)
    _gemm_panel(x2, wih_p, bias_p, xl, N)
    # (through pointers: indexing xp[t, 0] made a view per row, reference-counted, and the
    # scatter had cost 6 µs per thread at T=100 H=64, more than the projection it copies)
    Xq, Lq = data_ptr(xp), data_ptr(xl)
    xrow = xp.shape[1] * xp.shape[2]
    for t in range(N):
        for q in range(4):
            dst = t * xrow + g_off + q * H + k0
            src = t * G + q * hk
            for j in range(hk):
                Xq[dst + j] = Lq[src + j]
    if tid == 0 and not claim_wait(sync, claim_spins):
        return CANCELLED
    z = np.empty((1, wpart.shape[0] // H), dtype=xp.dtype)     # 4*hk rounded up to whole panels
    hf = np.empty(hk, dtype=xp.dtype)
    cpart = c[k0:k1]
    me = FLAG0 if tid == 0 else FLAG1
    other = FLAG1 if tid == 0 else FLAG0
    store_release(sync, me, 1)
    # (not counted in the yields returned: this wait covers the helper's wake-up and its share
    # of the projection, tens of µs on an idle machine, not a partner that lost its core)
    if _wait_at_least(sync, other, 1, spin_limit, max_yields) < 0:
        return EARLY_ABORT
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
        store_release(sync, me, step + 2)
        r = _wait_at_least(sync, other, step + 2, spin_limit, max_yields)
        if r < 0:
            return ABORTED
        yields += r
    return yields
