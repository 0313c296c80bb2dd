"""edgelstm.costmodel: exact counts, hardware targets, predictions, calibration."""
from .counts import CONVENTIONS, DTYPES, Counts, LayerCounts, Traffic, count, count_grid

__all__ = ["CONVENTIONS", "DTYPES", "Counts", "LayerCounts", "Traffic", "count", "count_grid"]
