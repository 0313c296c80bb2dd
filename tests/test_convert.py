"""Converters: round trips through each framework's layout, and outputs of the converted
weights against torch.nn.LSTM, Keras LSTM / Bidirectional(LSTM) and onnxruntime's LSTM."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")   # before keras is imported anywhere

import numpy as np
import pytest

from edgelstm import LSTMSpec, LSTMWeights
from edgelstm.convert import (ConvertError, from_keras, from_onnx, from_torch_state_dict, stack_layers,
                              to_keras, to_onnx, torch_lstm_kwargs)
from edgelstm.kernels.reference import lstm_reference

T, B = 7, 3


def run_lstm(x, w):
    """edgelstm.run.lstm when it exists (the fast kernels), else the float64 reference."""
    try:
        from edgelstm.run import lstm
    except ImportError:
        return lstm_reference(x, w)
    return lstm(x, w)


def rand_x(E, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((T, B, E)).astype(dtype)


# -- PyTorch -----------------------------------------------------------------------------
TORCH_CASES = [
    dict(input_size=5, hidden_size=8),
    dict(input_size=5, hidden_size=8, num_layers=2, bidirectional=True),
    dict(input_size=5, hidden_size=8, num_layers=2, bidirectional=True, proj_size=3),
    dict(input_size=4, hidden_size=6, num_layers=3, bias=False),
]


@pytest.mark.parametrize("kw", TORCH_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_torch_round_trip_and_outputs(kw):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.LSTM(**kw).double()
    w = LSTMWeights.from_torch(m)
    assert w.dtype == np.float64
    assert w.spec.bias == ("pytorch" if kw.get("bias", True) else "none")

    sd = w.to_torch_state_dict()
    assert list(sd) == list(m.state_dict())                   # same keys, same order
    m2 = torch.nn.LSTM(**torch_lstm_kwargs(w.spec)).double()
    m2.load_state_dict(sd)                                    # strict: no missing or extra keys
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k

    x = rand_x(kw["input_size"], np.float64)
    y, (h, c) = lstm_reference(x, w)
    ty, (th, tc) = m(torch.from_numpy(x))
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(h, th.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(c, tc.detach().numpy(), atol=1e-12)


def test_torch_float32_kernel_matches():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    m = torch.nn.LSTM(5, 8, num_layers=2, bidirectional=True, proj_size=3)
    w = LSTMWeights.from_torch(m)
    assert w.dtype == np.float32
    x = rand_x(5)
    y, (h, c) = run_lstm(x, w)
    with torch.no_grad():
        ty, (th, tc) = m(torch.from_numpy(x))
    np.testing.assert_allclose(y, ty.numpy(), atol=2e-6)
    np.testing.assert_allclose(c, tc.numpy(), atol=2e-6)


def test_torch_state_dict_with_prefix_and_bad_shape():
    torch = pytest.importorskip("torch")
    m = torch.nn.LSTM(5, 8, num_layers=2)
    spec = LSTMSpec(5, 8, num_layers=2)
    sd = {f"rnn.{k}": v for k, v in m.state_dict().items()}
    w = from_torch_state_dict(sd, spec, prefix="rnn.")
    np.testing.assert_array_equal(w.layers[1][0].w_hh, m.weight_hh_l1.detach().numpy())
    sd["rnn.weight_hh_l1"] = sd["rnn.weight_hh_l1"][:, :7]
    with pytest.raises(ConvertError, match=r"weight_hh_l1: expected shape \(32, 8\), got \(32, 7\)"):
        from_torch_state_dict(sd, spec, prefix="rnn.")
    del sd["rnn.bias_ih_l0"]
    with pytest.raises(ConvertError, match="bias_ih_l0: missing"):
        from_torch_state_dict(sd, spec, prefix="rnn.")


def test_from_torch_refuses_other_modules():
    torch = pytest.importorskip("torch")
    with pytest.raises(ConvertError, match="expected a torch.nn.LSTM, got GRU"):
        LSTMWeights.from_torch(torch.nn.GRU(3, 4))


def test_to_torch_keras_bias_goes_to_bias_ih():
    pytest.importorskip("torch")
    w = LSTMWeights.random(LSTMSpec(3, 4, bias="keras"), seed=2)
    sd = w.to_torch_state_dict()
    np.testing.assert_array_equal(sd["bias_ih_l0"].numpy(), w.layers[0][0].b_ih)
    assert not sd["bias_hh_l0"].any()


# -- Keras -------------------------------------------------------------------------------
def _keras_model(layer, E):
    keras = pytest.importorskip("keras")
    inp = keras.Input((T, E))
    model = keras.Model(inp, layer(inp))
    rng = np.random.default_rng(3)
    # Random biases too: Keras initialises them to 0 (1 for f), which would hide a gate mix-up.
    layer.set_weights([rng.uniform(-0.5, 0.5, a.shape).astype(np.float32) for a in layer.get_weights()])
    return model


def _keras_out(model, x_bt):
    out = model(x_bt)
    out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
    return out


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_keras_outputs(bidirectional, use_bias):
    keras = pytest.importorskip("keras")
    E, H = 5, 6
    lstm = keras.layers.LSTM(H, return_sequences=True, use_bias=use_bias)
    layer = keras.layers.Bidirectional(lstm) if bidirectional else lstm
    model = _keras_model(layer, E)
    w = LSTMWeights.from_keras(layer)
    assert w.spec == LSTMSpec(E, H, bidirectional=bidirectional, bias="keras" if use_bias else "none")
    x = rand_x(E)
    y, _ = run_lstm(x, w)                                   # (T, B, D*H)
    ky = _keras_out(model, x.transpose(1, 0, 2))            # (B, T, D*H)
    np.testing.assert_allclose(y.transpose(1, 0, 2), ky, atol=2e-6)
    # Arrays in, arrays out: to_keras is from_keras's inverse.
    for a, b in zip(to_keras(w)[0], layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_last_step_is_h_n():
    """return_sequences=False returns h_n: for Bidirectional, the forward final state
    and the backward final state (torch's y[0] reverse half), not y[-1]."""
    keras = pytest.importorskip("keras")
    layer = keras.layers.Bidirectional(keras.layers.LSTM(4))
    model = _keras_model(layer, 3)
    w = LSTMWeights.from_keras(layer)
    x = rand_x(3)
    _, (h, _) = run_lstm(x, w)
    ky = _keras_out(model, x.transpose(1, 0, 2))
    np.testing.assert_allclose(np.concatenate([h[0], h[1]], axis=1), ky, atol=2e-6)


def test_keras_arrays_and_bad_shapes():
    rng = np.random.default_rng(0)
    k, r, b = rng.standard_normal((5, 24)), rng.standard_normal((6, 24)), rng.standard_normal(24)
    w = from_keras(k, r, b)
    assert w.spec == LSTMSpec(5, 6, bias="keras") and w.dtype == np.float64
    np.testing.assert_array_equal(w.layers[0][0].w_ih, k.T)
    with pytest.raises(ConvertError, match=r"Keras recurrent_kernel: expected shape \(6, 24\), got \(6, 20\)"):
        from_keras(k, r[:, :20], b)
    with pytest.raises(ConvertError, match=r"Keras bias: expected shape \(24,\), got \(23,\)"):
        from_keras(k, r, b[:23])
    with pytest.raises(ConvertError, match=r"Keras backward recurrent_kernel"):
        from_keras([k, k], [r, r[:5]], [b, b])


def test_keras_unsupported_activation():
    keras = pytest.importorskip("keras")
    layer = keras.layers.LSTM(4, activation="relu")
    _keras_model(layer, 3)
    with pytest.raises(ConvertError, match="unsupported activations 'relu'"):
        LSTMWeights.from_keras(layer)


# -- ONNX --------------------------------------------------------------------------------
def onnx_lstm_model(tensors, T_, B_, E, layout=0, extra_attrs=None):
    """A one-node ONNX model (onnx.helper) around LSTM tensors {W, R, B, P}."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    names = ["X", "W", "R", "B", "", "", "", "P"]
    inits = []
    for k in "WRBP":
        if tensors.get(k) is None:
            names[names.index(k)] = ""
        else:
            inits.append(numpy_helper.from_array(np.asarray(tensors[k], np.float32), k))
    while names[-1] == "":
        names.pop()
    H = tensors["R"].shape[-1]
    attrs = dict(hidden_size=H, direction=tensors.get("direction", "forward"), layout=layout, **(extra_attrs or {}))
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], **attrs)
    x_shape = [T_, B_, E] if layout == 0 else [B_, T_, E]
    graph = helper.make_graph([node], "lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def ort_run(model, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"X": x})


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("bias", ["pytorch", "none"])
def test_onnx_outputs(bidirectional, peephole, bias):
    E, H = 5, 6
    w = LSTMWeights.random(LSTMSpec(E, H, bidirectional=bidirectional, peephole=peephole, bias=bias),
                           seed=4, scale=0.6)
    t = to_onnx(w)[0]
    x = rand_x(E)
    Y, Y_h, Y_c = ort_run(onnx_lstm_model(t, T, B, E), x)   # Y (T, D, B, H)
    D = w.spec.num_directions
    y, (h, c) = run_lstm(x, w)
    np.testing.assert_allclose(Y.transpose(0, 2, 1, 3).reshape(T, B, D * H), y, atol=2e-6)
    np.testing.assert_allclose(Y_h, h, atol=2e-6)
    np.testing.assert_allclose(Y_c, c, atol=2e-6)

    back = LSTMWeights.from_onnx(t["W"], t["R"], t["B"], t["P"], direction=t["direction"], hidden_size=H)
    assert back.spec == w.spec
    for a, b in zip(w.layers[0], back.layers[0]):
        for k in ("w_ih", "w_hh", "b_ih", "b_hh", "peep"):
            if getattr(a, k) is None:
                assert getattr(b, k) is None
            else:
                np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_onnx_gate_order_explicitly():
    """Gate block k of ONNX (i, o, f, c) lands where the canonical order (i, f, g, o) says."""
    H, E = 2, 1
    W = np.zeros((1, 4 * H, E))
    for k in range(4):
        W[0, k * H:(k + 1) * H] = k              # ONNX blocks i=0, o=1, f=2, c=3
    P = np.array([[10, 10, 11, 11, 12, 12]], float)   # ONNX p_i, p_o, p_f
    w = from_onnx(W, np.zeros((1, 4 * H, H)), None, P)
    np.testing.assert_array_equal(w.layers[0][0].w_ih[:, 0], [0, 0, 2, 2, 3, 3, 1, 1])   # i, f, g, o
    np.testing.assert_array_equal(w.layers[0][0].peep, [[10, 10], [12, 12], [11, 11]])  # p_i, p_f, p_o


def test_onnx_bad_shapes_name_the_tensor():
    W, R = np.zeros((1, 64, 8)), np.zeros((1, 64, 16))
    with pytest.raises(ConvertError, match=r"ONNX R: expected shape \(1, 64, 16\), got \(1, 64, 15\)"):
        from_onnx(W, R[:, :, :15])
    with pytest.raises(ConvertError, match=r"ONNX B: expected shape \(1, 128\), got \(1, 64\)"):
        from_onnx(W, R, np.zeros((1, 64)))
    with pytest.raises(ConvertError, match=r"ONNX P: expected shape \(1, 48\)"):
        from_onnx(W, R, None, np.zeros((1, 16)))
    with pytest.raises(ConvertError, match=r"ONNX W: expected 3 dimensions"):
        from_onnx(W[0], R)
    with pytest.raises(ConvertError, match=r"for direction 'bidirectional'"):
        from_onnx(W, R, direction="bidirectional")
    with pytest.raises(ConvertError, match="unsupported 'reverse'"):
        from_onnx(W, R, direction="reverse")


def test_onnx_stacked_nodes():
    """Two ONNX nodes (one layer each) joined by stack_layers match a 2-layer stack."""
    w = LSTMWeights.random(LSTMSpec(4, 5, num_layers=2, bidirectional=True), seed=5)
    parts = [from_onnx(t["W"], t["R"], t["B"]) for t in to_onnx(w)]
    joined = stack_layers(parts)
    assert joined.spec == w.spec
    x = rand_x(4, np.float64)
    np.testing.assert_allclose(lstm_reference(x, joined)[0], lstm_reference(x, w)[0], atol=1e-6)
    with pytest.raises(ConvertError, match="part 1 input_size"):
        stack_layers([parts[0], parts[0]])


def test_to_onnx_refuses_projection():
    with pytest.raises(ConvertError, match="no projection"):
        to_onnx(LSTMWeights.random(LSTMSpec(3, 4, proj_size=2)))
