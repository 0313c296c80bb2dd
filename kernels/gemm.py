"""The CPU kernels' own GEMMs (no BLAS), shared by kernels/cpu.py and the two-thread team
(team.py); the host cost model's routine tables time them by name.

- `_gemm_panel` (`_gemm_panel_parallel`: prange over blocks of rows): out = X W^T + bias, the
  hoisted input projection and the large-batch path's per-step product;
- `_gemm_panel_acc`: z[:n] += X[:n] W^T, the rows kernel's recurrent product of a block of rows.

Both take W packed by `pack_panels` and keep a register tile of up to 4 rows x 4 vectors of
accumulators for the whole reduction (kernels/simd.py).
"""
from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from .guard import njit_cached
from .rowops import FASTMATH
from .simd import REGISTERS, VECTOR_BYTES, data_ptr, vfma, vlanes, vload, vstore


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


# ---------------------------------------------------------------------------------------
# panel GEMMs: the weights packed in panels of NB gate rows, the accumulators in registers
# ---------------------------------------------------------------------------------------
# A tile is R rows of X against one panel of NB = 4 vectors of W's rows (kernels/simd.py): R x 4
# vector accumulators stay in registers for the whole reduction, and each k costs 4 vector loads
# of the panel and R broadcasts of X for 4R FMAs. R = 4 where there are 32 vector registers
# (AVX-512), else 2 (8 accumulators of 16). Measured on the test VM (Zen 4, float32, one thread)
# against the scalar-loop forms above: the projection 100 x 40 x 256 at 44.6 GMAC/s against
# 29.3 (axpy form), 100 x 128 x 1024 52.7 against 33.1 (dot form), 400 x 512 x 4096 52.0
# against 38.0 (_gemm_rowblocks); float64 100 x 128 x 512 23.9 against 19.6.
TILE_ROWS = 4 if REGISTERS >= 32 else 2


def panel_width(itemsize: int) -> int:
    """NB: gate rows per panel, four vectors of the host's width."""
    return 4 * VECTOR_BYTES // itemsize


def pack_panels(w: np.ndarray) -> np.ndarray:
    """W (G, K) as flat panels (npan, K, NB), NB = panel_width: panel q holds rows q*NB.. of W,
    k-major, the rows past G zero."""
    G, K = w.shape
    nb = panel_width(w.itemsize)
    npan = -(-G // nb)
    pad = np.zeros((npan * nb, K), w.dtype)
    pad[:G] = w
    return np.ascontiguousarray(pad.reshape(npan, nb, K).transpose(0, 2, 1)).reshape(-1)


def pad_panels(v: np.ndarray) -> np.ndarray:
    """A length-G vector (the bias) padded with zeros to the panels' npan * NB."""
    nb = panel_width(v.itemsize)
    out = np.zeros(-(-v.shape[0] // nb) * nb, v.dtype)
    out[:v.shape[0]] = v
    return out


# The tiles work on pointers (simd.data_ptr) and flat offsets, not on arrays: Numba reference-
# counts every array passed to an inlined function and every view of a row (calls to
# NRT_incref/NRT_decref), and those calls had cost 30-45 ns per panel, more than the
# multiply-adds of a one-row product at H=32.
@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _tile4(Xp, x0, x1, x2, x3, Wp, o, K, Ip, i0, i1, i2, i3, Dp, d0, d1, d2, d3):
    """Dp[d_r:d_r+NB] = Ip[i_r:i_r+NB] + Xp[x_r:x_r+K] . panel (the panel at flat offset o of Wp),
    r < 4; every argument after the pointers is a flat element offset."""
    L = vlanes(Wp)
    a00 = vload(Ip, i0); a01 = vload(Ip, i0 + L); a02 = vload(Ip, i0 + 2 * L); a03 = vload(Ip, i0 + 3 * L)
    a10 = vload(Ip, i1); a11 = vload(Ip, i1 + L); a12 = vload(Ip, i1 + 2 * L); a13 = vload(Ip, i1 + 3 * L)
    a20 = vload(Ip, i2); a21 = vload(Ip, i2 + L); a22 = vload(Ip, i2 + 2 * L); a23 = vload(Ip, i2 + 3 * L)
    a30 = vload(Ip, i3); a31 = vload(Ip, i3 + L); a32 = vload(Ip, i3 + 2 * L); a33 = vload(Ip, i3 + 3 * L)
    for k in range(K):
        w0 = vload(Wp, o); w1 = vload(Wp, o + L); w2 = vload(Wp, o + 2 * L); w3 = vload(Wp, o + 3 * L)
        s = Xp[x0 + k]
        a00 = vfma(a00, w0, s); a01 = vfma(a01, w1, s); a02 = vfma(a02, w2, s); a03 = vfma(a03, w3, s)
        s = Xp[x1 + k]
        a10 = vfma(a10, w0, s); a11 = vfma(a11, w1, s); a12 = vfma(a12, w2, s); a13 = vfma(a13, w3, s)
        s = Xp[x2 + k]
        a20 = vfma(a20, w0, s); a21 = vfma(a21, w1, s); a22 = vfma(a22, w2, s); a23 = vfma(a23, w3, s)
        s = Xp[x3 + k]
        a30 = vfma(a30, w0, s); a31 = vfma(a31, w1, s); a32 = vfma(a32, w2, s); a33 = vfma(a33, w3, s)
        o += 4 * L
    vstore(Dp, d0, a00); vstore(Dp, d0 + L, a01); vstore(Dp, d0 + 2 * L, a02); vstore(Dp, d0 + 3 * L, a03)
    vstore(Dp, d1, a10); vstore(Dp, d1 + L, a11); vstore(Dp, d1 + 2 * L, a12); vstore(Dp, d1 + 3 * L, a13)
    vstore(Dp, d2, a20); vstore(Dp, d2 + L, a21); vstore(Dp, d2 + 2 * L, a22); vstore(Dp, d2 + 3 * L, a23)
    vstore(Dp, d3, a30); vstore(Dp, d3 + L, a31); vstore(Dp, d3 + 2 * L, a32); vstore(Dp, d3 + 3 * L, a33)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _tile3(Xp, x0, x1, x2, Wp, o, K, Ip, i0, i1, i2, Dp, d0, d1, d2):
    """_tile4 for three rows (12 accumulators: only where TILE_ROWS is 4), so that 3 rows, or
    the last 3 of 7, read the panel once rather than as a 2-row and a 1-row tile."""
    L = vlanes(Wp)
    a00 = vload(Ip, i0); a01 = vload(Ip, i0 + L); a02 = vload(Ip, i0 + 2 * L); a03 = vload(Ip, i0 + 3 * L)
    a10 = vload(Ip, i1); a11 = vload(Ip, i1 + L); a12 = vload(Ip, i1 + 2 * L); a13 = vload(Ip, i1 + 3 * L)
    a20 = vload(Ip, i2); a21 = vload(Ip, i2 + L); a22 = vload(Ip, i2 + 2 * L); a23 = vload(Ip, i2 + 3 * L)
    for k in range(K):
        w0 = vload(Wp, o); w1 = vload(Wp, o + L); w2 = vload(Wp, o + 2 * L); w3 = vload(Wp, o + 3 * L)
        s = Xp[x0 + k]
        a00 = vfma(a00, w0, s); a01 = vfma(a01, w1, s); a02 = vfma(a02, w2, s); a03 = vfma(a03, w3, s)
        s = Xp[x1 + k]
        a10 = vfma(a10, w0, s); a11 = vfma(a11, w1, s); a12 = vfma(a12, w2, s); a13 = vfma(a13, w3, s)
        s = Xp[x2 + k]
        a20 = vfma(a20, w0, s); a21 = vfma(a21, w1, s); a22 = vfma(a22, w2, s); a23 = vfma(a23, w3, s)
        o += 4 * L
    vstore(Dp, d0, a00); vstore(Dp, d0 + L, a01); vstore(Dp, d0 + 2 * L, a02); vstore(Dp, d0 + 3 * L, a03)
    vstore(Dp, d1, a10); vstore(Dp, d1 + L, a11); vstore(Dp, d1 + 2 * L, a12); vstore(Dp, d1 + 3 * L, a13)
    vstore(Dp, d2, a20); vstore(Dp, d2 + L, a21); vstore(Dp, d2 + 2 * L, a22); vstore(Dp, d2 + 3 * L, a23)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _tile2(Xp, x0, x1, Wp, o, K, Ip, i0, i1, Dp, d0, d1):
    """_tile4 for two rows."""
    L = vlanes(Wp)
    a00 = vload(Ip, i0); a01 = vload(Ip, i0 + L); a02 = vload(Ip, i0 + 2 * L); a03 = vload(Ip, i0 + 3 * L)
    a10 = vload(Ip, i1); a11 = vload(Ip, i1 + L); a12 = vload(Ip, i1 + 2 * L); a13 = vload(Ip, i1 + 3 * L)
    for k in range(K):
        w0 = vload(Wp, o); w1 = vload(Wp, o + L); w2 = vload(Wp, o + 2 * L); w3 = vload(Wp, o + 3 * L)
        s = Xp[x0 + k]
        a00 = vfma(a00, w0, s); a01 = vfma(a01, w1, s); a02 = vfma(a02, w2, s); a03 = vfma(a03, w3, s)
        s = Xp[x1 + k]
        a10 = vfma(a10, w0, s); a11 = vfma(a11, w1, s); a12 = vfma(a12, w2, s); a13 = vfma(a13, w3, s)
        o += 4 * L
    vstore(Dp, d0, a00); vstore(Dp, d0 + L, a01); vstore(Dp, d0 + 2 * L, a02); vstore(Dp, d0 + 3 * L, a03)
    vstore(Dp, d1, a10); vstore(Dp, d1 + L, a11); vstore(Dp, d1 + 2 * L, a12); vstore(Dp, d1 + 3 * L, a13)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _tile1(Xp, x0, Wp, o, K, Ip, i0, Dp, d0):
    """_tile4 for one row: four accumulator chains, the panel read once. (Eight chains, even
    and odd k apart, measured the same from 16 to 128 KB of W: the one-row product waits on
    loads, not on the FMAs' latency.)"""
    L = vlanes(Wp)
    a00 = vload(Ip, i0); a01 = vload(Ip, i0 + L); a02 = vload(Ip, i0 + 2 * L); a03 = vload(Ip, i0 + 3 * L)
    for k in range(K):
        s = Xp[x0 + k]
        a00 = vfma(a00, vload(Wp, o), s); a01 = vfma(a01, vload(Wp, o + L), s)
        a02 = vfma(a02, vload(Wp, o + 2 * L), s); a03 = vfma(a03, vload(Wp, o + 3 * L), s)
        o += 4 * L
    vstore(Dp, d0, a00); vstore(Dp, d0 + L, a01); vstore(Dp, d0 + 2 * L, a02); vstore(Dp, d0 + 3 * L, a03)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _panel_rows(Xp, ldx, r0, r1, Wp, o, K, Ip, gi, si, Dp, gd, sd):
    """Rows r0:r1 of X (Xp, ldx elements between rows) against the panel at offset o of Wp:
    D's row r at column sd (flat offset r * gd + sd) = I's at r * gi + si (gi = 0: one vector,
    the bias, for every row) + X[r] . panel."""
    n = r0
    if TILE_ROWS >= 4:
        while n + 4 <= r1:
            x0, i0, d0 = n * ldx, n * gi + si, n * gd + sd
            _tile4(Xp, x0, x0 + ldx, x0 + 2 * ldx, x0 + 3 * ldx, Wp, o, K, Ip, i0, i0 + gi, i0 + 2 * gi, i0 + 3 * gi,
                   Dp, d0, d0 + gd, d0 + 2 * gd, d0 + 3 * gd)
            n += 4
        if n + 3 == r1:
            x0, i0, d0 = n * ldx, n * gi + si, n * gd + sd
            _tile3(Xp, x0, x0 + ldx, x0 + 2 * ldx, Wp, o, K, Ip, i0, i0 + gi, i0 + 2 * gi, Dp, d0, d0 + gd, d0 + 2 * gd)
            n += 3
    while n + 2 <= r1:
        x0, i0, d0 = n * ldx, n * gi + si, n * gd + sd
        _tile2(Xp, x0, x0 + ldx, Wp, o, K, Ip, i0, i0 + gi, Dp, d0, d0 + gd)
        n += 2
    if n < r1:
        _tile1(Xp, n * ldx, Wp, o, K, Ip, n * gi + si, Dp, n * gd + sd)


@njit(inline="always")
def _row_stride(A):
    """Elements between A's rows (its columns are contiguous: every caller's matrices are)."""
    return A.strides[0] // A.itemsize


def panel_row_block(K: int, itemsize: int, budget: int = 1 << 17) -> int:
    """Rows of X per block of _gemm_panel: as many as fit `budget` bytes (a share of one core's
    L2, so the block stays there while every panel passes), a multiple of 4, at least 16."""
    return max(16, budget // max(K * itemsize, 1) // 4 * 4)


def _gemm_panel_impl(X, wp, bp, out, row_block):
    """out (N,G) = X (N,K) W^T + bias, W packed by pack_panels (wp) and the bias padded by
    pad_panels (bp, length npan*NB). Rows in blocks of `row_block` (a multiple of 4; a prange
    over the blocks in the parallel variant), each block meeting every panel in turn: a panel
    stays in L1/L2 while the block's rows stream past it. The last panel, when it reaches past
    G, goes through a 4 x NB scratch."""
    N, K = X.shape
    G = out.shape[1]
    L = vlanes(bp)
    nb = 4 * L
    npan = bp.shape[0] // nb
    Xp, Wp, Bp, Op = data_ptr(X), data_ptr(wp), data_ptr(bp), data_ptr(out)
    ldx, ldo = _row_stride(X), _row_stride(out)
    for blk in prange((N + row_block - 1) // row_block):
        r0 = blk * row_block
        r1 = min(N, r0 + row_block)
        tmp = np.empty((4, nb), out.dtype)
        Tp = data_ptr(tmp)
        for q in range(npan):
            c0 = q * nb
            o = q * K * nb
            if c0 + nb <= G:
                _panel_rows(Xp, ldx, r0, r1, Wp, o, K, Bp, 0, c0, Op, ldo, c0)
            else:
                for n0 in range(r0, r1, 4):
                    n1 = min(r1, n0 + 4)
                    # (the scratch's row r - n0 receives row r: its offsets start at -n0 rows)
                    _panel_rows(Xp, ldx, n0, n1, Wp, o, K, Bp, 0, c0, Tp, nb, -n0 * nb)
                    for r in range(n0, n1):
                        for j in range(G - c0):
                            out[r, c0 + j] = tmp[r - n0, j]


_gemm_panel = _jit_variant(_gemm_panel_impl, "_serial", fastmath=FASTMATH)
_gemm_panel_parallel = _jit_variant(_gemm_panel_impl, "_parallel", fastmath=FASTMATH, parallel=True)


@njit_cached(fastmath=FASTMATH, error_model="numpy", nogil=True)
def _gemm_panel_acc(X, n, wp, z):
    """z[:n, :Gp] += X[:n] W^T, W packed by pack_panels (wp, npan panels of K = X.shape[1]),
    z (>= n, Gp) with Gp = npan * NB (scratch wide enough for whole panels): the rows kernel's
    recurrent product of its active rows."""
    K = X.shape[1]
    L = vlanes(wp)
    nb = 4 * L
    npan = z.shape[1] // nb
    Xp, Wp, Zp = data_ptr(X), data_ptr(wp), data_ptr(z)
    ldx, ldz = _row_stride(X), _row_stride(z)
    for q in range(npan):
        _panel_rows(Xp, ldx, 0, n, Wp, q * K * nb, K, Zp, ldz, q * nb, Zp, ldz, q * nb)
