"""Keras: `.keras` files (a zip of config.json and model.weights.h5) read with zipfile,
json and h5py, without Keras or TensorFlow; and plain model JSON (model.to_json()),
for counting only.

The config is read as JSON data and never deserialized into Python objects (no custom
objects, no Lambda layers). A chain of layers is supported: InputLayer, Embedding,
LSTM, Bidirectional(LSTM) (merge_mode "concat"), Dense or TimeDistributed(Dense) as
the head, and weightless Dropout/SpatialDropout1D; anything else is refused by name.

Weights are found where Keras 3 saves them: layers/<name>/..., <name> being the
snake_case class name with _1, _2, ... for repeats, in layer order.

The archive is untrusted: each member is size-checked against the byte limit
(`edgelstm._files.max_bytes`, EDGELSTM_MAX_BYTES) before it is decompressed; in
model.weights.h5 only hard links are followed, along the fixed paths above (no soft or
external links, so no loops and nothing outside the file), and a dataset is read only
if its storage is inside the file (no external storage, no virtual datasets, no filter
plugins), its dtype is a float and its shape is the one the config implies, checked
before a byte of it is read.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .._files import check_bytes, limit_message, max_bytes, read_bytes
from ..convert import ConvertError, check_keras_lstm_config, from_keras
from ..model import (Model, ModelFileError, UnsupportedModelError, build_model, group_specs,
                     zip_carries_pickle)
from ..spec import DenseSpec, EmbeddingSpec, LSTMSpec, ModelSpec

IGNORED = {"InputLayer", "Dropout", "SpatialDropout1D", "GaussianDropout", "AlphaDropout", "GaussianNoise"}
MAX_CONFIG_BYTES = 64 * 2**20
# HDF5 filters built into the library (deflate, shuffle, fletcher32, szip, nbit,
# scaleoffset) and h5py's LZF. Any other id makes HDF5 load a plugin from disk: refused.
H5_FILTERS = {1, 2, 3, 4, 5, 6, 32000}


def _brief(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _obj(v, where: str) -> dict:
    if not isinstance(v, dict):
        raise ModelFileError(f"{where}: expected a JSON object, got {_brief(v)}")
    return v


def _int(c: dict, key: str, where: str, default=...) -> int:
    """A positive integer field of a layer config (Keras writes ints; JSON may hold anything)."""
    v = c.get(key, default)
    if v is ...:
        raise ModelFileError(f"{where}: {key}: missing")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ModelFileError(f"{where}: {key}: expected an integer >= 1, got {_brief(v)}")
    return v


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
        raise UnsupportedModelError(f"{source}: unsupported Keras model class {_brief(cls)} (expected Sequential "
                                    f"or Functional)")
    layer_cfgs = _obj(cfg.get("config", {}), f"{source}: config").get("layers")
    if not isinstance(layer_cfgs, list):
        raise ModelFileError(f"{source}: the Keras config has no layers list")
    functional = cls != "Sequential"
    used, out, prev_name = {}, [], None
    for k, lc in enumerate(layer_cfgs):
        lc = _obj(lc, f"{source}: config.layers[{k}]")
        lcls = lc.get("class_name")
        c = _obj(lc.get("config", {}), f"{source}: config.layers[{k}].config")
        name = lc.get("name", c.get("name", f"#{k}"))
        if not isinstance(lcls, str) or not isinstance(name, str):
            raise ModelFileError(f"{source}: config.layers[{k}]: expected a class_name and name strings, got "
                                 f"{_brief(lcls)} and {_brief(name)}")
        where = f"{source}: layer {name!r}"
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
        build = lc.get("build_config") or {}
        input_shape = build.get("input_shape") if isinstance(build, dict) else None
        if lcls == "Embedding":
            if c.get("mask_zero"):
                raise UnsupportedModelError(f"{where}: unsupported Embedding(mask_zero=True) "
                                            f"(masking skips steps)")
            _int(c, "input_dim", where), _int(c, "output_dim", where)
            out.append(_Layer("embedding", path, c))
        elif lcls == "LSTM":
            _lstm_config(c, f"{where} (LSTM)")
            out.append(_Layer("lstm", path, c, input_shape=input_shape))
        elif lcls == "Bidirectional":
            inner = _obj(c.get("layer", {}), f"{where}: layer")
            if inner.get("class_name") != "LSTM":
                raise UnsupportedModelError(f"{where}: unsupported Bidirectional("
                                            f"{_brief(inner.get('class_name'))}) (edgelstm imports LSTM)")
            if c.get("merge_mode", "concat") != "concat":
                raise UnsupportedModelError(f"{where}: unsupported merge_mode "
                                            f"{_brief(c.get('merge_mode'))} (edgelstm concatenates directions)")
            ic = _obj(inner.get("config", {}), f"{where}: layer.config")
            _lstm_config(ic, f"{where} (Bidirectional LSTM)", True)
            out.append(_Layer("lstm", path, ic, bidirectional=True, input_shape=input_shape))
        elif lcls == "Dense":
            _int(c, "units", where)
            out.append(_Layer("dense", path, c))
        elif lcls == "TimeDistributed" and isinstance(c.get("layer"), dict) \
                and c["layer"].get("class_name") == "Dense":
            dc = dict(_obj(c["layer"].get("config", {}), f"{where}: layer.config"), _time_distributed=True)
            _int(dc, "units", where)
            out.append(_Layer("dense", path, dc, inner="layer/"))
        elif lcls == "Activation" and out and out[-1].kind == "dense":
            if out[-1].cfg.get("activation", "linear") not in ("linear", None):
                raise UnsupportedModelError(f"{where}: two activations after the head")
            out[-1].cfg = dict(out[-1].cfg, activation=c.get("activation", "linear"))
        else:
            raise UnsupportedModelError(f"{where}: unsupported Keras layer {lcls!r} (edgelstm "
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
    if out[-1].kind == "dense" and not isinstance(out[-1].cfg.get("activation") or "linear", str):
        raise ModelFileError(f"{source}: the head's activation: expected a name, got "
                             f"{_brief(out[-1].cfg.get('activation'))}")
    return out


def _lstm_config(c: dict, where: str, in_bidirectional: bool = False) -> None:
    _int(c, "units", where)
    try:
        check_keras_lstm_config(c, where, in_bidirectional)
    except ConvertError as e:
        raise UnsupportedModelError(str(e)) from None


def _check_chain(source, lc, name, prev_name):
    nodes = lc.get("inbound_nodes", [])
    try:
        args = nodes[0]["args"]
        hist = args[0]["config"]["keras_history"][0]
    except (IndexError, KeyError, TypeError):
        hist = None
    if not isinstance(nodes, list) or len(nodes) != 1 or not isinstance(hist, str) or hist != prev_name:
        raise UnsupportedModelError(f"{source}: layer {name!r} does not read the layer before it "
                                    f"({prev_name!r}); edgelstm imports a single chain of layers")


def _last_dim(shape):
    """The feature size at the end of a saved shape ([None, T, E]), or None."""
    if isinstance(shape, list) and shape and isinstance(shape[-1], int) and not isinstance(shape[-1], bool) \
            and shape[-1] >= 1:
        return shape[-1]
    return None


def _input_size(shape, source: str, name: str) -> int:
    if _last_dim(shape):
        return _last_dim(shape)
    raise ModelFileError(f"{source}: LSTM {name!r}: its input size is not in the config "
                         f"(no Input shape and no build_config)")


def _spec_only(source: str, cfg: dict, layers: List[_Layer]) -> Model:
    """A counting-only Model from the config alone (sizes from the config)."""
    raw = cfg["config"]["layers"]
    first_shape = next((lc.get("config", {}).get("batch_shape") for lc in raw
                        if lc.get("class_name") == "InputLayer"), None)
    feat = _last_dim(first_shape) if isinstance(first_shape, list) and len(first_shape) == 3 else None
    emb = head = None
    specs = []
    rs = bool([l for l in layers if l.kind == "lstm"][-1].cfg.get("return_sequences", False))
    for l in layers:
        c = l.cfg
        if l.kind == "embedding":
            emb = EmbeddingSpec(c["input_dim"], c["output_dim"])
            feat = emb.embedding_dim
        elif l.kind == "lstm":
            E = feat if feat is not None else _input_size(l.input_shape, source, c.get("name"))
            s = LSTMSpec(E, c["units"], bidirectional=l.bidirectional,
                         bias="keras" if c.get("use_bias", True) else "none")
            specs.append(s)
            feat = s.output_size
        else:
            head = DenseSpec(c["units"], bias=bool(c.get("use_bias", True)), every_step=rs)
    spec = ModelSpec(stacks=group_specs(specs), embedding=emb, head=head)
    return Model(spec, None, return_sequences=rs, head_activation=_activation(source, layers), source=source,
                 batch_first=True)


def _activation(source, layers):
    if layers[-1].kind != "dense":
        return "linear"
    return layers[-1].cfg.get("activation") or "linear"


class _H5:
    """model.weights.h5, read defensively: see the module docstring."""

    def __init__(self, h5, source: str):
        self.h5, self.source, self.read_bytes = h5, source, 0
        self.limit = max_bytes()

    def _where(self, path):
        return f"{self.source}: model.weights.h5 {path!r}"

    def node(self, path: str):
        import h5py
        node, parts = self.h5, path.split("/")
        for k, part in enumerate(parts):
            here = "/".join(parts[:k + 1])
            if not isinstance(node, h5py.Group):
                raise ModelFileError(f"{self._where(here)}: expected a group above it, got a dataset")
            link = node.get(part, getlink=True)          # the link itself: nothing is followed
            if link is None:
                raise ModelFileError(f"{self.source}: model.weights.h5 has no {path!r}")
            if not isinstance(link, h5py.HardLink):
                kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
                raise ModelFileError(f"{self._where(here)}: refused: it is {kind} (edgelstm follows only "
                                     f"the file's own hard links)")
            node = node[part]
        return node

    def var(self, path: str, shape) -> np.ndarray:
        """The dataset at `path`, whose shape must match `shape` (None: any size >= 1 there)."""
        import h5py
        d = self.node(path)
        where = self._where(path)
        if not isinstance(d, h5py.Dataset):
            raise ModelFileError(f"{where}: expected a dataset, got a group")
        if d.is_virtual:
            raise ModelFileError(f"{where}: refused: a virtual dataset (its data lives in other files)")
        if d.external:
            raise ModelFileError(f"{where}: refused: the dataset's storage is an external file "
                                 f"({_brief(d.external[0][0])}); edgelstm reads only data inside the model file")
        dcpl = d.id.get_create_plist()
        for i in range(dcpl.get_nfilters()):
            code = dcpl.get_filter(i)[0]
            if code not in H5_FILTERS:
                raise ModelFileError(f"{where}: refused: HDF5 filter {code} (a plugin loaded from disk)")
        if d.dtype.kind != "f" or d.dtype.itemsize not in (2, 4, 8):
            raise ModelFileError(f"{where}: expected float weights, got dtype {d.dtype}")
        if len(d.shape) != len(shape) or any(w is not None and g != w for g, w in zip(d.shape, shape)) \
                or any(g < 1 for g in d.shape):
            want = "(" + ", ".join("?" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ModelFileError(f"{where}: expected shape {want} from the config, got {d.shape}")
        nbytes = int(np.prod(d.shape, dtype=object)) * d.dtype.itemsize
        self.read_bytes += nbytes
        if self.read_bytes > self.limit:
            raise ModelFileError(limit_message(f"{where}: the weights read so far", self.read_bytes, self.limit))
        return np.asarray(d[()])


def _with_weights(source: str, layers: List[_Layer], h5) -> Model:
    f = _H5(h5, source)
    emb = head_w = head_b = None
    lstm_layers = []
    for l in layers:
        c = l.cfg
        if l.kind == "embedding":
            emb = f.var(f"{l.path}/vars/0", (c["input_dim"], c["output_dim"]))
        elif l.kind == "lstm":
            dirs = ["forward_layer/", "backward_layer/"] if l.bidirectional else [""]
            G = 4 * c["units"]
            ws = []
            for d in dirs:
                base = f"{l.path}/{d}cell/vars"
                shapes = [(None, G), (c["units"], G), (G,)][:3 if c.get("use_bias", True) else 2]
                ws.append([f.var(f"{base}/{i}", shape) for i, shape in enumerate(shapes)])
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
            kernel = f.var(f"{l.path}/{l.inner}vars/0", (None, c["units"]))
            head_w = kernel.T                                           # Keras (in, out) -> (out, in)
            if l.cfg.get("use_bias", True):
                head_b = f.var(f"{l.path}/{l.inner}vars/1", (c["units"],))
    last = [l for l in layers if l.kind == "lstm"][-1]
    return build_model(source, lstm_layers, embedding=emb, head_weight=head_w, head_bias=head_b,
                       return_sequences=bool(last.cfg.get("return_sequences", False)),
                       head_activation=_activation(source, layers), batch_first=True)


def _read_json(source: str, data: bytes) -> dict:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{source}: the Keras config is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{source}: the Keras config is not valid JSON: {e}") from None
    except RecursionError:
        raise ModelFileError(f"{source}: the Keras config is nested too deeply to be a model config") from None


def _member(z: zipfile.ZipFile, path: str, name: str, limit: int, overridable: bool = True) -> bytes:
    """One archive member, its declared size checked before it is decompressed (zipfile
    stops at the declared size and checks the CRC, so a member cannot grow past it)."""
    size = z.getinfo(name).file_size
    if size > limit:
        raise ModelFileError(limit_message(f"{path}: {name} (decompressed)", size, limit, overridable))
    return z.read(name)


def load_keras(path: str, kind: str = "other") -> Model:
    if kind == "pickle":
        raise ModelFileError(f"{path}: refused: the file is a Python pickle, not a Keras model; edgelstm never "
                             f"loads pickles")
    if kind == "hdf5":
        raise UnsupportedModelError(f"{path}: a legacy Keras HDF5 model file; save it as .keras (Keras 3)")
    if kind == "json" or path.lower().endswith(".json"):
        cfg = _read_json(path, read_bytes(path, "Keras model JSON", min(MAX_CONFIG_BYTES, max_bytes()),
                                          error=ModelFileError, fixed_limit=max_bytes() > MAX_CONFIG_BYTES))
        return _spec_only(path, cfg, _layers(path, cfg))
    if kind != "zip":
        raise ModelFileError(f"{path}: not a .keras file (expected a zip of config.json and model.weights.h5)")
    limit = max_bytes()
    check_bytes(os.path.getsize(path), f"{path}: the .keras file", limit, error=ModelFileError)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if zip_carries_pickle(names):
                raise ModelFileError(f"{path}: refused: the archive carries a pickle "
                                     f"({next(n for n in names if n.endswith(('.pkl', '.pickle')))})")
            if "config.json" not in names:
                raise ModelFileError(f"{path}: the .keras archive has no config.json")
            cfg = _read_json(path, _member(z, path, "config.json", min(MAX_CONFIG_BYTES, limit),
                                           overridable=limit <= MAX_CONFIG_BYTES))
            layers = _layers(path, cfg)
            if "model.weights.h5" not in names:
                raise ModelFileError(f"{path}: the .keras archive has no weights (model.weights.h5)")
            data = _member(z, path, "model.weights.h5", limit)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as e:
        raise ModelFileError(f"{path}: not a readable .keras zip (truncated or corrupt?): {e}") from None
    except (OSError, RuntimeError, zlib.error) as e:     # corrupt deflate data, encrypted members
        raise ModelFileError(f"{path}: cannot read the .keras zip: {type(e).__name__}: {e}") from None
    try:
        import h5py
    except ImportError:
        raise ModelFileError(f"{path}: reading .keras weights needs h5py (pip install h5py)") from None
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path}: model.weights.h5 is not a readable HDF5 file: {e}") from None
    with h5:
        try:
            return _with_weights(path, layers, h5)
        except (OSError, KeyError, RuntimeError) as e:     # h5py's errors on a corrupt file
            raise ModelFileError(f"{path}: model.weights.h5 is corrupt: {type(e).__name__}: {e}") from None
