"""edgelstm._checks through edgelstm.lstm: every bad argument gets a message naming it."""
import numpy as np
import pytest

import edgelstm as el
from edgelstm._checks import InputError, InputTypeError, check_lstm_inputs
from edgelstm.run import DeviceError, lstm

SPEC = el.LSTMSpec(3, 5, num_layers=2, bidirectional=True, proj_size=2)
W = el.LSTMWeights.random(SPEC)
X = np.zeros((4, 2, 3), np.float32)        # T=4, B=2, E=3


@pytest.mark.parametrize("kwargs, err, message", [
    (dict(x=np.zeros((4, 3), np.float32)), InputError, r"x: expected a 3-d array \(T, B, E\), got 2-d with shape \(4, 3\)"),
    (dict(x=np.zeros((4, 2, 7), np.float32)), InputError, r"x: expected last dimension E = input_size = 3, got shape \(4, 2, 7\)"),
    (dict(x=np.zeros((4, 2, 3), np.int32)), InputTypeError, "x: expected dtype float32 or float64, got int32"),
    (dict(x=np.zeros((0, 2, 3), np.float32)), InputError, "x: expected at least one time step"),
    (dict(h0=np.zeros((4, 2, 5), np.float32)), InputError, r"h0: expected shape \(4, 2, 2\).*got \(4, 2, 5\)"),
    (dict(c0=np.zeros((2, 2, 5), np.float32)), InputError, r"c0: expected shape \(4, 2, 5\).*got \(2, 2, 5\)"),
    (dict(h0=np.zeros((4, 2, 2), np.float64)), InputTypeError, "h0: expected dtype float32 \\(the dtype of x\\), got float64"),
    (dict(lengths=[4, 5]), InputError, r"lengths: expected every value in 1..4 \(1..T\), got \[5\]"),
    (dict(lengths=[0, 2]), InputError, r"lengths: expected every value in 1..4 \(1..T\), got \[0\]"),
    (dict(lengths=[4, 2, 1]), InputError, r"lengths: expected shape \(2,\) \(one length per batch row\), got \(3,\)"),
    (dict(lengths=[4.0, 2.0]), InputTypeError, "lengths: expected integers, got dtype float64"),
    (dict(weights="w"), InputTypeError, "weights: expected an edgelstm.LSTMWeights, got str"),
    (dict(batch_first=1), InputTypeError, "batch_first: expected True or False, got 1"),
    (dict(x=np.zeros((2, 4, 7), np.float32), batch_first=True), InputError, r"x: expected last dimension E = input_size = 3"),
])
def test_bad_input_messages(kwargs, err, message):
    args = dict(x=X, weights=W)
    args.update(kwargs)
    with pytest.raises(err, match=message):
        lstm(args.pop("x"), args.pop("weights"), **args)
    assert issubclass(err, (ValueError, TypeError))


def test_validation_reads_attributes_only():
    """A device-array stand-in: only .shape/.ndim/.dtype, no __array__ (like a CUDA array)."""
    class DeviceArray:
        def __init__(self, shape, dtype):
            self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)

        def __array__(self, *a, **k):
            raise AssertionError("validation must not copy to the host")
    info = check_lstm_inputs(DeviceArray((4, 2, 3), "float64"), W, DeviceArray((4, 2, 2), "float64"),
                             DeviceArray((4, 2, 5), "float64"), lengths=[4, 1])
    assert (info.seq_len, info.batch, info.dtype) == (4, 2, np.float64)
    assert info.lengths.tolist() == [4, 1]
    with pytest.raises(InputError, match="c0: expected shape"):
        check_lstm_inputs(DeviceArray((4, 2, 3), "float64"), W, None, DeviceArray((4, 2, 2), "float64"))


def test_bad_device():
    with pytest.raises(DeviceError, match="device: expected one of 'cpu', 'cuda', got 'gpu'"):
        lstm(X, W, device="gpu")


def test_cuda_without_support_is_a_clear_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_cuda(name, globals=None, locals=None, fromlist=(), level=0):
        if fromlist and "cuda" in fromlist or name.endswith("kernels.cuda"):
            raise ImportError("No module named 'numba.cuda'")
        return real_import(name, globals, locals, fromlist, level)
    monkeypatch.setattr(builtins, "__import__", no_cuda)
    with pytest.raises(DeviceError, match="device='cuda'.*numba-cuda.*NVIDIA GPU"):
        lstm(X, W, device="cuda")
    with pytest.raises(InputError, match="x: expected a 3-d array"):   # validated before loading
        lstm(X[0], W, device="cuda")
