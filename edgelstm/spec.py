"""The one description of an LSTM that every part of edgelstm takes.

`LSTMSpec` is a stack of LSTM layers (PyTorch's `nn.LSTM` arguments, plus the bias
convention and ONNX peepholes). `ModelSpec` adds what surrounds stacks in a real
model: an embedding, several stacks in sequence or as an encoder/decoder, a dense head.

Shape letters: E input size, H hidden size, P projection size (P = H without
projection), L layers, D directions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

BIAS_CONVENTIONS = ("pytorch", "keras", "none")


class SpecError(ValueError):
    """A spec field has a value edgelstm cannot describe."""


def _check_int(owner: str, name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{owner}.{name}: expected an integer >= {minimum}, got {value!r} "
                        f"({type(value).__name__})")
    if value < minimum:
        raise SpecError(f"{owner}.{name}: expected an integer >= {minimum}, got {value}")


def _check_bool(owner: str, name: str, value) -> None:
    if not isinstance(value, bool):
        raise SpecError(f"{owner}.{name}: expected True or False, got {value!r}")


@dataclass(frozen=True)
class LSTMSpec:
    """A stack of LSTM layers.

    bias: "pytorch" (b_ih and b_hh, 8H per layer and direction, as torch and ONNX),
    "keras" (one 4H bias), or "none". proj_size: 0 for none, else 0 < P < H (PyTorch).
    peephole: ONNX's P tensor (p_i, p_o, p_f), 3H per layer and direction.
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    bias: str = "pytorch"
    peephole: bool = False

    def __post_init__(self) -> None:
        _check_int("LSTMSpec", "input_size", self.input_size, 1)
        _check_int("LSTMSpec", "hidden_size", self.hidden_size, 1)
        _check_int("LSTMSpec", "num_layers", self.num_layers, 1)
        _check_bool("LSTMSpec", "bidirectional", self.bidirectional)
        _check_int("LSTMSpec", "proj_size", self.proj_size, 0)
        if self.proj_size >= self.hidden_size:
            raise SpecError(f"LSTMSpec.proj_size: expected 0 <= proj_size < hidden_size "
                            f"({self.hidden_size}), got {self.proj_size}")
        if self.bias not in BIAS_CONVENTIONS:
            raise SpecError(f"LSTMSpec.bias: expected one of {', '.join(BIAS_CONVENTIONS)}, "
                            f"got {self.bias!r}")
        _check_bool("LSTMSpec", "peephole", self.peephole)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:
        """P: the size of h (hidden_size, or proj_size with a projection)."""
        return self.proj_size or self.hidden_size

    @property
    def output_size(self) -> int:
        """Features of the stack's output y per time step: D * P."""
        return self.num_directions * self.out_size

    def layer_input_size(self, layer: int) -> int:
        """E_l: input_size for layer 0, D * P above it."""
        if not 0 <= layer < self.num_layers:
            raise SpecError(f"layer: expected 0 <= layer < {self.num_layers}, got {layer}")
        return self.input_size if layer == 0 else self.output_size


@dataclass(frozen=True)
class EmbeddingSpec:
    vocab_size: int
    embedding_dim: int

    def __post_init__(self) -> None:
        _check_int("EmbeddingSpec", "vocab_size", self.vocab_size, 1)
        _check_int("EmbeddingSpec", "embedding_dim", self.embedding_dim, 1)


@dataclass(frozen=True)
class DenseSpec:
    """A dense head on the last stack's output. every_step: applied at each time step
    (a sequence-to-sequence head) rather than once per sequence (a classifier)."""

    out_features: int
    bias: bool = True
    every_step: bool = True

    def __post_init__(self) -> None:
        _check_int("DenseSpec", "out_features", self.out_features, 1)
        _check_bool("DenseSpec", "bias", self.bias)
        _check_bool("DenseSpec", "every_step", self.every_step)


@dataclass(frozen=True)
class ModelSpec:
    """LSTM stacks with what surrounds them.

    topology "sequential": each stack feeds the next, so stack k+1's input_size must be
    stack k's output size. "encoder_decoder": exactly two stacks that both read the
    embedding (or the model input); the head reads the decoder (the second stack).
    """

    stacks: Tuple[LSTMSpec, ...]
    embedding: EmbeddingSpec | None = None
    head: DenseSpec | None = None
    topology: str = "sequential"

    def __post_init__(self) -> None:
        stacks = tuple(self.stacks) if isinstance(self.stacks, (list, tuple)) else (self.stacks,)
        object.__setattr__(self, "stacks", stacks)
        if not stacks:
            raise SpecError("ModelSpec.stacks: expected one or more LSTMSpec, got none")
        for k, s in enumerate(stacks):
            if not isinstance(s, LSTMSpec):
                raise SpecError(f"ModelSpec.stacks[{k}]: expected an LSTMSpec, got {type(s).__name__}")
        if self.topology not in ("sequential", "encoder_decoder"):
            raise SpecError(f"ModelSpec.topology: expected 'sequential' or 'encoder_decoder', "
                            f"got {self.topology!r}")
        if self.embedding is not None and not isinstance(self.embedding, EmbeddingSpec):
            raise SpecError(f"ModelSpec.embedding: expected an EmbeddingSpec or None, "
                            f"got {type(self.embedding).__name__}")
        if self.head is not None and not isinstance(self.head, DenseSpec):
            raise SpecError(f"ModelSpec.head: expected a DenseSpec or None, got {type(self.head).__name__}")
        readers = stacks[:1] if self.topology == "sequential" else stacks
        if self.topology == "encoder_decoder" and len(stacks) != 2:
            raise SpecError(f"ModelSpec.stacks: an encoder_decoder takes exactly 2 stacks, got {len(stacks)}")
        if self.embedding is not None:
            for k, s in enumerate(readers):
                if s.input_size != self.embedding.embedding_dim:
                    raise SpecError(f"ModelSpec.stacks[{k}].input_size: expected the embedding_dim "
                                    f"{self.embedding.embedding_dim}, got {s.input_size}")
        if self.topology == "sequential":
            for k in range(1, len(stacks)):
                if stacks[k].input_size != stacks[k - 1].output_size:
                    raise SpecError(f"ModelSpec.stacks[{k}].input_size: expected stack {k - 1}'s output "
                                    f"size {stacks[k - 1].output_size}, got {stacks[k].input_size}")

    @classmethod
    def of(cls, spec: "LSTMSpec | ModelSpec") -> "ModelSpec":
        """A ModelSpec for either kind of spec (a bare stack becomes a one-stack model)."""
        if isinstance(spec, ModelSpec):
            return spec
        if isinstance(spec, LSTMSpec):
            return cls(stacks=(spec,))
        raise SpecError(f"spec: expected an LSTMSpec or ModelSpec, got {type(spec).__name__}")

    @property
    def head_in_features(self) -> int:
        return self.stacks[-1].output_size
