"""Counts pinned to closed forms, to the seed articles' worked examples, and to the
real frameworks (torch, Keras, ONNX) and tools (thop, ptflops)."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import edgelstm as el
from edgelstm.costmodel.counts import CountError, count_grid
from edgelstm.examples import EXAMPLES

rng = np.random.default_rng(1234)


def random_specs(n, bias="pytorch", proj=True, max_layers=4):
    out = []
    for _ in range(n):
        H = int(rng.integers(1, 40))
        P = int(rng.integers(0, H)) if proj and rng.random() < 0.5 else 0
        out.append(el.LSTMSpec(int(rng.integers(1, 50)), H, int(rng.integers(1, max_layers + 1)),
                               bool(rng.random() < 0.5), P, bias))
    return out


# -- closed forms --------------------------------------------------------------------------
def test_single_layer_closed_form_and_breakdown():
    E, H = 80, 12
    c = el.count(el.LSTMSpec(E, H), batch=3, seq_len=7)
    assert c.params_by_kind == {"input_weights": 4 * H * E, "recurrent_weights": 4 * H * H,
                                "biases": 8 * H, "projection": 0, "peepholes": 0}
    assert c.params == 4 * H * (E + H + 2)
    assert c.weight_bytes == 4 * c.params
    assert c.macs_per_step == 3 * (4 * H * E + 4 * H * H)
    assert c.flops_per_step == 3 * (2 * (4 * H * E + 4 * H * H) + 12 * H)
    assert c.transcendentals_per_step == 3 * 5 * H
    assert c.macs_per_sequence == 7 * c.macs_per_step
    assert c.training_macs_per_sequence == 3 * c.macs_per_sequence
    assert c.state_bytes == 3 * (H + H) * 4


def test_projection_peephole_and_no_bias_terms():
    E, H, P = 10, 20, 5
    c = el.count(el.LSTMSpec(E, H, proj_size=P, peephole=True, bias="none"))
    assert c.params_by_kind == {"input_weights": 4 * H * E, "recurrent_weights": 4 * H * P, "biases": 0,
                                "projection": P * H, "peepholes": 3 * H}
    macs = 4 * H * E + 4 * H * P + P * H + 3 * H
    assert c.macs_per_step == macs
    assert c.flops_per_step == 2 * macs + 4 * H + 3 * H + H  # no bias addition


def test_stacked_bidirectional_layers_read_both_directions():
    s = el.LSTMSpec(7, 9, num_layers=3, bidirectional=True, proj_size=4)
    c = el.count(s)
    assert [l.input_size for l in c.layers] == [7, 7, 8, 8, 8, 8]
    assert [l.name for l in c.layers[:2]] == ["lstm0.layer0", "lstm0.layer0.reverse"]
    assert sum(l.params_total for l in c.layers) == c.params


def test_weight_bytes_per_dtype_and_quantization_overhead():
    s = el.LSTMSpec(3, 5, proj_size=2)   # w_ih 20x3, w_hh 20x2, w_hr 2x5, biases 40
    c = el.count(s, dtype="int4")
    data = (60 * 4 + 7) // 8 + (40 * 4 + 7) // 8 + (10 * 4 + 7) // 8
    scales = (20 + 20 + 2) * 4
    assert c.scale_bytes == scales
    assert c.weight_bytes == data + scales + 40 * 4   # int32 biases
    by = c.weight_bytes_by_dtype
    assert by["float32"] == 4 * c.params and by["float64"] == 8 * c.params
    assert by["float16"] == by["bfloat16"] == 2 * c.params
    assert by["int8"] == 60 + 40 + 10 + scales + 40 * 4
    assert by["int4"] == c.weight_bytes


def test_traffic_cases_follow_hoisting_and_residency():
    s = el.LSTMSpec(64, 32)
    c = el.count(s, batch=2, seq_len=10)
    t = c.traffic
    w = c.weight_bytes
    w_ih = 4 * 32 * 64 * 4
    acts = 2 * (64 * 4 + 2 * 32 * 4 + 2 * 32 * 4)
    gates = 2 * 2 * 4 * 32 * 4
    assert t["streamed"].bytes_per_step == w + acts == c.bytes_per_step
    assert t["streamed_hoisted"].bytes_per_step == w - w_ih + acts + gates
    assert t["streamed_hoisted"].bytes_per_sequence == 10 * (w - w_ih + acts + gates) + w_ih
    assert t["resident"].bytes_per_step == acts
    assert t["resident"].bytes_per_sequence == 10 * acts + w
    assert t["streamed"].flops_per_byte == pytest.approx(c.flops_per_step / (w + acts))
    # more batch amortizes the weights: intensity grows
    assert el.count(s, batch=16).flops_per_byte > c.flops_per_byte


def test_ten_billion_parameters_do_not_overflow():
    s = el.LSTMSpec(200_000, 100_000, num_layers=3, bidirectional=True)
    c = el.count(s, batch=64, seq_len=10_000)
    H, E = 100_000, 200_000
    expected = 2 * (4 * H * (E + H + 2) + 2 * 4 * H * (2 * H + H + 2))
    assert c.params == expected and c.params > 10**10 and isinstance(c.params, int)
    assert c.macs_per_sequence == 64 * 10_000 * 2 * (4 * H * (E + H) + 2 * 4 * H * 3 * H)


def test_bad_count_arguments():
    s = el.LSTMSpec(3, 4)
    for kw, word in ((dict(batch=0), "batch"), (dict(seq_len=-1), "seq_len"), (dict(dtype="fp8"), "dtype"),
                     (dict(convention="keras"), "convention"), (dict(batch=1.5), "batch")):
        with pytest.raises(CountError, match=word):
            el.count(s, **kw)
    with pytest.raises(el.SpecError, match="spec: expected an LSTMSpec or ModelSpec"):
        el.count({"input_size": 3})


# -- the vectorized path -------------------------------------------------------------------
def test_count_grid_equals_scalar_counts():
    specs = random_specs(300)
    for bias in ("pytorch", "keras", "none"):
        g = count_grid([s.input_size for s in specs], [s.hidden_size for s in specs],
                       [s.num_layers for s in specs], [s.bidirectional for s in specs],
                       [s.proj_size for s in specs], bias=bias, batch=3, dtype="int4")
        for k, s in enumerate(specs):
            c = el.count(el.LSTMSpec(s.input_size, s.hidden_size, s.num_layers, s.bidirectional,
                                     s.proj_size, bias), batch=3, dtype="int4")
            assert (g["params"][k], g["weight_bytes"][k], g["macs_per_step"][k], g["flops_per_step"][k],
                    g["transcendentals_per_step"][k]) == (c.params, c.weight_bytes, c.macs_per_step,
                                                          c.flops_per_step, c.transcendentals_per_step)


def test_count_grid_broadcasts_and_rejects_bad_values():
    g = count_grid(np.arange(1, 5)[:, None], np.array([8, 16, 32])[None, :])
    assert g["params"].shape == (4, 3)
    with pytest.raises(el.SpecError, match="proj_size"):
        count_grid(4, 8, proj_size=8)
    with pytest.raises(el.SpecError, match="hidden_size: expected integers >= 1"):
        count_grid(4, [8, 0])


# -- the seed articles -----------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [
    ("demystify", 1640), ("keras-640", 640), ("kws", 4464), ("sentiment", 178_058),
    ("seq2seq", 87_008_000), ("sample2", 200 + 160), ("sample3", 200 + 288)])
def test_seed_examples(name, params):
    assert el.count(EXAMPLES[name].spec).params == params


def test_seed_article_errors_are_the_ones_documented():
    c = el.count(EXAMPLES["seq2seq"].spec)
    assert [l.params_total for l in c.layers] == [25_000_000, 6_004_000, 6_004_000, 50_000_000]
    assert EXAMPLES["seq2seq"].article_params == 91_000_000          # the article's figure
    with_bias = el.ModelSpec(stacks=EXAMPLES["seq2seq"].spec.stacks, embedding=EXAMPLES["seq2seq"].spec.embedding,
                             head=el.DenseSpec(50_000), topology="encoder_decoder")
    assert el.count(with_bias).params == 87_058_000
    assert [l.params_total for l in el.count(EXAMPLES["sample2"].spec).layers] == [200, 160]   # article: 288, 160
    assert [l.params_total for l in el.count(EXAMPLES["sample3"].spec).layers] == [200, 288]   # article: 200, 264


# -- the real frameworks ---------------------------------------------------------------------
def test_params_equal_torch_numel_over_a_random_grid():
    torch = pytest.importorskip("torch")
    for s in random_specs(40):
        m = torch.nn.LSTM(s.input_size, s.hidden_size, s.num_layers, bidirectional=s.bidirectional,
                          proj_size=s.proj_size)
        assert el.count(s).params == sum(p.numel() for p in m.parameters()), s
        m0 = torch.nn.LSTM(s.input_size, s.hidden_size, s.num_layers, bias=False,
                           bidirectional=s.bidirectional, proj_size=s.proj_size)
        s0 = el.LSTMSpec(s.input_size, s.hidden_size, s.num_layers, s.bidirectional, s.proj_size, "none")
        assert el.count(s0).params == sum(p.numel() for p in m0.parameters())


def test_params_equal_keras_count_params():
    keras = pytest.importorskip("keras")
    for s in random_specs(6, bias="keras", proj=False, max_layers=3):
        layers = [keras.Input((5, s.input_size))]
        for l in range(s.num_layers):
            lstm = keras.layers.LSTM(s.hidden_size, return_sequences=True)
            layers.append(keras.layers.Bidirectional(lstm) if s.bidirectional else lstm)
        model = keras.Sequential(layers)
        assert el.count(s).params == model.count_params(), s
    # the article's Embedding + LSTM + Dense
    model = keras.Sequential([keras.Input((20,), dtype="int32"), keras.layers.Embedding(1000, 128),
                              keras.layers.LSTM(64), keras.layers.Dense(10)])
    assert el.count(EXAMPLES["sentiment"].spec).params == model.count_params() == 178_058


@pytest.mark.parametrize("bidirectional, peephole", [(False, False), (True, False), (False, True), (True, True)])
def test_params_equal_onnx_lstm_tensor_sizes(bidirectional, peephole):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    E, H, T, B = 6, 5, 3, 2
    D = 2 if bidirectional else 1
    tensors = {"W": (D, 4 * H, E), "R": (D, 4 * H, H), "B": (D, 8 * H)}
    if peephole:
        tensors["P"] = (D, 3 * H)
    inits = [numpy_helper.from_array(np.full(shape, 0.01, np.float32), name) for name, shape in tensors.items()]
    inputs = ["X", "W", "R", "B", "", "", ""] + (["P"] if peephole else [])
    node = helper.make_node("LSTM", inputs, ["Y"], hidden_size=H,
                            direction="bidirectional" if bidirectional else "forward")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, E])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, D, B, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    y, = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"X": np.zeros((T, B, E), np.float32)})
    assert y.shape == (T, D, B, H)   # onnxruntime accepted the tensor shapes for this hidden_size
    spec = el.LSTMSpec(E, H, bidirectional=bidirectional, peephole=peephole)
    assert el.count(spec).params == sum(int(np.prod(s)) for s in tensors.values())


# -- other tools' conventions ---------------------------------------------------------------
def _torch_lstm(s, batch_first=False):
    import torch
    return torch.nn.LSTM(s.input_size, s.hidden_size, s.num_layers, bias=s.bias != "none",
                         bidirectional=s.bidirectional, proj_size=s.proj_size, batch_first=batch_first)


TOOL_SPECS = [el.LSTMSpec(10, 20), el.LSTMSpec(10, 20, num_layers=3, bidirectional=True),
              el.LSTMSpec(7, 16, num_layers=2, proj_size=5), el.LSTMSpec(7, 16, 2, True, 5),
              el.LSTMSpec(4, 8, bias="none")]


@pytest.mark.parametrize("s", TOOL_SPECS, ids=str)
def test_thop_convention_reproduces_thop(s):
    torch = pytest.importorskip("torch")
    thop = pytest.importorskip("thop")
    T, B = 6, 3

    class Wrapped(torch.nn.Module):  # thop reports 0 params for a bare nn.LSTM: it sums children only
        def __init__(self):
            super().__init__()
            self.lstm = _torch_lstm(s)

        def forward(self, x):
            return self.lstm(x)[0]

    macs, params = thop.profile(Wrapped(), inputs=(torch.zeros(T, B, s.input_size),), verbose=False)
    c = el.count(s, batch=B, seq_len=T, convention="thop")
    assert c.macs_per_sequence == int(macs)
    assert c.params == int(params)
    _, bare_params = thop.profile(_torch_lstm(s), inputs=(torch.zeros(T, B, s.input_size),), verbose=False)
    assert bare_params == 0


@pytest.mark.parametrize("s", TOOL_SPECS, ids=str)
def test_ptflops_convention_reproduces_ptflops(s):
    pytest.importorskip("torch")
    ptflops = pytest.importorskip("ptflops")
    T = 6   # ptflops adds a batch of 1 in front: input (1, T, E), so the module is batch_first
    macs, params = ptflops.get_model_complexity_info(_torch_lstm(s, batch_first=True), (T, s.input_size),
                                                     as_strings=False, print_per_layer_stat=False,
                                                     backend="pytorch")
    c = el.count(s, batch=1, seq_len=T, convention="ptflops")
    assert c.macs_per_sequence == int(macs)
    assert c.params == int(params)


def test_torchinfo_convention_is_params_times_steps_times_batch():
    # torchinfo counts each parameter of an RNN as one MAC per output row (T*B): see README
    torch = pytest.importorskip("torch")
    for s in TOOL_SPECS:
        numel = sum(p.numel() for p in _torch_lstm(s).parameters())
        assert el.count(s, batch=4, seq_len=5, convention="torchinfo").macs_per_sequence == 20 * numel


def test_tools_disagree_where_the_docs_say():
    s = el.LSTMSpec(7, 16, num_layers=2, proj_size=5)
    own, thop_c, pt = (el.count(s, convention=c).macs_per_step for c in ("edgelstm", "thop", "ptflops"))
    # thop ignores proj_size (recurrent product H x H instead of P x H): it overcounts here
    assert thop_c > own
    # ptflops never counts the projection's P*H MACs but adds 18H elementwise ops per layer
    assert pt == own - 2 * 5 * 16 + 2 * 18 * 16
