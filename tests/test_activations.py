"""The epilogue's vectorized exp (kernels/activations.py) against numpy's float64 exp."""
import numpy as np
import pytest
from numba import njit

from edgelstm.kernels.activations import vexp_neg


@njit
def _run(a, ibuf):
    vexp_neg(a, ibuf, a.shape[0])
    return a


def _rel_err(dtype, x):
    got = _run(x.astype(dtype), np.empty(x.shape[0], dtype))
    ref = np.exp(x.astype(dtype).astype(np.float64))      # exact exp of the rounded input
    return got, np.max(np.abs(got - ref) / ref)


def test_float32_exp_within_3_ulp_of_float64():
    x = np.linspace(-87.0, 0.0, 1 << 22)
    got, rel = _rel_err(np.float32, x)
    assert got.dtype == np.float32
    assert rel < 3 * np.finfo(np.float32).eps / 2, rel     # measured 7.8e-8


def test_float64_exp_within_2_ulp():
    x = np.linspace(-708.0, 0.0, 1 << 20)
    _, rel = _rel_err(np.float64, x)
    assert rel < 2 * np.finfo(np.float64).eps, rel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clamp_nan_and_zero(dtype):
    x = np.array([0.0, -1e4, -np.inf, np.nan, -1e-30], dtype)
    got = _run(x.copy(), np.empty(5, dtype))
    assert got[0] == 1.0 and got[4] == 1.0 and np.isnan(got[3])
    assert 0.0 <= got[1] < 1e-37 and 0.0 <= got[2] < 1e-37


def test_scratch_of_another_item_size_is_refused():
    with pytest.raises(Exception, match="item size"):
        _run(np.zeros(4, np.float32), np.empty(4, np.int64))
