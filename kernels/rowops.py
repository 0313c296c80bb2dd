"""The per-row building blocks of the CPU kernels: the fused epilogue and the axpy-form
matvec, shared by the rows recurrence (cpu.py), the two-thread team (team.py) and the stream.

fastmath: only {"contract"} (fused multiply-add). "nnan"/"ninf" would let LLVM drop the NaN
propagation users rely on and the inf/0 behaviour of saturated gates; "reassoc" is not needed
because every product is written as axpys over contiguous rows (here) or as register tiles of
explicit vectors (kernels/gemm.py), which vectorize without it.
error_model="numpy" everywhere: Python's model checks every float division for zero and
raises, and that branch stops LLVM from vectorizing the epilogue.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .activations import vexp_neg
from .guard import njit_cached

FASTMATH = {"contract"}


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _vexp_neg(a, ibuf, n):
    """a[:n] = exp(a[:n]) in place, for a <= 0, in a's precision (kernels/activations.py)."""
    vexp_neg(a, ibuf, n)


@njit(inline="always", error_model="numpy")
def _sig(e, z, one):
    """σ(z) given e = exp(-|z|)."""
    s = one / (one + e)
    return s if z >= 0 else e * s


@njit(inline="always", error_model="numpy")
def _tanh(e2, z, one):
    """tanh(z) given e2 = exp(-2|z|)."""
    t = (one - e2) / (one + e2)
    return t if z >= 0 else -t


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _epilogue(z, c, peep, has_peep, a, s, ibuf, hf):
    """Gates from pre-activations z (4H: i,f,g,o) -> c updated in place, hf = o*tanh(c').

    a, s (4H) and ibuf (4H) are scratch; a's dtype is the precision of the activations and the
    cell update (float32 scratch with int32 ibuf, or float64 with int64: activations.py).
    """
    H = c.shape[0]
    ft = a.dtype.type
    one = ft(1.0)
    two = ft(2.0)
    for k in range(H):
        zi = ft(z[k])
        zf = ft(z[H + k])
        zg = ft(z[2 * H + k])
        if has_peep:
            ck = ft(c[k])
            zi += ft(peep[0, k]) * ck
            zf += ft(peep[1, k]) * ck
        s[k] = zi
        s[H + k] = zf
        s[2 * H + k] = zg
        a[k] = -abs(zi)
        a[H + k] = -abs(zf)
        a[2 * H + k] = -two * abs(zg)
    _vexp_neg(a, ibuf, 3 * H)
    for k in range(H):
        i = _sig(a[k], s[k], one)
        f = _sig(a[H + k], s[H + k], one)
        g = _tanh(a[2 * H + k], s[2 * H + k], one)
        cn = f * ft(c[k]) + i * g
        c[k] = cn
        zo = ft(z[3 * H + k])
        if has_peep:
            zo += ft(peep[2, k]) * cn
        s[k] = zo
        s[H + k] = cn
        a[k] = -abs(zo)
        a[H + k] = -two * abs(cn)
    _vexp_neg(a, ibuf, 2 * H)
    for k in range(H):
        hf[k] = _sig(a[k], s[k], one) * _tanh(a[H + k], s[H + k], one)


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _axpy_rows(z, wT, v):
    """z[j] += sum_p wT[p, j] * v[p]: the matvec W v with W^T packed (n, G), four p at a time."""
    n, G = wT.shape
    p = 0
    while p + 4 <= n:
        v0, v1, v2, v3 = v[p], v[p + 1], v[p + 2], v[p + 3]
        w0, w1, w2, w3 = wT[p], wT[p + 1], wT[p + 2], wT[p + 3]
        for j in range(G):
            z[j] += v0 * w0[j] + v1 * w1[j] + v2 * w2[j] + v3 * w3[j]
        p += 4
    while p < n:
        v0 = v[p]
        w0 = wT[p]
        for j in range(G):
            z[j] += v0 * w0[j]
        p += 1


