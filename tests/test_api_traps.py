"""The obvious user code gives the framework's answer (issue: silent wrong answers).

Each test is written as a user would write it and compared with the real framework:
a loaded model runs in its source's layout, stream steps are fresh arrays, and weights
edited after a first call give the new answer or an error, never the old answer."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")   # before keras is imported anywhere

import warnings

import numpy as np
import pytest

import edgelstm as el


def _net(batch_first, vocab=11):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, 4)
            self.lstm = torch.nn.LSTM(4, 5, num_layers=2, batch_first=batch_first)
            self.fc = torch.nn.Linear(5, 3)

        def forward(self, x):
            y, _ = self.lstm(self.emb(x))
            return self.fc(y)

    torch.manual_seed(0)
    return Net().eval()


@pytest.mark.parametrize("batch_first", [True, False])
def test_onnx_export_of_torch_module_matches_onnxruntime(tmp_path, batch_first):
    """Embedding -> LSTM -> Linear exported by torch; m(tokens) takes what onnxruntime takes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = _net(batch_first)
    tokens = torch.randint(0, 11, (2, 7) if batch_first else (7, 2), generator=torch.Generator().manual_seed(1))
    path = str(tmp_path / "net.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (tokens,), path, dynamo=False, input_names=["X"], output_names=["Y"])
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"X": tokens.numpy()})[0]
    m = el.load_model(path)
    assert m.batch_first is batch_first
    y = m(tokens.numpy())
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_keras_file_matches_predict(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    model = keras.Sequential([keras.Input((9, 3)), keras.layers.LSTM(6, return_sequences=True),
                              keras.layers.LSTM(4), keras.layers.Dense(2)])
    path = tmp_path / "k.keras"
    model.save(path)
    x = np.random.default_rng(2).standard_normal((5, 9, 3)).astype(np.float32)   # (B, T, E), as Keras takes
    ref = model.predict(x, verbose=0)
    m = el.load_model(path)
    assert m.batch_first is True
    np.testing.assert_allclose(m(x), ref, atol=1e-5)


@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_module_runs_in_its_own_layout(batch_first):
    torch = pytest.importorskip("torch")
    net = _net(batch_first)
    tokens = torch.randint(0, 11, (2, 7) if batch_first else (7, 2), generator=torch.Generator().manual_seed(3))
    m = el.load_model(net)
    assert m.batch_first is batch_first
    with torch.no_grad():
        ref = net(tokens).numpy()
    np.testing.assert_allclose(m(tokens.numpy()), ref, atol=1e-5)


def test_weights_edited_in_place_raise():
    spec = el.LSTMSpec(3, 4)
    w = el.LSTMWeights.random(spec, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 1, 3)).astype(np.float32)
    y1, _ = el.lstm(x, w)
    with pytest.raises(ValueError, match="read-only"):
        w.layers[0][0].w_hh[:] = 0
    y2, _ = el.lstm(x, w)
    np.testing.assert_array_equal(y1, y2)                 # nothing changed: the write was refused
    w0 = w.replace(0, w_hh=np.zeros((16, 4)))             # the way to change weights: new weights
    y3, _ = el.lstm(x, w0)
    from edgelstm.kernels.reference import lstm_reference
    np.testing.assert_allclose(y3, lstm_reference(x.astype(np.float64), w0.astype("float64"))[0], atol=1e-6)
    assert not np.allclose(y3, y1)


def test_weights_copy_the_callers_arrays():
    spec = el.LSTMSpec(2, 3)
    a = {"w_ih": np.ones((12, 2), np.float32), "w_hh": np.ones((12, 3), np.float32),
         "b_ih": np.zeros(12, np.float32), "b_hh": np.zeros(12, np.float32)}
    w = el.LSTMWeights(spec, [[a]])
    for name in a:
        assert not np.shares_memory(getattr(w.layers[0][0], name), a[name])
    a["w_hh"][:] = 5                                      # the caller's array stays theirs
    assert np.all(w.layers[0][0].w_hh == 1)


def test_from_torch_is_a_snapshot_and_stream_sees_the_weights_it_was_given():
    torch = pytest.importorskip("torch")
    lstm = torch.nn.LSTM(3, 4)
    w = el.LSTMWeights.from_torch(lstm)
    assert not np.shares_memory(w.layers[0][0].w_hh, lstm.weight_hh_l0.detach().numpy())
    x = np.random.default_rng(1).standard_normal((4, 1, 3)).astype(np.float32)
    y_before, _ = el.lstm(x, w)
    with torch.no_grad():
        lstm.weight_hh_l0.mul_(2)
    y_after, _ = el.lstm(x, w)
    np.testing.assert_array_equal(y_before, y_after)      # a snapshot: documented, consistent
    with torch.no_grad():
        ref, _ = lstm(torch.from_numpy(x))
    np.testing.assert_allclose(el.lstm(x, el.LSTMWeights.from_torch(lstm))[0], ref.numpy(), atol=1e-5)


def test_model_follows_its_torch_module_after_in_place_update():
    """A training step (here weight_hh_l0.mul_(2)) after load_model(module): model(x) gives
    the new answer, embedding, LSTM and head alike, as the module itself does."""
    torch = pytest.importorskip("torch")
    net = _net(batch_first=True)
    m = el.load_model(net)
    tokens = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(5))
    m(tokens.numpy())
    with torch.no_grad():
        net.lstm.weight_hh_l0.mul_(2)
        net.fc.weight.add_(0.1)
        ref = net(tokens).numpy()
    np.testing.assert_allclose(m(tokens.numpy()), ref, atol=1e-5)


def test_model_arrays_are_frozen_copies():
    torch = pytest.importorskip("torch")
    net = _net(batch_first=False)
    m = el.load_model(net)
    assert not np.shares_memory(m.weights.embedding, net.emb.weight.detach().numpy())
    with pytest.raises(ValueError, match="read-only"):
        m.weights.head_weight[0, 0] = 1.0


@pytest.mark.parametrize("layer_kwargs, emb_kwargs, what", [
    (dict(activation="relu"), {}, "activations 'relu'"),
    (dict(recurrent_activation="hard_sigmoid"), {}, "hard_sigmoid"),
    ({}, dict(mask_zero=True), "mask_zero"),
])
def test_keras_options_that_change_the_answer_are_refused(tmp_path, layer_kwargs, emb_kwargs, what):
    """Each option makes Keras's answer differ from the default LSTM's (checked here with
    Keras itself); edgelstm refuses the file instead of running the default silently."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")

    def build(lk, ek):
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((7,), dtype="int32"), keras.layers.Embedding(9, 3, **ek),
                                 keras.layers.LSTM(4, return_sequences=True, **lk)])
    ids = np.array([[1, 2, 0, 0, 5, 6, 7], [3, 0, 4, 8, 1, 1, 2]])
    plain, odd = build({}, {}), build(layer_kwargs, emb_kwargs)
    odd.set_weights(plain.get_weights())
    assert not np.allclose(plain.predict(ids, verbose=0), odd.predict(ids, verbose=0), atol=1e-4)
    path = tmp_path / "odd.keras"
    odd.save(path)
    with pytest.raises(ValueError, match=what):            # ModelFileError or ConvertError, naming it
        el.load_model(path)


def test_onnx_sequence_lens_is_refused(tmp_path):
    """An LSTM node fed per-row lengths answers differently from one without (onnxruntime
    says so here); edgelstm's Model cannot take lengths, so it refuses the file."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    from edgelstm.convert import to_onnx
    from edgelstm.model import UnsupportedModelError
    t = to_onnx(el.LSTMWeights.random(el.LSTMSpec(3, 4), seed=1))[0]
    inits = [numpy_helper.from_array(t[k].astype(np.float32), k) for k in "WRB"]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "L"], ["Y"], hidden_size=4)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, 3]),
                                        helper.make_tensor_value_info("L", TensorProto.INT32, [2])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    path = str(tmp_path / "lens.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), path)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    full = s.run(None, {"X": x, "L": np.array([5, 5], np.int32)})[0]
    short = s.run(None, {"X": x, "L": np.array([5, 2], np.int32)})[0]
    assert not np.allclose(full, short)
    with pytest.raises(UnsupportedModelError, match="sequence_lens"):
        el.load_model(path)
