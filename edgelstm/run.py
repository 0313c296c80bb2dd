"""The public way to run an LSTM: `lstm(x, weights)` for whole sequences, `LSTMStream` for
one step at a time. Both validate their input in edgelstm._checks before any JIT code runs.

NaN in the input, the state or the weights propagates to the outputs (the kernels use no
fastmath flag that would let the compiler assume finite values); it is not reported.
"""
from __future__ import annotations

import numpy as np

from . import _checks
from ._checks import InputError, InputTypeError

DEVICES = ("cpu", "cuda")


class DeviceError(ValueError):
    """An unknown device, or a device whose support is not installed here."""


def _check_device(device) -> str:
    if device not in DEVICES:
        raise DeviceError(f"device: expected one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    return device


def _cuda_module():
    try:
        from .kernels import cuda
    except Exception as exc:   # numba.cuda missing, no driver, no GPU, or kernels/cuda.py absent
        raise DeviceError(f"device='cuda': the CUDA kernels could not be loaded ({type(exc).__name__}: "
                          f"{exc}); they need numba-cuda (pip install 'edgelstm[cuda]') and an "
                          f"NVIDIA GPU with its driver, or NUMBA_ENABLE_CUDASIM=1 for the "
                          f"simulator") from exc
    return cuda


_lstm_cpu = None   # kernels.cpu.lstm_cpu, imported on first use (an import statement per call cost 0.5 µs)


def _cpu_kernel():
    global _lstm_cpu
    from .kernels.cpu import lstm_cpu
    _lstm_cpu = lstm_cpu
    return lstm_cpu


def weights_as(weights, dtype):
    """weights in `dtype`, cast once and cached on the original weights object."""
    dtype = np.dtype(dtype)
    if dtype == weights.dtype:
        return weights
    return weights.packed(("astype", dtype.name), lambda w: w.astype(dtype))


def lstm(x, weights, h0=None, c0=None, *, lengths=None, batch_first=False, device="cpu"):
    """Run an LSTM stack over whole sequences, with torch.nn.LSTM's shapes and semantics.

    x: (T, B, E), or (B, T, E) with batch_first, float32 or float64. The computation runs
    in x's dtype: weights in another dtype are cast once (cached); h0 (L*D, B, P) and
    c0 (L*D, B, H) must have x's dtype. lengths: (B,) integers in 1..T; outputs past a
    sequence's end are zero and its final state is taken at its last valid step
    (torch's pack_padded_sequence, with enforce_sorted=False). Non-contiguous x is copied once.

    Returns (y, (h_n, c_n)): y (T, B, D*P) (or (B, T, D*P) with batch_first), h_n (L*D, B, P),
    c_n (L*D, B, H), as new arrays.
    """
    _check_device(device)
    if not hasattr(x, "shape") and device == "cpu":
        x = np.asarray(x)
    info = _checks.check_lstm_inputs(x, weights, h0, c0, lengths, batch_first)
    w = weights_as(weights, info.dtype)
    if device == "cuda":
        return _cuda_module().lstm_cuda(x, w, h0, c0, lengths=info.lengths, batch_first=batch_first)
    lstm_cpu = _lstm_cpu or _cpu_kernel()
    xt = np.asarray(x)
    if batch_first:
        xt = xt.transpose(1, 0, 2)
    xt = np.ascontiguousarray(xt)
    y, state = lstm_cpu(xt, w, h0, c0, info.lengths)
    if batch_first:
        y = np.ascontiguousarray(y.transpose(1, 0, 2))
    return y, state


class LSTMStream:
    """Run a unidirectional LSTM stack one time step at a time, keeping its state.

    `step(x_t)` takes x_t (B, E), or (E,) when batch == 1, and returns h_t of the top layer,
    (B, P) or (P,), as a new array (as torch and Keras do: collecting the steps in a list
    keeps every step). `step(x_t, out=buf)` writes h_t into the caller's buffer instead
    and allocates nothing when x_t is C-contiguous in the stream's dtype (the weights'
    dtype): the form for a hot loop. Other input is copied into a preallocated buffer.

    `.h` (L, B, P) and `.c` (L, B, H) are copies of the state; assigning to them validates
    the shape and copies the values in. `reset()` zeroes the state.
    """

    def __init__(self, weights, batch=1, device="cpu"):
        _checks.check_weights(weights)
        _check_device(device)
        spec = weights.spec
        if spec.bidirectional:
            raise InputError(f"weights: expected a unidirectional spec for streaming (the reverse "
                             f"direction needs the whole sequence), got {spec}")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise InputError(f"batch: expected an integer >= 1, got {batch!r}")
        self.weights = weights
        self.batch = int(batch)
        self.device = device
        self.dtype = weights.dtype
        L, H, P, E = spec.num_layers, spec.hidden_size, spec.out_size, spec.input_size
        self._state_shapes = {"h": (L, self.batch, P), "c": (L, self.batch, H)}
        if device == "cuda":
            self._impl = _cuda_module().CudaStream(weights, self.batch)
            return
        self._impl = None
        from .kernels.cpu import pack_stream, stream_step
        self._kernel = stream_step
        self._packed = pack_stream(weights)
        dt = self.dtype
        self._h = np.zeros((L, self.batch, P), dt)
        self._c = np.zeros((L, self.batch, H), dt)
        self._z = np.empty(4 * H, dt)
        self._hf = np.empty(H, dt)           # the epilogue's h before the projection
        self._xbuf = np.empty((self.batch, E), dt)
        self._out = np.zeros((self.batch, P), dt)
        self._out_view = self._out[0] if self.batch == 1 else self._out
        self._xshape = (self.batch, E)
        self._xshape1 = (E,) if self.batch == 1 else None
        # Everything the kernel takes after x, bound once: step() adds no per-call work.
        self._args = (*self._packed, spec.proj_size > 0, spec.peephole, self._h, self._c,
                      self._z, self._hf, self._out)

    def step(self, x_t, out=None):
        """Advance one step; returns the top layer's h_t, a new array, or `out` filled with it."""
        if self._impl is not None:
            return self._impl.step(x_t, out=out)
        # Fast path (no copy): an ndarray already (B, E), C-contiguous, in the stream's dtype.
        if (type(x_t) is np.ndarray and x_t.shape == self._xshape and x_t.dtype == self.dtype
                and x_t.flags.c_contiguous):
            x, h = x_t, self._out
        elif (type(x_t) is np.ndarray and x_t.shape == self._xshape1 and x_t.dtype == self.dtype
                and x_t.flags.c_contiguous):
            x, h = x_t.reshape(self._xshape), self._out_view       # (E,) for batch 1: a view
        else:
            _checks.check_step_input(x_t, self._xshape[1], self.batch)
            self._xbuf[...] = np.reshape(x_t, self._xshape)
            x = self._xbuf
            h = self._out_view if len(x_t.shape) == 1 else self._out
        if out is not None and not (type(out) is np.ndarray and out.shape == h.shape and out.dtype == self.dtype
                                    and out.flags.writeable):
            _checks.check_step_out(out, h.shape, self.dtype)     # raises with what was expected
        self._kernel(x, *self._args)
        if out is None:
            return h.copy()
        np.copyto(out, h)
        return out

    def reset(self):
        """Zero h and c."""
        if self._impl is not None:
            return self._impl.reset()
        self._h[...] = 0
        self._c[...] = 0

    def _set_state(self, name, value):
        shape = self._state_shapes[name]
        what = "num_layers, batch, P" if name == "h" else "num_layers, batch, H"
        _checks.check_state(name, value, shape, self.dtype, what)
        if self._impl is not None:
            setattr(self._impl, name, value)
        else:
            getattr(self, "_" + name)[...] = value

    @property
    def h(self):
        """(L, B, P) hidden state (a copy)."""
        return self._impl.h if self._impl is not None else self._h.copy()

    @h.setter
    def h(self, value):
        self._set_state("h", value)

    @property
    def c(self):
        """(L, B, H) cell state (a copy)."""
        return self._impl.c if self._impl is not None else self._c.copy()

    @c.setter
    def c(self, value):
        self._set_state("c", value)


__all__ = ["lstm", "LSTMStream", "DeviceError", "InputError", "InputTypeError", "weights_as"]
