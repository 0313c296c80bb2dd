"""Real models: a ModelSpec with its weights, imported from ONNX, PyTorch or Keras.

`load_model(path_or_module)` returns a `Model`: `.spec` (a ModelSpec, so
`edgelstm.count(model.spec)` works), `.weights` (a ModelWeights, or None for a
model read for counting only), and `model(x)` runs it with the edgelstm kernels.

Layout: `model(x)` takes x in the layout of the framework the model came from, so that
it gives that framework's answer for the same array: `Model.batch_first` records it.
Keras models are batch-first; an ONNX model takes what its graph input takes (edgelstm
follows the Transposes between the graph input and the first LSTM, and the LSTM's
`layout` attribute), exactly what an onnxruntime session takes; a torch module takes
what its LSTMs' `batch_first` says. Batch-first means token ids (B, T) (integers) when
the model has an embedding, else features (B, T, E); time-major means (T, B) /
(T, B, E). `model(x, batch_first=...)` overrides it. The output is (B, T, F) or
(T, B, F), in the same layout, when the model returns every step, and (B, F) when it
returns one vector per sequence (a Keras LSTM with
return_sequences=False, or a head with every_step=False). The per-sequence vector is
the final hidden state of the last stack: for a bidirectional stack the forward
direction's state after step T-1 and the backward direction's after step 0, as Keras
and ONNX's Y_h give it (not y[-1]).

Weights are copied on import and read-only (see LSTMWeights). A model loaded from a
torch module follows that module: if its parameters change in place (a training step,
`weight_hh_l0.mul_(2)`), the next `model(x)` re-imports them first, so it never mixes
new and old weights.

Reading a file never executes anything in it: no unpickling (torch.load runs with
weights_only=True), a .keras config is read as JSON and never deserialized into
Python objects. Errors about a file are `ModelFileError` (a ValueError) naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .spec import DenseSpec, EmbeddingSpec, LSTMSpec, ModelSpec
from .weights import LSTMWeights, frozen_copy

HEAD_ACTIVATIONS = ("linear", "softmax", "sigmoid", "tanh", "relu")


from .errors import ModelFileError, UnsupportedModelError  # noqa: F401  (re-exported: their home was here)


@dataclass(frozen=True)
class ModelWeights:
    """The parameters of a ModelSpec.

    embedding (vocab, E) or None; stacks: one LSTMWeights per spec stack; head_weight
    (out_features, in_features) (torch's nn.Linear layout) or None; head_bias (out,) or None.
    """

    stacks: Tuple[LSTMWeights, ...]
    embedding: Optional[np.ndarray] = None
    head_weight: Optional[np.ndarray] = None
    head_bias: Optional[np.ndarray] = None


def _check_weights(spec: ModelSpec, w: ModelWeights) -> None:
    if len(w.stacks) != len(spec.stacks):
        raise ModelFileError(f"weights.stacks: expected {len(spec.stacks)} LSTMWeights, got {len(w.stacks)}")
    for k, (s, lw) in enumerate(zip(spec.stacks, w.stacks)):
        if lw.spec != s:
            raise ModelFileError(f"weights.stacks[{k}]: expected weights of {s}, got {lw.spec}")
    e = spec.embedding
    want = None if e is None else (e.vocab_size, e.embedding_dim)
    got = None if w.embedding is None else np.shape(w.embedding)
    if want != got:
        raise ModelFileError(f"weights.embedding: expected shape {want}, got {got}")
    h = spec.head
    want = None if h is None else (h.out_features, spec.head_in_features)
    got = None if w.head_weight is None else np.shape(w.head_weight)
    if want != got:
        raise ModelFileError(f"weights.head_weight: expected shape {want}, got {got}")
    want = (h.out_features,) if h is not None and h.bias else None
    got = None if w.head_bias is None else np.shape(w.head_bias)
    if want != got:
        raise ModelFileError(f"weights.head_bias: expected shape {want}, got {got}")


class Model:
    """A ModelSpec, its weights, and how its output is taken.

    return_sequences: True if the model returns every step (after the head, if any);
    False if it returns one vector per sequence. With a head it equals head.every_step.
    head_activation: applied after the head ("linear" for none).
    source: where the model came from (a path or a module's class name), for messages.
    batch_first: the layout `model(x)` takes by default (see the module docstring).
    """

    def __init__(self, spec: ModelSpec, weights: Optional[ModelWeights] = None, *,
                 return_sequences: Optional[bool] = None, head_activation: str = "linear",
                 source: str = "model", batch_first: bool = False):
        self.spec = ModelSpec.of(spec)
        if weights is not None:
            _check_weights(self.spec, weights)
        self.weights = weights
        if return_sequences is None:
            return_sequences = self.spec.head.every_step if self.spec.head is not None else True
        if self.spec.head is not None and self.spec.head.every_step != return_sequences:
            raise ModelFileError(f"{source}: return_sequences={return_sequences} contradicts the head's "
                                 f"every_step={self.spec.head.every_step}")
        if head_activation not in HEAD_ACTIVATIONS:
            raise UnsupportedModelError(f"{source}: unsupported head activation {head_activation!r} "
                                        f"(edgelstm runs {', '.join(HEAD_ACTIVATIONS)})")
        self.return_sequences = bool(return_sequences)
        self.head_activation = head_activation
        self.source = source
        self.batch_first = bool(batch_first)
        # Set by an importer whose source can change after import (a live torch module):
        # called before each run, it re-imports when the source changed.
        self._refresh = None

    def __repr__(self) -> str:
        w = "with weights" if self.weights is not None else "spec only"
        return f"Model({self.spec}, {w}, source={self.source!r})"

    def __call__(self, x, *, batch_first: Optional[bool] = None):
        """Run the model; see the module docstring for x's layout and the output's.
        batch_first: None (default) takes the model's own layout, `self.batch_first`."""
        from .run import lstm
        if batch_first is None:
            batch_first = self.batch_first
        if self._refresh is not None:
            self._refresh(self)
        if self.weights is None:
            raise ModelFileError(f"{self.source}: this model was read for counting only (no weights); "
                                 f"it cannot run")
        if self.spec.topology != "sequential":
            raise UnsupportedModelError(f"{self.source}: running an encoder_decoder model needs the decoder's "
                                        f"own input; Model runs sequential models only")
        w = self.weights
        x = np.asarray(x)
        if self.spec.embedding is not None:
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
                want = "(B, T)" if batch_first else "(T, B)"
                raise ValueError(f"x: expected token ids, an integer array {want} (batch_first={batch_first}), "
                                 f"got {x.dtype} {x.shape}")
            V = self.spec.embedding.vocab_size
            if x.size and (x.min() < 0 or x.max() >= V):
                raise ValueError(f"x: expected token ids in 0..{V - 1}, got {x.min()}..{x.max()}")
            x = w.embedding[x]                                # (T, B, E) or (B, T, E)
        else:
            E = self.spec.stacks[0].input_size
            if x.ndim != 3 or x.shape[2] != E or not np.issubdtype(x.dtype, np.floating):
                want = f"(B, T, {E})" if batch_first else f"(T, B, {E})"
                raise ValueError(f"x: expected float features {want} (batch_first={batch_first}), "
                                 f"got {x.dtype} {x.shape}")
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        if batch_first:
            x = x.transpose(1, 0, 2)
        x = np.ascontiguousarray(x)                           # (T, B, E)
        h_n = None
        for stack in w.stacks:
            x, (h_n, _) = lstm(x, stack)
        if self.return_sequences:
            out = x                                           # (T, B, D*P)
        else:
            D = self.spec.stacks[-1].num_directions
            out = np.concatenate(list(h_n[-D:]), axis=-1)     # (B, D*P): final states of the last layer
        if self.spec.head is not None:
            out = out @ w.head_weight.T.astype(out.dtype)
            if w.head_bias is not None:
                out = out + w.head_bias.astype(out.dtype)
        out = _activate(out, self.head_activation)
        if self.return_sequences and batch_first:
            out = out.transpose(1, 0, 2)
        return np.ascontiguousarray(out)


def _activate(z, name):
    if name == "linear":
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        from .kernels.reference import sigmoid
        return sigmoid(z).astype(z.dtype)
    e = np.exp(z - z.max(axis=-1, keepdims=True))         # softmax over features
    return e / e.sum(axis=-1, keepdims=True)


# -- assembling a model from the layers an importer found ------------------------------
def group_stacks(layers: Sequence[LSTMWeights]) -> Tuple[LSTMWeights, ...]:
    """Join consecutive LSTM layers that fit one LSTMSpec (same hidden_size, directions,
    projection, bias and peepholes) into one stack; a change starts a new stack."""
    from .convert import stack_layers
    groups = []
    for w in layers:
        s = w.spec
        if groups:
            f = groups[-1][0].spec
            if (s.hidden_size, s.bidirectional, s.proj_size, s.bias, s.peephole) == \
                    (f.hidden_size, f.bidirectional, f.proj_size, f.bias, f.peephole) \
                    and s.input_size == groups[-1][-1].spec.output_size:
                groups[-1].append(w)
                continue
        groups.append([w])
    return tuple(g[0] if len(g) == 1 else stack_layers(g) for g in groups)


def group_specs(specs: Sequence[LSTMSpec]) -> Tuple[LSTMSpec, ...]:
    """group_stacks for specs alone (a model read for counting only)."""
    groups = []
    for s in specs:
        f = groups[-1] if groups else None
        if f is not None and (s.hidden_size, s.bidirectional, s.proj_size, s.bias, s.peephole) == \
                (f.hidden_size, f.bidirectional, f.proj_size, f.bias, f.peephole) and s.input_size == f.output_size:
            groups[-1] = LSTMSpec(f.input_size, f.hidden_size, f.num_layers + s.num_layers, f.bidirectional,
                                  f.proj_size, f.bias, f.peephole)
        else:
            groups.append(s)
    return tuple(groups)


def build_model(source: str, lstm_layers: Sequence[LSTMWeights], *, embedding=None, head_weight=None,
                head_bias=None, return_sequences: bool = True, head_activation: str = "linear",
                batch_first: bool = False) -> Model:
    """A Model from the parts an importer found, in order (embedding, LSTM layers, head)."""
    if not lstm_layers:
        raise ModelFileError(f"{source}: no LSTM found")
    stacks = group_stacks(lstm_layers)
    emb_spec = None
    if embedding is not None:
        embedding = frozen_copy(embedding)
        emb_spec = EmbeddingSpec(int(embedding.shape[0]), int(embedding.shape[1]))
    head = None
    if head_weight is not None:
        head_weight = frozen_copy(head_weight)
        head = DenseSpec(int(head_weight.shape[0]), bias=head_bias is not None, every_step=return_sequences)
        if head_weight.shape[1] != stacks[-1].spec.output_size:
            raise ModelFileError(f"{source}: the head's weight has shape {head_weight.shape}: expected "
                                 f"(out, {stacks[-1].spec.output_size}), the last LSTM's output size")
    try:
        spec = ModelSpec(stacks=tuple(s.spec for s in stacks), embedding=emb_spec, head=head)
    except ValueError as e:
        raise ModelFileError(f"{source}: the layers found do not chain: {e}") from None
    weights = ModelWeights(stacks=stacks, embedding=embedding, head_weight=head_weight,
                           head_bias=None if head_bias is None else frozen_copy(head_bias))
    return Model(spec, weights, return_sequences=return_sequences, head_activation=head_activation,
                 source=source, batch_first=batch_first)


# -- entry point ------------------------------------------------------------------------
def sniff(path: str) -> str:
    """What a file is, from its first bytes: "pickle", "zip", "hdf5", "json" or "other"."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"                                   # pickle protocol 2..5 starts with PROTO
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "other"


def zip_carries_pickle(names) -> bool:
    return any(n.endswith((".pkl", ".pickle")) or n.endswith("/data.pkl") for n in names)
