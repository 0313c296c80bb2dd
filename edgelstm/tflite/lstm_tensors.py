"""UNIDIRECTIONAL_SEQUENCE_LSTM's 24 input tensors <-> a QuantLSTM (int8) or an LSTMWeights (float32).

The reader side checks what TFLM's `LstmTensors::ValidateTensorStatus` and `ValidateTensorSize` check
(types, shapes, variable state tensors, no peephole / projection / layer norm), plus what the integer
kernel needs (one scale per weight tensor, zero-point-free weights, a power-of-two cell scale).
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelFileError, UnsupportedModelError
from ..kernels.int8_reference import QuantizationError, QuantLSTM, cell_scale_power, lstm_requant
from . import schema as S


def lstm_from_tensors(graph: S.Graph, op: S.Operator, where: str):
    """-> (QuantLSTM or LSTMWeights, time_major, cell_clip)."""
    ins = op.inputs
    if len(ins) != S.LSTM_NUM_INPUTS or len(op.outputs) != 1:
        raise ModelFileError(f"{where}: expected {S.LSTM_NUM_INPUTS} inputs and 1 output, got "
                             f"{len(ins)} and {len(op.outputs)}")
    T = graph.tensors
    for name, idx in (("peephole", S.LSTM_PEEPHOLE), ("projection", S.LSTM_PROJECTION),
                      ("layer normalization", S.LSTM_LAYER_NORM)):
        if any(ins[i] >= 0 for i in idx):
            raise UnsupportedModelError(f"{where}: has {name} tensors; edgelstm (like TFLM) runs the plain LSTM")
    opts = op.options
    if S.ACTIVATIONS.get(opts.get("fused_activation_function", 4)) != "TANH":
        raise UnsupportedModelError(f"{where}: activation {S.ACTIVATIONS.get(opts.get('fused_activation_function'))}"
                                    f", edgelstm runs TANH")
    if opts.get("proj_clip", 0.0):
        raise UnsupportedModelError(f"{where}: proj_clip without a projection")
    time_major = bool(opts.get("time_major", False))
    clip = float(opts.get("cell_clip", 0.0))
    if not (clip >= 0 and np.isfinite(clip)):
        raise ModelFileError(f"{where}: cell_clip must be a finite number >= 0, got {clip!r}")
    for i in (S.LSTM_INPUT, *S.LSTM_W_X, *S.LSTM_W_H, *S.LSTM_BIAS, S.LSTM_H_STATE, S.LSTM_C_STATE):
        if ins[i] < 0:
            raise ModelFileError(f"{where}: input {i} is missing (TFLM needs it; a CIFG LSTM is not supported)")
    x = T[ins[S.LSTM_INPUT]]
    if len(x.shape) != 3:
        raise ModelFileError(f"{where}: the input has shape {x.shape}, expected 3 dimensions")
    E = x.shape[2]
    wx = [T[ins[i]] for i in S.LSTM_W_X]
    wh = [T[ins[i]] for i in S.LSTM_W_H]
    bs = [T[ins[i]] for i in S.LSTM_BIAS]
    H = wx[0].shape[0] if len(wx[0].shape) == 2 else -1
    for k, t in enumerate(wx):
        _shape(where, t, (H, E), f"input weights of gate {'ifgo'[k]}")
    for k, t in enumerate(wh):
        _shape(where, t, (H, H), f"recurrent weights of gate {'ifgo'[k]}")
    for k, t in enumerate(bs):
        _shape(where, t, (H,), f"bias of gate {'ifgo'[k]}")
    h, c, y = T[ins[S.LSTM_H_STATE]], T[ins[S.LSTM_C_STATE]], T[op.outputs[0]]
    B, steps = (x.shape[1], x.shape[0]) if time_major else (x.shape[0], x.shape[1])
    for t, name in ((h, "hidden state"), (c, "cell state")):
        if not t.is_variable:
            raise ModelFileError(f"{where}: the {name} tensor {t.name!r} must be a variable tensor")
        if int(np.prod(t.shape)) != B * H:
            raise ModelFileError(f"{where}: the {name} has shape {t.shape}, expected ({B}, {H})")
    want_y = (steps, B, H) if time_major else (B, steps, H)
    if tuple(y.shape) != want_y:
        raise ModelFileError(f"{where}: the output has shape {y.shape}, expected {want_y}")
    if x.dtype == "float32":
        return _float_weights(where, wx, wh, bs, h, c, y), time_major, clip
    if x.dtype not in ("int8", "int16"):
        raise UnsupportedModelError(f"{where}: {x.dtype} activations; edgelstm runs float32, int8 and "
                                    f"int16 (16x8) LSTMs")
    act = x.dtype
    types = {"weights": {t.dtype for t in wx + wh}, "biases": {t.dtype for t in bs}, "hidden state": {h.dtype},
             "cell state": {c.dtype}, "output": {y.dtype}}
    want = {"weights": "int8", "biases": "int32" if act == "int8" else "int64", "hidden state": act,
            "cell state": "int16", "output": act}
    for k, v in types.items():
        if v != {want[k]}:
            raise UnsupportedModelError(f"{where}: {k} of type {', '.join(sorted(v))}; an int8 LSTM needs {want[k]}")
    s_x, zp_x = per_tensor(where, x, "the input")
    s_h, zp_h = per_tensor(where, h, "the hidden state")
    s_c, zp_c = per_tensor(where, c, "the cell state")
    if act == "int16" and (zp_x or zp_h):
        raise ModelFileError(f"{where}: int16 activations must be symmetric (zero point 0), got input "
                             f"{zp_x} and hidden state {zp_h}")
    if zp_c != 0:
        raise ModelFileError(f"{where}: the cell state's zero point is {zp_c}, expected 0 (symmetric int16)")
    try:
        cell_scale_power(s_c)
    except QuantizationError as e:
        raise ModelFileError(f"{where}: {e}") from None
    sx, sh = [], []
    for t, scales in ((wx, sx), (wh, sh)):
        for k, w in enumerate(t):
            s, zp = per_tensor(where, w, f"weights {w.name!r}")
            if zp != 0:
                raise ModelFileError(f"{where}: weights {w.name!r} have zero point {zp}, expected 0 (symmetric)")
            scales.append(s)
    for w in wx + wh + bs:
        if w.data is None:
            raise ModelFileError(f"{where}: {w.name!r} must be a constant tensor (it has no buffer)")
    q = QuantLSTM(w_x=np.stack([w.data for w in wx]), w_h=np.stack([w.data for w in wh]),
                  bias=np.stack([b.data for b in bs]).astype(np.int32 if act == "int8" else np.int64),
                  w_x_scale=np.array(sx, np.float32), w_h_scale=np.array(sh, np.float32),
                  x_scale=s_x, x_zero_point=zp_x, h_scale=s_h, h_zero_point=zp_h,
                  cell_scale=s_c, cell_clip=clip)
    try:
        lstm_requant(q)                               # TFLM's Prepare: every multiplier within range
    except QuantizationError as e:
        raise ModelFileError(f"{where}: {e}") from None
    return q, time_major, clip


def _shape(where, t, shape, what):
    if tuple(t.shape) != tuple(shape):
        raise ModelFileError(f"{where}: {what} {t.name!r} has shape {t.shape}, expected {tuple(shape)}")


def per_tensor(where, t, what, index=None):
    """(scale, zero point) of a tensor quantized per tensor; `index`, the tensor's index in
    the subgraph, goes into the messages when given (the interpreter, runner.py, names it)."""
    who = repr(t.name) if index is None else f"tensor {index}, {t.name!r}"
    if not t.quantized:
        raise ModelFileError(f"{where}: {what} ({who}) has no quantization parameters")
    if len(t.scale) != 1:
        raise UnsupportedModelError(f"{where}: {what} ({who}) is quantized per channel; TFLM's LSTM "
                                    f"uses one scale per tensor")
    return float(t.scale[0]), int(t.zero_point[0])


def _float_weights(where, wx, wh, bs, h, c, y):
    from ..spec import LSTMSpec
    from ..weights import LayerWeights, LSTMWeights
    for t in wx + wh + bs + [h, c, y]:
        if t.dtype != "float32":
            raise UnsupportedModelError(f"{where}: a float32 LSTM with a {t.dtype} tensor {t.name!r} "
                                        f"(hybrid quantization is not supported)")
    for t in wx + wh + bs:
        if t.data is None:
            raise ModelFileError(f"{where}: {t.name!r} must be a constant tensor (it has no buffer)")
    H, E = wx[0].shape
    lw = LayerWeights(w_ih=np.concatenate([w.data for w in wx]), w_hh=np.concatenate([w.data for w in wh]),
                      b_ih=np.concatenate([b.data for b in bs]))
    return LSTMWeights(LSTMSpec(input_size=E, hidden_size=H, bias="keras"), [[lw]], dtype="float32")
