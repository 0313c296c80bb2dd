"""edgelstm: what an LSTM costs on real hardware, and how fast it really runs."""
from .spec import DenseSpec, EmbeddingSpec, LSTMSpec, ModelSpec, SpecError
from .weights import LayerWeights, LSTMWeights, WeightsError
from .costmodel.counts import CountError, Counts, count, count_grid

__version__ = "0.1.0"

__all__ = [
    "LSTMSpec", "ModelSpec", "EmbeddingSpec", "DenseSpec", "SpecError",
    "LSTMWeights", "LayerWeights", "WeightsError",
    "Counts", "CountError", "count", "count_grid",
]
