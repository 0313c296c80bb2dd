"""The epilogue's exp, sigmoid and tanh (kernels/activations.py) against numpy's float64."""
import numpy as np
import pytest
from numba import njit

from edgelstm.kernels.activations import exp_neg, sigmoid, tanh


@njit
def _run(a):
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        out[i] = exp_neg(a[i])
    return out


@njit
def _sig_tanh(a):
    s, t = np.empty_like(a), np.empty_like(a)
    for i in range(a.shape[0]):
        s[i] = sigmoid(a[i])
        t[i] = tanh(a[i])
    return s, t


def _rel_err(dtype, x):
    got = _run(x.astype(dtype))
    ref = np.exp(x.astype(dtype).astype(np.float64))      # exact exp of the rounded input
    return got, np.max(np.abs(got - ref) / ref)


def test_float32_exp_within_3_ulp_of_float64():
    x = np.linspace(-87.0, 0.0, 1 << 22)
    got, rel = _rel_err(np.float32, x)
    assert got.dtype == np.float32
    assert rel < 3 * np.finfo(np.float32).eps / 2, rel     # measured 7.8e-8


def test_float64_exp_within_2_ulp():
    x = np.linspace(-708.0, 0.0, 1 << 20)
    got, rel = _rel_err(np.float64, x)
    assert got.dtype == np.float64
    assert rel < 2 * np.finfo(np.float64).eps, rel         # measured 3.1e-16


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-7), (np.float64, 5e-16)])
def test_sigmoid_and_tanh_against_numpy(dtype, tol):
    z = np.concatenate([np.linspace(-100, 100, 20001), [0.0, -0.0, 1e-30, -1e-30]]).astype(dtype)
    s, t = _sig_tanh(z)
    zd = z.astype(np.float64)
    assert s.dtype == dtype and t.dtype == dtype
    assert np.max(np.abs(s - 1.0 / (1.0 + np.exp(-zd)))) < tol
    assert np.max(np.abs(t - np.tanh(zd))) < tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clamp_nan_and_zero(dtype):
    x = np.array([0.0, -1e4, -np.inf, np.nan, -1e-30], dtype)
    got = _run(x)
    assert got[0] == 1.0 and got[4] == 1.0 and np.isnan(got[3])
    assert 0.0 <= got[1] < 1e-37 and 0.0 <= got[2] < 1e-37
    s, t = _sig_tanh(np.array([np.nan, np.inf, -np.inf], dtype))
    assert np.isnan(s[0]) and np.isnan(t[0])
    assert (s[1], t[1], t[2]) == (1.0, 1.0, -1.0) and 0.0 <= s[2] < 1e-37    # exp clamped: σ(-inf) ~ 1e-38


def test_other_types_are_refused():
    with pytest.raises(Exception, match="float32 or float64"):
        _run(np.zeros(4, np.int64))
