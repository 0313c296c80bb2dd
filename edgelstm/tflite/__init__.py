"""TensorFlow Lite models without TensorFlow: read, run (bit-exact with TFLM for int8), quantize, write.

- `load_tflite(path)` -> TFLiteModel: `m(x)` runs the file's graph (UNIDIRECTIONAL_SEQUENCE_LSTM float32 or
  int8, FULLY_CONNECTED, SOFTMAX, RESHAPE, QUANTIZE, DEQUANTIZE); `m.spec` is its ModelSpec.
- `quantize(model_or_weights, calibration_x)` -> an int8 TFLiteModel, as the TFLite converter makes one.
- `export_tflite(model, path)` writes a TFLiteModel, or a float LSTMWeights / Model as float32 (with seq_len).
"""
from __future__ import annotations

import os

from .quantize import float_graph, quantize
from .reader import read_tflite, read_tflite_file
from .runner import TFLiteModel
from .writer import write_tflite


def load_tflite(path, kernel: str = "numba") -> TFLiteModel:
    """Read and check a .tflite file; errors are ModelFileError / UnsupportedModelError naming it."""
    return TFLiteModel(read_tflite_file(os.fspath(path)), source=os.fspath(path), kernel=kernel)


def export_tflite(model, path, *, seq_len=None, batch: int = 1, cell_clip: float = 0.0) -> str:
    """Write `model` as a .tflite file and return the path.

    model: a TFLiteModel (from quantize or load_tflite), or a float LSTMWeights / edgelstm Model with one
    unidirectional stack, written as a float32 model of input (batch, seq_len, E) (seq_len required).
    """
    if isinstance(model, TFLiteModel):
        graph = model.graph
    else:
        if seq_len is None or int(seq_len) < 1:
            raise ValueError(f"seq_len: a float model needs the sequence length of the file's input, got {seq_len!r}")
        graph = float_graph(model, int(seq_len), batch=int(batch), cell_clip=float(cell_clip))
    data = write_tflite(graph)
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


__all__ = ["TFLiteModel", "load_tflite", "export_tflite", "quantize", "read_tflite", "read_tflite_file",
           "write_tflite", "float_graph"]
