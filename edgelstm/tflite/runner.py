"""Run a .tflite graph (an LSTM and the ops around it) with edgelstm's kernels.

`TFLiteModel(graph)` checks every op once (types, shapes, quantization) and turns it into a step;
`model(x)` takes the model's own input tensor (dtype and shape as in the file) and returns its
output tensor. int8 LSTMs run on the Numba integer kernel (`kernels/int8.py`), bit-exact with the
TFLM interpreter; float32 LSTMs on edgelstm's float kernels (or, with a cell clip, a float32 NumPy
loop, since the float kernels do not clip).

Each call starts from zero LSTM state, as a freshly reset TFLM interpreter does (TFLM keeps the
variable state tensors across invoke() calls unless reset() is called).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import ModelFileError, UnsupportedModelError
from ..kernels import int8_reference as R
from . import schema as S
from .lstm_tensors import per_tensor

_QRANGE = {"int8": (R.INT8_MIN, R.INT8_MAX), "int16": (R.INT16_MIN, R.INT16_MAX)}


class TFLiteModel:
    """A .tflite model edgelstm runs: `.graph`, `.spec` (a ModelSpec, for `edgelstm.count`), `.lstms`.

    `.lstms`: per LSTM op, a QuantLSTM (int8) or an LSTMWeights (float32).
    `.input_dtype` / `.input_shape` and `.output_dtype` / `.output_shape`: the graph's tensors.
    """

    def __init__(self, graph: S.Graph, source: str = "model.tflite", kernel: str = "numba"):
        if kernel not in ("numba", "reference"):
            raise ValueError(f"kernel: expected 'numba' or 'reference', got {kernel!r}")
        self.graph, self.source, self.kernel = graph, source, kernel
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise UnsupportedModelError(f"{source}: {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                                        f"edgelstm runs models with one of each")
        self.lstms = []
        self._lstm_ops = []
        self._steps = []
        known = {k for k, t in enumerate(graph.tensors) if t.data is not None or t.is_variable}
        known.add(graph.inputs[0])
        for k, op in enumerate(graph.operators):
            where = f"{source}: operator {k} ({op.op})"
            if len(op.outputs) != 1 or not op.inputs or op.inputs[0] < 0 or \
                    (op.op == "FULLY_CONNECTED" and (len(op.inputs) < 2 or op.inputs[1] < 0)):
                raise ModelFileError(f"{where}: has {len(op.inputs)} inputs (first {op.inputs[:1]}) and "
                                     f"{len(op.outputs)} outputs; expected its input tensors and one output")
            for i in op.inputs:
                if i >= 0 and i not in known:
                    raise ModelFileError(f"{where} reads tensor {i} before any op writes it")
            self._steps.append(getattr(self, "_prepare_" + op.op.lower())(op, where))
            known.update(op.outputs)
        if graph.outputs[0] not in known:
            raise ModelFileError(f"{source}: the output tensor {graph.outputs[0]} is never written")
        t_in, t_out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
        self.input_dtype, self.input_shape = np.dtype(t_in.dtype), t_in.shape
        self.output_dtype, self.output_shape = np.dtype(t_out.dtype), t_out.shape
        self.spec = self._model_spec()

    def __repr__(self) -> str:
        return (f"TFLiteModel({self.source!r}: {' -> '.join(o.op for o in self.graph.operators)}; "
                f"input {self.input_dtype} {self.input_shape})")

    # -- running --------------------------------------------------------------------------
    def __call__(self, x):
        x = np.asarray(x)
        if x.dtype != self.input_dtype or x.shape != tuple(self.input_shape):
            raise ValueError(f"x: expected the model's input tensor, {self.input_dtype} {tuple(self.input_shape)}, "
                             f"got {x.dtype} {x.shape}")
        values = {self.graph.inputs[0]: x}
        for step in self._steps:
            step(values)
        return values[self.graph.outputs[0]]

    # -- ops ------------------------------------------------------------------------------
    def _tensor(self, i: int):
        return self.graph.tensors[i]

    def _expect(self, where, cond, what):
        if not cond:
            raise ModelFileError(f"{where}: {what}")

    def _per_tensor(self, where, i, what):
        return per_tensor(where, self._tensor(i), what, index=i)

    def _prepare_reshape(self, op, where):
        self._expect(where, len(op.inputs) >= 1 and len(op.outputs) == 1, "expected 1 or 2 inputs and 1 output")
        src, dst = self._tensor(op.inputs[0]), self._tensor(op.outputs[0])
        self._expect(where, math.prod(src.shape) == math.prod(dst.shape),
                     f"reshapes {src.shape} to {dst.shape}: different element counts")
        self._expect(where, src.dtype == dst.dtype, f"changes the type {src.dtype} -> {dst.dtype}")
        i, o, shape = op.inputs[0], op.outputs[0], dst.shape

        def step(v):
            v[o] = v[i].reshape(shape)
        return step

    def _prepare_quantize(self, op, where):
        src, dst = self._tensor(op.inputs[0]), self._tensor(op.outputs[0])
        if src.dtype != "float32" or dst.dtype not in _QRANGE:
            raise UnsupportedModelError(f"{where}: {src.dtype} -> {dst.dtype}; edgelstm quantizes float32 to "
                                        f"int8 or int16")
        self._expect(where, src.shape == dst.shape, f"shapes {src.shape} -> {dst.shape} differ")
        scale, zp = self._per_tensor(where, op.outputs[0], "the output")
        i, o, dt, (lo, hi) = op.inputs[0], op.outputs[0], np.dtype(dst.dtype), _QRANGE[dst.dtype]

        def step(v):
            v[o] = R.affine_quantize(v[i], scale, zp, lo, hi).astype(dt)
        return step

    def _prepare_dequantize(self, op, where):
        src, dst = self._tensor(op.inputs[0]), self._tensor(op.outputs[0])
        if src.dtype not in _QRANGE or dst.dtype != "float32":
            raise UnsupportedModelError(f"{where}: {src.dtype} -> {dst.dtype}; edgelstm dequantizes int8 or "
                                        f"int16 to float32")
        scale, zp = self._per_tensor(where, op.inputs[0], "the input")
        i, o = op.inputs[0], op.outputs[0]

        def step(v):
            v[o] = R.dequantize(v[i], scale, zp)
        return step

    def _prepare_softmax(self, op, where):
        src, dst = self._tensor(op.inputs[0]), self._tensor(op.outputs[0])
        beta = float(op.options.get("beta", 1.0))
        i, o = op.inputs[0], op.outputs[0]
        if src.dtype == "float32" and dst.dtype == "float32":
            def step(v):
                z = (v[i] - v[i].max(axis=-1, keepdims=True)) * np.float32(beta)
                e = np.exp(z.astype(np.float32))
                v[o] = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
            return step
        if src.dtype != "int8" or dst.dtype != "int8":
            raise UnsupportedModelError(f"{where}: {src.dtype} -> {dst.dtype}; edgelstm runs float32 and "
                                        f"int8 -> int8 softmax")
        s_in, _ = self._per_tensor(where, i, "the input")
        s_out, zp_out = self._per_tensor(where, o, "the output")
        if s_out != 1.0 / 256 or zp_out != -128:
            raise ModelFileError(f"{where}: an int8 softmax output must have scale 1/256 and zero point -128 "
                                 f"(TFLM requires it), got {s_out!r} and {zp_out}")
        try:
            params = R.softmax_int8_params(s_in, beta)
        except R.QuantizationError as e:
            raise ModelFileError(f"{where}: {e}") from None
        run = R.softmax_int8
        if self.kernel == "numba":
            from ..kernels.int8 import softmax_int8 as run

        def step(v):
            v[o] = run(v[i], *params)
        return step

    def _prepare_fully_connected(self, op, where):
        self._expect(where, len(op.inputs) in (2, 3) and len(op.outputs) == 1, "expected 2 or 3 inputs, 1 output")
        i, wi = op.inputs[0], op.inputs[1]
        bi = op.inputs[2] if len(op.inputs) == 3 else -1
        o = op.outputs[0]
        src, wt, dst = self._tensor(i), self._tensor(wi), self._tensor(o)
        w = wt.data
        self._expect(where, w is not None and w.ndim == 2, f"the weights (tensor {wi}) must be a constant 2-D tensor")
        N, K = w.shape
        b = self._tensor(bi).data if bi >= 0 else None
        self._expect(where, bi < 0 or (b is not None and b.shape == (N,)),
                     f"the bias must be a constant of shape ({N},)")
        self._expect(where, math.prod(src.shape) % K == 0 and math.prod(dst.shape) == math.prod(src.shape) // K * N,
                     f"input {src.shape} and output {dst.shape} do not fit weights ({N}, {K})")
        act = S.ACTIVATIONS.get(op.options.get("fused_activation_function", 0), "?")
        if op.options.get("weights_format", 0) != 0:
            raise UnsupportedModelError(f"{where}: shuffled weights format; edgelstm reads the default")
        out_shape = dst.shape
        if src.dtype == "float32" and wt.dtype == "float32":
            if act not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
                raise UnsupportedModelError(f"{where}: fused activation {act}")
            lo, hi = {"NONE": (-np.inf, np.inf), "RELU": (0, np.inf), "RELU6": (0, 6),
                      "RELU_N1_TO_1": (-1, 1)}[act]

            def step(v):
                z = v[i].reshape(-1, K).astype(np.float32) @ w.T
                if b is not None:
                    z = z + b
                v[o] = np.clip(z, lo, hi).astype(np.float32).reshape(out_shape)
            return step
        if not (src.dtype == "int8" and wt.dtype == "int8" and dst.dtype == "int8"):
            raise UnsupportedModelError(f"{where}: {src.dtype} input, {wt.dtype} weights, {dst.dtype} output; "
                                        f"edgelstm runs float32 and int8 fully connected layers")
        s_x, zp_x = self._per_tensor(where, i, "the input")
        s_y, zp_y = self._per_tensor(where, o, "the output")
        self._expect(where, b is None or self._tensor(bi).dtype == "int32", "an int8 layer's bias must be int32")
        lo, hi = _activation_range(act, s_y, zp_y, where)
        ws = wt.scale
        self._expect(where, ws is not None and len(ws) in (1, N), "the weights need one scale or one per row")
        try:
            if len(ws) == 1:   # GetQuantizedConvolutionMultipler: double products (see int8_reference.lstm_requant)
                ms = [R.quantize_multiplier(float(np.float32(s_x)) * float(ws[0]) / float(np.float32(s_y)))] * N
            else:              # per channel: double products (fully_connected_common.cc)
                ms = [R.quantize_multiplier(float(np.float32(s_x)) * float(s) / float(np.float32(s_y))) for s in ws]
        except R.QuantizationError as e:
            raise ModelFileError(f"{where}: {e}") from None
        mults, shifts = [a for a, _ in ms], [c for _, c in ms]
        if self.kernel == "numba":
            from ..kernels.int8 import fully_connected_int8 as run
            from ..kernels.int8 import pack_fc
            w = pack_fc(w)
        else:
            run = R.fully_connected_int8_per_channel

        def step(v):
            v[o] = run(v[i].reshape(-1, K), w, b, zp_x, mults, shifts, zp_y, lo, hi).reshape(out_shape)
        return step

    def _prepare_unidirectional_sequence_lstm(self, op, where):
        from .lstm_tensors import lstm_from_tensors
        layer, time_major, clip = lstm_from_tensors(self.graph, op, where)
        self.lstms.append(layer)
        self._lstm_ops.append(op)
        i, o = op.inputs[S.LSTM_INPUT], op.outputs[0]
        out_shape = self._tensor(o).shape
        packed = {}

        def step(v):
            x = v[i] if time_major else v[i].transpose(1, 0, 2)           # (T, B, E)
            if isinstance(layer, R.QuantLSTM) and self.kernel == "numba":
                from ..kernels.int8 import lstm_int8, pack
                if "p" not in packed:
                    packed["p"] = pack(layer)                            # once, on first use
                y = lstm_int8(np.ascontiguousarray(x), packed["p"])[0]
            else:
                y = run_lstm(x, layer, clip, self.kernel)
            v[o] = np.ascontiguousarray(y if time_major else y.transpose(1, 0, 2)).reshape(out_shape)
        return step

    # -- the spec, for counting -----------------------------------------------------------
    def _model_spec(self):
        from ..spec import DenseSpec, ModelSpec
        if not self.lstms:
            raise UnsupportedModelError(f"{self.source}: no UNIDIRECTIONAL_SEQUENCE_LSTM op")
        stacks = tuple(layer.spec for layer in self.lstms)
        fcs = [o for o in self.graph.operators if o.op == "FULLY_CONNECTED"]
        head = None
        if len(fcs) == 1:
            N = self._tensor(fcs[0].inputs[1]).shape[0]
            K = self._tensor(fcs[0].inputs[1]).shape[1]
            if K == stacks[-1].output_size:     # a per-step head (a head over the flattened sequence has
                head = DenseSpec(N, bias=len(fcs[0].inputs) == 3 and fcs[0].inputs[2] >= 0, every_step=True)
                # no DenseSpec: it is left out of the spec, which then counts the LSTM alone)
        try:
            return ModelSpec(stacks=stacks, head=head)
        except ValueError:
            return ModelSpec(stacks=stacks)

    @property
    def seq_len(self) -> int:
        op = self._lstm_ops[0]
        shape = self._tensor(op.inputs[S.LSTM_INPUT]).shape
        return shape[0] if op.options.get("time_major") else shape[1]

    @property
    def batch(self) -> int:
        op = self._lstm_ops[0]
        shape = self._tensor(op.inputs[S.LSTM_INPUT]).shape
        return shape[1] if op.options.get("time_major") else shape[0]


def _activation_range(act: str, scale: float, zp: int, where: str):
    """CalculateActivationRangeQuantized for an int8 output."""
    def q(f):
        return zp + int(R._round_half_away(float(np.float32(f) / np.float32(scale))))
    lo, hi = R.INT8_MIN, R.INT8_MAX
    if act == "NONE":
        return lo, hi
    if act == "RELU":
        return max(lo, zp), hi
    if act == "RELU6":
        return max(lo, zp), min(hi, q(6.0))
    if act == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise UnsupportedModelError(f"{where}: fused activation {act}")


def run_lstm(x, layer, clip: float, kernel: str = "numba"):
    """x (T, B, E) -> y (T, B, H) for a QuantLSTM (int8) or an LSTMWeights (float32, TFLM's cell clip)."""
    if isinstance(layer, R.QuantLSTM):
        if kernel == "reference":
            return R.lstm_int8_reference(x, layer)[0]
        from ..kernels.int8 import lstm_int8
        return lstm_int8(x, layer)[0]
    if clip <= 0:
        from ..run import lstm
        return lstm(np.ascontiguousarray(x, dtype=np.float32), layer)[0]
    return lstm_float_clipped(x, layer, clip)


def lstm_float_clipped(x, w, clip: float) -> np.ndarray:
    """TFLM's float LSTM with a cell clip, in float32: c' = clip(f c + i g, -clip, clip)."""
    lw = w.layers[0][0]
    H = lw.w_hh.shape[0] // 4
    T, B, _ = x.shape
    f32 = np.float32
    xw = x.astype(f32) @ lw.w_ih.T.astype(f32) + lw.bias_sum().astype(f32)    # (T, B, 4H)
    h = np.zeros((B, H), f32)
    c = np.zeros((B, H), f32)
    y = np.empty((T, B, H), f32)
    with np.errstate(over="ignore"):               # exp(-z) = inf for z << 0: the sigmoid is then 0, as intended
        for t in range(T):
            z = xw[t] + h @ lw.w_hh.T.astype(f32)
            i, f = 1 / (1 + np.exp(-z[:, :H])), 1 / (1 + np.exp(-z[:, H:2 * H]))
            g, o = np.tanh(z[:, 2 * H:3 * H]), 1 / (1 + np.exp(-z[:, 3 * H:]))
            c = np.clip(f * c + i * g, -f32(clip), f32(clip))
            h = (o * np.tanh(c)).astype(f32)
            y[t] = h
    return y
