"""Numba int8 LSTM kernel, bit-exact with `int8_reference.lstm_int8_reference` and TFLM.

The reference says what is computed; this file only changes how:
- integer dot products run in float32 arithmetic, which LLVM vectorizes into FMAs: every product
  (x - zp) * w is an integer of magnitude <= 255 * 127, and `pack` checks that every row's sum of
  |products| stays below 2^24, so every partial sum, in any order, is an exactly held integer.
  A layer whose rows could exceed that (very large E or H with large weights) packs in float64,
  exact below 2^53. This is what lets `fastmath` reassociate the sums without changing a bit;
- the input side of every gate for all T steps is computed first, weight row by weight row
  (each row read once per sequence against four steps at a time, instead of once per step);
- each step then does the recurrent products of the 4H gate rows (four rows per pass over h), a
  separate requantize-and-add pass (branch-free int64 code LLVM can vectorize), and an integer
  epilogue in TFLM's order: LUT sigmoid/tanh, cell update, hidden update;
- the 16x8 variant (int16 x and h) is the same code with int64-overload requantization of the gate
  sums, int16 saturation of h, and float64 dot products (its products reach 65535 * 127);
- batch rows are independent: one row (B=1, the MCU case) runs serially, more rows in parallel
  (prange over rows, each running the whole time loop). No BLAS: a threaded BLAS next to Numba's
  threads on a small machine spins both pools (cpu.py measured 8 ms stalls).

fastmath: {"contract", "reassoc"} on the whole kernel: its only floating point is the dot products,
exact in any order (see above), and the rest is integer code, which fastmath does not touch. error_model="numpy" keeps Python's division checks out of the loops.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from . import guard
from . import int8_reference as R

_TABLE = R.SIGMOID_TABLE_UINT16.astype(np.int32)


@dataclass(frozen=True)
class PackedInt8LSTM:
    """A QuantLSTM in the layout the kernel reads, with TFLM's integer parameters."""

    q: R.QuantLSTM
    w_x: np.ndarray          # (4H, E) float32 (or float64): input weights, rows contiguous
    w_h: np.ndarray          # (4H, H) same dtype: recurrent weights
    bias: np.ndarray         # (4H,) int64
    x_mult: np.ndarray       # (4H,) int64, and shifts split into left / right, per gate row
    x_left: np.ndarray
    x_right: np.ndarray
    h_mult: np.ndarray
    h_left: np.ndarray
    h_right: np.ndarray
    inter: np.ndarray        # (9,) int64: fc (mult, left, right), ig (...), out (...)
    tanh_cell: np.ndarray    # (2,) int64: multiplier, right shift of TFLM's cell tanh input
    cell_clip_q: int
    x_zero_point: int
    h_zero_point: int


def _split(shift):
    shift = np.asarray(shift, np.int64)
    return np.maximum(shift, 0), np.maximum(-shift, 0)


def pack(q: R.QuantLSTM) -> PackedInt8LSTM:
    """Pack once; the result is reused across calls."""
    r = R.lstm_requant(q)
    H, E = q.hidden_size, q.input_size
    w_x = q.w_x.reshape(4 * H, E).astype(np.int64)
    w_h = q.w_h.reshape(4 * H, H).astype(np.int64)
    # the largest |partial sum| any row can reach: sum |w| times the largest |x - zp|, |h - zp|
    amax = 255 if q.activation_dtype == "int8" else 65535
    bound = amax * max(int(np.abs(w_x).sum(axis=1).max(initial=0)), int(np.abs(w_h).sum(axis=1).max(initial=0)))
    dtype = np.float32 if bound < (1 << 24) else np.float64
    xl, xr = _split(np.repeat(r.x_shift, H))     # per row: no j // H in the kernel
    hl, hr = _split(np.repeat(r.h_shift, H))
    inter = []
    for m, s in ((r.fc_mult, r.fc_shift), (r.ig_mult, r.ig_shift), (r.out_mult, r.out_shift)):
        inter += [m, max(s, 0), max(-s, 0)]
    mul, shift = R.cell_tanh_args(r.cell_scale_power)
    if mul == 0:
        mul, shift = 3 << shift, 0                          # TFLM's "power of two" case: 3 << s, no shift
    return PackedInt8LSTM(
        q, np.ascontiguousarray(w_x, dtype=dtype), np.ascontiguousarray(w_h, dtype=dtype),
        q.bias.reshape(4 * H).astype(np.int64), np.repeat(r.x_mult, H), xl, xr, np.repeat(r.h_mult, H), hl, hr,
        np.array(inter, np.int64), np.array([mul, shift], np.int64),
        int(r.cell_clip_q), int(r.x_zero_point), int(r.h_zero_point))


@njit(inline="always", error_model="numpy")
def _mbqm(x, mult, left, right):
    """MultiplyByQuantizedMultiplier (double rounding), x an int64 holding an int32."""
    x = ((x << left) + 2147483648) & 4294967295                # x * 2^left, wrapped to int32 ...
    x = x - 2147483648
    # SaturatingRoundingDoublingHighMul: (ab + nudge) / 2^31 truncated, nudge = 2^30 or 1 - 2^30 by sign.
    # For ab < 0, truncation is ceil: ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31), the
    # same expression as for ab >= 0, so one branch-free shift does both (LLVM can vectorize it).
    v = (x * mult + 1073741824) >> 31
    mask = (1 << right) - 1
    rem = v & mask
    thr = (mask >> 1) + ((v >> 63) & 1)                       # RoundingDivideByPOT: ties away from zero
    return (v >> right) + np.int64(rem > thr)


@njit(inline="always", error_model="numpy")
def _mbqm64(x, mult, left, right):
    """MultiplyByQuantizedMultiplier's int64 overload (16x8 accumulators): Q0.15 multiplier, one shift."""
    reduced = ((mult + 32768) >> 16) if mult < 0x7FFF0000 else 0x7FFF
    total = 15 - left + right                                 # 15 - shift
    return (x * reduced + (1 << (total - 1))) >> total


@njit(inline="always", error_model="numpy")
def _requant_acc(x, mult, left, right, wide):
    return _mbqm64(x, mult, left, right) if wide else _mbqm(x, mult, left, right)


@njit(inline="always", error_model="numpy")
def _sat(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


@njit(inline="always", error_model="numpy")
def _sigmoid(x, table):
    """int8_reference.sigmoid_int16, written with selects instead of branches."""
    v = x * 3
    a = abs(v)
    uh = a >> 9
    idx = min(uh, 254)                               # in range even when saturating (then unused)
    ua = np.int64(table[idx])
    r = (ua << 9) + (a & 0x1FF) * (np.int64(table[idx + 1]) - ua)
    r = (0x7FFF << 10) if uh >= 255 else r
    r = (r + 512) if v >= 0 else ((1 << 25) - r + 511)
    return r >> 10


@njit(inline="always", error_model="numpy")
def _tanh(x, mul, right, table):
    """int8_reference.tanh_int16 with TFLM's (multiplier, right shift), written with selects."""
    rnd = (1 << (right - 1)) if right > 0 else 0
    v = (x * mul + rnd) >> right
    a = abs(v)
    uh = a >> 8
    idx = min(uh, 254)
    ua = np.int64(table[idx])
    r = (ua << 8) + (a & 0xFF) * (np.int64(table[idx + 1]) - ua)
    r = (0xFFFF << 8) if uh >= 255 else r
    r = (r - 8388608 + 128) if v >= 0 else (-r + 8388608 + 127)
    return r >> 8


FASTMATH_DOT = {"contract", "reassoc"}


@njit(inline="always", fastmath=FASTMATH_DOT, error_model="numpy")
def _dot(w, j, v):
    """w[j] . v, exact (see the module docstring)."""
    acc = w.dtype.type(0)
    for k in range(v.shape[0]):
        acc += w[j, k] * v[k]
    return acc


@njit(inline="always", fastmath=FASTMATH_DOT, error_model="numpy")
def _dot_4t(w, j, X, t):
    """w[j] . X[t + i] for i = 0..3: one load of each weight serves four steps (exact)."""
    a0 = a1 = a2 = a3 = w.dtype.type(0)
    for k in range(X.shape[1]):
        wk = w[j, k]
        a0 += wk * X[t, k]
        a1 += wk * X[t + 1, k]
        a2 += wk * X[t + 2, k]
        a3 += wk * X[t + 3, k]
    return a0, a1, a2, a3


@njit(inline="always", fastmath=FASTMATH_DOT, error_model="numpy")
def _dot_4j(w, j, v):
    """w[j + i] . v for i = 0..3: one load of v serves four rows (exact)."""
    a0 = a1 = a2 = a3 = w.dtype.type(0)
    for k in range(v.shape[0]):
        vk = v[k]
        a0 += w[j, k] * vk
        a1 += w[j + 1, k] * vk
        a2 += w[j + 2, k] * vk
        a3 += w[j + 3, k] * vk
    return a0, a1, a2, a3


@njit(inline="always", error_model="numpy")
def _requant_in(acc, j, wide, bias, x_mult, x_left, x_right):
    return _sat(_requant_acc(np.int64(acc) + bias[j], x_mult[j], x_left[j], x_right[j], wide), -32768, 32767)


@njit(inline="always", error_model="numpy")
def _gate_pre(gx, acc, j, wide, h_mult, h_left, h_right):
    r = _sat(_requant_acc(np.int64(acc), h_mult[j], h_left[j], h_right[j], wide), -32768, 32767)
    return _sat(gx + r, -32768, 32767)


def _rows_impl(x, w_x, w_h, bias, x_mult, x_left, x_right, h_mult, h_left, h_right, inter, tanh_cell,
               clip_q, zp_x, zp_h, table, wide, h, c, y):
    """x (T, B, E) int8; h (B, H) int8 and c (B, H) int16 updated in place; y (T, B, H) int8.
    wide: int16 x, h and y, TFLM's 16x8 variant (int64 accumulators, int16 hidden state)."""
    T, B, E = x.shape
    H = h.shape[1]
    h_lo, h_hi = (-32768, 32767) if wide else (-128, 127)
    for b in prange(B):
        X = np.empty((T, E), w_x.dtype)               # x - zero point, every step
        for t in range(T):
            for k in range(E):
                X[t, k] = np.int64(x[t, b, k]) - zp_x
        # input side of every gate for every step, hoisted: each weight row is read once per
        # sequence (from cache, against all T steps) instead of once per step
        xacc = np.empty((T, 4 * H), w_x.dtype)
        T4 = T - T % 4
        for j in range(4 * H):
            for t in range(0, T4, 4):
                a0, a1, a2, a3 = _dot_4t(w_x, j, X, t)
                xacc[t, j], xacc[t + 1, j], xacc[t + 2, j], xacc[t + 3, j] = a0, a1, a2, a3
            for t in range(T4, T):
                xacc[t, j] = _dot(w_x, j, X[t])
        gx = np.empty((T, 4 * H), np.int64)
        for t in range(T):
            for j in range(4 * H):
                gx[t, j] = _requant_in(xacc[t, j], j, wide, bias, x_mult, x_left, x_right)
        hv = np.empty(H, w_x.dtype)                   # h - zero point
        pre = np.empty(4 * H, np.int64)               # gate pre-activations, Q3.12
        for k in range(H):
            hv[k] = h[b, k] - zp_h
        racc = np.empty(4 * H, w_x.dtype)             # recurrent products of one step
        for t in range(T):
            for j in range(0, 4 * H - 3, 4):          # 4H is a multiple of 4
                a0, a1, a2, a3 = _dot_4j(w_h, j, hv)
                racc[j], racc[j + 1], racc[j + 2], racc[j + 3] = a0, a1, a2, a3
            for j in range(4 * H):                    # requantize and add: a separate, branch-free pass
                pre[j] = _gate_pre(gx[t, j], racc[j], j, wide, h_mult, h_left, h_right)
            for k in range(H):
                f = _sigmoid(pre[H + k], table)
                i = _sigmoid(pre[k], table)
                gg = _tanh(pre[2 * H + k], 3, 0, table)
                fc = _sat(_mbqm(f * np.int64(c[b, k]), inter[0], inter[1], inter[2]), -32768, 32767)
                ig = _sat(_mbqm(i * gg, inter[3], inter[4], inter[5]), -32768, 32767)
                cn = _sat(fc + ig, -32768, 32767)
                if clip_q > 0:
                    cn = _sat(cn, -clip_q, clip_q)
                c[b, k] = cn
                o = _sigmoid(pre[3 * H + k], table)
                tc = _tanh(cn, tanh_cell[0], tanh_cell[1], table)
                hn = _sat(_mbqm(tc * o, inter[6], inter[7], inter[8]) + zp_h, h_lo, h_hi)
                h[b, k] = hn
                y[t, b, k] = hn
            for k in range(H):
                hv[k] = h[b, k] - zp_h


def _variant(impl, suffix, **options):
    """njit a renamed copy: Numba's disk cache keys by name, not options (see cpu._jit_variant)."""
    f = types.FunctionType(impl.__code__, impl.__globals__, impl.__name__ + suffix, impl.__defaults__,
                           impl.__closure__)
    f.__qualname__ = impl.__qualname__ + suffix
    return guard.njit_cached(error_model="numpy", **options)(f)


# fastmath on the whole kernel: an inlined callee's flags do not survive inlining, and the only
# floating point in it is the exact dot products (the epilogue is integer code, unaffected)
_rows_serial = _variant(_rows_impl, "_serial", fastmath=FASTMATH_DOT)
_rows_parallel = _variant(_rows_impl, "_parallel", fastmath=FASTMATH_DOT, parallel=True)


def lstm_int8(x, q, h0=None, c0=None):
    """x (T, B, E) int8 -> y (T, B, H) int8, (h_n (B, H) int8, c_n (B, H) int16); q a QuantLSTM or packed.

    Same semantics as int8_reference.lstm_int8_reference (initial h = h's zero point, c = 0).
    """
    p = q if isinstance(q, PackedInt8LSTM) else pack(q)
    H, E = p.q.hidden_size, p.q.input_size
    x = np.asarray(x)
    act = np.dtype(p.q.activation_dtype)
    if x.dtype != act or x.ndim != 3 or x.shape[2] != E:
        raise ValueError(f"x: expected {act.name} (T, B, {E}), got {x.dtype} {x.shape}")
    T, B, _ = x.shape
    h = np.full((B, H), p.h_zero_point, act) if h0 is None else _state(h0, act, (B, H), "h0")
    c = np.zeros((B, H), np.int16) if c0 is None else _state(c0, np.int16, (B, H), "c0")
    y = np.empty((T, B, H), act)
    if T == 0 or B == 0:
        return y, (h, c)
    # fork-safe and workqueue-safe as the float kernels are (kernels/guard.py)
    parallel = B > 1 and guard.parallel_allowed()
    run = _rows_parallel if parallel else _rows_serial
    with guard.parallel_lock() if parallel else guard.NULL_LOCK:
        run(np.ascontiguousarray(x), p.w_x, p.w_h, p.bias, p.x_mult, p.x_left, p.x_right, p.h_mult, p.h_left,
            p.h_right, p.inter, p.tanh_cell, p.cell_clip_q, p.x_zero_point, p.h_zero_point, _TABLE,
            act == np.int16, h, c, y)
    return y, (h, c)


def _state(a, dtype, shape, name):
    a = np.asarray(a)
    if a.shape != shape or a.dtype != dtype:
        raise ValueError(f"{name}: expected {np.dtype(dtype).name} {shape}, got {a.dtype} {a.shape}")
    return a.copy()


# ---------------------------------------------------------------------------------------------
# The ops around the LSTM: int8 FULLY_CONNECTED and SOFTMAX (int8_reference has the NumPy versions)
# ---------------------------------------------------------------------------------------------

@guard.njit_cached(fastmath=FASTMATH_DOT, error_model="numpy")
def _fc_int8(x, w, bias, zp_x, mult, left, right, zp_y, lo, hi, out):
    """x (N, K) int8, w (M, K) float (exact, as the LSTM's), bias (M,) int64 -> out (N, M) int8."""
    N, K = x.shape
    M = w.shape[0]
    xv = np.empty(K, w.dtype)
    for n in range(N):
        for k in range(K):
            xv[k] = np.int64(x[n, k]) - zp_x
        for m in range(M):
            v = _mbqm(np.int64(_dot(w, m, xv)) + bias[m], mult[m], left[m], right[m]) + zp_y
            out[n, m] = _sat(v, lo, hi)


def pack_fc(w) -> np.ndarray:
    """int8 weights (M, K) as the exact float dtype `_fc_int8` reads (float64 if a row could pass 2^24)."""
    bound = 255 * int(np.abs(np.asarray(w, np.int64)).sum(axis=1).max(initial=0))
    return np.ascontiguousarray(w, dtype=np.float32 if bound < (1 << 24) else np.float64)


def fully_connected_int8(x, w, bias, x_zero_point, multipliers, shifts, out_zero_point, act_min, act_max):
    """int8_reference.fully_connected_int8(_per_channel), compiled: multipliers/shifts per output row."""
    x = np.ascontiguousarray(x, dtype=np.int8)
    M, K = w.shape
    wf = w if w.dtype in (np.float32, np.float64) else pack_fc(w)
    b = np.zeros(M, np.int64) if bias is None else np.asarray(bias, np.int64)
    shifts = np.asarray(shifts, np.int64)
    out = np.empty((x.shape[0], M), np.int8)
    _fc_int8(x, wf, b, int(x_zero_point), np.asarray(multipliers, np.int64), np.maximum(shifts, 0),
             np.maximum(-shifts, 0), int(out_zero_point), int(act_min), int(act_max), out)
    return out


@njit(inline="always", error_model="numpy")
def _wrap32(v):
    return ((v + 2147483648) & 4294967295) - 2147483648


@njit(inline="always", error_model="numpy")
def _srdhm(a, b):
    ab = a * b
    if ab >= 0:
        return (ab + 1073741824) >> 31
    return -((-(ab - 1073741823)) >> 31)


@njit(inline="always", error_model="numpy")
def _rdbp(x, e):
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


@njit(inline="always", error_model="numpy")
def _shl_sat(x, e):
    thr = (1 << (31 - e)) - 1
    if x > thr:
        return 2147483647
    if x < -thr:
        return -2147483648
    return x << e


@njit(inline="always", error_model="numpy")
def _exp_on_negative_values(a):
    """gemmlowp exp for a Q5.26 a <= 0 -> Q0.31 (see int8_reference.exp_on_negative_values)."""
    a_mod = _wrap32((a & ((1 << 24) - 1)) - (1 << 24))
    x = _wrap32(_shl_sat(a_mod, 5) + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    poly = _rdbp(_wrap32(_srdhm(_wrap32(_rdbp(x4, 2) + x3), 715827883) + x2), 1)
    result = _wrap32(1895147668 + _srdhm(1895147668, _wrap32(x + poly)))
    rem = _wrap32(a_mod - a)
    if rem & (1 << 24):
        result = _srdhm(result, 1672461947)
    if rem & (1 << 25):
        result = _srdhm(result, 1302514674)
    if rem & (1 << 26):
        result = _srdhm(result, 790015084)
    if rem & (1 << 27):
        result = _srdhm(result, 290630308)
    if rem & (1 << 28):
        result = _srdhm(result, 39332535)
    if rem & (1 << 29):
        result = _srdhm(result, 720401)
    if rem & (1 << 30):
        result = _srdhm(result, 242)
    return 2147483647 if a == 0 else result


@guard.njit_cached(error_model="numpy")
def _softmax_int8(x, mult, shift, diff_min, out):
    N, D = x.shape
    for n in range(N):
        mx = -128
        for d in range(D):
            mx = max(mx, np.int64(x[n, d]))
        total = 0
        for d in range(D):
            diff = np.int64(x[n, d]) - mx
            if diff >= diff_min:
                e = _exp_on_negative_values(_srdhm(_wrap32(diff << shift), mult))
                total = _wrap32(total + _rdbp(e, 12))
        headroom = 0                                            # count leading zeros of a uint32
        while headroom < 32 and not ((total << headroom) & 2147483648):
            headroom += 1
        s = _wrap32(((total << headroom) & 4294967295) - 2147483648)
        hs = s + 2147483647                                     # RoundingHalfSum(s, 1)
        half = (hs + 1) // 2 if hs >= 0 else -((1 - hs) // 2)
        r = _wrap32(1515870810 + _srdhm(half, -1010580540))
        for _ in range(3):
            r = _wrap32(r + _shl_sat(_srdhm(r, _wrap32((1 << 29) - _srdhm(half, r))), 2))
        scale = _shl_sat(r, 1)
        exponent = 12 - headroom + 31 - 8
        for d in range(D):
            diff = np.int64(x[n, d]) - mx
            if diff >= diff_min:
                e = _exp_on_negative_values(_srdhm(_wrap32(diff << shift), mult))
                out[n, d] = _sat(_rdbp(_srdhm(scale, e), exponent) - 128, -128, 127)
            else:
                out[n, d] = -128


def softmax_int8(x, input_multiplier: int, input_left_shift: int, diff_min: int) -> np.ndarray:
    """int8_reference.softmax_int8, compiled (over the last axis)."""
    x = np.asarray(x, dtype=np.int8)
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    out = np.empty_like(x2)
    _softmax_int8(x2, int(input_multiplier), int(input_left_shift), int(diff_min), out)
    return out.reshape(x.shape)
