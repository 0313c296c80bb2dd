"""LSTMStream: one step at a time, against the reference run over the whole sequence."""
import numpy as np
import pytest

import edgelstm as el
from edgelstm._checks import InputError, InputTypeError
from edgelstm.kernels.reference import lstm_reference
from edgelstm.run import LSTMStream


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", [el.LSTMSpec(5, 8), el.LSTMSpec(4, 6, num_layers=3, proj_size=2, peephole=True),
                                  el.LSTMSpec(3, 4, num_layers=2, bias="keras")], ids=str)
@pytest.mark.parametrize("batch", [1, 3])
def test_steps_match_reference(spec, dtype, batch):
    w = el.LSTMWeights.random(spec, seed=7, dtype=dtype)
    x = np.random.default_rng(1).standard_normal((12, batch, spec.input_size)).astype(dtype)
    s = LSTMStream(w, batch=batch)
    outs = []
    for t in range(12):
        out = s.step(x[t, 0] if batch == 1 else x[t])
        outs.append(out.copy())
    y, (h, c) = lstm_reference(x, w)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(outs).reshape(y.shape), y, **tol)
    np.testing.assert_allclose(s.h, h, **tol)
    np.testing.assert_allclose(s.c, c, **tol)


def test_state_set_reset_and_output_buffer_reuse():
    spec = el.LSTMSpec(3, 5, num_layers=2)
    w = el.LSTMWeights.random(spec, dtype="float64")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 1, 3))
    h0 = rng.standard_normal((2, 1, 5))
    c0 = rng.standard_normal((2, 1, 5))
    s = LSTMStream(w)
    s.h, s.c = h0, c0
    first = s.step(x[0, 0])
    second = s.step(x[1, 0])
    assert first is second                                   # the preallocated output buffer
    for t in range(2, 4):
        s.step(x[t])                                         # (B, E) works for batch 1 too
    y, (h, c) = lstm_reference(x, w, h0, c0)
    np.testing.assert_allclose(s.h, h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first, y[-1, 0], rtol=1e-12, atol=1e-12)
    s.reset()
    assert not s.h.any() and not s.c.any()
    s.step(x[0, 0])
    np.testing.assert_allclose(s.h, lstm_reference(x[:1], w)[1][0], rtol=1e-12, atol=1e-12)


def test_no_allocation_per_step():
    """The step kernel allocates nothing: n steps inside one jitted loop allocate as much as one
    (what is counted is only the wrapping of the arguments at the Python boundary)."""
    from numba import njit
    from numba.core.runtime import _nrt_python as _nrt, rtsys
    from edgelstm.kernels.cpu import stream_step

    @njit
    def run_steps(n, x, w0, wup, whh, b, whr, peep, hp, pp, h, c, z, hf, a, s, ib, out):
        for _ in range(n):
            stream_step(x, w0, wup, whh, b, whr, peep, hp, pp, h, c, z, hf, a, s, ib, out)

    w = el.LSTMWeights.random(el.LSTMSpec(4, 6, num_layers=2, proj_size=3, peephole=True))
    st = LSTMStream(w, batch=2)
    args = (np.ones((2, 4), np.float32), *st._packed, True, True, st._h, st._c, st._z, st._hf,
            st._a, st._s, st._ibuf, st._out)
    run_steps(1, *args)
    _nrt.memsys_enable_stats()
    try:
        counts = []
        for n in (1, 50):
            before = rtsys.get_allocation_stats().alloc
            run_steps(n, *args)
            counts.append(rtsys.get_allocation_stats().alloc - before)
    finally:
        _nrt.memsys_disable_stats()
    assert counts[0] == counts[1]
    x = np.ones((2, 4), np.float32)
    assert st.step(x) is st.step(x)                          # the same preallocated buffer


def test_bad_arguments_are_named():
    w = el.LSTMWeights.random(el.LSTMSpec(3, 5))
    s = LSTMStream(w, batch=2)
    with pytest.raises(InputError, match=r"x_t: expected shape \(2, 3\).*got \(3,\)"):
        s.step(np.zeros(3, np.float32))
    with pytest.raises(InputTypeError, match="x_t: expected dtype float32 or float64, got int64"):
        s.step(np.zeros((2, 3), np.int64))
    with pytest.raises(InputError, match=r"h: expected shape \(1, 2, 5\).*got \(1, 1, 5\)"):
        s.h = np.zeros((1, 1, 5), np.float32)
    with pytest.raises(InputTypeError, match="c: expected dtype float32"):
        s.c = np.zeros((1, 2, 5), np.float64)
    with pytest.raises(InputError, match="unidirectional"):
        LSTMStream(el.LSTMWeights.random(el.LSTMSpec(3, 5, bidirectional=True)))
    with pytest.raises(InputError, match="batch: expected an integer >= 1, got 0"):
        LSTMStream(w, batch=0)
    with pytest.raises(ValueError, match="device: expected one of 'cpu', 'cuda', got 'tpu'"):
        LSTMStream(w, device="tpu")
