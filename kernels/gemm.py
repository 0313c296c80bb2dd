"""The CPU kernels' own small GEMMs (no BLAS): the hoisted input projection and the
recurrent product of blocks of rows. Shared by kernels/cpu.py and the two-thread team
(team.py); the host cost model's routine tables time them by name.

- `_gemm_bias` (`_gemm_bias_parallel`: prange over blocks of rows): out = X W^T + bias, 4 x 4
  register blocks (`_dot4x4`);
- `_gemm_bias_axpy`: the same in axpy form, while four output rows fit L1;
- `_gemm_acc`: out[:N] += X[:N] W^T, the rows kernel's blocks of four or more rows;
- `_gemm_rowblocks`: the large-batch GEMM, W streamed once per block of rows.
"""
from __future__ import annotations

import types

from numba import njit, prange

from .guard import njit_cached
from .rowops import FASTMATH, FASTMATH_DOT, _axpy_rows


def _jit_variant(impl, suffix, **options):
    """njit a copy of `impl` under its own name. Numba's on-disk cache keys a function by
    its qualified name and line, not by its options: two njit(cache=True) wrappers of one
    Python function (a parallel and a serial variant) share one cache entry, and whichever
    compiled first is what both run. A renamed copy gets a cache entry of its own."""
    f = types.FunctionType(impl.__code__, impl.__globals__, impl.__name__ + suffix,
                           impl.__defaults__, impl.__closure__)
    f.__qualname__ = impl.__qualname__ + suffix
    f.__doc__ = impl.__doc__
    return njit_cached(error_model="numpy", nogil=True, **options)(f)


@njit(inline="always", fastmath=FASTMATH_DOT, error_model="numpy")
def _dot4x4(x0, x1, x2, x3, w0, w1, w2, w3, K, zero):
    """The 16 dot products of 4 rows of X with 4 rows of W over K, sharing 8 vector loads per
    k: the microkernel of both small GEMMs below (inlined, so LLVM sees one loop)."""
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = zero
    for k in range(K):
        p0, p1, p2, p3 = x0[k], x1[k], x2[k], x3[k]
        q0, q1, q2, q3 = w0[k], w1[k], w2[k], w3[k]
        a00 += p0 * q0; a01 += p0 * q1; a02 += p0 * q2; a03 += p0 * q3
        a10 += p1 * q0; a11 += p1 * q1; a12 += p1 * q2; a13 += p1 * q3
        a20 += p2 * q0; a21 += p2 * q1; a22 += p2 * q2; a23 += p2 * q3
        a30 += p3 * q0; a31 += p3 * q1; a32 += p3 * q2; a33 += p3 * q3
    return (a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33)


def _gemm_bias_impl(X, W, bias, out):
    """out (N,G) = X (N,K) W^T + bias, W (G,K) row-major, 4 x 4 blocks (_dot4x4). Used for
    the small hoisted projections, where a threaded BLAS call costs more in wake-ups than it
    saves; jitted serial and parallel (prange over blocks of rows) below."""
    N, K = X.shape
    G = W.shape[0]
    zero = out.dtype.type(0)
    for blk in prange((N + 3) // 4):
        n0 = 4 * blk
        n1, n2, n3 = min(n0 + 1, N - 1), min(n0 + 2, N - 1), min(n0 + 3, N - 1)
        x0, x1, x2, x3 = X[n0], X[n1], X[n2], X[n3]
        for j0 in range(0, G, 4):
            j1, j2, j3 = min(j0 + 1, G - 1), min(j0 + 2, G - 1), min(j0 + 3, G - 1)
            (a00, a01, a02, a03, a10, a11, a12, a13,
             a20, a21, a22, a23, a30, a31, a32, a33) = _dot4x4(x0, x1, x2, x3, W[j0], W[j1], W[j2], W[j3],
                                                               K, zero)
            # Clamped indices repeat the last row/column: the same value is written twice.
            out[n0, j0] = a00 + bias[j0]; out[n0, j1] = a01 + bias[j1]
            out[n0, j2] = a02 + bias[j2]; out[n0, j3] = a03 + bias[j3]
            out[n1, j0] = a10 + bias[j0]; out[n1, j1] = a11 + bias[j1]
            out[n1, j2] = a12 + bias[j2]; out[n1, j3] = a13 + bias[j3]
            out[n2, j0] = a20 + bias[j0]; out[n2, j1] = a21 + bias[j1]
            out[n2, j2] = a22 + bias[j2]; out[n2, j3] = a23 + bias[j3]
            out[n3, j0] = a30 + bias[j0]; out[n3, j1] = a31 + bias[j1]
            out[n3, j2] = a32 + bias[j2]; out[n3, j3] = a33 + bias[j3]


@njit_cached(fastmath=FASTMATH_DOT, error_model="numpy", nogil=True)
def _gemm_acc(X, W, out, N):
    """out[:N] += X[:N] W^T, W (G,K) row-major, 4 x 4 blocks (_dot4x4): the recurrent
    product of a block of 4 or more active rows in the rows kernel. Serial."""
    K = X.shape[1]
    G = W.shape[0]
    zero = out.dtype.type(0)
    for blk in range((N + 3) // 4):
        n0 = 4 * blk
        n1, n2, n3 = min(n0 + 1, N - 1), min(n0 + 2, N - 1), min(n0 + 3, N - 1)
        x0, x1, x2, x3 = X[n0], X[n1], X[n2], X[n3]
        for j0 in range(0, G, 4):
            j1, j2, j3 = min(j0 + 1, G - 1), min(j0 + 2, G - 1), min(j0 + 3, G - 1)
            (a00, a01, a02, a03, a10, a11, a12, a13,
             a20, a21, a22, a23, a30, a31, a32, a33) = _dot4x4(x0, x1, x2, x3, W[j0], W[j1], W[j2], W[j3],
                                                               K, zero)
            # Clamped indices repeat the last row/column: accumulate each (n, j) only once.
            out[n0, j0] += a00
            if j1 != j0:
                out[n0, j1] += a01
            if j2 != j1:
                out[n0, j2] += a02
            if j3 != j2:
                out[n0, j3] += a03
            if n1 != n0:
                out[n1, j0] += a10
            if n1 != n0 and j1 != j0:
                out[n1, j1] += a11
            if n1 != n0 and j2 != j1:
                out[n1, j2] += a12
            if n1 != n0 and j3 != j2:
                out[n1, j3] += a13
            if n2 != n1:
                out[n2, j0] += a20
            if n2 != n1 and j1 != j0:
                out[n2, j1] += a21
            if n2 != n1 and j2 != j1:
                out[n2, j2] += a22
            if n2 != n1 and j3 != j2:
                out[n2, j3] += a23
            if n3 != n2:
                out[n3, j0] += a30
            if n3 != n2 and j1 != j0:
                out[n3, j1] += a31
            if n3 != n2 and j2 != j1:
                out[n3, j2] += a32
            if n3 != n2 and j3 != j2:
                out[n3, j3] += a33



@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _gemm_bias_axpy(X, WT, bias, out):
    """out (N,G) = X (N,K) WT (K,G) + bias in axpy form: four output rows share each load of a
    WT row; the form that wins while four rows of G stay in L1 and K is small
    (config.projection_axpy_max_bytes, projection_axpy_max_k)."""
    N, K = X.shape
    G = WT.shape[1]
    n0 = 0
    while n0 + 4 <= N:
        o0, o1, o2, o3 = out[n0], out[n0 + 1], out[n0 + 2], out[n0 + 3]
        x0, x1, x2, x3 = X[n0], X[n0 + 1], X[n0 + 2], X[n0 + 3]
        for j in range(G):
            b = bias[j]
            o0[j] = b
            o1[j] = b
            o2[j] = b
            o3[j] = b
        k = 0
        while k + 2 <= K:
            w0, w1 = WT[k], WT[k + 1]
            a0, a1, a2, a3 = x0[k], x1[k], x2[k], x3[k]
            b0, b1, b2, b3 = x0[k + 1], x1[k + 1], x2[k + 1], x3[k + 1]
            for j in range(G):
                u = w0[j]
                v = w1[j]
                o0[j] += a0 * u + b0 * v
                o1[j] += a1 * u + b1 * v
                o2[j] += a2 * u + b2 * v
                o3[j] += a3 * u + b3 * v
            k += 2
        if k < K:
            w0 = WT[k]
            a0, a1, a2, a3 = x0[k], x1[k], x2[k], x3[k]
            for j in range(G):
                u = w0[j]
                o0[j] += a0 * u
                o1[j] += a1 * u
                o2[j] += a2 * u
                o3[j] += a3 * u
        n0 += 4
    for n in range(n0, N):
        o = out[n]
        o[:] = bias
        _axpy_rows(o, WT, X[n])


_gemm_bias = _jit_variant(_gemm_bias_impl, "_serial", fastmath=FASTMATH_DOT)
_gemm_bias_parallel = _jit_variant(_gemm_bias_impl, "_parallel", fastmath=FASTMATH_DOT, parallel=True)


@njit_cached(fastmath=FASTMATH_DOT, error_model="numpy", nogil=True)
def _gemm_rowblocks(X, W, bias, out, row_block):
    """out (N,G) = X (N,K) W^T + bias, W (G,K) row-major, by blocks of `row_block` rows of X:
    within a block, each group of 4 W rows (in L1) meets every 4 rows of the block (in L2), so W
    is streamed once per block instead of once per 4 rows (`_gemm_bias`'s order). The large-batch
    GEMMs (B >= gemm_min_batch) use it instead of BLAS: measured here a threaded OpenBLAS call
    per step (64 x 1024 x 4096) took 59 ms median on the loaded 2-core machine, a 1-thread one 21 ms."""
    N, K = X.shape
    G = W.shape[0]
    zero = out.dtype.type(0)
    for r0 in range(0, N, row_block):
        r1 = min(N, r0 + row_block)
        for j0 in range(0, G, 4):
            j1, j2, j3 = min(j0 + 1, G - 1), min(j0 + 2, G - 1), min(j0 + 3, G - 1)
            w0, w1, w2, w3 = W[j0], W[j1], W[j2], W[j3]
            b0, b1, b2, b3 = bias[j0], bias[j1], bias[j2], bias[j3]
            for n0 in range(r0, r1, 4):
                n1, n2, n3 = min(n0 + 1, r1 - 1), min(n0 + 2, r1 - 1), min(n0 + 3, r1 - 1)
                (a00, a01, a02, a03, a10, a11, a12, a13,
                 a20, a21, a22, a23, a30, a31, a32, a33) = _dot4x4(X[n0], X[n1], X[n2], X[n3],
                                                                   w0, w1, w2, w3, K, zero)
                # Clamped indices repeat the last row/column: the same value is written twice.
                out[n0, j0] = a00 + b0; out[n0, j1] = a01 + b1; out[n0, j2] = a02 + b2; out[n0, j3] = a03 + b3
                out[n1, j0] = a10 + b0; out[n1, j1] = a11 + b1; out[n1, j2] = a12 + b2; out[n1, j3] = a13 + b3
                out[n2, j0] = a20 + b0; out[n2, j1] = a21 + b1; out[n2, j2] = a22 + b2; out[n2, j3] = a23 + b3
                out[n3, j0] = a30 + b0; out[n3, j1] = a31 + b1; out[n3, j2] = a32 + b2; out[n3, j3] = a33 + b3

