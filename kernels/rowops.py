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

from .activations import sigmoid, tanh
from .guard import njit_cached

FASTMATH = {"contract"}


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _epilogue(z, c, peep, has_peep, hf):
    """Gates from pre-activations z (4H: i,f,g,o) -> c updated in place, hf = o*tanh(c').

    One loop over the hidden units, which LLVM vectorizes whole (activations.py: the exp is
    inlined, nothing goes through scratch). hf's dtype is the precision of the activations
    and the cell update: the model's.
    """
    H = c.shape[0]
    ft = hf.dtype.type
    for k in range(H):
        zi = ft(z[k])
        zf = ft(z[H + k])
        ck = ft(c[k])
        if has_peep:
            zi += ft(peep[0, k]) * ck
            zf += ft(peep[1, k]) * ck
        cn = sigmoid(zf) * ck + sigmoid(zi) * tanh(ft(z[2 * H + k]))
        c[k] = cn
        zo = ft(z[3 * H + k])
        if has_peep:
            zo += ft(peep[2, k]) * cn
        hf[k] = sigmoid(zo) * tanh(cn)


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


