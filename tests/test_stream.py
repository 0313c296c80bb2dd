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
        outs.append(s.step(x[t, 0] if batch == 1 else x[t]))
    y, (h, c) = lstm_reference(x, w)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(outs).reshape(y.shape), y, **tol)
    np.testing.assert_allclose(s.h, h, **tol)
    np.testing.assert_allclose(s.c, c, **tol)


def test_state_set_and_reset():
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
    assert not np.shares_memory(first, second)               # a new array per step
    for t in range(2, 4):
        s.step(x[t])                                         # (B, E) works for batch 1 too
    y, (h, c) = lstm_reference(x, w, h0, c0)
    np.testing.assert_allclose(s.h, h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(first, y[0, 0], rtol=1e-12, atol=1e-12)   # not overwritten by later steps
    np.testing.assert_allclose(second, y[1, 0], rtol=1e-12, atol=1e-12)
    kept = s.h
    s.step(x[0, 0])
    np.testing.assert_allclose(kept, h, rtol=1e-12, atol=1e-12)          # .h is a copy, not a live view
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
    def run_steps(n, x, w0, wup, whh, b, whr, peep, hp, pp, h, c, z, hf, out):
        for _ in range(n):
            stream_step(x, w0, wup, whh, b, whr, peep, hp, pp, h, c, z, hf, out)

    w = el.LSTMWeights.random(el.LSTMSpec(4, 6, num_layers=2, proj_size=3, peephole=True))
    st = LSTMStream(w, batch=2)
    args = (np.ones((2, 4), np.float32), *st._packed, True, True, st._h, st._c, st._z, st._hf,
            st._out)
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


@pytest.mark.parametrize("batch", [1, 2])
def test_collected_steps_equal_whole_sequence(batch):
    """The loop users write: collect each step's output in a list, stack, compare with el.lstm."""
    spec = el.LSTMSpec(4, 6, num_layers=2)
    w = el.LSTMWeights.random(spec, seed=3)
    x = np.random.default_rng(4).standard_normal((9, batch, 4)).astype(np.float32)
    s = el.LSTMStream(w, batch=batch)
    outs = [s.step(x[t]) for t in range(9)]
    y, _ = el.lstm(x, w)
    np.testing.assert_allclose(np.stack(outs), y, rtol=1e-5, atol=1e-6)


def test_step_out_allocates_nothing():
    """step(x_t, out=buf) writes into the caller's buffer: tracemalloc's numpy data domain
    sees no array allocated over 49 steps whose results are all kept, while the default
    form allocates one array per step (the control that shows the check can fail)."""
    import tracemalloc
    w = el.LSTMWeights.random(el.LSTMSpec(8, 16, num_layers=2))
    s = el.LSTMStream(w)
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    rows = [x[t] for t in range(50)]
    buf = np.empty(16, np.float32)
    assert s.step(rows[0], out=buf) is buf                  # warm: compile and bind
    only_numpy = [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]

    def arrays_allocated(use_out):
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot().filter_traces(only_numpy)
            kept = [s.step(r, out=buf) if use_out else s.step(r) for r in rows[1:]]
            after = tracemalloc.take_snapshot().filter_traces(only_numpy)
        finally:
            tracemalloc.stop()
        assert len(kept) == 49
        return sum(d.count_diff for d in after.compare_to(before, "lineno"))

    assert arrays_allocated(use_out=True) == 0
    assert arrays_allocated(use_out=False) == 49
    ref = el.LSTMStream(w)
    outs = [ref.step(r) for r in rows]
    s.reset()
    for r in rows:
        s.step(r, out=buf)
    np.testing.assert_array_equal(buf, outs[-1])


def test_step_out_is_checked():
    s = el.LSTMStream(el.LSTMWeights.random(el.LSTMSpec(3, 5)))
    x = np.zeros(3, np.float32)
    with pytest.raises(InputError, match=r"out: expected shape \(5,\), got \(1, 5\)"):
        s.step(x, out=np.empty((1, 5), np.float32))
    with pytest.raises(InputTypeError, match="out: expected dtype float32 .*got float64"):
        s.step(x, out=np.empty(5, np.float64))
    ro = np.empty(5, np.float32)
    ro.flags.writeable = False
    with pytest.raises(InputError, match="out: expected a writeable array"):
        s.step(x, out=ro)
    with pytest.raises(InputTypeError, match="out: expected a numpy array"):
        s.step(x, out=[0.0] * 5)


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
