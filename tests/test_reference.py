"""kernels/reference.py against torch.nn.LSTM and against the equations written out by hand."""
import math

import numpy as np
import pytest

import edgelstm as el
from edgelstm.kernels.reference import lstm_reference, sigmoid

torch = pytest.importorskip("torch")


def _torch_lstm(spec, seed=0):
    torch.manual_seed(seed)
    return torch.nn.LSTM(spec.input_size, spec.hidden_size, num_layers=spec.num_layers,
                         bidirectional=spec.bidirectional, proj_size=spec.proj_size,
                         bias=spec.bias != "none").double()


@pytest.mark.parametrize("spec", [
    el.LSTMSpec(5, 7),
    el.LSTMSpec(4, 6, num_layers=3, bidirectional=True, proj_size=3),
    el.LSTMSpec(3, 5, num_layers=2, bias="none"),
])
def test_matches_torch_with_initial_state_and_lengths(spec):
    m = _torch_lstm(spec)
    w = el.LSTMWeights.from_torch(m, dtype="float64")
    rng = np.random.default_rng(0)
    T, B = 6, 4
    LD = spec.num_layers * spec.num_directions
    x = rng.standard_normal((T, B, spec.input_size))
    h0 = rng.standard_normal((LD, B, spec.out_size))
    c0 = rng.standard_normal((LD, B, spec.hidden_size))
    lengths = np.array([6, 1, 3, 5])
    y, (h, c) = lstm_reference(x, w, h0, c0, lengths=lengths)
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths),
                                                         enforce_sorted=False)
        yt, (ht, ct) = m(packed, (torch.tensor(h0), torch.tensor(c0)))
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yt, total_length=T)
    np.testing.assert_allclose(y, yt.numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(h, ht.numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(c, ct.numpy(), rtol=0, atol=1e-13)
    assert np.all(y[1:, 1] == 0.0)          # past the end of a length-1 sequence: zeros


def test_one_peephole_step_by_hand():
    """One step with peepholes and a keras bias, each gate written out with math.exp."""
    spec = el.LSTMSpec(2, 3, bias="keras", peephole=True)
    w = el.LSTMWeights.random(spec, seed=3, dtype="float64", scale=0.9)
    lw = w.layers[0][0]
    x = np.array([0.3, -1.2])
    h0 = np.array([0.5, -0.1, 0.2])
    c0 = np.array([1.5, -0.7, 0.05])
    y, (h, c) = lstm_reference(x.reshape(1, 1, 2), w, h0.reshape(1, 1, 3), c0.reshape(1, 1, 3))
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))
    H = 3
    for k in range(H):
        pre = [sum(lw.w_ih[g * H + k, e] * x[e] for e in range(2))
               + sum(lw.w_hh[g * H + k, q] * h0[q] for q in range(3)) + lw.b_ih[g * H + k]
               for g in range(4)]
        i = sig(pre[0] + lw.peep[0, k] * c0[k])
        f = sig(pre[1] + lw.peep[1, k] * c0[k])
        g = math.tanh(pre[2])
        c_new = f * c0[k] + i * g
        o = sig(pre[3] + lw.peep[2, k] * c_new)
        assert c[0, 0, k] == pytest.approx(c_new, abs=1e-15)
        assert h[0, 0, k] == pytest.approx(o * math.tanh(c_new), abs=1e-15)
        assert y[0, 0, k] == h[0, 0, k]


def test_sigmoid_saturates_without_overflow():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = sigmoid(np.array([-1e4, -50.0, 0.0, 50.0, 1e4]))
    np.testing.assert_allclose(s, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0], rtol=1e-15)
