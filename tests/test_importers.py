"""load_model: ONNX files, PyTorch modules and state_dict files, .keras files and Keras
JSON, each made here, small; the imported model run with edgelstm's kernels matches
the framework's own output; bad files get clear errors and nothing in them runs."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")   # before keras is imported anywhere

import json
import pickle
import zipfile

import numpy as np
import pytest

import edgelstm
from edgelstm import LSTMSpec, LSTMWeights, ModelSpec
from edgelstm.convert import to_onnx
from edgelstm.importers import load_model
from edgelstm.model import ModelFileError, UnsupportedModelError

T, B = 6, 2


# -- ONNX ----------------------------------------------------------------------------------
def _onnx_stack_model(path, weights_list, *, vocab=None, emb=None, head=None, gemm=False, every_step=True,
                      attrs=None):
    """X -> [Gather] -> LSTM -> (Transpose, Reshape) -> LSTM ... -> [MatMul + Add | Gemm], via onnx.helper.

    Every LSTM's Y [T, D, B, H] is reshaped to [T, B, D*H] as exporters do."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []

    def const(name, a, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(a, dtype), name))
        return name

    x = "X"
    if emb is not None:
        nodes.append(helper.make_node("Gather", [const("emb", emb), "X"], ["E"], axis=0))
        x = "E"
    shape = const("shape_TBF", [0, 0, -1], np.int64)
    for k, w in enumerate(weights_list):
        t = to_onnx(w)[0]
        ins = [x, const(f"W{k}", t["W"]), const(f"R{k}", t["R"]),
               const(f"B{k}", t["B"]) if t["B"] is not None else "", "", "", "",
               const(f"P{k}", t["P"]) if t["P"] is not None else ""]
        while ins[-1] == "":
            ins.pop()
        nodes.append(helper.make_node("LSTM", ins, [f"Y{k}", f"Yh{k}", f"Yc{k}"], name=f"lstm{k}",
                                      hidden_size=t["hidden_size"], direction=t["direction"], **(attrs or {})))
        nodes.append(helper.make_node("Transpose", [f"Y{k}"], [f"Yt{k}"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"Yt{k}", shape], [f"Z{k}"]))
        x = f"Z{k}"
    if not every_step:             # the last step of the sequence, as a per-sequence output
        nodes.append(helper.make_node("Gather", [x, const("last", -1, np.int64)], ["Zlast"], axis=0))
        x = "Zlast"
    out = x
    if head is not None:
        hw, hb = head
        if gemm:
            nodes.append(helper.make_node("Gemm", [x, const("hw", hw), const("hb", hb)], ["OUT"], transB=1))
        else:
            nodes.append(helper.make_node("MatMul", [x, const("hw", hw.T)], ["MM"]))
            nodes.append(helper.make_node("Add", ["MM", const("hb", hb)], ["OUT"]))
        out = "OUT"
    x_info = (helper.make_tensor_value_info("X", TensorProto.INT64, [T, B]) if emb is not None else
              helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, weights_list[0].spec.input_size]))
    graph = helper.make_graph(nodes, "m", [x_info], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, str(path))
    return path


def _ort(path, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"X": x})[0]


def test_onnx_stacked_with_embedding_and_head(tmp_path):
    rng = np.random.default_rng(0)
    l0 = LSTMWeights.random(LSTMSpec(4, 5, bidirectional=True), seed=1, scale=0.5)
    l1 = LSTMWeights.random(LSTMSpec(10, 5, bidirectional=True), seed=2, scale=0.5)
    l2 = LSTMWeights.random(LSTMSpec(10, 3, peephole=True), seed=3, scale=0.5)
    emb = rng.standard_normal((11, 4))
    head = (rng.standard_normal((2, 3)), rng.standard_normal(2))
    path = _onnx_stack_model(tmp_path / "m.onnx", [l0, l1, l2], emb=emb, head=head)
    m = edgelstm.load_model(path)
    assert m.spec.embedding == edgelstm.EmbeddingSpec(11, 4)
    assert [s.num_layers for s in m.spec.stacks] == [2, 1]              # l0 + l1 joined; l2 differs
    assert m.spec.stacks[1].peephole and m.spec.head == edgelstm.DenseSpec(2, True, True)
    edgelstm.count(m.spec, seq_len=T)                                   # the spec counts
    ids = rng.integers(0, 11, (T, B))
    y = m(ids)
    ref = _ort(path, ids.astype(np.int64))
    assert y.shape == ref.shape == (T, B, 2)
    np.testing.assert_allclose(y, ref, atol=1e-5)


@pytest.mark.parametrize("gemm", [False, True])
def test_onnx_per_sequence_head(tmp_path, gemm):
    rng = np.random.default_rng(1)
    w = LSTMWeights.random(LSTMSpec(3, 4), seed=4, scale=0.6)
    head = (rng.standard_normal((5, 4)), rng.standard_normal(5))
    path = _onnx_stack_model(tmp_path / "m.onnx", [w], head=head, gemm=gemm, every_step=False)
    m = load_model(path)
    assert m.spec.head.every_step is False and not m.return_sequences
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    np.testing.assert_allclose(m(x), _ort(path, x), atol=1e-5)


@pytest.mark.parametrize("attrs, what", [({"clip": 3.0}, "clip"), ({"input_forget": 1}, "input_forget"),
                                         ({"activations": ["Sigmoid", "Tanh", "Relu"]}, "activations")])
def test_onnx_unsupported_attributes(tmp_path, attrs, what):
    w = LSTMWeights.random(LSTMSpec(3, 4))
    path = _onnx_stack_model(tmp_path / "m.onnx", [w], attrs=attrs)
    with pytest.raises(UnsupportedModelError, match=f"m.onnx.*unsupported.*{what}"):
        load_model(path)


def test_onnx_truncated(tmp_path):
    w = LSTMWeights.random(LSTMSpec(3, 4))
    path = _onnx_stack_model(tmp_path / "m.onnx", [w])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"m\.onnx: "):
        load_model(path)


def test_onnx_without_lstm(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g), str(path))
    with pytest.raises(ModelFileError, match=r"relu\.onnx: the ONNX graph has no LSTM node \(ops: Relu\)"):
        load_model(path)


# -- PyTorch -------------------------------------------------------------------------------
def _torch_model(every_step=True):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(13, 5)
            self.rnn = nn.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=4)
            self.drop = nn.Dropout(0.1)
            self.out = nn.Linear(8, 3)

        def forward(self, ids):                        # ids (T, B)
            y, (h, _) = self.rnn(self.emb(ids))
            if every_step:
                return self.out(self.drop(y))
            return self.out(torch.cat([h[-2], h[-1]], dim=1))

    torch.manual_seed(0)
    return Tagger().eval()


@pytest.mark.parametrize("every_step", [True, False])
def test_torch_module(every_step):
    torch = pytest.importorskip("torch")
    module = _torch_model(every_step)
    m = load_model(module, every_step=every_step)
    assert m.spec.stacks == (LSTMSpec(5, 6, num_layers=2, bidirectional=True, proj_size=4),)
    ids = np.random.default_rng(2).integers(0, 13, (T, B))
    with torch.no_grad():
        ref = module(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(m(ids), ref, atol=1e-5)


def test_torch_state_dict_file(tmp_path):
    torch = pytest.importorskip("torch")
    module = _torch_model()
    path = tmp_path / "tagger.pt"
    torch.save(module.state_dict(), path)
    from_module = load_model(module)
    m = load_model(path, spec=from_module.spec)
    ids = np.random.default_rng(3).integers(0, 13, (T, B))
    with torch.no_grad():
        ref = module(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(m(ids), ref, atol=1e-5)
    with pytest.raises(ModelFileError, match="tagger.pt: a PyTorch state_dict file holds tensors only"):
        load_model(path)


def test_torch_unsupported_module():
    torch = pytest.importorskip("torch")
    seq = torch.nn.Sequential(torch.nn.Conv1d(3, 3, 1), torch.nn.LSTM(3, 4))
    with pytest.raises(UnsupportedModelError, match="Conv1d"):
        load_model(seq)


class _Boom:
    """Unpickling this would create a marker file: it must never happen."""
    marker = None

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_is_never_executed(tmp_path):
    pytest.importorskip("torch")
    marker = tmp_path / "executed"
    _Boom.marker = str(marker)
    payload = pickle.dumps({"w": _Boom()}, protocol=2)
    import torch
    torch.save({"w": _Boom()}, tmp_path / "evil.pt")          # a torch zip whose data.pkl needs `open`
    for name in ("evil.onnx", "evil.keras", "evil.bin"):
        (tmp_path / name).write_bytes(payload)
    for name, pattern in [("evil.pt", "evil.pt: refused: the file carries a pickle"),
                          ("evil.bin", "evil.bin: refused: the file carries a pickle"),
                          ("evil.onnx", "evil.onnx: refused: the file is a Python pickle"),
                          ("evil.keras", "evil.keras: refused: the file is a Python pickle")]:
        with pytest.raises(ModelFileError, match=pattern):
            load_model(tmp_path / name, spec=ModelSpec(stacks=(LSTMSpec(3, 4),)))
    assert not marker.exists()
    # A torch.save zip renamed .onnx is refused by content, not parsed.
    (tmp_path / "zip.onnx").write_bytes((tmp_path / "evil.pt").read_bytes())
    with pytest.raises(ModelFileError, match="zip.onnx: refused: the file carries a pickle"):
        load_model(tmp_path / "zip.onnx")
    assert not marker.exists()


# -- Keras ---------------------------------------------------------------------------------
def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([rng.uniform(-0.5, 0.5, a.shape).astype(np.float32) for a in ws])


def _to_np(t):
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def test_keras_file_sequential(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    model = keras.Sequential([
        keras.Input((T,), dtype="int32"),
        keras.layers.Embedding(17, 5),
        keras.layers.LSTM(6, return_sequences=True),
        keras.layers.Dropout(0.2),
        keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
        keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
        keras.layers.LSTM(3),                          # return_sequences=False: one vector per sequence
        keras.layers.Dense(2, activation="softmax"),
    ])
    _randomize(model)
    path = tmp_path / "m.keras"
    model.save(path)
    m = load_model(path)
    assert [(s.hidden_size, s.num_layers, s.bidirectional, s.bias) for s in m.spec.stacks] == \
        [(6, 1, False, "keras"), (4, 2, True, "keras"), (3, 1, False, "keras")]
    assert m.spec.head == edgelstm.DenseSpec(2, True, every_step=False) and m.head_activation == "softmax"
    ids = np.random.default_rng(4).integers(0, 17, (B, T)).astype(np.int32)
    ref = _to_np(model(ids))
    y = m(ids, batch_first=True)
    assert y.shape == ref.shape == (B, 2)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_keras_file_functional_every_step(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    inp = keras.Input((T, 3))
    h = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True, use_bias=False))(inp)
    out = keras.layers.Dense(4)(h)
    model = keras.Model(inp, out)
    _randomize(model, 1)
    path = tmp_path / "f.keras"
    model.save(path)
    m = load_model(path)
    assert m.spec.stacks == (LSTMSpec(3, 5, bidirectional=True, bias="none"),)
    x = np.random.default_rng(5).standard_normal((B, T, 3)).astype(np.float32)
    # a Keras model is batch-first: m(x) takes what model(x) / model.predict(x) takes
    assert m.batch_first is True
    np.testing.assert_allclose(m(x), _to_np(model(x)), atol=1e-5)
    # batch_first=False overrides it: time-major in, time-major out
    np.testing.assert_allclose(m(x.transpose(1, 0, 2), batch_first=False).transpose(1, 0, 2), _to_np(model(x)),
                               atol=1e-5)


def test_keras_json_counts_only(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((T, 80)), keras.layers.LSTM(12)])
    path = tmp_path / "kws.json"
    path.write_text(model.to_json())
    m = load_model(path)
    assert m.weights is None
    assert edgelstm.count(m.spec).params == 4464        # the kws example: 4(12*80 + 12*12 + 12)
    with pytest.raises(ModelFileError, match="counting only"):
        m(np.zeros((T, 1, 80), np.float32))


def test_keras_without_weights_and_unsupported(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((T, 3)), keras.layers.LSTM(4)])
    path = tmp_path / "m.keras"
    model.save(path)
    no_w = tmp_path / "nowts.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(no_w, "w") as dst:
        for n in src.namelist():
            if n != "model.weights.h5":
                dst.writestr(n, src.read(n))
    with pytest.raises(ModelFileError, match=r"nowts\.keras: the \.keras archive has no weights"):
        load_model(no_w)
    gru = keras.Sequential([keras.Input((T, 3)), keras.layers.GRU(4)])
    (tmp_path / "gru.json").write_text(gru.to_json())
    with pytest.raises(UnsupportedModelError, match="unsupported Keras layer 'GRU'"):
        load_model(tmp_path / "gru.json")
    # A Lambda's Python code in the config is data to us: refused, never deserialized.
    cfg = json.loads(model.to_json())
    cfg["config"]["layers"].append({"class_name": "Lambda", "config": {"name": "evil", "function": "x"}})
    (tmp_path / "lambda.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="'evil': unsupported Keras layer 'Lambda'"):
        load_model(tmp_path / "lambda.json")


def test_unknown_extension(tmp_path):
    (tmp_path / "m.txt").write_text("hello")
    with pytest.raises(ModelFileError, match="unknown model file type"):
        load_model(tmp_path / "m.txt")


# -- CLI -----------------------------------------------------------------------------------
def test_cli_size_model(tmp_path, capsys):
    keras = pytest.importorskip("keras")
    from edgelstm.cli import main
    model = keras.Sequential([keras.Input((10,), dtype="int32"), keras.layers.Embedding(1000, 128),
                              keras.layers.LSTM(64), keras.layers.Dense(10)])
    model.save(tmp_path / "sentiment.keras")
    assert main(["size", "--model", str(tmp_path / "sentiment.keras"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 178058                       # the sentiment example's Keras summary
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    assert main(["size", "--model", str(tmp_path / "bad.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.onnx" in err and err.count("\n") == 1


def test_onnx_layout_1_bidirectional_no_head(tmp_path):
    """layout=1 (X [B, T, E], Y [B, T, D, H]) holds the same weights; model(x, batch_first=True).
    onnxruntime does not run layout=1, so the reference is the same node with layout=0."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    w = LSTMWeights.random(LSTMSpec(3, 4, bidirectional=True), seed=6, scale=0.6)
    t = to_onnx(w)[0]
    inits = [numpy_helper.from_array(t[k].astype(np.float32), k) for k in "WRB"]
    paths = {}
    for layout, x_shape in ((0, [T, B, 3]), (1, [B, T, 3])):
        node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=4, direction="bidirectional",
                                layout=layout)
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
        paths[layout] = tmp_path / f"layout{layout}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), str(paths[layout]))
    m = load_model(paths[1])
    assert m.return_sequences and m.spec.head is None
    x = np.random.default_rng(7).standard_normal((B, T, 3)).astype(np.float32)
    ref = _ort(paths[0], np.ascontiguousarray(x.transpose(1, 0, 2)))          # Y (T, D, B, H)
    np.testing.assert_allclose(m(x, batch_first=True), ref.transpose(2, 0, 1, 3).reshape(B, T, 8), atol=1e-5)
