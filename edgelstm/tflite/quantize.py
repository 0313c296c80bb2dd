"""Quantize a float LSTM model to int8 the way the TFLite converter does, and build its .tflite graph.

`quantize(model_or_weights, calibration_x)` runs the float model on the calibration data (float64
reference), takes the activation ranges it sees, and produces a `TFLiteModel` laid out as the
converter lays out a Keras LSTM: int8 input (B, T, E) batch-major, one UNIDIRECTIONAL_SEQUENCE_LSTM per
layer (with the 5 intermediate tensors LiteRT wants), then optionally a FULLY_CONNECTED head (per step,
or over the flattened sequence through a RESHAPE) and an int8 SOFTMAX.

The scheme:
- activations (x, h, the head's output): asymmetric int8 from the calibrated [min, max] (widened to hold 0);
- weights: symmetric int8, one scale per tensor (max |w| / 127);
- biases: int32 at scale s_x * s_w;
- cell state: int16 with scale 2^ceil(log2(max |c|)) / 2^15, a power of two as TFLM's integer tanh needs;
- softmax output: scale 1/256, zero point -128 (TFLM requires it).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import UnsupportedModelError
from . import schema as S


def _asymmetric(lo: float, hi: float):
    """(scale, zero_point) of an int8 range holding [lo, hi] and 0 (TFLite's ChooseQuantizationParams)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(min(max(round(-128 - lo / scale), -128), 127))
    return scale, zp


def _activation(lo: float, hi: float, act: str):
    """(scale, zero_point) of an activation: int8 asymmetric, int16 symmetric (zero point 0, as TFLM's 16x8)."""
    if act == "int8":
        return _asymmetric(lo, hi)
    m = max(abs(float(lo)), abs(float(hi)), 1e-6)
    return float(np.float32(m / 32767.0)), 0


def _symmetric(w: np.ndarray):
    """(int8 values, scale) with one scale for the tensor: max |w| / 127."""
    m = float(np.max(np.abs(w))) if w.size else 0.0
    scale = float(np.float32(m / 127.0)) if m > 0 else 1.0
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def _bias(b: np.ndarray, s_x: float, s_w: float, dtype=np.int32) -> np.ndarray:
    s = float(np.float32(s_x) * np.float32(s_w))
    info = np.iinfo(dtype)
    return np.clip(np.round(b / s), info.min, info.max).astype(dtype)


def _cell_scale(max_abs_c: float) -> float:
    m = max(float(max_abs_c), 2.0 ** -10)
    return 2.0 ** math.ceil(math.log2(m)) / 32768.0


def _float_lstm(x, lw, clip: float):
    """float64 LSTM (T, B, E) -> (y (T, B, H), max |c|) with an optional cell clip, gates i, f, g, o."""
    from ..kernels.reference import sigmoid
    H = lw.w_hh.shape[0] // 4
    T, B, _ = x.shape
    w_ih, w_hh, b = (np.asarray(a, np.float64) for a in (lw.w_ih, lw.w_hh, lw.bias_sum()))
    h, c = np.zeros((B, H)), np.zeros((B, H))
    y = np.empty((T, B, H))
    cmax = 0.0
    for t in range(T):
        z = x[t] @ w_ih.T + h @ w_hh.T + b
        c = sigmoid(z[:, H:2 * H]) * c + sigmoid(z[:, :H]) * np.tanh(z[:, 2 * H:3 * H])
        if clip > 0:
            c = np.clip(c, -clip, clip)
        cmax = max(cmax, float(np.abs(c).max()))
        h = sigmoid(z[:, 3 * H:]) * np.tanh(c)
        y[t] = h
    return y, cmax


def _unpack(model_or_weights, head, head_bias, head_over, softmax):
    """(list of LayerWeights, head weight, head bias, head_over, softmax) from LSTMWeights or a Model."""
    from ..weights import LSTMWeights
    if isinstance(model_or_weights, LSTMWeights):
        w = model_or_weights
    elif hasattr(model_or_weights, "weights") and hasattr(model_or_weights, "spec"):
        m = model_or_weights
        if m.weights is None:
            raise ValueError(f"model_or_weights: {m.source} was read for counting only (no weights)")
        if len(m.weights.stacks) != 1 or m.spec.embedding is not None:
            raise UnsupportedModelError(f"{m.source}: quantize takes one LSTM stack without an embedding")
        w = m.weights.stacks[0]
        if m.spec.head is not None and head is None:
            if not m.spec.head.every_step:
                raise UnsupportedModelError(f"{m.source}: a head on the final state needs a STRIDED_SLICE, which "
                                            f"edgelstm does not write; use head_over='sequence' or 'step'")
            head, head_bias, head_over = m.weights.head_weight, m.weights.head_bias, "step"
            if m.head_activation not in ("linear", "softmax"):
                raise UnsupportedModelError(f"{m.source}: head activation {m.head_activation!r}; edgelstm writes "
                                            f"linear or softmax heads")
            softmax = m.head_activation == "softmax"
    else:
        raise ValueError(f"model_or_weights: expected an LSTMWeights or an edgelstm Model, got "
                         f"{type(model_or_weights).__name__}")
    s = w.spec
    if s.bidirectional or s.proj_size or s.peephole:
        raise UnsupportedModelError(f"quantize: {s}: TFLM's UNIDIRECTIONAL_SEQUENCE_LSTM has no reverse "
                                    f"direction, projection or peepholes that edgelstm writes")
    if head_over not in ("step", "sequence"):
        raise ValueError(f"head_over: expected 'step' or 'sequence', got {head_over!r}")
    return [w.layers[l][0] for l in range(s.num_layers)], head, head_bias, head_over, softmax


class _GraphBuilder:
    def __init__(self):
        self.tensors, self.operators = [], []

    def add(self, name, dtype, shape, data=None, scale=None, zero_point=None, is_variable=False) -> int:
        sc = None if scale is None else np.atleast_1d(np.asarray(scale, np.float32))
        zp = None if scale is None else np.atleast_1d(np.asarray(0 if zero_point is None else zero_point, np.int64))
        self.tensors.append(S.Tensor(name, dtype, tuple(int(d) for d in shape), data, sc, zp, 0, is_variable))
        return len(self.tensors) - 1

    def op(self, name, inputs, outputs, options=None, intermediates=()):
        self.operators.append(S.Operator(name, tuple(inputs), tuple(outputs), options or {}, tuple(intermediates)))


def quantize(model_or_weights, calibration_x, *, cell_clip: float = 0.0, head=None, head_bias=None,
             head_over: str = "step", softmax: bool = False, batch: int = 1, batch_first: bool = False,
             float_io: bool = False, activations: str = "int8"):
    """An int8 TFLiteModel from a float LSTM and calibration data.

    model_or_weights: LSTMWeights (unidirectional, no projection or peepholes) or an edgelstm Model
      with one such stack and optionally a per-step dense head (linear or softmax).
    calibration_x: float (T, N, E) time-major (or (N, T, E) with batch_first): the activation ranges
      come from running the float model on it; T is the exported model's sequence length.
    cell_clip: TFLM's cell clip (0 = none), in the float cell's units.
    head / head_bias: a dense head (out, H) / (out,) on LSTMWeights; head_over 'step' applies it at
      every step, 'sequence' to the flattened (T * H) sequence, as keyword-spotting models do.
    softmax: end with an int8 SOFTMAX. batch: the model's fixed batch size (MCU models use 1).
    float_io: the model takes and returns float32 (QUANTIZE / DEQUANTIZE at its ends) instead of int8.
    activations: "int8", or "int16" for TFLM's 16x8 LSTM (int16 x and h with zero point 0, int64
      biases; LSTM layers only, no head or softmax).
    """
    from .runner import TFLiteModel
    layers, head, head_bias, head_over, softmax = _unpack(model_or_weights, head, head_bias, head_over, softmax)
    x = np.asarray(calibration_x, np.float64)
    if x.ndim != 3 or x.shape[2] != layers[0].w_ih.shape[1] or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"calibration_x: expected float (T, N, {layers[0].w_ih.shape[1]}) "
                         f"(or (N, T, E) with batch_first), got shape {x.shape}")
    if batch_first:
        x = x.transpose(1, 0, 2)
    if not np.all(np.isfinite(x)):
        raise ValueError("calibration_x: contains NaN or infinity")
    if not (cell_clip >= 0 and math.isfinite(cell_clip)):
        raise ValueError(f"cell_clip: expected a finite number >= 0, got {cell_clip!r}")
    if int(batch) < 1:
        raise ValueError(f"batch: expected >= 1, got {batch!r}")
    if activations not in ("int8", "int16"):
        raise ValueError(f"activations: expected 'int8' or 'int16', got {activations!r}")
    if activations == "int16" and (head is not None or softmax):
        raise UnsupportedModelError("quantize: with int16 activations edgelstm writes LSTM layers only "
                                    "(no head or softmax)")
    T, B = x.shape[0], int(batch)
    g = _GraphBuilder()
    s_x, zp_x = _activation(x.min(), x.max(), activations)
    E = x.shape[2]
    if float_io:
        x_in = g.add("input", "float32", (B, T, E))
        cur = g.add(f"input_{activations}", activations, (B, T, E), scale=s_x, zero_point=zp_x)
        g.op("QUANTIZE", [x_in], [cur])
    else:
        x_in = cur = g.add("input", activations, (B, T, E), scale=s_x, zero_point=zp_x)
    act = x
    for l, lw in enumerate(layers):
        y, cmax = _float_lstm(act, lw, cell_clip)
        H = lw.w_hh.shape[0] // 4
        s_h, zp_h = _activation(y.min(), y.max(), activations)
        cur = _add_lstm(g, l, cur, lw, s_x, s_h, zp_h, _cell_scale(cmax), cell_clip, B, T, H, activations)
        act, s_x, zp_x = y, s_h, zp_h
    if head is not None:
        head = np.asarray(head, np.float64)
        H = act.shape[2]
        if head_over == "sequence":
            flat = act.transpose(1, 0, 2).reshape(act.shape[1], T * H)               # (N, T*H)
            if head.shape[1] != T * H:
                raise ValueError(f"head: expected shape (out, {T * H}) over the flattened sequence, got {head.shape}")
            shape_t = g.add(f"flatten_shape", "int32", (2,), data=np.array([B, T * H], np.int32))
            flat_t = g.add("flatten", "int8", (B, T * H), scale=s_x, zero_point=zp_x)
            g.op("RESHAPE", [cur, shape_t], [flat_t])
            cur, inp, out_shape = flat_t, flat, (B, head.shape[0])
        else:
            if head.shape[1] != H:
                raise ValueError(f"head: expected shape (out, {H}), got {head.shape}")
            inp, out_shape = act.reshape(-1, H), (B, T, head.shape[0])
        z = inp @ head.T + (0 if head_bias is None else np.asarray(head_bias, np.float64))
        s_z, zp_z = _asymmetric(z.min(), z.max())
        wq, s_w = _symmetric(head)
        w_t = g.add("head_weights", "int8", head.shape, data=wq, scale=s_w)
        ins = [cur, w_t]
        if head_bias is not None:
            ins.append(g.add("head_bias", "int32", (head.shape[0],), data=_bias(np.asarray(head_bias), s_x, s_w),
                             scale=float(np.float32(s_x) * np.float32(s_w))))
        cur = g.add("head", "int8", out_shape, scale=s_z, zero_point=zp_z)
        g.op("FULLY_CONNECTED", ins, [cur], {"fused_activation_function": 0, "keep_num_dims": head_over == "step"})
        s_x, zp_x = s_z, zp_z
    if softmax:
        shape = g.tensors[cur].shape
        sm = g.add("softmax", "int8", shape, scale=1.0 / 256, zero_point=-128)
        g.op("SOFTMAX", [cur], [sm], {"beta": 1.0})
        cur = sm
    if float_io:
        shape = g.tensors[cur].shape
        out = g.add("output", "float32", shape)
        g.op("DEQUANTIZE", [cur], [out])
        cur = out
    graph = S.Graph(g.tensors, g.operators, (x_in,), (cur,), "edgelstm int8")
    return TFLiteModel(graph, source="quantized model")


def _add_lstm(g: _GraphBuilder, l: int, x_t: int, lw, s_x, s_h, zp_h, s_c, clip, B, T, H, act="int8") -> int:
    """Append one int8 (or 16x8) UNIDIRECTIONAL_SEQUENCE_LSTM (24 inputs, converter-style intermediates)."""
    bias_type = "int32" if act == "int8" else "int64"
    ins = [-1] * S.LSTM_NUM_INPUTS
    ins[S.LSTM_INPUT] = x_t
    b = lw.bias_sum()
    for k in range(4):
        rows = slice(k * H, (k + 1) * H)
        wq, s_wx = _symmetric(np.asarray(lw.w_ih[rows], np.float64))
        ins[S.LSTM_W_X[k]] = g.add(f"lstm{l}/w_x_{'ifgo'[k]}", "int8", wq.shape, data=wq, scale=s_wx)
        uq, s_wh = _symmetric(np.asarray(lw.w_hh[rows], np.float64))
        ins[S.LSTM_W_H[k]] = g.add(f"lstm{l}/w_h_{'ifgo'[k]}", "int8", uq.shape, data=uq, scale=s_wh)
        ins[S.LSTM_BIAS[k]] = g.add(f"lstm{l}/bias_{'ifgo'[k]}", bias_type, (H,),
                                    data=_bias(np.asarray(b[rows], np.float64), s_x, s_wx, np.dtype(bias_type)),
                                    scale=float(np.float32(s_x) * np.float32(s_wx)))
    ins[S.LSTM_H_STATE] = g.add(f"lstm{l}/h_state", act, (B, H), scale=s_h, zero_point=zp_h, is_variable=True)
    ins[S.LSTM_C_STATE] = g.add(f"lstm{l}/c_state", "int16", (B, H), scale=s_c, is_variable=True)
    inter = [g.add(f"lstm{l}/{n}_intermediate", "float32", (0,)) for n in
             ("input_to_input", "input_to_forget", "input_to_cell", "input_to_output")]
    inter.append(g.add(f"lstm{l}/effective_hidden_scale_intermediate", act, (0,), scale=s_h, zero_point=zp_h))
    y = g.add(f"lstm{l}/output", act, (B, T, H), scale=s_h, zero_point=zp_h)
    g.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [y],
         {"fused_activation_function": 4, "cell_clip": float(clip), "time_major": False}, inter)
    return y


def float_graph(weights, seq_len: int, *, batch: int = 1, cell_clip: float = 0.0) -> S.Graph:
    """A float32 .tflite graph of one or more stacked LSTM layers: input (B, T, E) -> output (B, T, H)."""
    layers, _, _, _, _ = _unpack(weights, None, None, "step", False)
    g = _GraphBuilder()
    E = layers[0].w_ih.shape[1]
    cur = x_in = g.add("input", "float32", (batch, seq_len, E))
    for l, lw in enumerate(layers):
        H = lw.w_hh.shape[0] // 4
        ins = [-1] * S.LSTM_NUM_INPUTS
        ins[S.LSTM_INPUT] = cur
        b = lw.bias_sum()
        for k in range(4):
            rows = slice(k * H, (k + 1) * H)
            ins[S.LSTM_W_X[k]] = g.add(f"lstm{l}/w_x_{'ifgo'[k]}", "float32", (H, E if l == 0 else layers[l - 1].w_hh.shape[1]),
                                       data=np.asarray(lw.w_ih[rows], np.float32))
            ins[S.LSTM_W_H[k]] = g.add(f"lstm{l}/w_h_{'ifgo'[k]}", "float32", (H, H), data=np.asarray(lw.w_hh[rows], np.float32))
            ins[S.LSTM_BIAS[k]] = g.add(f"lstm{l}/bias_{'ifgo'[k]}", "float32", (H,), data=np.asarray(b[rows], np.float32))
        ins[S.LSTM_H_STATE] = g.add(f"lstm{l}/h_state", "float32", (batch, H), is_variable=True)
        ins[S.LSTM_C_STATE] = g.add(f"lstm{l}/c_state", "float32", (batch, H), is_variable=True)
        cur_out = g.add(f"lstm{l}/output", "float32", (batch, seq_len, H))
        g.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [cur_out],
             {"fused_activation_function": 4, "cell_clip": float(cell_clip), "time_major": False})
        cur = cur_out
    return S.Graph(g.tensors, g.operators, (x_in,), (cur,), "edgelstm float32")
