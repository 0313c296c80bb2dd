"""Vectorizable exp for the fused LSTM epilogue, in the model's own precision.

`vexp_neg(a, ibuf, n)` sets a[:n] = exp(a[:n]) in place for a <= 0. Sigmoid and tanh only ever
exponentiate -|z| (or -2|z|), so no argument overflows. The dtype of `a` picks the
implementation at compile time (a Numba overload):

- float64: range reduction by ln2 (Cody-Waite, two constants), Taylor to degree 12 on
  |r| <= ln2/2 (truncation < 2e-16 relative), 2^k from its bits in `ibuf` (viewed as int64);
- float32: the same reduction in float32, Taylor to degree 7 (truncation r^8/8! < 5e-9
  relative, below float32's half-ulp of 6e-8), 2^k from its bits in `ibuf` (viewed as int32). Half the
  polynomial and twice the SIMD lanes of the float64 one. Measured against float64 (numpy.exp)
  over 2^24 points of [-87, 0]: max relative error 7.8e-8 (1.3 half-ulps); tests/test_activations.py
  holds it under 1.8e-7.

Arguments below the smallest normal result are clamped (-708 for float64, exp = 3e-308;
-87 for float32, exp = 1.6e-38): exp is 0 there to every tolerance, and 2^k stays a normal
number. NaN compares false, is not clamped and stays NaN. Branch-free so LLVM vectorizes it
(no SVML here; libm one element at a time costs more than the B=1 matvec itself).
"""
from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
_EXP_MIN_ARG = -708.0

_LOG2E_F = np.float32(1.4426950408889634)
_LN2_HI_F = np.float32(0.693359375)          # 9 significant bits: k*_LN2_HI_F is exact in float32
_LN2_LO_F = np.float32(-2.12194440e-4)       # ln2 - _LN2_HI_F
_EXP_MIN_ARG_F = np.float32(-87.0)
_HALF_F = np.float32(0.5)
_ONE_F = np.float32(1.0)
_C2_F, _C3_F, _C4_F = np.float32(1.0 / 2), np.float32(1.0 / 6), np.float32(1.0 / 24)
_C5_F, _C6_F, _C7_F = np.float32(1.0 / 120), np.float32(1.0 / 720), np.float32(1.0 / 5040)


def _vexp_neg_f64(a, ibuf, n):
    ib = ibuf.view(np.int64)
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
        ib[j] = (np.int64(k) + 1023) << 52     # the bits of 2^k
    scale = ib[:n].view(np.float64)
    for j in range(n):
        a[j] *= scale[j]


def _vexp_neg_f32(a, ibuf, n):
    ib = ibuf.view(np.int32)
    for j in range(n):
        x = a[j]
        if x < _EXP_MIN_ARG_F:
            x = _EXP_MIN_ARG_F
        k = np.floor(x * _LOG2E_F + _HALF_F)
        r = (x - k * _LN2_HI_F) - k * _LN2_LO_F
        p = _C7_F
        p = p * r + _C6_F
        p = p * r + _C5_F
        p = p * r + _C4_F
        p = p * r + _C3_F
        p = p * r + _C2_F
        p = p * r + _ONE_F
        p = p * r + _ONE_F
        a[j] = p
        ib[j] = (np.int32(k) + np.int32(127)) << np.int32(23)     # the bits of 2^k
    scale = ib[:n].view(np.float32)
    for j in range(n):
        a[j] *= scale[j]


def vexp_neg(a, ibuf, n):
    """a[:n] = exp(a[:n]) in place, a <= 0; ibuf is contiguous scratch (int or float) of a's
    item size, viewed as integers for the bits of 2^k."""
    raise NotImplementedError("vexp_neg is only callable from @njit code")


@overload(vexp_neg, jit_options={"fastmath": {"contract"}, "error_model": "numpy"})
def _vexp_neg_overload(a, ibuf, n):
    if not isinstance(a, types.Array):
        return None
    if not isinstance(ibuf, types.Array) or ibuf.dtype.bitwidth != a.dtype.bitwidth:
        raise TypeError(f"vexp_neg: ibuf must have a's item size, got {ibuf} for {a}")
    if a.dtype == types.float32:
        return _vexp_neg_f32
    if a.dtype == types.float64:
        return _vexp_neg_f64
    return None


