"""Converters between other frameworks' LSTM layouts and edgelstm's canonical one.

This is the one place that knows other gate orders and layouts. Canonical (PyTorch):
gate order i, f, g, o; per layer and direction w_ih (4H, E_l), w_hh (4H, P),
b_ih/b_hh (4H,), w_hr (P, H), peep (3, H) = (p_i, p_f, p_o).

- PyTorch nn.LSTM: the canonical layout itself; state_dict keys weight_ih_l{k}{sfx},
  weight_hh_l{k}{sfx}, bias_ih_l{k}{sfx}, bias_hh_l{k}{sfx}, weight_hr_l{k}{sfx},
  sfx "" or "_reverse".
- Keras LSTM: kernel (E, 4H) and recurrent_kernel (H, 4H), i.e. transposed, gate order
  i, f, c, o (c is g), one bias (4H,) -> bias "keras". A Bidirectional wrapper holds the
  forward layer's weights, then the backward layer's.
- ONNX LSTM: W [D, 4H, E], R [D, 4H, H], B [D, 8H] = [Wb, Rb], P [D, 3H], gate order
  i, o, f, c and peephole order i, o, f. One node is one layer; `stack_layers` joins
  single-layer weights into one stack.

torch, keras and onnx are never imported at module level: modules and layers are read
through their attributes (only to_torch_state_dict imports torch, to build tensors), so
this module imports with NumPy alone.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .spec import LSTMSpec
from .weights import CONVERTERS, LayerWeights, LSTMWeights, WeightsError

# Gate blocks of 4H rows: position k of the target order takes block PERM[k] of the source.
_ONNX_TO_CANON = (0, 2, 3, 1)       # ONNX i, o, f, c  -> canonical i, f, g, o
_CANON_TO_ONNX = (0, 3, 1, 2)       # canonical i, f, g, o -> ONNX i, o, f, c
_ONNX_PEEP_TO_CANON = (0, 2, 1)     # ONNX P = [p_i, p_o, p_f] -> (p_i, p_f, p_o); self-inverse
# Keras's order i, f, c, o is the canonical one: Keras only transposes.


class ConvertError(WeightsError):
    """Tensors from another framework do not describe an LSTM edgelstm can hold."""


# -- helpers ----------------------------------------------------------------------------
def _expect(name: str, a, shape) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != tuple(shape):
        raise ConvertError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ConvertError(f"{name}: expected a floating dtype, got {a.dtype}")
    return a


def _rank(name: str, a, ndim: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ConvertError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return a


def _reorder_gates(a: np.ndarray, perm, axis: int = 0) -> np.ndarray:
    """Permute the four gate blocks of `a` along `axis` (length 4H)."""
    blocks = np.split(a, 4, axis=axis)
    return np.concatenate([blocks[k] for k in perm], axis=axis)


def _dtype_of(*arrays, dtype=None) -> str:
    """float64 if asked or if any array is float64, else float32."""
    if dtype is not None:
        return np.dtype(dtype).name
    found = [np.asarray(a).dtype for a in arrays if a is not None]
    return "float64" if any(d == np.float64 for d in found) else "float32"


# -- PyTorch ----------------------------------------------------------------------------
def from_torch(module, dtype=None) -> LSTMWeights:
    """LSTMWeights of a torch.nn.LSTM (its dtype unless `dtype` is given)."""
    if type(module).__name__ != "LSTM" or not hasattr(module, "all_weights") \
            or getattr(module, "mode", "LSTM") != "LSTM":
        raise ConvertError(f"module: expected a torch.nn.LSTM, got {type(module).__name__}")
    spec = LSTMSpec(input_size=int(module.input_size), hidden_size=int(module.hidden_size),
                    num_layers=int(module.num_layers), bidirectional=bool(module.bidirectional),
                    proj_size=int(getattr(module, "proj_size", 0)),
                    bias="pytorch" if module.bias else "none")
    sd = {k: torch_to_numpy(v, f"torch {k}") for k, v in module.state_dict().items()}
    return _from_torch_dict(sd, spec, dtype, source="torch")


def torch_to_numpy(t, name: str = "tensor") -> np.ndarray:
    """A torch tensor as a NumPy array. NumPy has no bfloat16: such a tensor becomes
    float32, exactly (every bfloat16 is a float32), with a warning that says so."""
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        import warnings
        warnings.warn(f"{name}: bfloat16 weights converted to float32 (exact; NumPy has no bfloat16)",
                      stacklevel=3)
        t = t.float()
    return t.numpy()


def from_torch_state_dict(state_dict, spec: LSTMSpec, dtype=None, prefix: str = "") -> LSTMWeights:
    """LSTMWeights from nn.LSTM state_dict entries (`prefix` + the nn.LSTM keys)."""
    sd = {}
    for k, v in state_dict.items():
        if k.startswith(prefix):
            v = torch_to_numpy(v, f"torch state_dict {k}") if hasattr(v, "detach") else np.asarray(v)
            sd[k[len(prefix):]] = v
    return _from_torch_dict(sd, spec, dtype, source=f"torch state_dict {prefix!r}" if prefix else "torch state_dict")


def _torch_keys(l: int, d: int) -> Dict[str, str]:
    sfx = f"_l{l}" + ("_reverse" if d == 1 else "")
    return {"w_ih": "weight_ih" + sfx, "w_hh": "weight_hh" + sfx, "b_ih": "bias_ih" + sfx,
            "b_hh": "bias_hh" + sfx, "w_hr": "weight_hr" + sfx}


def _from_torch_dict(sd, spec: LSTMSpec, dtype, source: str) -> LSTMWeights:
    from .weights import expected_shapes
    if spec.peephole or spec.bias == "keras":
        raise ConvertError(f"{source}: PyTorch LSTMs have no peepholes and bias 'pytorch' or 'none', "
                           f"got {spec}")
    layers = []
    for l in range(spec.num_layers):
        dirs = []
        for d in range(spec.num_directions):
            t = {}
            for name, key in _torch_keys(l, d).items():
                shape = expected_shapes(spec, l)[name]
                if shape is None:
                    if key in sd:
                        raise ConvertError(f"{source} {key}: not expected for {spec}, got shape {sd[key].shape}")
                    t[name] = None
                    continue
                if key not in sd:
                    raise ConvertError(f"{source} {key}: missing (expected shape {shape})")
                t[name] = _expect(f"{source} {key}", sd[key], shape)
            dirs.append(LayerWeights(**t))
        layers.append(dirs)
    return LSTMWeights(spec, layers, dtype=_dtype_of(*sd.values(), dtype=dtype))


def to_torch_state_dict(weights: LSTMWeights) -> dict:
    """nn.LSTM state_dict tensors for `weights`: `nn.LSTM(...).load_state_dict(...)` works.

    A "keras" bias becomes bias_ih with bias_hh zero; peepholes have no PyTorch form.
    """
    import torch
    spec = weights.spec
    if spec.peephole:
        raise ConvertError("weights: PyTorch LSTMs have no peepholes; this spec has peephole=True")
    out = {}
    for l in range(spec.num_layers):
        for d in range(spec.num_directions):
            lw = weights.layers[l][d]
            keys = _torch_keys(l, d)
            t = {"w_ih": lw.w_ih, "w_hh": lw.w_hh}
            if spec.bias != "none":
                t["b_ih"] = lw.b_ih
                t["b_hh"] = lw.b_hh if lw.b_hh is not None else np.zeros_like(lw.b_ih)
            if spec.proj_size:
                t["w_hr"] = lw.w_hr
            for name in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr"):   # nn.LSTM's key order
                if name in t:
                    out[keys[name]] = torch.from_numpy(np.array(t[name], copy=True))
    return out


def torch_lstm_kwargs(spec: LSTMSpec) -> dict:
    """Constructor arguments of the nn.LSTM that `to_torch_state_dict` fits."""
    return dict(input_size=spec.input_size, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
                bidirectional=spec.bidirectional, proj_size=spec.proj_size, bias=spec.bias != "none")


# -- Keras ------------------------------------------------------------------------------
def _keras_direction(kernel, recurrent_kernel, bias, where: str):
    kernel = _rank(f"{where}kernel", kernel, 2)
    E, G = kernel.shape
    if G % 4:
        raise ConvertError(f"{where}kernel: expected shape (E, 4H), got {kernel.shape}")
    H = G // 4
    recurrent_kernel = _expect(f"{where}recurrent_kernel", recurrent_kernel, (H, 4 * H))
    kernel = _expect(f"{where}kernel", kernel, (E, 4 * H))
    b = None if bias is None else _expect(f"{where}bias", bias, (4 * H,))
    return E, H, LayerWeights(w_ih=kernel.T, w_hh=recurrent_kernel.T, b_ih=b)


def from_keras(kernel, recurrent_kernel=None, bias=None, *, dtype=None) -> LSTMWeights:
    """LSTMWeights (one layer, bias "keras" or "none") from Keras LSTM tensors.

    Either arrays: kernel (E, 4H), recurrent_kernel (H, 4H), bias (4H,) or None; for a
    bidirectional layer, a pair of each (forward, backward). Or a Keras layer object:
    keras.layers.LSTM or keras.layers.Bidirectional(LSTM) (read with get_weights()).
    """
    if hasattr(kernel, "get_weights"):
        if recurrent_kernel is not None or bias is not None:
            raise ConvertError("from_keras: give a Keras layer alone, or arrays, not both")
        return from_keras_layer(kernel, dtype=dtype)
    if recurrent_kernel is None:
        raise ConvertError("from_keras: recurrent_kernel is missing")
    pairs = isinstance(kernel, (list, tuple))
    ks = list(kernel) if pairs else [kernel]
    rs = list(recurrent_kernel) if pairs else [recurrent_kernel]
    bs = (list(bias) if bias is not None else [None] * len(ks)) if pairs else [bias]
    if not 1 <= len(ks) <= 2 or len(rs) != len(ks) or len(bs) != len(ks):
        raise ConvertError(f"from_keras: expected one or two directions of (kernel, recurrent_kernel, bias), "
                           f"got {len(ks)}, {len(rs)}, {len(bs)}")
    if (bs[0] is None) != (bs[-1] is None):
        raise ConvertError("Keras bias: expected both directions with a bias or both without")
    names = ["Keras "] if len(ks) == 1 else ["Keras forward ", "Keras backward "]
    dirs = [_keras_direction(k, r, b, n) for k, r, b, n in zip(ks, rs, bs, names)]
    E, H, _ = dirs[0]
    for (e, h, _), n in zip(dirs[1:], names[1:]):
        if (e, h) != (E, H):
            raise ConvertError(f"{n}kernel: expected shape ({E}, {4 * H}) like the forward layer, "
                               f"got ({e}, {4 * h})")
    spec = LSTMSpec(input_size=E, hidden_size=H, bidirectional=len(dirs) == 2,
                    bias="none" if bs[0] is None else "keras")
    return LSTMWeights(spec, [[lw for _, _, lw in dirs]], dtype=_dtype_of(*ks, *rs, dtype=dtype))


def check_keras_lstm_config(cfg: dict, where: str = "Keras LSTM", in_bidirectional: bool = False) -> None:
    """Refuse what the canonical equations cannot run (a layer's get_config() or its
    `config` entry in a .keras file)."""
    act = cfg.get("activation", "tanh")
    ract = cfg.get("recurrent_activation", "sigmoid")
    if act != "tanh" or ract != "sigmoid":
        raise ConvertError(f"{where}: unsupported activations {act!r}/{ract!r} "
                           f"(edgelstm runs tanh and sigmoid)")
    if cfg.get("go_backwards", False) and not in_bidirectional:
        raise ConvertError(f"{where}: unsupported go_backwards=True outside a Bidirectional wrapper")


def from_keras_layer(layer, dtype=None) -> LSTMWeights:
    """LSTMWeights of a built keras.layers.LSTM or Bidirectional(LSTM)."""
    kind = type(layer).__name__
    if kind == "Bidirectional":
        fwd, bwd = layer.forward_layer, layer.backward_layer
        if type(fwd).__name__ != "LSTM" or type(bwd).__name__ != "LSTM":
            raise ConvertError(f"Keras Bidirectional: expected LSTM layers inside, "
                               f"got {type(fwd).__name__} and {type(bwd).__name__}")
        merge = getattr(layer, "merge_mode", "concat")
        if merge != "concat":
            raise ConvertError(f"Keras Bidirectional: unsupported merge_mode {merge!r} (edgelstm concatenates "
                               f"forward and backward outputs, as merge_mode='concat')")
        check_keras_lstm_config(fwd.get_config(), "Keras Bidirectional forward layer", True)
        check_keras_lstm_config(bwd.get_config(), "Keras Bidirectional backward layer", True)
        fw, bw = fwd.get_weights(), bwd.get_weights()
        if len(fw) not in (2, 3) or len(bw) != len(fw):
            raise ConvertError(f"Keras Bidirectional: expected 2 or 3 weights per direction, "
                               f"got {len(fw)} and {len(bw)} (is the layer built?)")
        return from_keras([fw[0], bw[0]], [fw[1], bw[1]],
                          [fw[2], bw[2]] if len(fw) == 3 else None, dtype=dtype)
    if kind != "LSTM":
        raise ConvertError(f"layer: expected a Keras LSTM or Bidirectional(LSTM), got {kind}")
    check_keras_lstm_config(layer.get_config())
    w = layer.get_weights()
    if len(w) not in (2, 3):
        raise ConvertError(f"Keras LSTM: expected 2 or 3 weights (kernel, recurrent_kernel[, bias]), "
                           f"got {len(w)} (is the layer built?)")
    return from_keras(w[0], w[1], w[2] if len(w) == 3 else None, dtype=dtype)


def to_keras(weights: LSTMWeights) -> List[List[np.ndarray]]:
    """Per layer, the list Keras's set_weights() takes: [kernel, recurrent_kernel, bias]
    (or without bias), forward then backward for a bidirectional stack."""
    spec = weights.spec
    if spec.proj_size or spec.peephole or spec.bias == "pytorch":
        raise ConvertError(f"weights: Keras LSTMs have no projection, no peepholes and one bias, got {spec}")
    out = []
    for layer in weights.layers:
        ws = []
        for lw in layer:
            ws += [lw.w_ih.T.copy(), lw.w_hh.T.copy()] + ([lw.b_ih.copy()] if lw.b_ih is not None else [])
        out.append(ws)
    return out


# -- ONNX -------------------------------------------------------------------------------
_ONNX_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def from_onnx(W, R, B=None, P=None, *, direction: Optional[str] = None, hidden_size: Optional[int] = None,
              dtype=None) -> LSTMWeights:
    """LSTMWeights (one layer, bias "pytorch" with B, else "none") of one ONNX LSTM node.

    W [D, 4H, E], R [D, 4H, H], B [D, 8H] or None, P [D, 3H] or None. direction
    ("forward" or "bidirectional") and hidden_size, when given, are checked against the
    shapes. ONNX's "reverse" (one direction run backwards) has no edgelstm form.
    """
    W = _rank("ONNX W", W, 3)
    D, G, E = W.shape
    if G % 4 or G == 0:
        raise ConvertError(f"ONNX W: expected shape [D, 4H, E], got {W.shape}")
    H = G // 4
    if hidden_size is not None and hidden_size != H:
        raise ConvertError(f"ONNX W: expected shape ({D}, {4 * hidden_size}, {E}) for hidden_size "
                           f"{hidden_size}, got {W.shape}")
    if direction is not None:
        if direction not in _ONNX_DIRECTIONS:
            raise ConvertError(f"ONNX direction: expected forward, reverse or bidirectional, got {direction!r}")
        if direction == "reverse":
            raise ConvertError("ONNX direction: unsupported 'reverse' (edgelstm has forward and bidirectional)")
        if _ONNX_DIRECTIONS[direction] != D:
            raise ConvertError(f"ONNX W: expected shape ({_ONNX_DIRECTIONS[direction]}, {G}, {E}) for "
                               f"direction {direction!r}, got {W.shape}")
    if D not in (1, 2):
        raise ConvertError(f"ONNX W: expected 1 or 2 directions in shape [D, 4H, E], got {W.shape}")
    W = _expect("ONNX W", W, (D, 4 * H, E))
    R = _expect("ONNX R", R, (D, 4 * H, H))
    if B is not None:
        B = _expect("ONNX B", B, (D, 8 * H))
    if P is not None:
        P = _expect("ONNX P", P, (D, 3 * H))
    dirs = []
    for d in range(D):
        t = {"w_ih": _reorder_gates(W[d], _ONNX_TO_CANON), "w_hh": _reorder_gates(R[d], _ONNX_TO_CANON)}
        if B is not None:
            t["b_ih"] = _reorder_gates(B[d, :4 * H], _ONNX_TO_CANON)
            t["b_hh"] = _reorder_gates(B[d, 4 * H:], _ONNX_TO_CANON)
        if P is not None:
            t["peep"] = P[d].reshape(3, H)[list(_ONNX_PEEP_TO_CANON)]
        dirs.append(LayerWeights(**t))
    spec = LSTMSpec(input_size=E, hidden_size=H, bidirectional=D == 2,
                    bias="pytorch" if B is not None else "none", peephole=P is not None)
    return LSTMWeights(spec, [dirs], dtype=_dtype_of(W, R, B, P, dtype=dtype))


def to_onnx(weights: LSTMWeights) -> List[Dict[str, Optional[np.ndarray]]]:
    """Per layer, the ONNX LSTM node's tensors {"W", "R", "B", "P"} (B, P None when
    absent) and its attributes {"hidden_size", "direction"}. A "keras" bias becomes
    B = [b, 0]. ONNX's LSTM has no projection."""
    spec = weights.spec
    if spec.proj_size:
        raise ConvertError(f"weights: ONNX's LSTM operator has no projection, got proj_size={spec.proj_size}")
    H = spec.hidden_size
    out = []
    for layer in weights.layers:
        W = np.stack([_reorder_gates(lw.w_ih, _CANON_TO_ONNX) for lw in layer])
        R = np.stack([_reorder_gates(lw.w_hh, _CANON_TO_ONNX) for lw in layer])
        B = P = None
        if spec.bias != "none":
            B = np.stack([np.concatenate([
                _reorder_gates(lw.b_ih, _CANON_TO_ONNX),
                _reorder_gates(lw.b_hh, _CANON_TO_ONNX) if lw.b_hh is not None else np.zeros(4 * H, lw.b_ih.dtype),
            ]) for lw in layer])
        if spec.peephole:
            P = np.stack([lw.peep[list(_ONNX_PEEP_TO_CANON)].reshape(3 * H) for lw in layer])
        out.append({"W": W, "R": R, "B": B, "P": P, "hidden_size": H,
                    "direction": "bidirectional" if spec.bidirectional else "forward"})
    return out


# -- stacks -----------------------------------------------------------------------------
def stack_layers(parts: Sequence[LSTMWeights], dtype=None) -> LSTMWeights:
    """One LSTMWeights from several stacked ones (e.g. one per ONNX node or Keras layer).

    All parts must share hidden_size, directions, proj_size, bias and peephole, and
    part k's input size must be part k-1's output size.
    """
    parts = list(parts)
    if not parts:
        raise ConvertError("stack_layers: expected one or more LSTMWeights, got none")
    first = parts[0].spec
    for k, w in enumerate(parts[1:], start=1):
        s = w.spec
        for field in ("hidden_size", "bidirectional", "proj_size", "bias", "peephole"):
            if getattr(s, field) != getattr(first, field):
                raise ConvertError(f"stack_layers: part {k} {field}: expected {getattr(first, field)!r} "
                                   f"like part 0, got {getattr(s, field)!r}")
        prev = parts[k - 1].spec.output_size
        if s.input_size != prev:
            raise ConvertError(f"stack_layers: part {k} input_size: expected part {k - 1}'s output size "
                               f"{prev}, got {s.input_size}")
    spec = LSTMSpec(input_size=first.input_size, hidden_size=first.hidden_size,
                    num_layers=sum(w.spec.num_layers for w in parts), bidirectional=first.bidirectional,
                    proj_size=first.proj_size, bias=first.bias, peephole=first.peephole)
    layers = [layer for w in parts for layer in w.layers]
    dtype = dtype or ("float64" if any(w.dtype == np.float64 for w in parts) else "float32")
    return LSTMWeights(spec, layers, dtype=dtype)


# The LSTMWeights.from_torch / from_keras / from_onnx / to_torch_state_dict shortcuts
# (edgelstm.weights cannot import this module, which builds its objects).
CONVERTERS.update(from_torch=from_torch, to_torch_state_dict=to_torch_state_dict, from_keras=from_keras,
                  from_onnx=from_onnx)
