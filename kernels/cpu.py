"""Numba CPU fused-gate LSTM kernels.

Versions (all numerically interchangeable with kernels/reference.py):
- the input projection W_ih x + (b_ih + b_hh) for every time step, both directions, is one
  BLAS GEMM hoisted out of the recurrence (`_input_projection`);
- "rows" recurrence (`_layer_rows`): small batches. Threads take blocks of batch rows and run
  the whole time loop for them (rows are independent, so no per-step barrier); each step does
  the recurrent product from W_hh^T packed (P, 4H), so the inner loop over 4H is contiguous
  and vectorizes, with all rows of a block sharing each pass over W_hh, then the fused
  epilogue. One block (B=1) of a short sequence runs serially (no thread team is woken),
  of a long one as the parallel variant, which measured faster per step;
- "gemm" recurrence (`_layer_gemm`): large batches. One BLAS GEMM per step reads W_hh once for
  all rows into a preallocated buffer, then a parallel fused epilogue over rows;
- `stream_step`: one step of every layer for a streaming caller, no allocation.

The fused epilogue (`_epilogue`) does peepholes, sigmoid/tanh, the cell and hidden update in
passes over small preallocated scratch (L1-resident), with a branch-free exp (`_vexp_neg`)
that LLVM vectorizes: there is no SVML here, and libm exp/tanh one element at a time cost
more than the B=1 matvec itself. Sigmoid and tanh only ever exponentiate -|z|, so |z| = 1e4
cannot overflow; the argument is clamped at -708 (exp = 3e-308, i.e. 0 to the tolerance).

fastmath: only {"contract"} (fused multiply-add). "nnan"/"ninf" would let LLVM drop the NaN
propagation users rely on and the inf/0 behaviour of saturated gates; "reassoc" is not needed
because the matvec is written as axpys over contiguous 4H rows, which vectorize without it.
The one exception is `_gemm_bias` (dot products, FASTMATH_DOT): reassociating a K-term sum
moves each result by O(K eps), far inside the 1e-12 tolerance, and keeps NaN semantics.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

# error_model="numpy" everywhere: Python's model checks every float division for zero and
# raises, and that branch stops LLVM from vectorizing the epilogue.
FASTMATH = {"contract"}
FASTMATH_DOT = {"contract", "reassoc"}   # dot products only: lets LLVM vectorize the sums


# Tunables and the choice of path live in kernels/plan.py, read by the host cost model too.
from .plan import CPUConfig, config, plan_layer  # noqa: F401  (cpu.config is the public handle)

# exp(r) on |r| <= ln2/2: Taylor to degree 12 (truncation < 2e-16 relative).
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
_EXP_MIN_ARG = -708.0


def _jit_variant(impl, suffix, **options):
    """njit a copy of `impl` under its own name. Numba's on-disk cache keys a function by
    its qualified name and line, not by its options: two njit(cache=True) wrappers of one
    Python function (a parallel and a serial variant) share one cache entry, and whichever
    compiled first is what both run. A renamed copy gets a cache entry of its own."""
    f = types.FunctionType(impl.__code__, impl.__globals__, impl.__name__ + suffix,
                           impl.__defaults__, impl.__closure__)
    f.__qualname__ = impl.__qualname__ + suffix
    f.__doc__ = impl.__doc__
    return njit(cache=True, error_model="numpy", **options)(f)


# ---------------------------------------------------------------------------------------
# elementwise pieces
# ---------------------------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _vexp_neg(a, ibuf, n):
    """a[:n] = exp(a[:n]) in place, for a <= 0 (float64). Branch-free so it vectorizes."""
    for j in range(n):
        x = a[j]
        if x < _EXP_MIN_ARG:               # NaN compares false and stays NaN
            x = _EXP_MIN_ARG
        k = np.floor(x * _LOG2E + 0.5)
        r = (x - k * _LN2_HI) - k * _LN2_LO
        p = 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        a[j] = p
        ibuf[j] = (np.int64(k) + 1023) << 52     # the bits of 2^k
    scale = ibuf.view(np.float64)
    for j in range(n):
        a[j] *= scale[j]


@njit(inline="always", error_model="numpy")
def _sig(e, z):
    """σ(z) given e = exp(-|z|)."""
    s = 1.0 / (1.0 + e)
    return s if z >= 0.0 else e * s


@njit(inline="always", error_model="numpy")
def _tanh(e2, z):
    """tanh(z) given e2 = exp(-2|z|)."""
    t = (1.0 - e2) / (1.0 + e2)
    return t if z >= 0.0 else -t


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _epilogue(z, c, peep, has_peep, a, s, ibuf, hf):
    """Gates from pre-activations z (4H: i,f,g,o) -> c updated in place, hf = o*tanh(c').

    a, s (4H float64) and ibuf (4H int64) are scratch.
    """
    H = c.shape[0]
    for k in range(H):
        zi = np.float64(z[k])
        zf = np.float64(z[H + k])
        zg = np.float64(z[2 * H + k])
        if has_peep:
            zi += peep[0, k] * c[k]
            zf += peep[1, k] * c[k]
        s[k] = zi
        s[H + k] = zf
        s[2 * H + k] = zg
        a[k] = -abs(zi)
        a[H + k] = -abs(zf)
        a[2 * H + k] = -2.0 * abs(zg)
    _vexp_neg(a, ibuf, 3 * H)
    for k in range(H):
        i = _sig(a[k], s[k])
        f = _sig(a[H + k], s[H + k])
        g = _tanh(a[2 * H + k], s[2 * H + k])
        cn = f * c[k] + i * g
        c[k] = cn
        zo = np.float64(z[3 * H + k])
        if has_peep:
            zo += peep[2, k] * cn
        s[k] = zo
        s[H + k] = cn
        a[k] = -abs(zo)
        a[H + k] = -2.0 * abs(cn)
    _vexp_neg(a, ibuf, 2 * H)
    for k in range(H):
        hf[k] = _sig(a[k], s[k]) * _tanh(a[H + k], s[H + k])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
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


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _axpy_multi(z, wT, h, act, na):
    """z[q, j] += sum_p wT[p, j] * h[act[q], p] for q < na: the recurrent product of several
    rows, each group of four W^T rows loaded into L1 once and used by every row."""
    n, G = wT.shape
    p = 0
    while p + 4 <= n:
        w0, w1, w2, w3 = wT[p], wT[p + 1], wT[p + 2], wT[p + 3]
        for q in range(na):
            hb = h[act[q]]
            v0, v1, v2, v3 = hb[p], hb[p + 1], hb[p + 2], hb[p + 3]
            zq = z[q]
            for j in range(G):
                zq[j] += v0 * w0[j] + v1 * w1[j] + v2 * w2[j] + v3 * w3[j]
        p += 4
    while p < n:
        w0 = wT[p]
        for q in range(na):
            v0 = h[act[q], p]
            zq = z[q]
            for j in range(G):
                zq[j] += v0 * w0[j]
        p += 1


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


@njit(cache=True, fastmath=FASTMATH_DOT, error_model="numpy")
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



_gemm_bias = _jit_variant(_gemm_bias_impl, "_serial", fastmath=FASTMATH_DOT)
_gemm_bias_parallel = _jit_variant(_gemm_bias_impl, "_parallel", fastmath=FASTMATH_DOT, parallel=True)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
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
def _layer_rows_impl(xp, g_off, whhT, whrT, peep, has_proj, has_peep, lengths, reverse,
                     whh, rows_per_block, h, c, y, y_off):
    """One layer and direction, rows path. xp (T,B,D*4H) holds W_ih x + bias; this direction's
    gates are columns g_off:g_off+4H. h (B,P), c (B,H) hold h0/c0 and receive the final state.
    y (T,B,D*P): this direction writes columns y_off:y_off+P (rows past their end untouched)."""
    T, B = xp.shape[0], xp.shape[1]
    P, G = whhT.shape
    H = G // 4
    nblk = (B + rows_per_block - 1) // rows_per_block
    for blk in prange(nblk):
        r0 = blk * rows_per_block
        nr = min(B, r0 + rows_per_block) - r0
        z = np.empty((nr, G), dtype=xp.dtype)
        hf = np.empty(H, dtype=xp.dtype)
        a = np.empty(G)
        s = np.empty(G)
        ibuf = np.empty(G, dtype=np.int64)
        act = np.empty(nr, dtype=np.int64)
        hact = np.empty((nr, P), dtype=xp.dtype)
        for step in range(T):
            t = T - 1 - step if reverse else step
            na = 0
            for r in range(nr):
                if t < lengths[r0 + r]:
                    act[na] = r0 + r
                    z[na, :] = xp[t, r0 + r, g_off:g_off + G]
                    na += 1
            if na >= 4:     # register-blocked small GEMM on W_hh (4H, P): 4 rows x 4 gates
                for q in range(na):
                    hact[q, :] = h[act[q]]
                _gemm_acc(hact, whh, z, na)
            else:
                _axpy_multi(z, whhT, h, act, na)
            for q in range(na):
                b = act[q]
                _epilogue(z[q], c[b], peep, has_peep, a, s, ibuf, hf)
                _finish_row(hf, whrT, has_proj, h[b], y[t, b, y_off:y_off + P])


# One block of rows runs serially for short sequences (config.parallel_single_block_min_steps):
# a parallel region costs a wake-up and a join even with one iteration.
_layer_rows = _jit_variant(_layer_rows_impl, "_parallel", fastmath=FASTMATH, parallel=True)
_layer_rows_serial = _jit_variant(_layer_rows_impl, "_serial", fastmath=FASTMATH)


def _epilogue_gemm_step_impl(zb, xp_t, g_off, whrT, peep, has_proj, has_peep, lengths, t,
                        h, c, y_t, y_off, a, s, ibuf, hf):
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
            _epilogue(zr, c[b], peep, has_peep, a[b], s[b], ibuf[b], hf[b])
            _finish_row(hf[b], whrT, has_proj, h[b], y_t[b, y_off:y_off + P])


_epilogue_gemm_step = _jit_variant(_epilogue_gemm_step_impl, "_parallel", fastmath=FASTMATH, parallel=True)
_epilogue_gemm_step_serial = _jit_variant(_epilogue_gemm_step_impl, "_serial", fastmath=FASTMATH)


def _layer_gemm(xp, g_off, whhT, whrT, peep, has_proj, has_peep, lengths, reverse, h, c, y, y_off):
    """One layer and direction, gemm path: same contract as `_layer_rows`."""
    T, B = xp.shape[0], xp.shape[1]
    G = whhT.shape[1]
    H = G // 4
    zb = np.empty((B, G), dtype=xp.dtype)
    a = np.empty((B, G))
    s = np.empty((B, G))
    ibuf = np.empty((B, G), dtype=np.int64)
    hf = np.empty((B, H), dtype=xp.dtype)
    parallel = plan_layer(T, B, 0, H, 1, numba.get_num_threads()).epilogue_parallel
    epilogue = _epilogue_gemm_step if parallel else _epilogue_gemm_step_serial
    for step in range(T):
        t = T - 1 - step if reverse else step
        np.dot(h, whhT, out=zb)
        epilogue(zb, xp[t], g_off, whrT, peep, has_proj, has_peep, lengths, t,
                            h, c, y[t], y_off, a, s, ibuf, hf)


# ---------------------------------------------------------------------------------------
# packing and the stack driver
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackedLayer:
    wih: np.ndarray     # (D*4H, E_l): both directions' input weights stacked, one GEMM
    bias: np.ndarray    # (D*4H,): b_ih + b_hh per direction
    whhT: tuple         # D x (P, 4H): axpy form for one to three rows
    whh: tuple          # D x (4H, P): dot form for the rows kernel's blocks of four rows
    whrT: tuple         # D x (H, P), or (1, 1) placeholders without projection
    peep: tuple         # D x (3, H), or (3, 1) placeholders without peepholes


def _pack(weights) -> tuple:
    spec = weights.spec
    dt = weights.dtype
    out = []
    for dirs in weights.layers:
        out.append(PackedLayer(
            wih=np.ascontiguousarray(np.concatenate([lw.w_ih for lw in dirs], axis=0)),
            bias=np.concatenate([lw.bias_sum() for lw in dirs]).astype(dt),
            whhT=tuple(np.ascontiguousarray(lw.w_hh.T) for lw in dirs),
            whh=tuple(lw.w_hh for lw in dirs),
            whrT=tuple(np.ascontiguousarray(lw.w_hr.T) if spec.proj_size else np.zeros((1, 1), dt)
                       for lw in dirs),
            peep=tuple(lw.peep if spec.peephole else np.zeros((3, 1), dt) for lw in dirs),
        ))
    return tuple(out)


def packed_layers(weights) -> tuple:
    """The kernels' layout, built once and cached on the weights object."""
    return weights.packed("cpu-v2", _pack)


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
        # Hoisted input projection: one GEMM over all T*B rows and both directions.
        E_l = layer_in.shape[2]
        x2 = layer_in.reshape(T * B, E_l)
        plan = plan_layer(T, B, E_l, H, D, nthreads)
        if plan.projection == "blas":      # large batch: BLAS everywhere, and no Numba thread team awake
            np.dot(x2, pk.wih.T, out=xp2)
            xp2 += pk.bias
        elif plan.projection == "own_parallel":
            _gemm_bias_parallel(x2, pk.wih, pk.bias, xp2)
        else:
            _gemm_bias(x2, pk.wih, pk.bias, xp2)
        for d in range(D):
            args = (xp, d * 4 * H, pk.whhT[d], pk.whrT[d], pk.peep[d], spec.proj_size > 0,
                    spec.peephole, lens, d == 1)
            if plan.path == "gemm":
                _layer_gemm(*args, h_n[l * D + d], c_n[l * D + d], y, d * P)
            else:
                rows = _layer_rows if plan.rows_parallel else _layer_rows_serial
                rows(*args, pk.whh[d], plan.rows_per_block, h_n[l * D + d], c_n[l * D + d], y, d * P)
        layer_in = y
    return layer_in, (h_n, c_n)


# ---------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def stream_step(x, wih0T, wihT_up, whhT, bias, whrT, peep, has_proj, has_peep,
                h, c, z, hf, a, s, ibuf, out):
    """One time step of every layer (unidirectional), in place.

    x (B,E); wih0T (E,4H) layer 0; wihT_up (max(L-1,1),P,4H) layers above; whhT (L,P,4H);
    bias (L,4H); whrT (L,H,P) or (L,1,1); peep (L,3,H) or (L,3,1); h (L,B,P), c (L,B,H)
    updated in place; scratch z (4H), hf (H), a, s (4H float64), ibuf (4H int64);
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
            _epilogue(z, c[l, b], peep[l], has_peep, a, s, ibuf, hf)
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
