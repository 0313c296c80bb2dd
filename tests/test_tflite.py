""".tflite reading and writing without TensorFlow: float32 models against TFLM, bad files, unsupported ops."""
from __future__ import annotations

import os

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgelstm as el
from edgelstm.errors import ModelFileError, UnsupportedModelError
from edgelstm.tflite import TFLiteModel, export_tflite, load_tflite, quantize, read_tflite, write_tflite
from tflm_oracle import run_tflm

# Writing a .tflite file (the exporter, and the bad files built for the error tests) needs
# flatbuffers, the 'tflite' extra (also in 'test'); a core-only install skips these.
NEEDS_FLATBUFFERS = pytest.mark.skipif(importlib.util.find_spec("flatbuffers") is None,
                                       reason="writing .tflite files needs flatbuffers (the 'tflite' extra)")


DATA = os.path.join(os.path.dirname(__file__), "data")


def _bytes(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def _schema():
    return pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
                               reason="tflite-micro ships the flatbuffer schema's Python (test extra)")


def _edit(data: bytes, change) -> bytes:
    """Unpack with the schema's object API (tests only), change it, pack it again."""
    import flatbuffers
    S = _schema()
    m = S.ModelT.InitFromObj(S.Model.GetRootAs(data, 0))
    change(m, S)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# -- float32 ----------------------------------------------------------------------------------
def test_public_float_model_matches_tflm():
    data = _bytes("tflm_mnist_lstm_float.tflite")
    m = load_tflite(os.path.join(DATA, "tflm_mnist_lstm_float.tflite"))
    assert [o.op for o in m.graph.operators] == ["UNIDIRECTIONAL_SEQUENCE_LSTM", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.uniform(0, 1, size=m.input_shape).astype(np.float32)     # MNIST rows, pixels in [0, 1]
        want, (lstm_out,) = run_tflm(data, x, [m.graph.operators[0].outputs[0]])
        vals = {m.graph.inputs[0]: x}
        m._steps[0](vals)
        np.testing.assert_allclose(vals[m.graph.operators[0].outputs[0]].ravel(), lstm_out.ravel(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(m(x), want, atol=1e-5, rtol=0)


@settings(max_examples=12, deadline=None)
@given(E=st.integers(1, 40), H=st.integers(1, 40), T=st.integers(1, 30), B=st.integers(1, 3),
       clip=st.sampled_from([0.0, 0.5, 2.0]), seed=st.integers(0, 999))
@NEEDS_FLATBUFFERS
def test_exported_float_lstm_matches_tflm(E, H, T, B, clip, seed, tmp_path_factory):
    w = el.LSTMWeights.random(el.LSTMSpec(E, H, num_layers=1 + seed % 2, bias="keras"), seed=seed, scale=0.8)
    path = str(tmp_path_factory.mktemp("f") / "m.tflite")
    export_tflite(w, path, seq_len=T, batch=B, cell_clip=clip)
    m = el.load_model(path)
    assert isinstance(m, TFLiteModel)
    x = np.random.default_rng(seed).standard_normal(m.input_shape).astype(np.float32) * 2
    with open(path, "rb") as f:
        want, _ = run_tflm(f.read(), x)
    np.testing.assert_allclose(m(x), want, atol=1e-5, rtol=0)
    if clip == 0.0:                                     # no clip: edgelstm's own float LSTM agrees too
        y, _ = el.lstm(x.transpose(1, 0, 2).astype(np.float64), w.astype("float64"))
        np.testing.assert_allclose(m(x), y.transpose(1, 0, 2), atol=1e-5, rtol=0)


# -- reading and writing ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tflm_mnist_lstm_int8.tflite", "tflm_micro_speech_lstm_int8.tflite",
                                  "tflm_mnist_lstm_float.tflite"])
@NEEDS_FLATBUFFERS
def test_write_read_round_trip_runs_the_same_in_tflm(name):
    data = _bytes(name)
    g = read_tflite(data)
    data2 = write_tflite(g)
    g2 = read_tflite(data2)
    assert [(o.op, o.inputs, o.outputs, o.options) for o in g.operators] == \
        [(o.op, o.inputs, o.outputs, o.options) for o in g2.operators]
    for a, b in zip(g.tensors, g2.tensors):
        assert (a.name, a.dtype, a.shape, a.is_variable) == (b.name, b.dtype, b.shape, b.is_variable)
        assert (a.data is None) == (b.data is None) and (a.data is None or np.array_equal(a.data, b.data))
        assert (a.scale is None) == (b.scale is None) and (a.scale is None or np.array_equal(a.scale, b.scale))
    t = g.tensors[g.inputs[0]]
    x = (np.random.default_rng(0).integers(-128, 128, size=t.shape).astype(np.int8) if t.dtype == "int8"
         else np.random.default_rng(0).random(t.shape).astype(np.float32))
    assert np.array_equal(run_tflm(data, x)[0], run_tflm(data2, x)[0])


def test_exported_int8_model_runs_in_litert():
    """LiteRT needs the 5 intermediate tensors TFLM does without: the exporter writes them."""
    interp = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is in the test extra")
    rng = np.random.default_rng(0)
    w = el.LSTMWeights.random(el.LSTMSpec(10, 12, bias="keras"), seed=0, scale=0.5)
    m = quantize(w, rng.standard_normal((7, 8, 10)), head=rng.standard_normal((3, 12)), head_over="step",
                 softmax=True)
    it = interp.Interpreter(model_content=write_tflite(m.graph))
    it.allocate_tensors()
    x = rng.integers(-128, 128, size=m.input_shape).astype(np.int8)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])
    # LiteRT's gemmlowp activations differ from TFLM's LUT by an LSB now and then (docs/int8.md)
    assert out.shape == m(x).shape and np.abs(out.astype(int) - m(x)).max() <= 3


# -- bad files --------------------------------------------------------------------------------
def test_truncated_files_give_clear_errors():
    data = _bytes("tflm_mnist_lstm_int8.tflite")
    for n in sorted({0, 3, 7, 8, 16, 64, 500, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1}):
        with pytest.raises(ModelFileError, match="bad.tflite"):
            TFLiteModel(read_tflite(data[:n], source="bad.tflite"), source="bad.tflite")


def test_hostile_vector_length_is_checked_before_use():
    """A vector header claiming 2^32 - 1 elements is refused against the file size, not allocated."""
    data = bytearray(_bytes("tflm_mnist_lstm_int8.tflite"))
    root = int.from_bytes(data[0:4], "little")
    vt = root - int.from_bytes(data[root:root + 4], "little", signed=True)
    field = int.from_bytes(data[vt + 4 + 2 * 4:vt + 6 + 2 * 4], "little")      # Model.buffers (slot 4)
    vec = root + field + int.from_bytes(data[root + field:root + field + 4], "little")
    data[vec:vec + 4] = (0xFFFFFFFF).to_bytes(4, "little")
    with pytest.raises(ModelFileError, match="claims 4294967295 elements"):
        read_tflite(bytes(data), source="bad.tflite")


@NEEDS_FLATBUFFERS
def test_op_table_index_out_of_range():
    def change(m, S):
        m.subgraphs[0].operators[1].opcodeIndex = 17
    with pytest.raises(ModelFileError, match="operator 1 uses op table entry 17, but the op table has 4 entries"):
        read_tflite(_edit(_bytes("tflm_mnist_lstm_int8.tflite"), change), source="bad.tflite")


@NEEDS_FLATBUFFERS
def test_tensor_index_out_of_range():
    def change(m, S):
        op = m.subgraphs[0].operators[2]
        op.inputs = [int(op.inputs[0]), 999, int(op.inputs[2])]
    with pytest.raises(ModelFileError, match="refers to tensor 999, but the subgraph has 27 tensors"):
        read_tflite(_edit(_bytes("tflm_mnist_lstm_int8.tflite"), change), source="bad.tflite")


@NEEDS_FLATBUFFERS
def test_shape_contradicting_buffer():
    def change(m, S):
        m.subgraphs[0].tensors[3].shape = [10, 561]                          # FC weights: 5600 bytes stored
    with pytest.raises(ModelFileError, match=r"shape \(10, 561\) \(int8, 5610 bytes\) but its buffer 4 holds 5600"):
        read_tflite(_edit(_bytes("tflm_mnist_lstm_int8.tflite"), change), source="bad.tflite")


def test_lstm_weight_shape_contradicting_the_input():
    rng = np.random.default_rng(0)
    m = quantize(el.LSTMWeights.random(el.LSTMSpec(4, 5, bias="keras")), rng.standard_normal((3, 2, 4)))
    g = m.graph
    g.tensors[g.operators[0].inputs[0]].shape = (1, 3, 6)
    with pytest.raises(ModelFileError, match=r"input weights of gate i .* has shape \(5, 4\), expected \(5, 6\)"):
        TFLiteModel(g, source="bad.tflite")


@NEEDS_FLATBUFFERS
def test_unsupported_op_is_named():
    def change(m, S):
        m.operatorCodes[3].builtinCode = m.operatorCodes[3].deprecatedBuiltinCode = S.BuiltinOperator.TANH
    with pytest.raises(UnsupportedModelError, match="operator 3 is TANH, which edgelstm does not run"):
        el.load_model(_write_tmp(_edit(_bytes("tflm_mnist_lstm_int8.tflite"), change)))


def _write_tmp(data):
    import tempfile
    f = tempfile.NamedTemporaryFile(suffix=".tflite", delete=False)
    f.write(data)
    f.close()
    return f.name


def test_not_a_tflite_file():
    with pytest.raises(ModelFileError, match="file identifier"):
        read_tflite(b"\x10\x00\x00\x00ONNX" + bytes(100), source="bad.tflite")


def test_quantize_arguments_checked():
    w = el.LSTMWeights.random(el.LSTMSpec(4, 5, bias="keras"))
    with pytest.raises(ValueError, match=r"calibration_x: expected float \(T, N, 4\)"):
        quantize(w, np.zeros((3, 4)))
    with pytest.raises(UnsupportedModelError, match="reverse"):
        quantize(el.LSTMWeights.random(el.LSTMSpec(4, 5, bidirectional=True)), np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match="seq_len"):
        export_tflite(w, "/tmp/never.tflite")


def test_model_spec_for_counting():
    m = load_tflite(os.path.join(DATA, "tflm_micro_speech_lstm_int8.tflite"))
    assert m.spec.stacks[0] == el.LSTMSpec(257, 80, bias="keras")
    assert m.seq_len == 49 and m.batch == 1


@pytest.mark.parametrize("name", ["tflm_mnist_lstm_int8.tflite", "tflm_mnist_lstm_float.tflite"])
def test_corrupted_files_fail_cleanly(name):
    """300 files with 1-3 random bytes changed (mostly in the tables at the end of the file): each
    either runs or raises ModelFileError (UnsupportedModelError is one), never anything else."""
    data = _bytes(name)
    rng = np.random.default_rng(0)
    outcomes = {"ran": 0, "refused": 0}
    for _ in range(300):
        b = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            pos = rng.integers(len(b) - 3000, len(b)) if rng.random() < 0.8 else rng.integers(0, len(b))
            b[pos] = rng.integers(0, 256)
        try:
            m = TFLiteModel(read_tflite(bytes(b), source="bad.tflite"), source="bad.tflite")
            with np.errstate(all="ignore"):
                m(np.zeros(m.input_shape, m.input_dtype))
            outcomes["ran"] += 1
        except ModelFileError as e:
            assert "bad.tflite" in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 50
