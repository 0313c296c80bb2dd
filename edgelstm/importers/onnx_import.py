"""ONNX files: LSTM nodes (stacked, found by following the graph), a Gather embedding
before the first, and a MatMul/Gemm (+ Add) head after the last.

Read with the onnx package (a protobuf parser: nothing in the file is executed).
Per LSTM node: the W, R, B and P initializers (or Constant nodes), direction,
hidden_size, layout and input_forget. clip, input_forget=1, non-default activations
and direction "reverse" are refused as unsupported.
"""
from __future__ import annotations

from collections import deque
from typing import Dict, Optional

import numpy as np

from .._files import limit_message, max_bytes, read_bytes
from ..convert import ConvertError, from_onnx
from ..model import Model, ModelFileError, UnsupportedModelError, build_model, zip_carries_pickle

DEFAULT_ACTIVATIONS = ["Sigmoid", "Tanh", "Tanh"]
# Nodes that only move data between an LSTM and what reads it (reshaping the
# [T, D, B, H] output into [T, B, D*H], dropout at inference, casts).
PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout", "Cast"}
PICK_STEP = {"Slice", "Gather"}   # taking one time step of Y: a per-sequence output


def _attrs(node, path: str = "") -> Dict[str, object]:
    from onnx import helper
    try:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}
    except Exception as e:            # an attribute without a valid type
        raise ModelFileError(f"{path}: {node.op_type} node {node.name!r}: unreadable attribute "
                             f"({type(e).__name__}: {str(e)[:200]})") from None


def _s(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _inp(node, i: int) -> str:
    """Input i of a node, "" when absent (ONNX's own spelling of an omitted input)."""
    return node.input[i] if len(node.input) > i else ""


class _Graph:
    """The graph's nodes, its constant tensors (checked: inside the file, within the byte
    limit, dims matching data) and producer/consumer maps. `visits` counts nodes visited by
    the walks, so a test can check that import work grows linearly with the graph."""

    def __init__(self, path, model):
        self.path = path
        self.visits = 0
        self.limit = max_bytes()
        self.tensor_bytes = 0
        g = model.graph
        self.nodes = list(g.node)
        self.consts: Dict[str, np.ndarray] = {}
        for t in g.initializer:
            self.consts[t.name] = self._array(t, f"initializer {t.name!r}")
        for n in self.nodes:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = self._array(a.t, f"Constant {n.output[0]!r}")
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: Dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.graph_inputs = [i.name for i in g.input if i.name not in self.consts]
        self._lstm_above: Dict[str, object] = {}

    def _array(self, t, what: str) -> np.ndarray:
        """A TensorProto as an array, refused if its data is outside the file, above the
        byte limit (from its dims, before it is converted) or inconsistent with its dims."""
        from onnx import TensorProto, helper, numpy_helper
        where = f"{self.path}: {what}"
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            loc = next((e.value for e in t.external_data if e.key == "location"), "?")
            raise ModelFileError(f"{where}: refused: its data is in an external file ({loc!r}); edgelstm reads "
                                 f"only tensors stored inside the .onnx file")
        if any(d < 0 for d in t.dims):
            raise ModelFileError(f"{where}: negative dims {list(t.dims)}")
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except Exception:
            raise ModelFileError(f"{where}: unsupported data_type {t.data_type}") from None
        n = 1
        for d in t.dims:
            n *= int(d)
        self.tensor_bytes += n * itemsize
        if self.tensor_bytes > self.limit:
            raise ModelFileError(limit_message(f"{where}: the tensors read so far", self.tensor_bytes, self.limit))
        try:
            return numpy_helper.to_array(t)
        except Exception as e:    # dims that contradict the data, a bad data_type
            raise ModelFileError(f"{where}: its data does not match its dims {list(t.dims)} and data_type "
                                 f"{t.data_type} ({type(e).__name__}: {str(e)[:200]})") from None

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise UnsupportedModelError(f"{self.path}: {what} ({name!r}) is not an initializer or Constant; "
                                        f"edgelstm reads weights stored in the file")
        return self.consts[name]

    def upstream(self, name: str, stop):
        """The nearest producer upstream of tensor `name` for which stop(node) holds, walking
        back through non-constant inputs; None if the walk reaches graph inputs."""
        seen, todo = set(), [name]
        while todo:
            t = todo.pop()
            n = self.producer.get(t)
            if n is None or id(n) in seen:
                continue
            seen.add(id(n))
            self.visits += 1
            if stop(n):
                return n
            todo += [i for i in n.input if i and i not in self.consts]
        return None

    def lstm_above(self, name: str):
        """upstream(name, is an LSTM), memoized per tensor: each tensor's answer is computed
        once, so finding the LSTM above each of N LSTMs costs O(graph), not O(N x graph)."""
        memo = self._lstm_above
        stack, open_ = [(name, False)], set()
        while stack:
            t, expanded = stack.pop()
            if t in memo:
                continue
            n = self.producer.get(t)
            if n is None or n.op_type == "LSTM":
                memo[t] = n
                self.visits += 1
                continue
            ins = [i for i in n.input if i and i not in self.consts]
            if not expanded:
                if t in open_:                  # a cycle (not valid ONNX): no LSTM this way
                    memo[t] = None
                    continue
                open_.add(t)
                stack.append((t, True))
                stack += [(i, False) for i in ins if i not in memo]
            else:
                memo[t] = next((memo[i] for i in reversed(ins) if memo.get(i) is not None), None)
                self.visits += 1
        return memo[name]


def _int_attr(a: dict, key: str, where: str, default=None, minimum: int = 0) -> Optional[int]:
    v = a.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ModelFileError(f"{where}: {key}: expected an integer >= {minimum}, got {_s(v)!r}")
    return int(v)


def _lstm_layer(G: _Graph, node, k: int):
    where = f"{G.path}: LSTM node {node.name or k!r}"
    a = _attrs(node, G.path)
    if "clip" in a:
        raise UnsupportedModelError(f"{where}: unsupported attribute clip={a['clip']} (edgelstm does not clip "
                                    f"gate pre-activations)")
    if _int_attr(a, "input_forget", where, 0):
        raise UnsupportedModelError(f"{where}: unsupported input_forget=1 (coupled input and forget gates)")
    direction = _s(a.get("direction", "forward"))
    D = 2 if direction == "bidirectional" else 1
    acts = a.get("activations", DEFAULT_ACTIVATIONS * D)
    acts = [_s(x) for x in acts] if isinstance(acts, list) else acts
    if acts != DEFAULT_ACTIVATIONS * D:
        raise UnsupportedModelError(f"{where}: unsupported activations {acts} (edgelstm runs "
                                    f"{DEFAULT_ACTIVATIONS * D})")
    for name in ("activation_alpha", "activation_beta"):
        if name in a:
            raise UnsupportedModelError(f"{where}: unsupported attribute {name}")
    layout = _int_attr(a, "layout", where, 0)
    if layout not in (0, 1):
        raise ModelFileError(f"{where}: layout: expected 0 or 1, got {layout}")
    ins = list(node.input) + [""] * (8 - len(node.input))
    if not ins[1] or not ins[2]:
        raise ModelFileError(f"{where}: W and R inputs are required")
    if ins[4]:   # per-sequence lengths change the answer; Model runs every step of every row
        raise UnsupportedModelError(f"{where}: unsupported sequence_lens input {ins[4]!r} (run the "
                                    f"LSTM with el.lstm(x, weights, lengths=...) instead)")
    for idx, what in ((5, "initial_h"), (6, "initial_c")):
        if ins[idx] and ins[idx] in G.consts and np.any(G.consts[ins[idx]]):
            raise UnsupportedModelError(f"{where}: unsupported non-zero constant {what}")
    tensors = {"W": G.const(ins[1], "W"), "R": G.const(ins[2], "R"),
               "B": G.const(ins[3], "B") if ins[3] else None, "P": G.const(ins[7], "P") if ins[7] else None}
    hs = _int_attr(a, "hidden_size", where, None, minimum=1)
    try:
        w = from_onnx(tensors["W"], tensors["R"], tensors["B"], tensors["P"], direction=direction,
                      hidden_size=hs)
    except ConvertError as e:
        raise ModelFileError(f"{where}: {e}") from None
    return w, layout


LAYOUT_NEUTRAL = {"Cast", "Identity", "Dropout"}


def _batch_first(G: _Graph, first_lstm, layout: int) -> bool:
    """Whether the graph input is batch-first: follow it to the first LSTM's X through
    Transposes (and an embedding Gather, which appends the feature axis), then read which
    input axis lands on X's time axis (axis 0 with layout=0, axis 1 with layout=1).
    A path through anything else (a Reshape, say) keeps the node's own layout."""
    path, t = [], first_lstm.input[0]
    while t not in G.graph_inputs:
        n = G.producer.get(t)
        if n is None or len(path) > len(G.nodes):
            return layout == 1
        if n.op_type == "Gather" and _inp(n, 0) in G.consts and _inp(n, 1):
            path.append(n)
            t = n.input[1]                                 # the token ids
        elif (n.op_type in LAYOUT_NEUTRAL or n.op_type == "Transpose") and _inp(n, 0):
            path.append(n)
            t = n.input[0]
        else:
            return layout == 1
    embedded = any(n.op_type == "Gather" for n in path)
    axes = ["a0", "a1"] if embedded else ["a0", "a1", "f"]  # the graph input's axes
    for n in reversed(path):
        if n.op_type == "Gather":
            axes = axes + ["f"]
        elif n.op_type == "Transpose":
            perm = _attrs(n, G.path).get("perm", list(range(len(axes))[::-1]))
            if not isinstance(perm, list) or sorted(map(str, perm)) != sorted(map(str, range(len(axes)))) \
                    or not all(isinstance(p, int) for p in perm):
                return layout == 1
            axes = [axes[p] for p in perm]
    return axes[1 if layout == 1 else 0] == "a1"


def _embedding(G: _Graph, first_lstm):
    """A Gather whose data is a 2-D constant table and whose indices come from the graph input."""
    g = G.upstream(_inp(first_lstm, 0), lambda n: n.op_type == "Gather" and (len(n.input) < 2 or
                                                                           n.input[0] in G.consts))
    if g is None:
        return None
    if len(g.input) < 2 or not g.input[1]:
        raise ModelFileError(f"{G.path}: Gather node {g.name!r} before the first LSTM: expected 2 inputs (data, "
                             f"indices), got {list(g.input)}")
    table = G.consts[g.input[0]]
    if table.ndim != 2 or _attrs(g, G.path).get("axis", 0) != 0:
        raise UnsupportedModelError(f"{G.path}: Gather {g.name!r} before the first LSTM is not an embedding "
                                    f"lookup (expected a 2-D table gathered on axis 0, got {table.shape})")
    return table


def _head(G: _Graph, last_lstm):
    """Follow the last LSTM's outputs to a MatMul/Gemm with a constant weight.

    Returns (weight (out, in), bias or None, every_step)."""
    todo = deque((o, idx) for idx, o in enumerate(last_lstm.output[:2]) if o)
    seen = set()
    while todo:
        t, from_output = todo.popleft()
        for n in G.consumers.get(t, []):
            if id(n) in seen:
                continue
            seen.add(id(n))
            G.visits += 1
            op = n.op_type
            every_step = from_output == 0
            if op in ("MatMul", "Gemm") and (len(n.input) < 2 or not n.output):
                raise ModelFileError(f"{G.path}: {op} node {n.name!r}: expected 2 inputs and an output, got "
                                     f"{len(n.input)} and {len(n.output)}")
            if op == "MatMul" and n.input[1] in G.consts:
                Wt = G.consts[n.input[1]]
                if Wt.ndim != 2:
                    raise UnsupportedModelError(f"{G.path}: MatMul {n.name!r}: expected a 2-D weight, got {Wt.shape}")
                return Wt.T, _add_bias(G, n.output[0], Wt.shape[1]), every_step
            if op == "Gemm" and n.input[1] in G.consts:
                a = _attrs(n, G.path)
                for key in ("alpha", "beta"):
                    if not isinstance(a.get(key, 1.0), float):
                        raise ModelFileError(f"{G.path}: Gemm {n.name!r}: {key}: expected a float, got "
                                             f"{_s(a[key])!r}")
                if a.get("transA", 0):
                    raise UnsupportedModelError(f"{G.path}: Gemm {n.name!r}: unsupported transA=1")
                Wt = G.consts[n.input[1]]
                if Wt.ndim != 2:
                    raise UnsupportedModelError(f"{G.path}: Gemm {n.name!r}: expected a 2-D weight, got {Wt.shape}")
                Wt = Wt * a.get("alpha", 1.0)
                Wt = Wt if a.get("transB", 0) else Wt.T               # -> (out, in)
                bias = None
                if len(n.input) > 2 and n.input[2]:
                    c = G.const(n.input[2], "Gemm C") * a.get("beta", 1.0)
                    try:
                        bias = np.broadcast_to(c, (Wt.shape[0],)).copy()
                    except ValueError:
                        raise ModelFileError(f"{G.path}: Gemm {n.name!r}: C has shape {c.shape}, expected "
                                             f"({Wt.shape[0]},)") from None
                return Wt, bias, every_step
            if op == "LSTM" or not n.output:
                continue
            if op in PICK_STEP:
                todo.append((n.output[0], 1))          # one step of Y: the head runs once per sequence
            elif op in PASS_THROUGH or op == "Concat":
                todo.append((n.output[0], from_output))
    return None, None, True


def _add_bias(G: _Graph, name: str, out: int):
    for n in G.consumers.get(name, []):
        if n.op_type == "Add":
            other = [i for i in n.input if i != name]
            if other and other[0] in G.consts:
                b = G.consts[other[0]]
                if b.size == out:
                    return b.reshape(out)
    return None


def load_onnx(path: str, kind: str = "other") -> Model:
    try:
        import onnx
    except ImportError:
        raise ModelFileError(f"{path}: reading ONNX files needs the onnx package (pip install onnx)") from None
    if kind == "pickle":
        raise ModelFileError(f"{path}: refused: the file is a Python pickle, not an ONNX model; edgelstm never "
                             f"loads pickles")
    if kind == "zip":
        import zipfile
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = []                      # starts like a zip and is not one: refused all the same
        what = "carries a pickle (a torch.save file?)" if zip_carries_pickle(names) else "is a zip archive"
        raise ModelFileError(f"{path}: refused: the file {what}, not an ONNX model")
    data = read_bytes(path, "ONNX model", error=ModelFileError)
    try:     # from bytes: onnx.load would also read external data files beside the model
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf's DecodeError and onnx's own errors
        raise ModelFileError(f"{path}: not a readable ONNX model (truncated or corrupt?): "
                             f"{type(e).__name__}: {e}") from None
    if not model.graph.node:
        raise ModelFileError(f"{path}: not an ONNX model with a graph (empty, truncated or another format)")
    G = _Graph(path, model)
    lstms = [n for n in G.nodes if n.op_type == "LSTM" and n.domain in ("", "ai.onnx")]
    if not lstms:
        ops = sorted({n.op_type for n in G.nodes})
        raise ModelFileError(f"{path}: the ONNX graph has no LSTM node (ops: {', '.join(ops[:12])})")
    for k, n in enumerate(lstms):
        if not _inp(n, 0) or not n.output:
            raise ModelFileError(f"{path}: LSTM node {n.name or k!r}: expected an input X and an output, got "
                                 f"inputs {list(n.input)} and outputs {list(n.output)}")
    # Order by following the graph: each LSTM after the first must read the previous one.
    # One memoized walk up from every LSTM: linear in the graph's size.
    feeds: Dict[int, list] = {}
    order = []
    for n in lstms:
        above = G.lstm_above(n.input[0])
        if above is None:
            order.append(n)
        else:
            feeds.setdefault(id(above), []).append(n)
    if len(order) != 1:
        raise UnsupportedModelError(f"{G.path}: {len(order)} LSTM chains start from the graph's inputs; "
                                    f"edgelstm imports one chain of stacked LSTMs")
    while len(order) < len(lstms):
        nxt = feeds.get(id(order[-1]), [])
        if len(nxt) != 1:
            raise UnsupportedModelError(f"{G.path}: LSTM {order[-1].name!r} feeds {len(nxt)} LSTMs; edgelstm "
                                        f"imports one chain of stacked LSTMs")
        order.append(nxt[0])
    layers, layouts = [], []
    for k, n in enumerate(order):
        w, layout = _lstm_layer(G, n, k)    # layout changes X's axes, not the weights
        layers.append(w)
        layouts.append(layout)
    embedding = _embedding(G, order[0])
    head_w, head_b, every_step = _head(G, order[-1])
    if head_w is None:   # no head: the model returns every step if Y is used, else only Y_h
        y = order[-1].output[0] if order[-1].output else ""
        every_step = bool(y) and (y in {o.name for o in model.graph.output} or bool(G.consumers.get(y)))
    return build_model(path, layers, embedding=embedding, head_weight=head_w, head_bias=head_b,
                       return_sequences=every_step, batch_first=_batch_first(G, order[0], layouts[0]))
