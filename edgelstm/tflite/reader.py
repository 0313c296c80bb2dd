"""Read a .tflite file into a `Graph`, without TensorFlow and without trusting the file.

A flatbuffer is a tree of offsets. Every offset, vector length and field read here is checked
against the file's size before it is followed, so a truncated or hostile file gives a
`ModelFileError` naming what is wrong, never an IndexError from deep inside or an allocation sized
by a header. Tensor shapes are checked against their buffers' byte counts.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import ModelFileError, UnsupportedModelError
from . import schema as S


class _Flat:
    """A bounds-checked view of a flatbuffer."""

    def __init__(self, data: bytes, source: str):
        self.b = memoryview(data)
        self.n = len(data)
        self.source = source

    def fail(self, what: str):
        raise ModelFileError(f"{self.source}: not a valid .tflite flatbuffer: {what}")

    def unpack(self, fmt: str, pos: int, what: str):
        size = struct.calcsize("<" + fmt)
        if pos < 0 or pos + size > self.n:
            self.fail(f"{what} at byte {pos} lies past the end of the file ({self.n} bytes; truncated?)")
        return struct.unpack_from("<" + fmt, self.b, pos)[0]

    def table(self, pos: int, what: str) -> "_Table":
        vt = pos - self.unpack("i", pos, what)
        vt_size = self.unpack("H", vt, f"{what}'s vtable")
        if vt_size < 4 or vt_size % 2 or vt + vt_size > self.n:
            self.fail(f"{what}'s vtable at byte {vt} is malformed")
        return _Table(self, pos, vt, vt_size, what)


class _Table:
    def __init__(self, f: _Flat, pos: int, vt: int, vt_size: int, what: str):
        self.f, self.pos, self.vt, self.vt_size, self.what = f, pos, vt, vt_size, what

    def _field(self, slot: int) -> int:
        o = 4 + 2 * slot
        return 0 if o >= self.vt_size else self.f.unpack("H", self.vt + o, self.what)

    def has(self, slot: int) -> bool:
        return self._field(slot) != 0

    def scalar(self, slot: int, fmt: str, default, name: str):
        off = self._field(slot)
        return default if off == 0 else self.f.unpack(fmt, self.pos + off, f"{self.what}.{name}")

    def _target(self, slot: int, name: str):
        off = self._field(slot)
        if off == 0:
            return None
        p = self.pos + off
        return p + self.f.unpack("I", p, f"{self.what}.{name}")

    def subtable(self, slot: int, name: str):
        p = self._target(slot, name)
        return None if p is None else self.f.table(p, f"{self.what}.{name}")

    def vector(self, slot: int, elem_size: int, name: str):
        """(start, length) of a vector, its whole extent checked against the file; None if absent."""
        p = self._target(slot, name)
        if p is None:
            return None
        n = self.f.unpack("I", p, f"{self.what}.{name}")
        if p + 4 + n * elem_size > self.f.n:
            self.f.fail(f"{self.what}.{name} claims {n} elements of {elem_size} bytes at byte {p}, "
                        f"past the end of the file ({self.f.n} bytes)")
        return p + 4, n

    def array(self, slot: int, dtype, name: str):
        dt = np.dtype(dtype).newbyteorder("<")
        v = self.vector(slot, dt.itemsize, name)
        if v is None:
            return None
        start, n = v
        return np.frombuffer(self.f.b, dtype=dt, count=n, offset=start).astype(dt.newbyteorder("="))

    def tables(self, slot: int, name: str):
        v = self.vector(slot, 4, name)
        if v is None:
            return []
        start, n = v
        out = []
        for k in range(n):
            p = start + 4 * k
            out.append(self.f.table(p + self.f.unpack("I", p, name), f"{self.what}.{name}[{k}]"))
        return out

    def string(self, slot: int, name: str) -> str:
        v = self.vector(slot, 1, name)
        if v is None:
            return ""
        start, n = v
        return bytes(self.f.b[start:start + n]).decode("utf-8", errors="replace")


def _options(t: _Table, fields: dict) -> dict:
    return {k: t.scalar(slot, fmt, default, k) for k, (slot, fmt, default) in fields.items()}


def _tensor(f: _Flat, t: _Table, k: int, buffers, source: str) -> S.Tensor:
    name = t.string(S.TENSOR["name"], "name") or f"tensor {k}"
    code = t.scalar(S.TENSOR["type"], "b", 0, "type")
    if code not in S.TENSOR_TYPES:
        raise UnsupportedModelError(f"{source}: tensor {k} ({name!r}) has type code {code}: edgelstm reads "
                                    f"{', '.join(n for n, _ in S.TENSOR_TYPES.values())}")
    dtype_name, dtype = S.TENSOR_TYPES[code]
    shape = t.array(S.TENSOR["shape"], np.int32, "shape")
    shape = () if shape is None else tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise UnsupportedModelError(f"{source}: tensor {k} ({name!r}) has a dynamic shape {shape}; "
                                    f"edgelstm runs fixed-shape models")
    if t.has(S.TENSOR["sparsity"]):
        raise UnsupportedModelError(f"{source}: tensor {k} ({name!r}) is sparse; edgelstm reads dense tensors")
    b = t.scalar(S.TENSOR["buffer"], "I", 0, "buffer")
    if b >= len(buffers):
        f.fail(f"tensor {k} ({name!r}) refers to buffer {b}, but the model has {len(buffers)} buffers")
    data = None
    raw = buffers[b]
    if raw is not None and raw[1] > 0:
        start, nbytes = raw
        count = math.prod(shape)
        itemsize = np.dtype(dtype).itemsize
        if nbytes != count * itemsize:
            raise ModelFileError(f"{source}: tensor {k} ({name!r}) has shape {shape} ({dtype_name}, "
                                 f"{count * itemsize} bytes) but its buffer {b} holds {nbytes} bytes")
        data = np.frombuffer(f.b, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=start)
        data = data.astype(dtype).reshape(shape)
    scale = zero_point = None
    qdim = 0
    q = t.subtable(S.TENSOR["quantization"], "quantization")
    if q is not None:
        scale = q.array(S.QUANTIZATION["scale"], np.float32, "scale")
        zero_point = q.array(S.QUANTIZATION["zero_point"], np.int64, "zero_point")
        qdim = q.scalar(S.QUANTIZATION["quantized_dimension"], "i", 0, "quantized_dimension")
        if scale is not None and len(scale) == 0:
            scale = None
        if scale is not None:
            if zero_point is None or len(zero_point) != len(scale):
                raise ModelFileError(f"{source}: tensor {k} ({name!r}) has {len(scale)} scales but "
                                     f"{0 if zero_point is None else len(zero_point)} zero points")
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise ModelFileError(f"{source}: tensor {k} ({name!r}) has a scale that is not a positive "
                                     f"number: {scale[:4]}")
            if dtype_name in ("int8", "int16"):
                info = np.iinfo(dtype)
                if np.any(zero_point < info.min) or np.any(zero_point > info.max):
                    raise ModelFileError(f"{source}: tensor {k} ({name!r}) has a zero point outside the "
                                         f"{dtype_name} range: {zero_point[:4]}")
            if len(scale) > 1 and not (0 <= qdim < len(shape) and shape[qdim] == len(scale)):
                raise ModelFileError(f"{source}: tensor {k} ({name!r}) has {len(scale)} per-channel scales "
                                     f"along dimension {qdim} of shape {shape}")
    is_var = bool(t.scalar(S.TENSOR["is_variable"], "?", False, "is_variable"))
    return S.Tensor(name, dtype_name, shape, data, scale, zero_point, qdim, is_var)


def read_tflite(data: bytes, source: str = "model.tflite") -> S.Graph:
    """Parse a .tflite flatbuffer (bytes) into a Graph; every error is a ModelFileError naming `source`."""
    f = _Flat(data, source)
    if f.n < 8:
        f.fail(f"the file has {f.n} bytes, fewer than a flatbuffer header")
    if bytes(f.b[4:8]) != S.FILE_IDENTIFIER:
        f.fail(f"file identifier {bytes(f.b[4:8])!r}, expected {S.FILE_IDENTIFIER!r}")
    m = f.table(f.unpack("I", 0, "root offset"), "model")
    version = m.scalar(S.MODEL["version"], "I", 0, "version")
    if version != S.SCHEMA_VERSION:
        raise UnsupportedModelError(f"{source}: schema version {version}, edgelstm reads version {S.SCHEMA_VERSION}")
    buffers = []
    for k, bt in enumerate(m.tables(S.MODEL["buffers"], "buffers")):
        if bt.scalar(S.BUFFER["offset"], "Q", 0, "offset") > 1:
            raise UnsupportedModelError(f"{source}: buffer {k} is stored outside the flatbuffer "
                                        f"(a >2 GB model); edgelstm reads in-file buffers")
        buffers.append(bt.vector(S.BUFFER["data"], 1, f"buffers[{k}].data"))
    codes = []
    for oc in m.tables(S.MODEL["operator_codes"], "operator_codes"):
        code = max(oc.scalar(S.OPERATOR_CODE["deprecated_builtin_code"], "b", 0, "deprecated_builtin_code"),
                   oc.scalar(S.OPERATOR_CODE["builtin_code"], "i", 0, "builtin_code"))
        codes.append(code)
    subgraphs = m.tables(S.MODEL["subgraphs"], "subgraphs")
    if len(subgraphs) != 1:
        raise UnsupportedModelError(f"{source}: {len(subgraphs)} subgraphs; edgelstm runs models with one")
    g = subgraphs[0]
    tensors = [_tensor(f, t, k, buffers, source) for k, t in enumerate(g.tables(S.SUBGRAPH["tensors"], "tensors"))]
    nt = len(tensors)

    def indices(t: _Table, slot: int, name: str, where: str, optional: bool = False):
        a = t.array(slot, np.int32, name)
        a = () if a is None else tuple(int(i) for i in a)
        for i in a:
            if not (0 <= i < nt or (optional and i == -1)):
                raise ModelFileError(f"{source}: {where} {name} refers to tensor {i}, but the subgraph "
                                     f"has {nt} tensors")
        return a

    operators = []
    for k, o in enumerate(g.tables(S.SUBGRAPH["operators"], "operators")):
        idx = o.scalar(S.OPERATOR["opcode_index"], "I", 0, "opcode_index")
        if idx >= len(codes):
            raise ModelFileError(f"{source}: operator {k} uses op table entry {idx}, but the op table has "
                                 f"{len(codes)} entries")
        code = codes[idx]
        if code not in S.OPS:
            raise UnsupportedModelError(f"{source}: operator {k} is {S.BUILTIN_NAMES.get(code, f'op code {code}')}"
                                        f", which edgelstm does not run (it runs "
                                        f"{', '.join(sorted(S.OPS.values()))})")
        op = S.OPS[code]
        options = {}
        fields = S.OPTIONS_FIELDS[op]
        if fields:
            ot = o.subtable(S.OPERATOR["builtin_options"], "builtin_options")
            options = _options(ot, fields) if ot is not None else {k2: d for k2, (_, _, d) in fields.items()}
        where = f"operator {k} ({op})"
        operators.append(S.Operator(op, indices(o, S.OPERATOR["inputs"], "inputs", where, optional=True),
                                    indices(o, S.OPERATOR["outputs"], "outputs", where),
                                    options, indices(o, S.OPERATOR["intermediates"], "intermediates", where)))
    return S.Graph(tensors, operators, indices(g, S.SUBGRAPH["inputs"], "inputs", "the subgraph"),
                   indices(g, S.SUBGRAPH["outputs"], "outputs", "the subgraph"),
                   m.string(S.MODEL["description"], "description"))


def read_tflite_file(path: str) -> S.Graph:
    with open(path, "rb") as fh:
        return read_tflite(fh.read(), source=str(path))
