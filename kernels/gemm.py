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
from .simd import REGISTERS, VECTOR_BYTES, vfma, vlanes, vload, vstore


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


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _tile4(x0, x1, x2, x3, wp, o, K, i0, i1, i2, i3, si, d0, d1, d2, d3, sd):
    """d_r[sd:sd+NB] = i_r[si:si+NB] + x_r . panel (the panel at flat offset o of wp), r < 4."""
    L = vlanes(wp)
    a00 = vload(i0, si); a01 = vload(i0, si + L); a02 = vload(i0, si + 2 * L); a03 = vload(i0, si + 3 * L)
    a10 = vload(i1, si); a11 = vload(i1, si + L); a12 = vload(i1, si + 2 * L); a13 = vload(i1, si + 3 * L)
    a20 = vload(i2, si); a21 = vload(i2, si + L); a22 = vload(i2, si + 2 * L); a23 = vload(i2, si + 3 * L)
    a30 = vload(i3, si); a31 = vload(i3, si + L); a32 = vload(i3, si + 2 * L); a33 = vload(i3, si + 3 * L)
    for k in range(K):
        w0 = vload(wp, o); w1 = vload(wp, o + L); w2 = vload(wp, o + 2 * L); w3 = vload(wp, o + 3 * L)
        s = x0[k]
        a00 = vfma(a00, w0, s); a01 = vfma(a01, w1, s); a02 = vfma(a02, w2, s); a03 = vfma(a03, w3, s)
        s = x1[k]
        a10 = vfma(a10, w0, s); a11 = vfma(a11, w1, s); a12 = vfma(a12, w2, s); a13 = vfma(a13, w3, s)
        s = x2[k]
        a20 = vfma(a20, w0, s); a21 = vfma(a21, w1, s); a22 = vfma(a22, w2, s); a23 = vfma(a23, w3, s)
        s = x3[k]
        a30 = vfma(a30, w0, s); a31 = vfma(a31, w1, s); a32 = vfma(a32, w2, s); a33 = vfma(a33, w3, s)
        o += 4 * L
    vstore(d0, sd, a00); vstore(d0, sd + L, a01); vstore(d0, sd + 2 * L, a02); vstore(d0, sd + 3 * L, a03)
    vstore(d1, sd, a10); vstore(d1, sd + L, a11); vstore(d1, sd + 2 * L, a12); vstore(d1, sd + 3 * L, a13)
    vstore(d2, sd, a20); vstore(d2, sd + L, a21); vstore(d2, sd + 2 * L, a22); vstore(d2, sd + 3 * L, a23)
    vstore(d3, sd, a30); vstore(d3, sd + L, a31); vstore(d3, sd + 2 * L, a32); vstore(d3, sd + 3 * L, a33)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _tile2(x0, x1, wp, o, K, i0, i1, si, d0, d1, sd):
    """_tile4 for two rows."""
    L = vlanes(wp)
    a00 = vload(i0, si); a01 = vload(i0, si + L); a02 = vload(i0, si + 2 * L); a03 = vload(i0, si + 3 * L)
    a10 = vload(i1, si); a11 = vload(i1, si + L); a12 = vload(i1, si + 2 * L); a13 = vload(i1, si + 3 * L)
    for k in range(K):
        w0 = vload(wp, o); w1 = vload(wp, o + L); w2 = vload(wp, o + 2 * L); w3 = vload(wp, o + 3 * L)
        s = x0[k]
        a00 = vfma(a00, w0, s); a01 = vfma(a01, w1, s); a02 = vfma(a02, w2, s); a03 = vfma(a03, w3, s)
        s = x1[k]
        a10 = vfma(a10, w0, s); a11 = vfma(a11, w1, s); a12 = vfma(a12, w2, s); a13 = vfma(a13, w3, s)
        o += 4 * L
    vstore(d0, sd, a00); vstore(d0, sd + L, a01); vstore(d0, sd + 2 * L, a02); vstore(d0, sd + 3 * L, a03)
    vstore(d1, sd, a10); vstore(d1, sd + L, a11); vstore(d1, sd + 2 * L, a12); vstore(d1, sd + 3 * L, a13)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _tile1(x0, wp, o, K, i0, si, d0, sd):
    """_tile4 for one row: four accumulator chains, the panel read once."""
    L = vlanes(wp)
    a00 = vload(i0, si); a01 = vload(i0, si + L); a02 = vload(i0, si + 2 * L); a03 = vload(i0, si + 3 * L)
    for k in range(K):
        s = x0[k]
        a00 = vfma(a00, vload(wp, o), s); a01 = vfma(a01, vload(wp, o + L), s)
        a02 = vfma(a02, vload(wp, o + 2 * L), s); a03 = vfma(a03, vload(wp, o + 3 * L), s)
        o += 4 * L
    vstore(d0, sd, a00); vstore(d0, sd + L, a01); vstore(d0, sd + 2 * L, a02); vstore(d0, sd + 3 * L, a03)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _panel_rows(X, r0, r1, wp, o, K, init, si, dst, sd, from_r0, bias_init):
    """Rows r0:r1 of X against the panel at offset o: dst[r][sd:sd+NB] = init + X[r] . panel, with
    init the vector `init` at si for every row (bias_init) or init[r] at si (accumulate). dst is
    2-d, its rows indexed from r0 when from_r0 (the scratch of a partial panel, sd = 0)."""
    n = r0
    if TILE_ROWS >= 4:
        while n + 4 <= r1:
            if bias_init:
                i0 = i1 = i2 = i3 = init[0]
            else:
                i0, i1, i2, i3 = init[n], init[n + 1], init[n + 2], init[n + 3]
            if from_r0:
                d0, d1, d2, d3 = dst[n - r0], dst[n - r0 + 1], dst[n - r0 + 2], dst[n - r0 + 3]
            else:
                d0, d1, d2, d3 = dst[n], dst[n + 1], dst[n + 2], dst[n + 3]
            _tile4(X[n], X[n + 1], X[n + 2], X[n + 3], wp, o, K, i0, i1, i2, i3, si, d0, d1, d2, d3, sd)
            n += 4
    while n + 2 <= r1:
        if bias_init:
            i0 = i1 = init[0]
        else:
            i0, i1 = init[n], init[n + 1]
        if from_r0:
            d0, d1 = dst[n - r0], dst[n - r0 + 1]
        else:
            d0, d1 = dst[n], dst[n + 1]
        _tile2(X[n], X[n + 1], wp, o, K, i0, i1, si, d0, d1, sd)
        n += 2
    if n < r1:
        i0 = init[0] if bias_init else init[n]
        d0 = dst[n - r0] if from_r0 else dst[n]
        _tile1(X[n], wp, o, K, i0, si, d0, sd)


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
    b2 = bp.reshape(1, bp.shape[0])
    for blk in prange((N + row_block - 1) // row_block):
        r0 = blk * row_block
        r1 = min(N, r0 + row_block)
        tmp = np.empty((4, nb), out.dtype)
        for q in range(npan):
            c0 = q * nb
            o = q * K * nb
            if c0 + nb <= G:
                _panel_rows(X, r0, r1, wp, o, K, b2, c0, out, c0, False, True)
            else:
                for n0 in range(r0, r1, 4):
                    n1 = min(r1, n0 + 4)
                    _panel_rows(X, n0, n1, wp, o, K, b2, c0, tmp, 0, True, True)
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
    L = vlanes(z[0])
    nb = 4 * L
    npan = z.shape[1] // nb
    for q in range(npan):
        _panel_rows(X, 0, n, wp, q * K * nb, K, z, q * nb, z, q * nb, False, False)
