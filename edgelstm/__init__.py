"""edgelstm: what an LSTM costs on real hardware, and how fast it really runs."""
from .spec import DenseSpec, EmbeddingSpec, LSTMSpec, ModelSpec, SpecError
from .weights import LayerWeights, LSTMWeights, WeightsError
from . import convert as _convert  # noqa: F401  (registers LSTMWeights.from_torch/from_keras/from_onnx)
from .costmodel.counts import CountError, Counts, count, count_grid

__version__ = "0.1.0"

# Imported on first use, so that `import edgelstm` (and `edgelstm size`) does not load
# Numba and compile nothing it does not need.
_LAZY = {
    "lstm": ".run", "LSTMStream": ".run",
    "predict": ".costmodel.api", "Prediction": ".costmodel.predict",
    "load_target": ".costmodel.api", "list_targets": ".costmodel.target", "Target": ".costmodel.target",
    "calibrate": ".costmodel.host.calibrate",
    "load_model": ".importers", "Model": ".model",
    "quantize": ".tflite", "export_tflite": ".tflite",
    "count_int8_lstm": ".costmodel.counts", "Int8LSTMCounts": ".costmodel.counts",
}


def __getattr__(name):
    if name == "explore":  # the design-study module (edgelstm/explore.py)
        import importlib
        return importlib.import_module(".explore", __name__)
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgelstm' has no attribute {name!r}")


__all__ = [
    "LSTMSpec", "ModelSpec", "EmbeddingSpec", "DenseSpec", "SpecError",
    "LSTMWeights", "LayerWeights", "WeightsError",
    "Counts", "CountError", "count", "count_grid", *_LAZY,
]
