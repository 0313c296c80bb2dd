"""Keras: `.keras` files (a zip of config.json and model.weights.h5) read with zipfile,
json and h5py, without Keras or TensorFlow; and plain model JSON (model.to_json()),
for counting only.

The config is read as JSON data and never deserialized into Python objects (no custom
objects, no Lambda layers). A chain of layers is supported: InputLayer, Embedding,
LSTM, Bidirectional(LSTM) (merge_mode "concat"), Dense or TimeDistributed(Dense) as
the head, and weightless Dropout/SpatialDropout1D; anything else is refused by name.

Weights are found where Keras 3 saves them: layers/<name>/..., <name> being the
snake_case class name with _1, _2, ... for repeats, in layer order.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..convert import ConvertError, check_keras_lstm_config, from_keras
from ..model import (Model, ModelFileError, UnsupportedModelError, build_model, group_specs,
                     zip_carries_pickle)
from ..spec import DenseSpec, EmbeddingSpec, LSTMSpec, ModelSpec

IGNORED = {"InputLayer", "Dropout", "SpatialDropout1D", "GaussianDropout", "AlphaDropout", "GaussianNoise"}
MAX_CONFIG_BYTES = 64 * 2**20


def _snake(name: str) -> str:
    """Keras's naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclass
class _Layer:
    kind: str                # "embedding", "lstm", "dense"
    path: str                # the layer's group in model.weights.h5 ("layers/lstm_1")
    cfg: dict
    bidirectional: bool = False
    inner: str = ""          # TimeDistributed: the wrapped layer's subgroup
    input_shape: Optional[list] = None   # build_config's input_shape, when saved


def _layers(source: str, cfg: dict) -> List[_Layer]:
    if not isinstance(cfg, dict) or "class_name" not in cfg:
        raise ModelFileError(f"{source}: expected a Keras model config (a JSON object with class_name), "
                             f"got {type(cfg).__name__}")
    cls = cfg["class_name"]
    if cls not in ("Sequential", "Functional", "Model"):
        raise UnsupportedModelError(f"{source}: unsupported Keras model class {cls!r} (expected Sequential or "
                                    f"Functional)")
    layer_cfgs = cfg.get("config", {}).get("layers")
    if not isinstance(layer_cfgs, list):
        raise ModelFileError(f"{source}: the Keras config has no layers list")
    functional = cls != "Sequential"
    used, out, prev_name = {}, [], None
    for k, lc in enumerate(layer_cfgs):
        lcls, c = lc.get("class_name"), lc.get("config", {})
        name = lc.get("name", c.get("name", f"#{k}"))
        if functional and lcls != "InputLayer":
            _check_chain(source, lc, name, prev_name)
        prev_name = name
        if lcls == "InputLayer" and not functional:
            continue                               # Sequential saves no group for its input
        snake = _snake(lcls)
        path = f"layers/{snake}" + (f"_{used[snake]}" if used.get(snake) else "")
        used[snake] = used.get(snake, 0) + 1
        if lcls in IGNORED:
            continue
        if lcls == "Embedding":
            if c.get("mask_zero"):
                raise UnsupportedModelError(f"{source}: layer {name!r}: unsupported Embedding(mask_zero=True) "
                                            f"(masking skips steps)")
            out.append(_Layer("embedding", path, c))
        elif lcls == "LSTM":
            check_keras_lstm_config(c, f"{source}: layer {name!r} (LSTM)")
            out.append(_Layer("lstm", path, c, input_shape=(lc.get("build_config") or {}).get("input_shape")))
        elif lcls == "Bidirectional":
            inner = c.get("layer", {})
            if inner.get("class_name") != "LSTM":
                raise UnsupportedModelError(f"{source}: layer {name!r}: unsupported Bidirectional("
                                            f"{inner.get('class_name')}) (edgelstm imports LSTM)")
            if c.get("merge_mode", "concat") != "concat":
                raise UnsupportedModelError(f"{source}: layer {name!r}: unsupported merge_mode "
                                            f"{c.get('merge_mode')!r} (edgelstm concatenates directions)")
            check_keras_lstm_config(inner.get("config", {}), f"{source}: layer {name!r} (Bidirectional LSTM)", True)
            out.append(_Layer("lstm", path, inner.get("config", {}), bidirectional=True,
                              input_shape=(lc.get("build_config") or {}).get("input_shape")))
        elif lcls == "Dense":
            out.append(_Layer("dense", path, c))
        elif lcls == "TimeDistributed" and c.get("layer", {}).get("class_name") == "Dense":
            dc = dict(c["layer"].get("config", {}), _time_distributed=True)
            out.append(_Layer("dense", path, dc, inner="layer/"))
        elif lcls == "Activation" and out and out[-1].kind == "dense":
            if out[-1].cfg.get("activation", "linear") not in ("linear", None):
                raise UnsupportedModelError(f"{source}: layer {name!r}: two activations after the head")
            out[-1].cfg = dict(out[-1].cfg, activation=c.get("activation", "linear"))
        else:
            raise UnsupportedModelError(f"{source}: layer {name!r}: unsupported Keras layer {lcls!r} (edgelstm "
                                        f"imports Embedding, LSTM, Bidirectional(LSTM), Dense, Dropout)")
    kinds = "".join({"embedding": "E", "lstm": "L", "dense": "D"}[l.kind] for l in out)
    if "L" not in kinds:
        raise ModelFileError(f"{source}: the Keras model has no LSTM layer")
    if not re.fullmatch(r"E?L+D?", kinds):
        raise UnsupportedModelError(f"{source}: expected [Embedding] LSTM... [Dense] in order, got "
                                    f"{' '.join(l.kind for l in out)}")
    lstms = [l for l in out if l.kind == "lstm"]
    for l in lstms[:-1]:
        if not l.cfg.get("return_sequences", False):
            raise UnsupportedModelError(f"{source}: LSTM {l.cfg.get('name')!r} feeds another LSTM with "
                                        f"return_sequences=False")
    for l in lstms:
        if l.cfg.get("return_state", False):
            raise UnsupportedModelError(f"{source}: LSTM {l.cfg.get('name')!r}: unsupported return_state=True")
        # Refused rather than silently run stateless (convert refuses other activations).
        if l.cfg.get("stateful", False):
            raise UnsupportedModelError(f"{source}: LSTM {l.cfg.get('name')!r}: unsupported stateful=True "
                                        f"(use el.LSTMStream to keep state between calls)")
    return out


def _check_chain(source, lc, name, prev_name):
    nodes = lc.get("inbound_nodes", [])
    try:
        args = nodes[0]["args"]
        hist = args[0]["config"]["keras_history"][0]
    except (IndexError, KeyError, TypeError):
        hist = None
    if len(nodes) != 1 or hist != prev_name:
        raise UnsupportedModelError(f"{source}: layer {name!r} does not read the layer before it "
                                    f"({prev_name!r}); edgelstm imports a single chain of layers")


def _input_size(shape, source: str, name: str) -> int:
    if shape and shape[-1]:
        return int(shape[-1])
    raise ModelFileError(f"{source}: LSTM {name!r}: its input size is not in the config "
                         f"(no Input shape and no build_config)")


def _spec_only(source: str, cfg: dict, layers: List[_Layer]) -> Model:
    """A counting-only Model from the config alone (sizes from the config)."""
    raw = cfg.get("config", {}).get("layers", [])
    first_shape = next((lc.get("config", {}).get("batch_shape") for lc in raw
                        if lc.get("class_name") == "InputLayer"), None)
    feat = int(first_shape[-1]) if first_shape and len(first_shape) == 3 and first_shape[-1] else None
    emb = head = None
    specs = []
    rs = bool([l for l in layers if l.kind == "lstm"][-1].cfg.get("return_sequences", False))
    for l in layers:
        c = l.cfg
        if l.kind == "embedding":
            emb = EmbeddingSpec(int(c["input_dim"]), int(c["output_dim"]))
            feat = emb.embedding_dim
        elif l.kind == "lstm":
            E = feat if feat is not None else _input_size(l.input_shape, source, c.get("name"))
            s = LSTMSpec(E, int(c["units"]), bidirectional=l.bidirectional,
                         bias="keras" if c.get("use_bias", True) else "none")
            specs.append(s)
            feat = s.output_size
        else:
            head = DenseSpec(int(c["units"]), bias=bool(c.get("use_bias", True)), every_step=rs)
    spec = ModelSpec(stacks=group_specs(specs), embedding=emb, head=head)
    return Model(spec, None, return_sequences=rs, head_activation=_activation(source, layers), source=source,
                 batch_first=True)


def _activation(source, layers):
    if layers[-1].kind != "dense":
        return "linear"
    return layers[-1].cfg.get("activation") or "linear"


def _var(h5, path: str, source: str) -> np.ndarray:
    if path not in h5:
        raise ModelFileError(f"{source}: model.weights.h5 has no {path!r}")
    return np.asarray(h5[path][()])


def _with_weights(source: str, layers: List[_Layer], h5) -> Model:
    emb = head_w = head_b = None
    lstm_layers = []
    for l in layers:
        if l.kind == "embedding":
            emb = _var(h5, f"{l.path}/vars/0", source)
        elif l.kind == "lstm":
            dirs = ["forward_layer/", "backward_layer/"] if l.bidirectional else [""]
            ws = []
            for d in dirs:
                base = f"{l.path}/{d}cell/vars"
                n = 3 if l.cfg.get("use_bias", True) else 2
                ws.append([_var(h5, f"{base}/{i}", source) for i in range(n)])
            try:
                if l.bidirectional:
                    w = from_keras([ws[0][0], ws[1][0]], [ws[0][1], ws[1][1]],
                                   [ws[0][2], ws[1][2]] if len(ws[0]) == 3 else None)
                else:
                    w = from_keras(*ws[0]) if len(ws[0]) == 3 else from_keras(ws[0][0], ws[0][1])
            except ConvertError as e:
                raise ModelFileError(f"{source}: layer {l.cfg.get('name')!r}: {e}") from None
            lstm_layers.append(w)
        else:
            kernel = _var(h5, f"{l.path}/{l.inner}vars/0", source)
            head_w = kernel.T                                           # Keras (in, out) -> (out, in)
            if l.cfg.get("use_bias", True):
                head_b = _var(h5, f"{l.path}/{l.inner}vars/1", source)
    last = [l for l in layers if l.kind == "lstm"][-1]
    return build_model(source, lstm_layers, embedding=emb, head_weight=head_w, head_bias=head_b,
                       return_sequences=bool(last.cfg.get("return_sequences", False)),
                       head_activation=_activation(source, layers), batch_first=True)


def _read_json(source: str, data: bytes) -> dict:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{source}: the Keras config is not valid JSON: {e}") from None


def load_keras(path: str, kind: str = "other") -> Model:
    if kind == "pickle":
        raise ModelFileError(f"{path}: refused: the file is a Python pickle, not a Keras model; edgelstm never "
                             f"loads pickles")
    if kind == "hdf5":
        raise UnsupportedModelError(f"{path}: a legacy Keras HDF5 model file; save it as .keras (Keras 3)")
    if kind == "json" or path.lower().endswith(".json"):
        with open(path, "rb") as f:
            cfg = _read_json(path, f.read(MAX_CONFIG_BYTES + 1))
        return _spec_only(path, cfg, _layers(path, cfg))
    if kind != "zip":
        raise ModelFileError(f"{path}: not a .keras file (expected a zip of config.json and model.weights.h5)")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if zip_carries_pickle(names):
                raise ModelFileError(f"{path}: refused: the archive carries a pickle "
                                     f"({next(n for n in names if n.endswith(('.pkl', '.pickle')))})")
            if "config.json" not in names:
                raise ModelFileError(f"{path}: the .keras archive has no config.json")
            if z.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                raise ModelFileError(f"{path}: config.json is larger than {MAX_CONFIG_BYTES} bytes")
            cfg = _read_json(path, z.read("config.json"))
            layers = _layers(path, cfg)
            if "model.weights.h5" not in names:
                raise ModelFileError(f"{path}: the .keras archive has no weights (model.weights.h5)")
            data = z.read("model.weights.h5")
    except zipfile.BadZipFile as e:
        raise ModelFileError(f"{path}: not a readable .keras zip (truncated or corrupt?): {e}") from None
    try:
        import h5py
    except ImportError:
        raise ModelFileError(f"{path}: reading .keras weights needs h5py (pip install h5py)") from None
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError as e:
        raise ModelFileError(f"{path}: model.weights.h5 is not a readable HDF5 file: {e}") from None
    with h5:
        return _with_weights(path, layers, h5)
