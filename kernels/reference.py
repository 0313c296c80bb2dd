"""The float64 NumPy reference LSTM: DESIGN.md's equations verbatim, slow and obviously right.

Every other kernel (Numba CPU, numba.cuda) is tested against `lstm_reference`.

Shapes: x is (T, B, E), time-major. Per layer l and direction d the canonical tensors
are w_ih (4H, E_l), w_hh (4H, P), b_ih/b_hh (4H,) or None, w_hr (P, H) or None,
peep (3, H) or None (p_i, p_f, p_o); gate order i, f, g, o.

Semantics are torch.nn.LSTM's (with ONNX peepholes added):
- y is (T, B, D*P): the last layer's h at every step, forward then reverse halves.
- h_n is (L*D, B, P) and c_n is (L*D, B, H), indexed layer * D + direction.
- `lengths` (B,) gives packed-sequence semantics: a sequence b only has steps
  t < lengths[b]; y is zero past its end; its final state is the state after its last
  valid step; the reverse direction starts at t = lengths[b] - 1 from h0/c0.

No input validation here beyond what NumPy does: callers pass well-formed input.
"""
from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^-z), evaluated without overflow for any |z|."""
    e = np.exp(-np.abs(z))                  # in (0, 1]: never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def lstm_cell_reference(x_t, h, c, lw):
    """One LSTM step for all batch rows. x_t (B, E_l), h (B, P), c (B, H) -> (h', c').

    lw is a LayerWeights in float64.
    """
    H = lw.w_hh.shape[0] // 4
    z = x_t @ lw.w_ih.T + h @ lw.w_hh.T     # (B, 4H): W x + U h
    if lw.b_ih is not None:
        z = z + lw.b_ih                     # input bias (the only bias for "keras")
    if lw.b_hh is not None:
        z = z + lw.b_hh                     # recurrent bias ("pytorch")
    z_i, z_f, z_g, z_o = z[:, 0:H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:4 * H]
    if lw.peep is not None:
        z_i = z_i + lw.peep[0] * c          # p_i ⊙ c_{t-1} enters the input gate
        z_f = z_f + lw.peep[1] * c          # p_f ⊙ c_{t-1} enters the forget gate
    i = sigmoid(z_i)                        # input gate
    f = sigmoid(z_f)                        # forget gate
    g = np.tanh(z_g)                        # candidate cell
    c_new = f * c + i * g                   # c' = f ⊙ c + i ⊙ g
    if lw.peep is not None:
        z_o = z_o + lw.peep[2] * c_new      # p_o ⊙ c_t enters the output gate (after c' exists)
    o = sigmoid(z_o)                        # output gate
    h_new = o * np.tanh(c_new)              # h' = o ⊙ tanh(c')
    if lw.w_hr is not None:
        h_new = h_new @ lw.w_hr.T           # projection: h' = W_hr h', (B, H) -> (B, P)
    return h_new, c_new


def _layer64(lw):
    """A copy of one layer's tensors in float64 (None stays None)."""
    from edgelstm.weights import LayerWeights
    conv = {k: (None if getattr(lw, k) is None else np.asarray(getattr(lw, k), dtype=np.float64))
            for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "peep")}
    return LayerWeights(**conv)


def lstm_reference(x, weights, h0=None, c0=None, lengths=None):
    """Run the stack in float64. Returns (y (T,B,D*P), (h_n (L*D,B,P), c_n (L*D,B,H)))."""
    spec = weights.spec
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    L, D, H, P = spec.num_layers, spec.num_directions, spec.hidden_size, spec.out_size
    h0 = np.zeros((L * D, B, P)) if h0 is None else np.asarray(h0, dtype=np.float64)
    c0 = np.zeros((L * D, B, H)) if c0 is None else np.asarray(c0, dtype=np.float64)
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths).astype(np.int64)

    h_n = np.zeros((L * D, B, P))
    c_n = np.zeros((L * D, B, H))
    layer_in = x                                             # (T, B, E_l)
    for l in range(L):
        y = np.zeros((T, B, D * P))                          # this layer's output, zero past each end
        for d in range(D):
            lw = _layer64(weights.layers[l][d])
            h = h0[l * D + d].copy()                         # (B, P)
            c = c0[l * D + d].copy()                         # (B, H)
            steps = range(T) if d == 0 else range(T - 1, -1, -1)
            for t in steps:
                valid = t < lengths                          # (B,) rows that have step t
                h_new, c_new = lstm_cell_reference(layer_in[t], h, c, lw)
                # Rows past their end keep their state; the reverse direction therefore
                # starts from h0/c0 at each row's own last valid step.
                h = np.where(valid[:, None], h_new, h)
                c = np.where(valid[:, None], c_new, c)
                y[t, :, d * P:(d + 1) * P] = np.where(valid[:, None], h, 0.0)
            h_n[l * D + d] = h                               # state after each row's last valid step
            c_n[l * D + d] = c
        layer_in = y                                         # the next layer reads both directions
    return layer_in, (h_n, c_n)
