"""The part of TensorFlow Lite's flatbuffer schema (tensorflow/lite/schema/schema.fbs) edgelstm reads and writes.

One description, used by `reader.py` and `writer.py`: field slots (slot k lives at vtable offset 4 + 2k),
enum values, and the in-memory graph both of them speak (`Graph`, `Tensor`, `Operator`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

# TensorType -> (name, NumPy dtype) for the types edgelstm handles
TENSOR_TYPES = {0: ("float32", np.float32), 2: ("int32", np.int32), 4: ("int64", np.int64),
                7: ("int16", np.int16), 9: ("int8", np.int8)}
TENSOR_TYPE_CODES = {name: code for code, (name, _) in TENSOR_TYPES.items()}

# BuiltinOperator codes edgelstm runs (every other op is named from BUILTIN_NAMES in errors)
OPS = {6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 22: "RESHAPE", 25: "SOFTMAX",
       44: "UNIDIRECTIONAL_SEQUENCE_LSTM", 114: "QUANTIZE"}
OP_CODES = {name: code for code, name in OPS.items()}
# A few common others, so an unsupported op is named rather than numbered
BUILTIN_NAMES = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
                 14: "LOGISTIC", 16: "LSTM", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 21: "RELU6",
                 28: "TANH", 32: "CUSTOM", 34: "PAD", 35: "UNIDIRECTIONAL_SEQUENCE_RNN", 36: "GATHER",
                 39: "TRANSPOSE", 40: "MEAN", 45: "STRIDED_SLICE", 46: "BIDIRECTIONAL_SEQUENCE_RNN",
                 52: "BIDIRECTIONAL_SEQUENCE_LSTM", 74: "SUM", 83: "PACK", 88: "UNPACK", 102: "SPLIT_V",
                 **OPS}

# BuiltinOptions union: type code of each op's options table
OPTIONS_TYPE = {"FULLY_CONNECTED": 8, "SOFTMAX": 9, "RESHAPE": 17, "DEQUANTIZE": 38,
                "UNIDIRECTIONAL_SEQUENCE_LSTM": 71, "QUANTIZE": 89}

ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
ACTIVATION_CODES = {name: code for code, name in ACTIVATIONS.items()}

# Field slots of each table
MODEL = {"version": 0, "operator_codes": 1, "subgraphs": 2, "description": 3, "buffers": 4}
OPERATOR_CODE = {"deprecated_builtin_code": 0, "custom_code": 1, "version": 2, "builtin_code": 3}
SUBGRAPH = {"tensors": 0, "inputs": 1, "outputs": 2, "operators": 3, "name": 4}
TENSOR = {"shape": 0, "type": 1, "buffer": 2, "name": 3, "quantization": 4, "is_variable": 5,
          "sparsity": 6}
QUANTIZATION = {"min": 0, "max": 1, "scale": 2, "zero_point": 3, "details_type": 4, "details": 5,
                "quantized_dimension": 6}
BUFFER = {"data": 0, "offset": 1, "size": 2}
OPERATOR = {"opcode_index": 0, "inputs": 1, "outputs": 2, "builtin_options_type": 3, "builtin_options": 4,
            "custom_options": 5, "intermediates": 8}
# Options tables: field -> (slot, struct format, default)
LSTM_OPTIONS = {"fused_activation_function": (0, "b", 0), "cell_clip": (1, "f", 0.0),
                "proj_clip": (2, "f", 0.0), "time_major": (3, "?", False),
                "asymmetric_quantize_inputs": (4, "?", False), "diagonal_recurrent_tensors": (5, "?", False)}
FC_OPTIONS = {"fused_activation_function": (0, "b", 0), "weights_format": (1, "b", 0),
              "keep_num_dims": (2, "?", False), "asymmetric_quantize_inputs": (3, "?", False)}
SOFTMAX_OPTIONS = {"beta": (0, "f", 0.0)}
OPTIONS_FIELDS = {"UNIDIRECTIONAL_SEQUENCE_LSTM": LSTM_OPTIONS, "FULLY_CONNECTED": FC_OPTIONS,
                  "SOFTMAX": SOFTMAX_OPTIONS, "RESHAPE": {}, "QUANTIZE": {}, "DEQUANTIZE": {}}

# UNIDIRECTIONAL_SEQUENCE_LSTM's 24 inputs (tensorflow/lite/micro/kernels/lstm_shared.h)
LSTM_INPUT = 0
LSTM_W_X = (1, 2, 3, 4)          # input-to-{input, forget, cell, output} weights: gates i, f, g, o
LSTM_W_H = (5, 6, 7, 8)          # recurrent-to-{input, forget, cell, output}
LSTM_PEEPHOLE = (9, 10, 11)
LSTM_BIAS = (12, 13, 14, 15)     # {input, forget, cell, output} gate bias
LSTM_PROJECTION = (16, 17)
LSTM_H_STATE = 18
LSTM_C_STATE = 19
LSTM_LAYER_NORM = (20, 21, 22, 23)
LSTM_NUM_INPUTS = 24


@dataclass
class Tensor:
    """A tensor of a subgraph: data is the constant buffer (a NumPy array of shape `shape`) or None.

    scale / zero_point: per-tensor (length 1) or per-channel along `quantized_dimension`, or None.
    """

    name: str
    dtype: str
    shape: Tuple[int, ...]
    data: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    zero_point: Optional[np.ndarray] = None
    quantized_dimension: int = 0
    is_variable: bool = False

    @property
    def quantized(self) -> bool:
        return self.scale is not None and len(self.scale) > 0


@dataclass
class Operator:
    """An op: its name (OPS), tensor indices (-1 for an absent optional input), options as a dict."""

    op: str
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    options: dict = field(default_factory=dict)
    intermediates: Tuple[int, ...] = ()


@dataclass
class Graph:
    """The one subgraph of a .tflite model edgelstm runs."""

    tensors: list
    operators: list
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    description: str = ""
