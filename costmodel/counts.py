"""Exact counts of an LSTM: parameters, weight bytes, MACs, FLOPs and bytes moved.

Every formula lives here once. The per-layer terms are written with arithmetic
operators only, so the same functions serve the scalar path (Python ints: no
overflow, a breakdown per layer and direction) and the vectorized path (NumPy
arrays of configurations at once, see `count_grid`).

Counting convention (edgelstm's; per time step, per layer and direction, per batch
element, E_l the layer's input size, P = proj_size or H):

    gate MACs          4H*E_l + 4H*P
    projection MACs    P*H
    peephole MACs      3H
    matmul FLOPs       2 x MACs
    elementwise FLOPs  4H (input + recurrent sum) + 4H (bias, pre-summed; 0 without bias)
                       + 3H (cell update) + H (output product)
    transcendentals    3H sigmoid + 2H tanh, reported apart from FLOPs
"""
from __future__ import annotations

from dataclasses import dataclass, asdict, replace
from typing import Dict, Tuple

import numpy as np

from edgelstm.spec import DenseSpec, EmbeddingSpec, LSTMSpec, ModelSpec, SpecError

# Storage of one weight element, in bits.
WEIGHT_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "int8": 8, "int4": 4}
DTYPES = tuple(WEIGHT_BITS)
QUANTIZED = ("int8", "int4")
# Quantized weights: one float32 scale per output row of each matrix (per-channel
# quantization), and biases and peepholes kept in int32 (TFLite's convention).
SCALE_BYTES = 4
QUANT_VECTOR_BYTES = 4
# Activations (x, h) and the cell state c, in bytes per element. Quantized models keep
# x and h in int8 and c in int16 (TFLite's integer LSTM).
ACT_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 1}
CELL_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 2, "int4": 2}
# Gate pre-activations written by the hoisted input GEMM and read by the step
# (int32 accumulators for quantized models).
GATE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 4, "int4": 4}

CONVENTIONS = ("edgelstm", "thop", "ptflops", "torchinfo")
# A stack with more layer-direction rows than this is listed with its layers above the
# first merged into one row per direction (`repeat`): they are identical, so count() is
# closed-form in num_layers (LSTMSpec(.., num_layers=10**9) counts as fast as 2 layers).
MAX_LAYER_ROWS = 4096
TRAFFIC_CASES = ("streamed", "streamed_hoisted", "resident", "resident_hoisted")


class CountError(ValueError):
    """Bad arguments to count()."""


def check_dtype(dtype) -> str:
    if dtype not in WEIGHT_BITS:
        raise CountError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def _check_positive(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CountError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


# -- per-layer terms (int or ndarray) ---------------------------------------------------
def _bias_vectors(bias: str) -> int:
    return {"pytorch": 2, "keras": 1, "none": 0}[bias]


def lstm_layer_params(E, H, P, proj, bias_vectors, peephole):
    """Parameters of one layer and direction, by kind. proj, peephole: 0/1 (or arrays)."""
    return {
        "input_weights": 4 * H * E,
        "recurrent_weights": 4 * H * P,
        "biases": bias_vectors * 4 * H,
        "projection": proj * P * H,
        "peepholes": peephole * 3 * H,
    }


def matrix_bytes(rows, cols, dtype: str):
    """Bytes of a rows x cols weight matrix, with per-row scales when quantized."""
    bits = WEIGHT_BITS[dtype]
    data = (rows * cols * bits + 7) // 8
    return data + (rows * SCALE_BYTES if dtype in QUANTIZED else 0)


def vector_bytes(n, dtype: str):
    return n * (QUANT_VECTOR_BYTES if dtype in QUANTIZED else WEIGHT_BITS[dtype] // 8)


def lstm_layer_weight_bytes(E, H, P, proj, bias_vectors, peephole, dtype):
    """(input-side bytes, recurrent-side bytes): w_ih, and everything the step reads."""
    input_side = matrix_bytes(4 * H, E, dtype)
    recurrent = (matrix_bytes(4 * H, P, dtype) + proj * matrix_bytes(P, H, dtype)
                 + vector_bytes(bias_vectors * 4 * H + peephole * 3 * H, dtype))
    return input_side, recurrent


def lstm_layer_macs(E, H, P, proj, peephole):
    return 4 * H * E + 4 * H * P + proj * P * H + peephole * 3 * H


def lstm_layer_flops(E, H, P, proj, has_bias, peephole):
    elementwise = 4 * H + has_bias * 4 * H + 3 * H + H
    return 2 * lstm_layer_macs(E, H, P, proj, peephole) + elementwise


def lstm_layer_transcendentals(H):
    return 5 * H


def lstm_layer_activation_bytes(E, H, P, dtype):
    """Per step and batch element: read x_t, h and c; write h (= y_t) and c."""
    a, c = ACT_BYTES[dtype], CELL_BYTES[dtype]
    return E * a + 2 * P * a + 2 * H * c


def lstm_layer_training_bytes(E, H, P, proj, dtype):
    """What backpropagation through time keeps per step and batch element: the four gate
    activations, c_t and tanh(c_t), h before the projection (with one), and h_t."""
    return (4 * H + 2 * H + proj * H) * ACT_BYTES[dtype] + P * ACT_BYTES[dtype]


# -- other tools' conventions (MACs per step and batch element, one layer, both directions)
def convention_layer_macs(convention, spec: LSTMSpec, layer: int) -> int:
    H, D, P = spec.hidden_size, spec.num_directions, spec.out_size
    E = spec.layer_input_size(layer)
    has_bias = spec.bias != "none"
    if convention == "thop":
        # thop: 4 * ((E+H)*H + H [+ 2H bias]) + 4H per cell; it never sees proj_size, so
        # layers above the first take D*H inputs and the recurrent product is H x H.
        E_thop = spec.input_size if layer == 0 else D * H
        cell = 4 * ((E_thop + H) * H + H + (2 * H if has_bias else 0)) + 4 * H
        return D * cell
    if convention == "ptflops":
        # ptflops: numel(w_ih) + numel(w_hh) + 4H + 3H + 3H [+ numel(b_ih) + numel(b_hh)],
        # from the real weight shapes, so proj_size shapes w_hh but w_hr is never counted.
        per = 4 * H * E + 4 * H * P + 10 * H + (8 * H if has_bias else 0)
        return D * per
    if convention == "torchinfo":
        # torchinfo: every parameter of the module counts as one MAC per step and batch row.
        p = lstm_layer_params(E, H, P, int(bool(spec.proj_size)), _bias_vectors(spec.bias), int(spec.peephole))
        return D * sum(p.values())
    raise CountError(f"convention: expected one of {', '.join(CONVENTIONS)}, got {convention!r}")


# -- results ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerCounts:
    """One row of the breakdown: an LSTM layer and direction, the embedding, or the head.
    Per-step figures are for the whole batch. repeat: how many identical layer-direction
    rows this row stands for (1, except the merged rows of a stack above MAX_LAYER_ROWS);
    its figures are for one of them, totals multiply by repeat."""

    name: str
    kind: str  # "lstm", "embedding", "dense"
    params: Dict[str, int]
    weight_bytes: int
    macs_per_step: int
    flops_per_step: int
    transcendentals_per_step: int
    stack: int = 0
    layer: int = 0
    direction: int = 0
    input_size: int = 0
    hidden_size: int = 0
    out_size: int = 0
    input_weight_bytes: int = 0   # the part of weight_bytes a hoisted GEMM reads once
    state_bytes: int = 0
    activation_bytes_per_step: int = 0
    gate_buffer_bytes_per_step: int = 0
    training_bytes_per_step: int = 0
    every_step: bool = True
    repeat: int = 1

    @property
    def params_total(self) -> int:
        return sum(self.params.values())


@dataclass(frozen=True)
class Traffic:
    """Bytes moved per step for one placement of the weights.

    streamed: every weight is fetched from off-chip memory every step. resident: weights
    stay on chip and are fetched once per sequence. hoisted: the input projection of all
    steps is one GEMM, so w_ih is read once per sequence and the gate pre-activations
    are written and read back once per step."""

    case: str
    weight_bytes_per_step: int
    activation_bytes_per_step: int
    bytes_per_step: int
    bytes_per_sequence: int
    flops_per_byte: float


@dataclass(frozen=True)
class Counts:
    spec: object
    batch: int
    seq_len: int
    dtype: str
    convention: str
    layers: Tuple[LayerCounts, ...]
    params_by_kind: Dict[str, int]
    weight_bytes: int
    weight_bytes_by_dtype: Dict[str, int]
    scale_bytes: int
    state_bytes: int
    training_activation_bytes_per_step: int
    macs_per_step: int
    flops_per_step: int
    transcendentals_per_step: int
    traffic: Dict[str, Traffic]
    macs_per_sequence: int
    flops_per_sequence: int
    training_macs_per_sequence: int

    @property
    def params(self) -> int:
        return sum(self.params_by_kind.values())

    @property
    def bytes_per_step(self) -> int:
        """Default traffic case: weights streamed every step, input projection not hoisted."""
        return self.traffic["streamed"].bytes_per_step

    @property
    def bytes_per_sequence(self) -> int:
        return self.traffic["streamed"].bytes_per_sequence

    @property
    def flops_per_byte(self) -> float:
        return self.traffic["streamed"].flops_per_byte

    @property
    def int8_ops(self) -> "Int8LSTMCounts":
        """The integer work and RAM of TFLM's int8 LSTM kernel for this spec (count_int8_lstm)."""
        return count_int8_lstm(self.spec, batch=self.batch, seq_len=self.seq_len)

    def to_dict(self) -> dict:
        """A stable, JSON-ready object."""
        return {
            "spec": _spec_dict(self.spec),
            "batch": self.batch, "seq_len": self.seq_len, "dtype": self.dtype,
            "convention": self.convention,
            "params": self.params, "params_by_kind": dict(self.params_by_kind),
            "weight_bytes": self.weight_bytes, "weight_bytes_by_dtype": dict(self.weight_bytes_by_dtype),
            "scale_bytes": self.scale_bytes, "state_bytes": self.state_bytes,
            "training_activation_bytes_per_step": self.training_activation_bytes_per_step,
            "macs_per_step": self.macs_per_step, "flops_per_step": self.flops_per_step,
            "transcendentals_per_step": self.transcendentals_per_step,
            "bytes_per_step": self.bytes_per_step, "flops_per_byte": self.flops_per_byte,
            "macs_per_sequence": self.macs_per_sequence, "flops_per_sequence": self.flops_per_sequence,
            "bytes_per_sequence": self.bytes_per_sequence,
            "training_macs_per_sequence": self.training_macs_per_sequence,
            "traffic": {k: asdict(v) for k, v in self.traffic.items()},
            "layers": [dict(asdict(l), params_total=l.params_total) for l in self.layers],
        }


def _spec_dict(spec) -> dict:
    if isinstance(spec, LSTMSpec):
        return asdict(spec)
    return {"stacks": [asdict(s) for s in spec.stacks],
            "embedding": asdict(spec.embedding) if spec.embedding else None,
            "head": asdict(spec.head) if spec.head else None,
            "topology": spec.topology}


# -- the scalar path ----------------------------------------------------------------------
def _lstm_rows(spec: LSTMSpec, stack: int, B: int, dtype: str, convention: str):
    H, P, D, L = spec.hidden_size, spec.out_size, spec.num_directions, spec.num_layers
    proj, peep, nb = int(bool(spec.proj_size)), int(spec.peephole), _bias_vectors(spec.bias)
    has_bias = int(nb > 0)
    merged = L * D > MAX_LAYER_ROWS
    above = []                       # layer 1's rows: every layer above the first is the same
    for l in range(min(L, 2)):
        E = spec.layer_input_size(l)
        tool_macs = None if convention == "edgelstm" else convention_layer_macs(convention, spec, l)
        for d in range(D):
            params = lstm_layer_params(E, H, P, proj, nb, peep)
            w_in, w_rec = lstm_layer_weight_bytes(E, H, P, proj, nb, peep, dtype)
            if tool_macs is None:
                macs = lstm_layer_macs(E, H, P, proj, peep)
                flops = lstm_layer_flops(E, H, P, proj, has_bias, peep)
            else:  # the tool's number for the layer, split evenly over its directions
                macs = tool_macs // D
                flops = 2 * macs
            row = LayerCounts(
                name=f"lstm{stack}.layer{l}" + (".reverse" if d else ""),
                kind="lstm", params=params, weight_bytes=w_in + w_rec,
                macs_per_step=B * macs, flops_per_step=B * flops,
                transcendentals_per_step=B * lstm_layer_transcendentals(H),
                stack=stack, layer=l, direction=d, input_size=E, hidden_size=H, out_size=P,
                input_weight_bytes=w_in,
                state_bytes=B * (P * ACT_BYTES[dtype] + H * CELL_BYTES[dtype]),
                activation_bytes_per_step=B * lstm_layer_activation_bytes(E, H, P, dtype),
                gate_buffer_bytes_per_step=B * 2 * 4 * H * GATE_BYTES[dtype],
                training_bytes_per_step=B * lstm_layer_training_bytes(E, H, P, proj, dtype),
            )
            if l == 0:
                yield row
            else:
                above.append(row)
    for d, row in enumerate(above):
        if merged:
            yield replace(row, name=f"lstm{stack}.layer1-{L - 1}" + (".reverse" if d else ""), repeat=L - 1)
    if not merged:
        for l in range(1, L):
            for d, row in enumerate(above):
                yield replace(row, name=f"lstm{stack}.layer{l}" + (".reverse" if d else ""), layer=l)


def _embedding_row(emb: EmbeddingSpec, B: int, dtype: str) -> LayerCounts:
    # A lookup: no arithmetic; each step reads one row per batch element.
    row_bytes = matrix_bytes(1, emb.embedding_dim, dtype)
    return LayerCounts(
        name="embedding", kind="embedding",
        params={"embedding": emb.vocab_size * emb.embedding_dim},
        weight_bytes=matrix_bytes(emb.vocab_size, emb.embedding_dim, dtype),
        macs_per_step=0, flops_per_step=0, transcendentals_per_step=0,
        input_size=emb.vocab_size, out_size=emb.embedding_dim,
        activation_bytes_per_step=B * (row_bytes + emb.embedding_dim * ACT_BYTES[dtype]),
    )


def _head_row(head: DenseSpec, n_in: int, B: int, dtype: str) -> LayerCounts:
    n_out = head.out_features
    macs = n_in * n_out
    return LayerCounts(
        name="head", kind="dense",
        params={"head": n_in * n_out + (n_out if head.bias else 0)},
        weight_bytes=matrix_bytes(n_out, n_in, dtype) + (vector_bytes(n_out, dtype) if head.bias else 0),
        macs_per_step=B * macs, flops_per_step=B * (2 * macs + (n_out if head.bias else 0)),
        transcendentals_per_step=0, input_size=n_in, out_size=n_out,
        activation_bytes_per_step=B * (n_in + n_out) * ACT_BYTES[dtype],
        every_step=head.every_step,
    )


def _ratio(a: int, b: int) -> float:
    """a / b as a float; inf when b is 0 or the quotient overflows a float (absurd sizes)."""
    try:
        return a / b if b else float("inf")
    except OverflowError:
        return float("inf")


def _traffic(rows, flops_step: int, T: int) -> Dict[str, Traffic]:
    out = {}
    for case in TRAFFIC_CASES:
        hoisted = case.endswith("hoisted")
        w_step = w_once = acts = once_acts = 0
        for r in rows:
            n = r.repeat
            if r.every_step:
                acts += n * r.activation_bytes_per_step
            else:
                once_acts += n * r.activation_bytes_per_step
            if r.kind == "lstm" and hoisted:
                acts += n * r.gate_buffer_bytes_per_step
            if r.kind == "embedding":
                continue  # a lookup: its gathered rows are counted with the activations
            if case.startswith("resident"):
                w_once += n * r.weight_bytes
            elif r.kind == "lstm" and hoisted:
                w_step += n * (r.weight_bytes - r.input_weight_bytes)
                w_once += n * r.input_weight_bytes
            elif r.every_step:
                w_step += n * r.weight_bytes
            else:
                w_once += n * r.weight_bytes
        step = w_step + acts
        out[case] = Traffic(case=case, weight_bytes_per_step=w_step, activation_bytes_per_step=acts,
                            bytes_per_step=step, bytes_per_sequence=T * step + w_once + once_acts,
                            flops_per_byte=_ratio(flops_step, step))
    return out


def count(spec, batch: int = 1, seq_len: int = 1, dtype: str = "float32",
          convention: str = "edgelstm") -> Counts:
    """Exact counts of an LSTMSpec or ModelSpec for batch B and sequence length T."""
    model = ModelSpec.of(spec)
    B = _check_positive("batch", batch)
    T = _check_positive("seq_len", seq_len)
    check_dtype(dtype)
    if convention not in CONVENTIONS:
        raise CountError(f"convention: expected one of {', '.join(CONVENTIONS)}, got {convention!r}")
    rows = []
    if model.embedding is not None:
        rows.append(_embedding_row(model.embedding, B, dtype))
    for k, s in enumerate(model.stacks):
        rows.extend(_lstm_rows(s, k, B, dtype, convention))
    if model.head is not None:
        rows.append(_head_row(model.head, model.head_in_features, B, dtype))

    by_kind: Dict[str, int] = {}
    for r in rows:
        for kind, n in r.params.items():
            by_kind[kind] = by_kind.get(kind, 0) + r.repeat * n
    step_rows = [r for r in rows if r.every_step]
    once_rows = [r for r in rows if not r.every_step]
    macs_step = sum(r.repeat * r.macs_per_step for r in step_rows)
    flops_step = sum(r.repeat * r.flops_per_step for r in step_rows)
    macs_seq = T * macs_step + sum(r.repeat * r.macs_per_step for r in once_rows)
    flops_seq = T * flops_step + sum(r.repeat * r.flops_per_step for r in once_rows)
    return Counts(
        spec=spec, batch=B, seq_len=T, dtype=dtype, convention=convention, layers=tuple(rows),
        params_by_kind=by_kind,
        weight_bytes=sum(r.repeat * r.weight_bytes for r in rows),
        weight_bytes_by_dtype={dt: count_weight_bytes(model, dt) for dt in DTYPES},
        scale_bytes=_scale_bytes(model, dtype),
        state_bytes=sum(r.repeat * r.state_bytes for r in rows),
        training_activation_bytes_per_step=sum(r.repeat * r.training_bytes_per_step for r in rows),
        macs_per_step=macs_step, flops_per_step=flops_step,
        transcendentals_per_step=sum(r.repeat * r.transcendentals_per_step for r in step_rows),
        traffic=_traffic(rows, flops_step, T),
        macs_per_sequence=macs_seq, flops_per_sequence=flops_seq,
        # Backward does two products per forward product (w.r.t. inputs and weights).
        training_macs_per_sequence=3 * macs_seq,
    )


def count_weight_bytes(spec, dtype: str) -> int:
    model = ModelSpec.of(spec)
    check_dtype(dtype)
    rows = []
    if model.embedding is not None:
        rows.append(_embedding_row(model.embedding, 1, dtype))
    for k, s in enumerate(model.stacks):
        rows.extend(_lstm_rows(s, k, 1, dtype, "edgelstm"))
    if model.head is not None:
        rows.append(_head_row(model.head, model.head_in_features, 1, dtype))
    return sum(r.repeat * r.weight_bytes for r in rows)


def _scale_bytes(model: ModelSpec, dtype: str) -> int:
    """The per-channel scale overhead inside weight_bytes (0 for float dtypes)."""
    if dtype not in QUANTIZED:
        return 0
    rows = 0
    if model.embedding is not None:
        rows += model.embedding.vocab_size
    for s in model.stacks:
        per_dir = 8 * s.hidden_size + (s.out_size if s.proj_size else 0)
        rows += s.num_layers * s.num_directions * per_dir
    if model.head is not None:
        rows += model.head.out_features
    return rows * SCALE_BYTES


# -- the vectorized path -----------------------------------------------------------------
def count_grid(input_size, hidden_size, num_layers=1, bidirectional=False, proj_size=0,
               bias="pytorch", peephole=False, batch=1, dtype="float32") -> Dict[str, np.ndarray]:
    """Counts of many single-stack configurations at once (NumPy broadcasting, int64).

    Returns params, weight_bytes, macs_per_step, flops_per_step and
    transcendentals_per_step (per step, for the batch), each an int64 array of the
    broadcast shape. Same formulas as count(); int64 holds up to 9.2e18, checked.
    """
    check_dtype(dtype)
    if bias not in ("pytorch", "keras", "none"):
        raise SpecError(f"bias: expected one of pytorch, keras, none, got {bias!r}")
    E, H, L, Dm, Pj, B = np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in (
        input_size, hidden_size, num_layers, bidirectional, proj_size, batch)))
    for name, a, lo in (("input_size", E, 1), ("hidden_size", H, 1), ("num_layers", L, 1),
                        ("proj_size", Pj, 0), ("batch", B, 1)):
        if a.size and a.min() < lo:
            raise SpecError(f"{name}: expected integers >= {lo}, got a minimum of {a.min()}")
    if Pj.size and (Pj >= H).any():
        raise SpecError("proj_size: expected 0 <= proj_size < hidden_size everywhere")
    if E.size and max(E.max(), H.max()) > 10**8:
        raise SpecError("count_grid: sizes above 1e8 could overflow int64; use count()")
    D = Dm.astype(bool).astype(np.int64) + 1
    proj = (Pj > 0).astype(np.int64)
    P = np.where(proj == 1, Pj, H)
    nb, peep = _bias_vectors(bias), int(bool(peephole))
    E_up = D * P

    def stack(f):  # layer 0 reads E, the L-1 layers above read D*P; D directions each
        return D * (f(E) + (L - 1) * f(E_up))

    params = stack(lambda e: sum(lstm_layer_params(e, H, P, proj, nb, peep).values()))
    wbytes = stack(lambda e: sum(lstm_layer_weight_bytes(e, H, P, proj, nb, peep, dtype)))
    macs = stack(lambda e: lstm_layer_macs(e, H, P, proj, peep))
    flops = stack(lambda e: lstm_layer_flops(e, H, P, proj, int(nb > 0), peep))
    trans = D * L * lstm_layer_transcendentals(H)
    return {"params": params, "weight_bytes": wbytes, "macs_per_step": B * macs,
            "flops_per_step": B * flops, "transcendentals_per_step": B * trans}


# -- int8 LSTMs as TFLM runs them (kernels/int8.py): integer operations and arena bytes -----------
@dataclass(frozen=True)
class Int8LSTMCounts:
    """Integer work and RAM of the unidirectional LSTM layers of a spec, run as TFLM's int8 kernel.

    Per sequence (all T steps, B rows, all layers): macs (int8 x int8 into int32), requantizations
    (MultiplyByQuantizedMultiplier calls: 4H input-side + 4H recurrent gate results, then f*c, i*g
    and o*tanh(c)), lut_lookups (the int16 sigmoid/tanh table evaluations: 3H sigmoid + 2H tanh),
    saturating_adds (4H gate sums + H cell sums) and elementwise_muls (3H).
    RAM, bytes: state_bytes (h int8 + c int16 per layer: TFLM's variable tensors), scratch_bytes
    (TFLM's 4 int16 gate buffers of B x H, the largest layer's), io_bytes (the int8 input sequence
    and every layer's int8 output sequence, which TFLM keeps as tensors).
    """

    macs: int
    requantizations: int
    lut_lookups: int
    saturating_adds: int
    elementwise_muls: int
    state_bytes: int
    scratch_bytes: int
    io_bytes: int


def count_int8_lstm(spec, batch: int = 1, seq_len: int = 1) -> Int8LSTMCounts:
    """Int8LSTMCounts of the LSTM stacks of an LSTMSpec or ModelSpec (unidirectional, no projection)."""
    model = ModelSpec.of(spec)
    B = _check_positive("batch", batch)
    T = _check_positive("seq_len", seq_len)
    n = dict(macs=0, requantizations=0, lut_lookups=0, saturating_adds=0, elementwise_muls=0)
    state = scratch = 0
    io = T * B * model.stacks[0].input_size
    for s in model.stacks:
        if s.bidirectional or s.proj_size or s.peephole:
            raise CountError(f"spec: TFLM's int8 LSTM is unidirectional without projection or peepholes, got {s}")
        for l in range(s.num_layers):
            E, H = s.layer_input_size(l), s.hidden_size
            steps = T * B
            n["macs"] += steps * 4 * H * (E + H)
            n["requantizations"] += steps * 11 * H
            n["lut_lookups"] += steps * 5 * H
            n["saturating_adds"] += steps * 5 * H
            n["elementwise_muls"] += steps * 3 * H
            state += B * H * (1 + 2)
            scratch = max(scratch, 4 * B * H * 2)
            io += T * B * H
    return Int8LSTMCounts(**n, state_bytes=state, scratch_bytes=scratch, io_bytes=io)
