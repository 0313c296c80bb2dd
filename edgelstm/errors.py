"""The errors about model files, below every module that reads one (model.py, importers, tflite)."""


class ModelFileError(ValueError):
    """A model file or module edgelstm cannot read: the message names it and what was wrong."""


class UnsupportedModelError(ModelFileError):
    """A model that is well formed but uses something edgelstm does not run."""
