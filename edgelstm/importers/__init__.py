"""Readers of other frameworks' model files, behind `edgelstm.load_model` (edgelstm.model).

One module per format: onnx_import (onnx package), torch_import (torch), keras_import
(zipfile, json and h5py; no Keras). Each is imported only when its format is read.
"""
