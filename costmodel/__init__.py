"""edgelstm.costmodel: exact counts (counts.py), hardware targets read and written from one
schema (target.py), the generic roofline prediction for any target (predict.py), the model
of edgelstm's own CPU kernel on this machine with its calibration (host/), and the entry
points that choose between them (api.py)."""
from .counts import CONVENTIONS, DTYPES, Counts, LayerCounts, Traffic, count, count_grid

__all__ = ["CONVENTIONS", "DTYPES", "Counts", "LayerCounts", "Traffic", "count", "count_grid"]
