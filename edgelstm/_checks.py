"""Input validation for the LSTM kernels: the one place shapes and dtypes are checked.

Numba does not check bounds, so a bad shape must never reach a JIT function. Every check
here reads only `.shape`, `.ndim` and `.dtype`, so a CUDA device array is validated
without copying it to the host (only `lengths`, B small integers, is read by value).
Converting to contiguous NumPy arrays happens after validation, in the CPU path.

Errors are `InputError` (a ValueError) or `InputTypeError` (a TypeError); each message
names the argument, what was expected and what was given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .weights import LSTMWeights

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class InputError(ValueError):
    """An argument has the wrong shape or value."""


class InputTypeError(TypeError):
    """An argument has the wrong type or dtype."""


@dataclass(frozen=True)
class Checked:
    """What validation learned: sizes in time-major terms and the compute dtype."""
    seq_len: int        # T
    batch: int          # B
    dtype: np.dtype     # x's dtype: float32 or float64; weights and states use it
    lengths: np.ndarray | None   # (B,) int64 in 1..T, or None for full length


def _shape_of(name: str, a):
    shape = getattr(a, "shape", None)
    if shape is None:
        raise InputTypeError(f"{name}: expected an array with .shape and .dtype "
                             f"(NumPy or a device array), got {type(a).__name__}")
    return tuple(int(s) for s in shape)


def _float_dtype(name: str, a) -> np.dtype:
    try:
        dt = np.dtype(a.dtype)
    except (TypeError, AttributeError):
        raise InputTypeError(f"{name}: expected dtype float32 or float64, got "
                             f"{getattr(a, 'dtype', type(a).__name__)}") from None
    if dt not in FLOAT_DTYPES:
        raise InputTypeError(f"{name}: expected dtype float32 or float64, got {dt}")
    return dt


def check_weights(weights) -> None:
    if not isinstance(weights, LSTMWeights):
        raise InputTypeError(f"weights: expected an edgelstm.LSTMWeights, got {type(weights).__name__}")


def check_state(name: str, a, expected_shape, dtype: np.dtype, what: str) -> None:
    """h0/c0 (or a stream's h/c): exact shape, and the same float dtype as x."""
    shape = _shape_of(name, a)
    if shape != tuple(expected_shape):
        raise InputError(f"{name}: expected shape {tuple(expected_shape)} ({what}), got {shape}")
    dt = _float_dtype(name, a)
    if dt != dtype:
        raise InputTypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {dt}")


def check_lengths(lengths, batch: int, seq_len: int) -> np.ndarray | None:
    """lengths: B integers in 1..T (packed-sequence semantics), returned as int64."""
    if lengths is None:
        return None
    if hasattr(lengths, "copy_to_host"):            # a numba.cuda device array: B values
        lengths = lengths.copy_to_host()
    elif hasattr(lengths, "detach") and hasattr(lengths, "cpu"):   # a torch tensor
        lengths = lengths.detach().cpu().numpy()
    arr = np.asarray(lengths)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InputTypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise InputError(f"lengths: expected shape ({batch},) (one length per batch row), got {arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 1 or hi > seq_len:
        bad = arr[(arr < 1) | (arr > seq_len)]
        raise InputError(f"lengths: expected every value in 1..{seq_len} (1..T), got {bad.tolist()[:5]}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_lstm_inputs(x, weights, h0=None, c0=None, lengths=None, batch_first=False) -> Checked:
    """Validate the arguments of `edgelstm.lstm` (any device). Raises InputError/InputTypeError."""
    check_weights(weights)
    if not isinstance(batch_first, (bool, np.bool_)):
        raise InputTypeError(f"batch_first: expected True or False, got {batch_first!r}")
    spec = weights.spec
    shape = _shape_of("x", x)
    layout = "(B, T, E)" if batch_first else "(T, B, E)"
    if len(shape) != 3:
        raise InputError(f"x: expected a 3-d array {layout}, got {len(shape)}-d with shape {shape}")
    dtype = _float_dtype("x", x)
    B, T = (shape[0], shape[1]) if batch_first else (shape[1], shape[0])
    if T < 1 or B < 1:
        raise InputError(f"x: expected at least one time step and one batch row {layout}, got shape {shape}")
    if shape[2] != spec.input_size:
        raise InputError(f"x: expected last dimension E = input_size = {spec.input_size}, "
                         f"got shape {shape}")
    LD = spec.num_layers * spec.num_directions
    if h0 is not None:
        check_state("h0", h0, (LD, B, spec.out_size), dtype, "num_layers*num_directions, B, P")
    if c0 is not None:
        check_state("c0", c0, (LD, B, spec.hidden_size), dtype, "num_layers*num_directions, B, H")
    return Checked(seq_len=T, batch=B, dtype=dtype, lengths=check_lengths(lengths, B, T))


def check_step_input(x_t, input_size: int, batch: int) -> np.dtype:
    """A streaming step's input: (B, E), or (E,) when B == 1."""
    shape = _shape_of("x_t", x_t)
    ok = shape == (batch, input_size) or (batch == 1 and shape == (input_size,))
    if not ok:
        alt = f" or ({input_size},)" if batch == 1 else ""
        raise InputError(f"x_t: expected shape ({batch}, {input_size}){alt} (B, E), got {shape}")
    return _float_dtype("x_t", x_t)


def check_step_out(out, expected_shape, dtype: np.dtype) -> None:
    """A caller's buffer for LSTMStream.step(out=): a writeable ndarray of h_t's shape and dtype."""
    if not isinstance(out, np.ndarray):
        raise InputTypeError(f"out: expected a numpy array {expected_shape} of {dtype}, got {type(out).__name__}")
    if out.shape != tuple(expected_shape):
        raise InputError(f"out: expected shape {tuple(expected_shape)}, got {out.shape}")
    if out.dtype != dtype:
        raise InputTypeError(f"out: expected dtype {dtype} (the stream's), got {out.dtype}")
    if not out.flags.writeable:
        raise InputError("out: expected a writeable array, got a read-only one")
