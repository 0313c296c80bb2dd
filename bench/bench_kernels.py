"""edgelstm.lstm / LSTMStream against torch.nn.LSTM and onnxruntime's LSTM, same inputs,
same process, 2 threads each.

    python -m pytest bench/bench_kernels.py --benchmark-only

Inputs and peers are built outside the timed region; every callable runs once before timing
so JIT compilation (and lazy packing) is excluded. extra_info records the spec, batch, T,
FLOPs per call (edgelstm.count: the project's one counting convention) and the GFLOP/s
reached. bench/conftest.py prints each group's median ratios at the end.
"""
from __future__ import annotations

import numpy as np
import pytest

import edgelstm as el
from edgelstm.convert import to_onnx, torch_lstm_kwargs
from edgelstm.run import LSTMStream, lstm

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

THREADS = 2


@pytest.fixture(scope="module", autouse=True)
def _threads():
    import numba
    torch.set_num_threads(THREADS)
    numba.set_num_threads(THREADS)


# ---------------------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------------------
def torch_module(weights):
    m = torch.nn.LSTM(**torch_lstm_kwargs(weights.spec))
    m.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.to_torch_state_dict().items()})
    return m.to(torch.float64 if weights.dtype == np.float64 else torch.float32).eval()


def ort_session(weights, batch, seq_len, with_lengths=False):
    """One ONNX LSTM node per layer (direction forward), Squeeze between layers."""
    from onnx import TensorProto, helper, numpy_helper
    spec = weights.spec
    elem = TensorProto.DOUBLE if weights.dtype == np.float64 else TensorProto.FLOAT
    H = spec.hidden_size
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("x", elem, [seq_len, batch, spec.input_size])]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, [batch]))
    cur = "x"
    for l, t in enumerate(to_onnx(weights)):
        names = [cur]
        for key in ("W", "R", "B"):
            inits.append(numpy_helper.from_array(np.ascontiguousarray(t[key]), f"{key}{l}"))
            names.append(f"{key}{l}")
        names.append("lengths" if with_lengths else "")
        nodes.append(helper.make_node("LSTM", names, [f"y{l}", f"h{l}", f"c{l}"],
                                      hidden_size=H, direction="forward"))
        axes = f"axes{l}"
        inits.append(numpy_helper.from_array(np.array([1], np.int64), axes))
        nodes.append(helper.make_node("Squeeze", [f"y{l}", axes], [f"x{l + 1}"]))
        cur = f"x{l + 1}"
    graph = helper.make_graph(nodes, "lstm", inputs,
                              [helper.make_tensor_value_info(cur, elem, [seq_len, batch, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------
CASES = {
    # name: (spec, batch, seq_len, dtype, variable lengths)
    "b1-E40-H64": (el.LSTMSpec(40, 64), 1, 100, "float32", False),
    "b1-E128-H256-L2": (el.LSTMSpec(128, 256, num_layers=2), 1, 100, "float32", False),
    "b64-E512-H1024": (el.LSTMSpec(512, 1024), 64, 100, "float32", False),
    "b1-E128-H256-f64": (el.LSTMSpec(128, 256), 1, 100, "float64", False),
    "b8-E128-H256-P64": (el.LSTMSpec(128, 256, proj_size=64), 8, 100, "float32", False),
    "b16-E128-H256-varlen": (el.LSTMSpec(128, 256), 16, 100, "float32", True),
}
PEERS = ("edgelstm", "torch", "onnxruntime")


def _case(name):
    spec, B, T, dtype, varlen = CASES[name]
    w = el.LSTMWeights.random(spec, seed=1, dtype=dtype)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, spec.input_size)).astype(dtype)
    lengths = rng.integers(T // 2, T + 1, size=B) if varlen else None
    if lengths is not None:
        lengths[0] = T
    return spec, B, T, w, x, lengths


def _runner(peer, w, x, lengths):
    T, B = x.shape[:2]
    if peer == "edgelstm":
        return lambda: lstm(x, w, lengths=lengths)
    if peer == "torch":
        m, xt = torch_module(w), torch.from_numpy(x)
        if lengths is None:
            def run():
                with torch.inference_mode():
                    return m(xt)
            return run
        lt = torch.from_numpy(np.asarray(lengths, np.int64))

        def run_packed():
            with torch.inference_mode():
                packed = torch.nn.utils.rnn.pack_padded_sequence(xt, lt, enforce_sorted=False)
                y, state = m(packed)
                return torch.nn.utils.rnn.pad_packed_sequence(y, total_length=T), state
        return run_packed
    if w.spec.proj_size or w.dtype == np.float64:
        pytest.skip("onnxruntime: no projection in ONNX's LSTM; float64 LSTM not in its CPU kernels")
    sess = ort_session(w, B, T, with_lengths=lengths is not None)
    feed = {"x": x}
    if lengths is not None:
        feed["lengths"] = np.asarray(lengths, np.int32)
    return lambda: sess.run(None, feed)


def _record(benchmark, spec, B, T, dtype, varlen=False):
    flops = el.count(spec, batch=B, seq_len=T, dtype=dtype).flops_per_sequence
    benchmark.extra_info.update(spec=repr(spec), batch=B, seq_len=T, dtype=dtype,
                                variable_lengths=varlen, flops=flops)
    return flops


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("case", list(CASES))
def test_sequence(benchmark, case, peer):
    spec, B, T, w, x, lengths = _case(case)
    run = _runner(peer, w, x, lengths)
    run()                                          # JIT compile, pack weights, warm caches
    benchmark.group = case
    flops = _record(benchmark, spec, B, T, w.dtype.name, lengths is not None)
    big = flops > 5e9
    if big:
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(run)
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("peer", ("edgelstm", "edgelstm-out", "torch"))
def test_stream_step(benchmark, peer):
    """One time step per call, B=1, H=128: LSTMStream.step against torch with the state fed back.
    "edgelstm" is the default form (a new array per step), "edgelstm-out" step(x_t, out=buf)."""
    spec = el.LSTMSpec(128, 128)
    w = el.LSTMWeights.random(spec, seed=1)
    x_t = np.random.default_rng(3).standard_normal(128).astype(np.float32)
    if peer == "edgelstm":
        s = LSTMStream(w)
        run = lambda: s.step(x_t)
    elif peer == "edgelstm-out":
        s, buf = LSTMStream(w), np.empty(128, np.float32)
        run = lambda: s.step(x_t, out=buf)
    else:
        m = torch_module(w)
        xt = torch.from_numpy(x_t).reshape(1, 1, 128)
        state = [(torch.zeros(1, 1, 128), torch.zeros(1, 1, 128))]

        def run():
            with torch.inference_mode():
                y, state[0] = m(xt, state[0])
            return y
    run()
    benchmark.group = "stream-step-B1-E128-H128"
    flops = _record(benchmark, spec, 1, 1, "float32")
    benchmark(run)
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9
