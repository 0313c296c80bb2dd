"""`load_model` and the readers of other frameworks' model files behind it (`edgelstm.load_model`).

One module per format: onnx_import (onnx package), torch_import (torch), keras_import
(zipfile, json and h5py; no Keras). Each is imported only when its format is read.
load_model lives here, above both the importers and edgelstm.model (Model, the errors,
build_model), which the importers build on: model.py imports no importer.
"""
from __future__ import annotations

import os
from typing import Optional

from ..model import Model, ModelFileError, sniff
from ..spec import ModelSpec


def load_model(path_or_module, spec: Optional[ModelSpec] = None, **options) -> Model:
    """Read a model: an ONNX file (.onnx), a Keras file (.keras, or model JSON for counting
    only), a TensorFlow Lite file (.tflite: an edgelstm.tflite.TFLiteModel, which takes and
    returns the file's own tensors), a PyTorch nn.Module, or a PyTorch state_dict file
    (.pt/.pth/.bin) with `spec`.

    options: for PyTorch, `every_step` (default True): whether the nn.Linear head is
    applied at every step (else to the last stack's final state); PyTorch modules do
    not say this in their structure, their forward() does.
    """
    if not isinstance(path_or_module, (str, os.PathLike)):
        if hasattr(path_or_module, "named_modules"):
            from .torch_import import load_torch_module
            return load_torch_module(path_or_module, **options)
        raise ModelFileError(f"load_model: expected a file path or a torch.nn.Module, "
                             f"got {type(path_or_module).__name__}")
    path = os.fspath(path_or_module)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, expected a model file")
    if not os.path.isfile(path):      # /dev/zero, a FIFO: refused before a byte is read
        raise ModelFileError(f"{os.path.abspath(path)}: not a regular file, expected a model file")
    from .._files import max_bytes
    max_bytes()                       # a malformed EDGELSTM_MAX_BYTES is the environment's error, not the file's
    try:
        return _load_file(path, spec, options)
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as e:
        # The importers check what they read; this names the file for anything a hostile file
        # still reaches past them (a spec no LSTMSpec can hold, a malformed structure).
        raise ModelFileError(f"{path}: malformed model file ({type(e).__name__}: "
                             f"{str(e).strip()[:300]})") from None


def _load_file(path: str, spec, options) -> Model:
    ext = os.path.splitext(path)[1].lower()
    kind = sniff(path)
    if ext == ".onnx":
        from .onnx_import import load_onnx
        return load_onnx(path, kind=kind)
    if ext in (".keras", ".json"):
        from .keras_import import load_keras
        return load_keras(path, kind=kind)
    if ext == ".tflite":
        from ..tflite import load_tflite
        return load_tflite(path)
    if ext in (".pt", ".pth", ".bin", ".ckpt"):
        from .torch_import import load_torch_state_dict
        return load_torch_state_dict(path, spec, **options)
    if kind == "pickle":
        raise ModelFileError(f"{path}: refused: the file is a Python pickle, which edgelstm never loads")
    raise ModelFileError(f"{path}: unknown model file type {ext or '(no extension)'!r}: expected .onnx, "
                         f".keras, .json (Keras model JSON), .tflite, or .pt/.pth (a PyTorch state_dict, "
                         f"with spec=)")
