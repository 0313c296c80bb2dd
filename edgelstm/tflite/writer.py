"""Write a `Graph` as a .tflite flatbuffer, with the `flatbuffers` runtime (pure Python, the `tflite` extra).

The field slots and enums come from `schema.py`, the same description `reader.py` reads with.
Constant buffers are 16-byte aligned, as the TFLite converter writes them.
"""
from __future__ import annotations

import numpy as np

from . import schema as S

# Op versions as the TFLite converter writes them for int8 models (LiteRT's resolver checks them)
_INT8_VERSIONS = {"FULLY_CONNECTED": 4, "SOFTMAX": 2, "QUANTIZE": 2, "DEQUANTIZE": 2}


def _builder():
    try:
        import flatbuffers
    except ImportError:
        raise ImportError("writing .tflite files needs the flatbuffers package: pip install 'edgelstm[tflite]'") \
            from None
    return flatbuffers.Builder(1 << 16)


def write_tflite(graph: S.Graph) -> bytes:
    """The .tflite bytes of `graph` (one subgraph)."""
    b = _builder()

    def int_vector(vals, fmt="i"):
        vals = list(vals)
        b.StartVector(4 if fmt in "iIf" else 8, len(vals), 4 if fmt in "iIf" else 8)
        put = {"i": b.PrependInt32, "I": b.PrependUint32, "f": b.PrependFloat32, "q": b.PrependInt64}[fmt]
        for v in reversed(vals):
            put(v)
        return b.EndVector()

    def offsets_vector(offs):
        b.StartVector(4, len(offs), 4)
        for o in reversed(offs):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def bytes_vector(data: bytes):
        b.StartVector(1, len(data), 16)
        b.head -= len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        return b.EndVector()

    # buffers: 0 is the empty buffer, then one per constant tensor
    buffer_of = {}
    datas = [None]
    for k, t in enumerate(graph.tensors):
        if t.data is not None:
            buffer_of[k] = len(datas)
            datas.append(np.ascontiguousarray(t.data, dtype=np.dtype(t.dtype).newbyteorder("<")).tobytes())
    buffers = []
    for d in datas:
        data_off = bytes_vector(d) if d else None
        b.StartObject(3)
        if data_off is not None:
            b.PrependUOffsetTRelativeSlot(S.BUFFER["data"], data_off, 0)
        buffers.append(b.EndObject())

    tensors = []
    for k, t in enumerate(graph.tensors):
        name = b.CreateString(t.name)
        shape = int_vector(t.shape)
        quant = None
        if t.scale is not None:
            sc = int_vector([float(s) for s in t.scale], "f")
            zp = int_vector([int(z) for z in t.zero_point], "q")
            b.StartObject(7)
            b.PrependUOffsetTRelativeSlot(S.QUANTIZATION["scale"], sc, 0)
            b.PrependUOffsetTRelativeSlot(S.QUANTIZATION["zero_point"], zp, 0)
            b.PrependInt32Slot(S.QUANTIZATION["quantized_dimension"], int(t.quantized_dimension), 0)
            quant = b.EndObject()
        b.StartObject(7)
        b.PrependUOffsetTRelativeSlot(S.TENSOR["shape"], shape, 0)
        b.PrependInt8Slot(S.TENSOR["type"], S.TENSOR_TYPE_CODES[t.dtype], 0)
        b.PrependUint32Slot(S.TENSOR["buffer"], buffer_of.get(k, 0), 0)
        b.PrependUOffsetTRelativeSlot(S.TENSOR["name"], name, 0)
        if quant is not None:
            b.PrependUOffsetTRelativeSlot(S.TENSOR["quantization"], quant, 0)
        b.PrependBoolSlot(S.TENSOR["is_variable"], bool(t.is_variable), False)
        tensors.append(b.EndObject())

    codes = []
    versions = {}
    for op in graph.operators:
        dtype = graph.tensors[op.inputs[0]].dtype
        v = _INT8_VERSIONS.get(op.op, 1) if dtype == "int8" else 1
        versions[op.op] = max(versions.get(op.op, 1), v)
        if op.op not in codes:
            codes.append(op.op)
    operators = []
    for op in graph.operators:
        opts = _options(b, op)
        ins, outs = int_vector(op.inputs), int_vector(op.outputs)
        inter = int_vector(op.intermediates) if op.intermediates else None
        b.StartObject(9)
        b.PrependUint32Slot(S.OPERATOR["opcode_index"], codes.index(op.op), 0)
        b.PrependUOffsetTRelativeSlot(S.OPERATOR["inputs"], ins, 0)
        b.PrependUOffsetTRelativeSlot(S.OPERATOR["outputs"], outs, 0)
        if opts is not None:
            b.PrependUint8Slot(S.OPERATOR["builtin_options_type"], S.OPTIONS_TYPE[op.op], 0)
            b.PrependUOffsetTRelativeSlot(S.OPERATOR["builtin_options"], opts, 0)
        if inter is not None:
            b.PrependUOffsetTRelativeSlot(S.OPERATOR["intermediates"], inter, 0)
        operators.append(b.EndObject())

    t_vec, o_vec = offsets_vector(tensors), offsets_vector(operators)
    in_vec, out_vec = int_vector(graph.inputs), int_vector(graph.outputs)
    sg_name = b.CreateString("main")
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(S.SUBGRAPH["tensors"], t_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.SUBGRAPH["inputs"], in_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.SUBGRAPH["outputs"], out_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.SUBGRAPH["operators"], o_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.SUBGRAPH["name"], sg_name, 0)
    subgraph = b.EndObject()

    code_tables = []
    for name in codes:
        c = S.OP_CODES[name]
        b.StartObject(4)
        b.PrependInt8Slot(S.OPERATOR_CODE["deprecated_builtin_code"], min(c, 127), 0)
        b.PrependInt32Slot(S.OPERATOR_CODE["version"], versions[name], 1)
        b.PrependInt32Slot(S.OPERATOR_CODE["builtin_code"], c, 0)
        code_tables.append(b.EndObject())
    codes_vec = offsets_vector(code_tables)
    sg_vec = offsets_vector([subgraph])
    buf_vec = offsets_vector(buffers)
    desc = b.CreateString(graph.description or "edgelstm")
    b.StartObject(5)
    b.PrependUint32Slot(S.MODEL["version"], S.SCHEMA_VERSION, 0)
    b.PrependUOffsetTRelativeSlot(S.MODEL["operator_codes"], codes_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.MODEL["subgraphs"], sg_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.MODEL["description"], desc, 0)
    b.PrependUOffsetTRelativeSlot(S.MODEL["buffers"], buf_vec, 0)
    root = b.EndObject()
    b.Finish(root, file_identifier=S.FILE_IDENTIFIER)
    return bytes(b.Output())


_SCALAR_PUT = {"b": "PrependInt8Slot", "f": "PrependFloat32Slot", "?": "PrependBoolSlot"}


def _options(b, op: S.Operator):
    fields = S.OPTIONS_FIELDS[op.op]
    if op.op not in S.OPTIONS_TYPE:
        return None
    b.StartObject(max((slot for slot, _, _ in fields.values()), default=-1) + 1)
    for name, (slot, fmt, default) in fields.items():
        value = op.options.get(name, default)
        getattr(b, _SCALAR_PUT[fmt])(slot, value, default)
    return b.EndObject()
