"""PyTorch: a walker over an nn.Module's children (nn.Embedding, nn.LSTM, nn.Linear),
and state_dict files loaded with torch.load(weights_only=True), given with a spec.

A module's structure does not say what its forward() does: the walker takes the parts
in registration order (embedding, LSTMs, one Linear head), and the head is applied at
every step unless every_step=False (then to the last LSTM's final state).
"""
from __future__ import annotations

import re

import numpy as np

from ..convert import ConvertError, from_torch, from_torch_state_dict, torch_to_numpy
from ..model import (Model, ModelFileError, ModelWeights, UnsupportedModelError, build_model, sniff)
from ..spec import ModelSpec

SUPPORTED = ("Embedding", "LSTM", "Linear")


def _np(t) -> np.ndarray:
    return torch_to_numpy(t)


def load_torch_module(module, every_step: bool = True) -> Model:
    """A Model from an nn.Module holding [nn.Embedding] nn.LSTM... [nn.Linear].

    The model takes the layout of the module's LSTMs (`batch_first`), and follows the
    module: parameters changed in place after the import (a training step) are
    re-imported before the next run (see `_follow`)."""
    model = _import_module(module, every_step)
    model._refresh = _follow(module, every_step)
    return model


def _versions(module):
    # torch bumps a tensor's _version on every in-place change; replacing a Parameter
    # object changes its id.
    return tuple((id(p), p._version) for p in module.parameters())


def _follow(module, every_step):
    seen = [_versions(module)]

    def refresh(model):
        now = _versions(module)
        if now != seen[0]:
            fresh = _import_module(module, every_step)
            model.spec, model.weights, model.batch_first = fresh.spec, fresh.weights, fresh.batch_first
            seen[0] = now
    return refresh


def _import_module(module, every_step: bool) -> Model:
    import torch.nn as nn
    source = type(module).__name__
    parts = []
    for name, m in module.named_modules():
        if isinstance(m, (nn.Embedding, nn.LSTM, nn.Linear)):
            parts.append((name or source, m))
        elif any(True for _ in m.parameters(recurse=False)):
            raise UnsupportedModelError(f"{source}: unsupported module {name or '(root)'!r} "
                                        f"({type(m).__name__}) holds parameters; edgelstm imports "
                                        f"{', '.join(SUPPORTED)}")
    kinds = [type(m).__name__ for _, m in parts]
    pattern = "".join({"Embedding": "E", "LSTM": "L", "Linear": "D"}.get(k, "?") for k in kinds)
    if not re.fullmatch(r"E?L+D?", pattern):
        raise UnsupportedModelError(f"{source}: expected [Embedding] LSTM... [Linear] in registration order, "
                                    f"got {' '.join(kinds) or 'none of them'}")
    layouts = {bool(m.batch_first) for _, m in parts if isinstance(m, nn.LSTM)}
    if len(layouts) > 1:
        raise UnsupportedModelError(f"{source}: its nn.LSTMs mix batch_first=True and False; edgelstm runs "
                                    f"a model in one layout")
    embedding = head_w = head_b = None
    layers = []
    for name, m in parts:
        if isinstance(m, nn.Embedding):
            embedding = _np(m.weight)
        elif isinstance(m, nn.LSTM):
            try:
                layers.append(from_torch(m))
            except ConvertError as e:
                raise ModelFileError(f"{source}.{name}: {e}") from None
        else:
            head_w = _np(m.weight)
            head_b = _np(m.bias) if m.bias is not None else None
    return build_model(source, layers, embedding=embedding, head_weight=head_w, head_bias=head_b,
                       return_sequences=every_step, batch_first=layouts.pop())


def _check_size(path: str, kind: str) -> None:
    """The file, and for torch's zip format every record by its declared size, within the
    byte limit (EDGELSTM_MAX_BYTES) before torch.load allocates storages for them."""
    import os
    import zipfile
    from .._files import check_bytes
    check_bytes(os.path.getsize(path), f"{path}: the state_dict file", error=ModelFileError)
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as z:
                total = sum(i.file_size for i in z.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise ModelFileError(f"{path}: not a readable PyTorch zip file (truncated or corrupt?): {e}") from None
        check_bytes(total, f"{path}: the state_dict's tensors (decompressed)", error=ModelFileError)


def _torch_load(path: str):
    import pickle
    try:
        import torch
    except ImportError:
        raise ModelFileError(f"{path}: reading PyTorch files needs torch (pip install torch)") from None
    kind = sniff(path)
    _check_size(path, kind)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path}: refused: the file carries a pickle that needs Python objects beyond "
                             f"tensors (torch.load(weights_only=True) would not load it: {first})") from None
    except Exception as e:
        raise ModelFileError(f"{path}: not a readable PyTorch state_dict file ({kind}): "
                             f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
                             ) from None
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ModelFileError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    import torch
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(f"{path}: expected a state_dict of tensors; {bad[0]!r} is a {type(obj[bad[0]]).__name__}")
    return obj


def load_torch_state_dict(path: str, spec, every_step=None) -> Model:
    """A Model from a state_dict file and the ModelSpec it was made for.

    Keys are matched by structure: each nn.LSTM's prefix is found from its
    weight_ih_l0 key (in file order, one nn.LSTM per spec stack); the embedding is the
    one 2-D `*weight` before them, the head the 2-D `*weight` (and `*bias`) after.
    """
    if spec is None:
        raise ModelFileError(f"{path}: a PyTorch state_dict file holds tensors only: give its spec too "
                             f"(load_model(path, spec=ModelSpec(...)))")
    spec = ModelSpec.of(spec)
    sd = _torch_load(path)
    keys = list(sd)
    prefixes = [k[:-len("weight_ih_l0")] for k in keys if k.endswith("weight_ih_l0")]
    if len(prefixes) != len(spec.stacks):
        raise ModelFileError(f"{path}: found {len(prefixes)} nn.LSTM in the state_dict "
                             f"({', '.join(p.rstrip('.') or '(root)' for p in prefixes) or 'none'}), "
                             f"the spec has {len(spec.stacks)} stacks")
    stacks = []
    for p, s in zip(prefixes, spec.stacks):
        try:
            stacks.append(from_torch_state_dict(sd, s, prefix=p))
        except ConvertError as e:
            raise ModelFileError(f"{path}: {e}") from None
    lstm_keys = {k for k in keys for p in prefixes if k.startswith(p) and
                 re.fullmatch(r"(weight|bias)_(ih|hh|hr)_l\d+(_reverse)?", k[len(p):])}
    first = min(keys.index(k) for k in lstm_keys)
    last = max(keys.index(k) for k in lstm_keys)
    others = [k for k in keys if k not in lstm_keys]

    def matrix(k):
        return k.endswith("weight") and sd[k].dim() == 2

    embedding = head_w = head_b = None
    if spec.embedding is not None:
        cands = [k for k in others if keys.index(k) < first and matrix(k)]
        want = (spec.embedding.vocab_size, spec.embedding.embedding_dim)
        if len(cands) != 1 or tuple(sd[cands[0]].shape) != want:
            raise ModelFileError(f"{path}: expected one embedding weight {want} before the LSTMs, found "
                                 f"{[(k, tuple(sd[k].shape)) for k in cands]}")
        embedding = _np(sd[cands[0]])
    if spec.head is not None:
        cands = [k for k in others if keys.index(k) > last and matrix(k)]
        want = (spec.head.out_features, spec.head_in_features)
        if len(cands) != 1 or tuple(sd[cands[0]].shape) != want:
            raise ModelFileError(f"{path}: expected one head weight {want} after the LSTMs, found "
                                 f"{[(k, tuple(sd[k].shape)) for k in cands]}")
        head_w = _np(sd[cands[0]])
        bk = cands[0][:-len("weight")] + "bias"
        if spec.head.bias:
            if bk not in sd:
                raise ModelFileError(f"{path}: {bk}: missing (the spec's head has a bias)")
            head_b = _np(sd[bk]).reshape(-1)
    weights = ModelWeights(stacks=tuple(stacks), embedding=embedding, head_weight=head_w, head_bias=head_b)
    rs = spec.head.every_step if spec.head is not None else (True if every_step is None else every_step)
    return Model(spec, weights, return_sequences=rs, source=path)
