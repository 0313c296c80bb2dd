"""edgelstm.lstm (Numba CPU kernels) against the float64 reference and torch.nn.LSTM."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import edgelstm as el
from edgelstm.kernels import cpu
from edgelstm.kernels.reference import lstm_reference
from edgelstm.run import lstm


def _inputs(spec, T, B, dtype, seed=0, state=True):
    rng = np.random.default_rng(seed)
    LD = spec.num_layers * spec.num_directions
    x = rng.standard_normal((T, B, spec.input_size)).astype(dtype)
    if not state:
        return x, None, None
    h0 = rng.standard_normal((LD, B, spec.out_size)).astype(dtype)
    c0 = rng.standard_normal((LD, B, spec.hidden_size)).astype(dtype)
    return x, h0, c0


def _assert_close(got, ref, dtype):
    y, (h, c) = got
    yr, (hr, cr) = ref
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    for a, b in ((y, yr), (h, hr), (c, cr)):
        assert a.dtype == np.dtype(dtype) and a.shape == b.shape
        np.testing.assert_allclose(a, b, **tol)


@pytest.fixture(params=["rows", "gemm"])
def path(request, monkeypatch):
    """Run each test through both recurrences (the gemm path normally starts at batch 32);
    the rows path with blocks of up to 8 rows (small GEMM) and of 1-3 rows (axpy)."""
    monkeypatch.setattr(cpu.config, "gemm_min_batch", 1 if request.param == "gemm" else 10**9)
    monkeypatch.setattr(cpu.config, "gemm_min_l2_multiple", 0.0)
    monkeypatch.setattr(cpu.config, "max_rows_per_block", 8)
    return request.param


SPECS = [
    el.LSTMSpec(5, 8),
    el.LSTMSpec(4, 6, num_layers=3, bidirectional=True, proj_size=3),
    el.LSTMSpec(3, 7, num_layers=2, bias="keras", peephole=True),
    el.LSTMSpec(6, 5, bidirectional=True, bias="none", peephole=True, proj_size=2),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_matches_reference(spec, dtype, path):
    x, h0, c0 = _inputs(spec, T=7, B=11, dtype=dtype)     # blocks of 4+ rows and a remainder
    w = el.LSTMWeights.random(spec, seed=1, dtype=dtype)
    lengths = np.array([7, 1, 4, 7, 2, 7, 6, 3, 7, 5, 1])
    for L in (None, lengths):
        got = lstm(x, w, h0, c0, lengths=L)
        _assert_close(got, lstm_reference(x, w, h0, c0, lengths=L), dtype)
    if L is not None:
        assert np.all(got[0][4:, 2] == 0)     # past row 2's end (length 4)


@pytest.mark.parametrize("min_steps", [1, 10**9])   # B=1: the parallel and the serial variant
def test_single_block_variants_match_reference(min_steps, monkeypatch):
    monkeypatch.setattr(cpu.config, "parallel_single_block_min_steps", min_steps)
    spec = el.LSTMSpec(4, 6, num_layers=2, bidirectional=True, proj_size=3, peephole=True)
    x, h0, c0 = _inputs(spec, T=9, B=1, dtype="float64")
    w = el.LSTMWeights.random(spec, seed=2, dtype="float64")
    _assert_close(lstm(x, w, h0, c0), lstm_reference(x, w, h0, c0), "float64")


@settings(max_examples=25, deadline=None)
@given(E=st.integers(1, 9), H=st.integers(1, 9), layers=st.integers(1, 3), bidir=st.booleans(),
       proj=st.integers(0, 8), bias=st.sampled_from(["pytorch", "keras", "none"]), peep=st.booleans(),
       T=st.integers(1, 6), B=st.integers(1, 20), seed=st.integers(0, 2**16), varlen=st.booleans())
def test_random_specs_match_reference(E, H, layers, bidir, proj, bias, peep, T, B, seed, varlen):
    spec = el.LSTMSpec(E, H, num_layers=layers, bidirectional=bidir, proj_size=proj % H,
                       bias=bias, peephole=peep)
    x, h0, c0 = _inputs(spec, T, B, "float64", seed)
    w = el.LSTMWeights.random(spec, seed=seed, dtype="float64")
    lengths = np.random.default_rng(seed).integers(1, T + 1, B) if varlen else None
    _assert_close(lstm(x, w, h0, c0, lengths=lengths),
                  lstm_reference(x, w, h0, c0, lengths=lengths), "float64")


def test_float32_input_casts_float64_weights_once():
    spec = el.LSTMSpec(4, 6)
    w64 = el.LSTMWeights.random(spec, dtype="float64")
    x, _, _ = _inputs(spec, 5, 2, "float32", state=False)
    y1, _ = lstm(x, w64)
    y2, _ = lstm(x, w64)
    assert y1.dtype == np.float32
    from edgelstm.run import weights_as
    assert weights_as(w64, np.float32) is weights_as(w64, np.float32)   # cached cast
    np.testing.assert_allclose(y1, lstm_reference(x, w64)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y1, y2)


def test_long_sequence_stays_within_tolerance():
    spec = el.LSTMSpec(3, 4, proj_size=2, peephole=True)
    x, h0, c0 = _inputs(spec, T=10_000, B=1, dtype="float64", seed=5)
    w = el.LSTMWeights.random(spec, seed=5, dtype="float64", scale=1.0)
    _assert_close(lstm(x, w, h0, c0), lstm_reference(x, w, h0, c0), "float64")
    w32 = w.astype("float32")
    y32, (h32, c32) = lstm(x.astype(np.float32), w32)
    y, (h, c) = lstm_reference(x, w32)
    np.testing.assert_allclose(y32, y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_saturating_inputs_give_finite_outputs(dtype, path):
    spec = el.LSTMSpec(3, 6, num_layers=2, peephole=True)
    w = el.LSTMWeights.random(spec, seed=2, dtype=dtype)
    x = np.array([1e4, -1e4, 1e4], dtype)[None, None, :] * np.ones((4, 3, 1), dtype)
    x[:, 1] *= -1
    y, (h, c) = lstm(x, w)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(h)) and np.all(np.isfinite(c))
    _assert_close((y, (h, c)), lstm_reference(x, w), dtype)
    assert np.all(np.abs(y) <= 1.0)


def test_nan_propagates(path):
    spec = el.LSTMSpec(3, 4)
    w = el.LSTMWeights.random(spec, dtype="float64")
    x, _, _ = _inputs(spec, 4, 2, "float64", state=False)
    x[1, 0, 2] = np.nan
    y, (h, c) = lstm(x, w)
    assert np.all(np.isnan(y[1:, 0])) and np.all(np.isnan(h[:, 0])) and np.all(np.isnan(c[:, 0]))
    assert np.all(np.isfinite(y[:, 1])) and not np.any(np.isnan(y[0]))


def test_non_contiguous_and_batch_first_inputs():
    spec = el.LSTMSpec(3, 5, bidirectional=True)
    w = el.LSTMWeights.random(spec, dtype="float64")
    big = np.random.default_rng(0).standard_normal((6, 8, 6))
    x = big[:, ::2, ::2]                                     # (T=6, B=4, E=3), strided
    assert not x.flags.c_contiguous
    ref = lstm_reference(x, w)
    _assert_close(lstm(x, w), ref, "float64")
    xb = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)   # F-ish order
    _assert_close(lstm(xb, w), ref, "float64")
    yb, state = lstm(x.transpose(1, 0, 2), w, batch_first=True)
    _assert_close((yb.transpose(1, 0, 2), state), ref, "float64")


# -- against torch.nn.LSTM ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch_bidirectional_3_layers_proj_lengths(dtype, batch_first):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.LSTM(6, 8, num_layers=3, bidirectional=True, proj_size=5, batch_first=batch_first)
    m = m.to(getattr(torch, dtype))
    w = el.LSTMWeights.from_torch(m)
    assert w.dtype == np.dtype(dtype)
    spec = w.spec
    x, h0, c0 = _inputs(spec, T=9, B=6, dtype=dtype, seed=4)
    lengths = np.array([9, 3, 1, 9, 5, 2])
    xin = x.transpose(1, 0, 2) if batch_first else x
    y, (h, c) = lstm(xin, w, h0, c0, lengths=lengths, batch_first=batch_first)
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(np.ascontiguousarray(xin)), torch.from_numpy(lengths),
            batch_first=batch_first, enforce_sorted=False)
        yt, (ht, ct) = m(packed, (torch.from_numpy(h0), torch.from_numpy(c0)))
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yt, batch_first=batch_first, total_length=9)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, yt.numpy(), **tol)
    np.testing.assert_allclose(h, ht.numpy(), **tol)
    np.testing.assert_allclose(c, ct.numpy(), **tol)
    with torch.no_grad():                                       # full length, zero state
        yt, (ht, ct) = m(torch.from_numpy(np.ascontiguousarray(xin)))
    y, (h, c) = lstm(xin, w, batch_first=batch_first)
    np.testing.assert_allclose(y, yt.numpy(), **tol)
    np.testing.assert_allclose(c, ct.numpy(), **tol)
