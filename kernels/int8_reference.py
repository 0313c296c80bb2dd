"""The integer NumPy reference LSTM, as TensorFlow Lite Micro (TFLM) computes it: slow and obviously right.

TFLM's `unidirectional_sequence_lstm.cc` / `lstm_eval.{h,cc}` / `lstm_eval_common.cc` (int8 x int8 -> int16
cell), transcribed operation by operation; CMSIS-NN's `arm_lstm_unidirectional_s8` is bit-exact with it.
The Numba kernel `kernels/int8.py` is tested against `lstm_int8_reference`, and both against the TFLM
interpreter.

The scheme (a `QuantLSTM` holds its numbers):
- x and h: int8, asymmetric (scale, zero point); the LSTM output is h, with h's scale and zero point.
- weights: int8, symmetric, one scale per tensor (8 tensors: 4 gates x input/recurrent).
- biases: int32 with scale s_x * s_w, added on the input side only (TFLM's recurrent product has no bias).
- cell state: int16 with a power-of-two scale 2^p (p = `cell_scale_power`, e.g. -11).
- gate pre-activations: Q3.12 (scale 2^-12) int16; gate outputs: Q0.15 (scale 2^-15) int16.
- every rescale is TFLM's `MultiplyByQuantizedMultiplier` (gemmlowp's doubling high multiply, then a
  rounding right shift) with a (multiplier, shift) from `QuantizeMultiplier`.

Shapes: x is (T, B, E) int8, time-major; h (B, H) int8, c (B, H) int16; per-gate tensors are stacked in
edgelstm's gate order i, f, g, o (TFLM calls g the "cell gate").

Integers are held in int64 NumPy arrays so that no intermediate can wrap; where TFLM narrows (int16
saturation, int8 clamp) the reference does the same, explicitly.

Also here, because a real MCU model has them around its LSTM: the int8 FULLY_CONNECTED, SOFTMAX,
QUANTIZE and DEQUANTIZE of TFLM's reference kernels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT8_MIN, INT8_MAX = -128, 127
GATE_INPUT_SCALE = 2.0 ** -12          # Q3.12: what the gate FCs produce, what sigmoid/tanh read
GATE_OUTPUT_SCALE = 2.0 ** -15         # Q0.15: what sigmoid/tanh produce

# TFLM's `sigmoid_table_uint16` (tensorflow/lite/kernels/internal/common.h): sigmoid(x) * 2^16 at
# x = k / 32 for k = 0..255 (the last entry clamped to 65535); interpolated linearly between entries.
SIGMOID_TABLE_UINT16 = np.array([
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498,
    40149, 40794, 41432, 42064, 42688, 43304, 43912, 44511, 45102, 45683, 46255,
    46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409, 51865,
    52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174,
    56503, 56823, 57133, 57433, 57724, 58007, 58280, 58544, 58800, 59048, 59288,
    59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110, 61279, 61441,
    61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886,
    62990, 63090, 63186, 63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835,
    63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308, 64357, 64405, 64450,
    64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786, 64816, 64845,
    64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079, 65097,
    65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258,
    65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360,
    65367, 65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425,
    65429, 65433, 65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465,
    65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491,
    65493, 65495, 65497, 65498, 65500, 65501, 65503, 65504, 65505, 65507, 65508,
    65509, 65510, 65511, 65512, 65513, 65514, 65515, 65516, 65517, 65517, 65518,
    65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524, 65525,
    65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529,
    65529, 65529, 65530, 65530, 65530, 65530, 65531, 65531, 65531, 65531, 65531,
    65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533, 65533, 65533,
    65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
    65534, 65534, 65535], dtype=np.int64)


class QuantizationError(ValueError):
    """Quantization parameters the integer kernels cannot use (e.g. a cell scale that is not 2^p)."""


# ---------------------------------------------------------------------------------------------
# Fixed-point primitives (TFLM's quantization_util.cc and common.h, double-rounding build)
# ---------------------------------------------------------------------------------------------

def quantize_multiplier(real_multiplier: float):
    """`QuantizeMultiplier`: real = m * 2^(shift - 31), m a Q0.31 int32 in [2^30, 2^31). -> (m, shift)."""
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)        # real = q * 2^shift, q in [0.5, 1)
    q_fixed = int(_round_half_away(q * (1 << 31)))  # TfLiteRound: half away from zero
    if q_fixed == (1 << 31):                      # q rounded up to 1.0: renormalize
        q_fixed //= 2
        shift += 1
    if shift < -31:                               # everything would shift out: flush to zero
        return 0, 0
    if shift > 30:
        raise QuantizationError(f"a requantization scale of {real_multiplier!r} is beyond TFLM's range "
                                f"(2^30): the tensor scales are inconsistent")
    return q_fixed, shift


def _round_half_away(v: float) -> float:
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def _wrap_int32(v: np.ndarray) -> np.ndarray:
    """What a C int32 holds after an overflowing multiply (two's complement wrap)."""
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul: round(a * b / 2^31), saturating INT32_MIN^2."""
    ab = a * np.int64(b)                                        # exact in int64: |a|,|b| <= 2^31
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))           # rounds half away from zero ...
    v = ab + nudge
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))             # ... with C's truncating division
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """TFLM's `MultiplyByQuantizedMultiplier(int32 x, m, shift)` ~ round(x * m * 2^(shift - 31))."""
    left, right = max(shift, 0), max(-shift, 0)
    x = _wrap_int32(np.asarray(x, dtype=np.int64) * (1 << left))  # x * (1 << left) in int32
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), right)


def multiply_by_quantized_multiplier_int64(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """TFLM's `MultiplyByQuantizedMultiplier(int64 x, m, shift)`, used with int64 accumulators (16x8):
    the multiplier reduced to Q0.15, one rounding shift."""
    reduced = ((multiplier + (1 << 15)) >> 16) if multiplier < 0x7FFF0000 else 0x7FFF
    total_shift = 15 - shift
    return (np.asarray(x, dtype=np.int64) * reduced + (1 << (total_shift - 1))) >> total_shift


def saturate(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.minimum(np.maximum(v, lo), hi)


# ---------------------------------------------------------------------------------------------
# Integer sigmoid and tanh (reference_integer_ops::Logistic / ::Tanh, int16 in and out)
# ---------------------------------------------------------------------------------------------

def sigmoid_int16(x: np.ndarray) -> np.ndarray:
    """Q3.12 in, Q0.15 out: TFLM's LUT sigmoid as the LSTM calls it (input_multiplier 0, shift 0)."""
    v = np.asarray(x, dtype=np.int64) * 3               # multiplier 3 << 0: scale by 3/4 ...
    a = np.abs(v)                                       # ... interpolate on |v| (sigmoid(-x) = 1 - sigmoid(x))
    uh = a >> 9                                         # table index: 2^7 per entry x 4 (the 3/4 above)
    ut = a & 0x1FF                                      # 9 fractional bits
    idx = np.minimum(uh, 254)
    ua, ub = SIGMOID_TABLE_UINT16[idx], SIGMOID_TABLE_UINT16[idx + 1]
    r = np.where(uh >= 255, 0x7FFF << 10, (ua << 9) + ut * (ub - ua))   # saturate past the table
    r = np.where(v >= 0, r + (1 << 9), (1 << (16 + 9)) - r + (1 << 9) - 1)  # mirror negatives, round
    return r >> 10                                      # back to 16 bits: Q0.15


def tanh_int16(x: np.ndarray, input_multiplier: int, input_left_shift: int) -> np.ndarray:
    """TFLM's LUT tanh(x) = 2 sigmoid(2x) - 1, int16 in, Q0.15 out.

    (input_multiplier, input_left_shift) as TFLM passes them: (0, s) means "multiply by 3 << s";
    (3, s) means "multiply by 3 and shift right by s, rounding".
    """
    if input_multiplier == 0:
        input_multiplier, input_left_shift = 3 << input_left_shift, 0
    rnd = (1 << (input_left_shift - 1)) if input_left_shift > 0 else 0
    v = (np.asarray(x, dtype=np.int64) * input_multiplier + rnd) >> input_left_shift
    a = np.abs(v)
    uh = a >> 8                                         # one table step per 2^8 (2x of sigmoid's)
    ut = a & 0xFF
    idx = np.minimum(uh, 254)
    ua, ub = SIGMOID_TABLE_UINT16[idx], SIGMOID_TABLE_UINT16[idx + 1]
    r = np.where(uh >= 255, 0xFFFF << 8, (ua << 8) + ut * (ub - ua))
    r = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)  # 2 s - 1, rounded
    return r >> 8                                       # arithmetic shift, as C's on int32


def cell_tanh_args(cell_scale_power: int):
    """(input_multiplier, input_left_shift) TFLM passes to Tanh for a cell state of scale 2^p."""
    shift = 15 + cell_scale_power - 3
    return (3, -shift) if shift < 0 else (0, shift)


# ---------------------------------------------------------------------------------------------
# The quantized LSTM layer and the integer parameters TFLM derives from it (Prepare)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantLSTM:
    """One int8 UNIDIRECTIONAL_SEQUENCE_LSTM layer as stored in a .tflite file.

    w_x (4, H, E) int8 and w_h (4, H, H) int8, gates i, f, g, o; bias (4, H) int32 (int64 for the
    16x8 variant, whose x and h are int16 with zero point 0);
    w_x_scale, w_h_scale (4,) float32 (one scale per tensor, zero point 0);
    x_scale/x_zero_point and h_scale/h_zero_point: the int8 input and hidden state (= output);
    cell_scale: float32, a power of two; cell_clip: float32, 0 for none.
    """

    w_x: np.ndarray
    w_h: np.ndarray
    bias: np.ndarray
    w_x_scale: np.ndarray
    w_h_scale: np.ndarray
    x_scale: float
    x_zero_point: int
    h_scale: float
    h_zero_point: int
    cell_scale: float
    cell_clip: float = 0.0

    @property
    def activation_dtype(self) -> str:
        """"int8", or "int16" for TFLM's 16x8 variant (int16 x and h, int64 bias: `bias.dtype`)."""
        return "int16" if self.bias.dtype == np.int64 else "int8"

    @property
    def input_size(self) -> int:
        return self.w_x.shape[2]

    @property
    def hidden_size(self) -> int:
        return self.w_h.shape[1]

    @property
    def spec(self):
        from ..spec import LSTMSpec
        return LSTMSpec(input_size=self.input_size, hidden_size=self.hidden_size, bias="keras")


@dataclass(frozen=True)
class LSTMRequant:
    """The integers TFLM's Prepare derives from a QuantLSTM's scales (lstm_eval_common.cc)."""

    x_mult: np.ndarray           # (4,) int64: input FC of gate k: s_x * s_wx[k] / 2^-12
    x_shift: np.ndarray          # (4,)
    h_mult: np.ndarray           # (4,) recurrent FC of gate k: s_h * s_wh[k] / 2^-12
    h_shift: np.ndarray
    fc_mult: int                 # forget (Q0.15) x cell (2^p) -> cell: 2^-15
    fc_shift: int
    ig_mult: int                 # input (Q0.15) x cell gate (Q0.15) -> cell: 2^-30 / 2^p
    ig_shift: int
    out_mult: int                # output (Q0.15) x tanh(cell) (Q0.15) -> h: 2^-30 / s_h, plus h's zero point
    out_shift: int
    cell_scale_power: int        # p, cell scale = 2^p
    cell_clip_q: int             # clip in cell units, 0 for none
    x_zero_point: int
    h_zero_point: int


def cell_scale_power(cell_scale: float) -> int:
    """p with cell_scale == 2^p exactly, or QuantizationError (TFLM's CheckedLog2 fails too)."""
    s = float(cell_scale)
    if not (s > 0 and math.isfinite(s)):
        raise QuantizationError(f"cell_scale: expected a positive power of two, got {s!r}")
    m, e = math.frexp(s)
    if m != 0.5:
        raise QuantizationError(f"cell_scale: expected a power of two (TFLM's integer tanh needs 2^p), got {s!r}")
    return e - 1


def lstm_requant(q: QuantLSTM) -> LSTMRequant:
    """TFLM's PrepareGateParametersInteger + CreateLstmCellStateInfo, with its float/double roundings."""
    f32 = np.float32
    x_mult, x_shift, h_mult, h_shift = [], [], [], []
    for k in range(4):
        # GetQuantizedConvolutionMultipler. The source (kernel_util.cc) reads as a float32 product
        # converted to double, but the TFLM interpreter behaves as a double product of the two float32
        # scales: found on a case where the two differ in the 8th digit and a product lands within
        # 1e-7 of a rounding tie (tests/test_int8.py::test_gate_multiplier_is_a_double_product)
        m, s = quantize_multiplier(float(f32(q.x_scale)) * float(f32(q.w_x_scale[k])) / GATE_INPUT_SCALE)
        x_mult.append(m), x_shift.append(s)
        m, s = quantize_multiplier(float(f32(q.h_scale)) * float(f32(q.w_h_scale[k])) / GATE_INPUT_SCALE)
        h_mult.append(m), h_shift.append(s)
    p = cell_scale_power(q.cell_scale)
    cs = float(f32(q.cell_scale))
    # CreateInterGateMulParams: the scales are multiplied in double
    fc = quantize_multiplier(GATE_OUTPUT_SCALE * cs / cs)
    ig = quantize_multiplier(GATE_OUTPUT_SCALE * GATE_OUTPUT_SCALE / cs)
    out = quantize_multiplier(GATE_OUTPUT_SCALE * GATE_OUTPUT_SCALE / float(f32(q.h_scale)))
    clip = float(f32(q.cell_clip))
    clip_q = int(min(max(clip / cs, -32768.0), 32767.0))   # static_cast<int16_t>: truncation
    return LSTMRequant(np.array(x_mult, np.int64), np.array(x_shift, np.int64),
                       np.array(h_mult, np.int64), np.array(h_shift, np.int64),
                       fc[0], fc[1], ig[0], ig[1], out[0], out[1], p, clip_q if clip > 0 else 0,
                       int(q.x_zero_point), int(q.h_zero_point))


# ---------------------------------------------------------------------------------------------
# The LSTM
# ---------------------------------------------------------------------------------------------

def _gate(q: QuantLSTM, r: LSTMRequant, k: int, x_t, h, ops):
    """Gate k's Q3.12 pre-activation: input FC + recurrent FC, each requantized to int16, added saturating."""
    # int8 activations accumulate in int32 (MultiplyByQuantizedMultiplier's int32 overload); the 16x8
    # variant accumulates in int64 and uses the int64 overload
    mbqm = multiply_by_quantized_multiplier_int64 if q.activation_dtype == "int16" else \
        multiply_by_quantized_multiplier
    acc = (x_t - r.x_zero_point) @ q.w_x[k].astype(np.int64).T + q.bias[k]   # (B, H) acc + bias
    a = saturate(mbqm(acc, r.x_mult[k], r.x_shift[k]), INT16_MIN, INT16_MAX)
    acc = (h - r.h_zero_point) @ q.w_h[k].astype(np.int64).T                # no recurrent bias in TFLM
    b = saturate(mbqm(acc, r.h_mult[k], r.h_shift[k]), INT16_MIN, INT16_MAX)
    if ops is not None:
        ops["macs"] += x_t.size // x_t.shape[-1] * q.w_x[k].size + h.size // h.shape[-1] * q.w_h[k].size
        ops["requantizations"] += a.size + b.size
        ops["saturating_adds"] += a.size
    return saturate(a + b, INT16_MIN, INT16_MAX)                              # AddElementWise: saturating


def lstm_int8_step(q: QuantLSTM, r: LSTMRequant, x_t, h, c, ops: Optional[dict] = None):
    """One step for all batch rows, in TFLM's order (f, i, g gates; cell; o gate; hidden). -> (h', c')."""
    f = sigmoid_int16(_gate(q, r, 1, x_t, h, ops))                           # forget gate, Q0.15
    i = sigmoid_int16(_gate(q, r, 0, x_t, h, ops))                           # input gate, Q0.15
    g = tanh_int16(_gate(q, r, 2, x_t, h, ops), 0, 0)                        # cell gate: tanh at 2^-12 (shift 0)
    fc = saturate(multiply_by_quantized_multiplier(f * c, r.fc_mult, r.fc_shift), INT16_MIN, INT16_MAX)
    ig = saturate(multiply_by_quantized_multiplier(i * g, r.ig_mult, r.ig_shift), INT16_MIN, INT16_MAX)
    c = saturate(fc + ig, INT16_MIN, INT16_MAX)                              # c' = f c + i g, int16
    if r.cell_clip_q > 0:
        c = saturate(c, -r.cell_clip_q, r.cell_clip_q)                       # cell clip, in cell units
    o = sigmoid_int16(_gate(q, r, 3, x_t, h, ops))                           # output gate (old h, as TFLM)
    tc = tanh_int16(c, *cell_tanh_args(r.cell_scale_power))                  # tanh(c'), Q0.15
    lo, hi = (INT16_MIN, INT16_MAX) if q.activation_dtype == "int16" else (INT8_MIN, INT8_MAX)
    h = saturate(multiply_by_quantized_multiplier(tc * o, r.out_mult, r.out_shift) + r.h_zero_point,
                 lo, hi)                                                     # h' = o tanh(c'), int8 (int16)
    if ops is not None:
        n = c.size
        ops["requantizations"] += 3 * n                                      # f c, i g, o tanh(c)
        ops["saturating_adds"] += n                                          # f c + i g
        ops["lut_lookups"] += 5 * n                                          # 3 sigmoids + 2 tanh
        ops["elementwise_muls"] += 3 * n
    return h, c


def lstm_int8_reference(x, q: QuantLSTM, h0=None, c0=None, ops: Optional[dict] = None):
    """x (T, B, E) int8 -> y (T, B, H) int8, (h_n (B, H) int8, c_n (B, H) int16); int16 x, y and h_n
    for the 16x8 variant.

    h0/c0 default to TFLM's initial state, the real value 0: TFLM resets an int8 variable tensor to
    its zero point (MicroInterpreterGraph::ResetTensorData), so h starts at h_zero_point, c at 0.
    ops: a dict; if given, the integer operations performed are added to it (macs, requantizations,
    lut_lookups, saturating_adds, elementwise_muls).
    """
    r = lstm_requant(q)
    T, B, _ = x.shape
    H = q.hidden_size
    act = np.dtype(q.activation_dtype)
    h = np.full((B, H), r.h_zero_point, np.int64) if h0 is None else np.asarray(h0, np.int64)
    c = np.zeros((B, H), np.int64) if c0 is None else np.asarray(c0, np.int64)
    if ops is not None:
        for key in ("macs", "requantizations", "lut_lookups", "saturating_adds", "elementwise_muls"):
            ops.setdefault(key, 0)
    y = np.empty((T, B, H), act)
    for t in range(T):
        h, c = lstm_int8_step(q, r, np.asarray(x[t], np.int64), h, c, ops)
        y[t] = h
    return y, (h.astype(act), c.astype(np.int16))


# ---------------------------------------------------------------------------------------------
# The ops around an LSTM in an int8 MCU model
# ---------------------------------------------------------------------------------------------

def fully_connected_int8(x, w, bias, x_zero_point, multiplier, shift, out_zero_point, act_min, act_max):
    """reference_integer_ops::FullyConnected, per-tensor: x (N, K) int8, w (M, K) int8, bias (M,) int32."""
    acc = (np.asarray(x, np.int64) - x_zero_point) @ np.asarray(w, np.int64).T
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    out = multiply_by_quantized_multiplier(acc, multiplier, shift) + out_zero_point
    return saturate(out, act_min, act_max).astype(np.int8)


def fully_connected_int8_per_channel(x, w, bias, x_zero_point, multipliers, shifts, out_zero_point,
                                     act_min, act_max):
    """reference_integer_ops::FullyConnectedPerChannel: one (multiplier, shift) per output row."""
    acc = (np.asarray(x, np.int64) - x_zero_point) @ np.asarray(w, np.int64).T
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    out = np.empty_like(acc)
    for m in range(acc.shape[1]):
        out[:, m] = multiply_by_quantized_multiplier(acc[:, m], int(multipliers[m]), int(shifts[m]))
    return saturate(out + out_zero_point, act_min, act_max).astype(np.int8)


def affine_quantize(x, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """reference_ops::AffineQuantize: round(x / scale) in float32 (half away from zero) + zero point."""
    v = np.asarray(x, np.float32) / np.float32(scale)
    a = np.abs(v)
    r = np.floor(a)
    r = np.sign(v) * (r + (a - r >= 0.5))                  # std::round (a - r is exact in float)
    return saturate(r.astype(np.int64) + zero_point, qmin, qmax)


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """reference_ops::Dequantize: float(double(scale) * (q - zero_point))."""
    return (float(np.float32(scale)) * (np.asarray(q, np.int64) - zero_point)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# int8 SOFTMAX (reference_ops::Softmax, gemmlowp fixed point: exp in Q5.26, sums in Q12.19)
# ---------------------------------------------------------------------------------------------

_SCALED_DIFF_INTEGER_BITS = 5        # the exp() input is Q5.26
_ACCUMULATION_INTEGER_BITS = 12      # the sum of exps is Q12.19


def _srdhm(a, b):
    return saturating_rounding_doubling_high_mul(np.asarray(a, np.int64), np.asarray(b, np.int64))


def _saturating_shift_left(x, exponent: int):
    """gemmlowp's SaturatingRoundingMultiplyByPOT<exponent > 0>: x * 2^exponent, saturated to int32."""
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: a Taylor series around -1/8."""
    x = _wrap_int32(a + (1 << 28))                                 # x = a + 1/8
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_wrap_int32(_srdhm(_wrap_int32(x4_over_4 + x3), 715827883) + x2), 1)
    const_term = 1895147668                                        # exp(-1/8) in Q0.31
    return _wrap_int32(const_term + _srdhm(const_term, _wrap_int32(x + poly)))


def exp_on_negative_values(a):
    """gemmlowp's exp_on_negative_values: a (Q5.26, <= 0) -> exp(a) in Q0.31."""
    frac_bits = 31 - _SCALED_DIFF_INTEGER_BITS
    one_quarter = 1 << (frac_bits - 2)
    a_mod_q_minus_q = _wrap_int32((a & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _saturating_shift_left(a_mod_q_minus_q, _SCALED_DIFF_INTEGER_BITS))
    remainder = _wrap_int32(a_mod_q_minus_q - a)
    # a barrel shifter: multiply by exp(-2^k) for each bit k of the remainder
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if _SCALED_DIFF_INTEGER_BITS > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where(remainder & bit, _srdhm(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x_for_x_in_0_1(a):
    """1 / (1 + a) for a in [0, 1) Q0.31 -> Q0.31, Newton-Raphson in Q2.29."""
    s = a + INT32_MAX                                              # RoundingHalfSum(a, 1)
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))
    x = _wrap_int32(1515870810 + _srdhm(half_denominator, -1010580540))   # 48/17 - 32/17 d
    for _ in range(3):
        one_minus = _wrap_int32((1 << 29) - _srdhm(half_denominator, x))
        x = _wrap_int32(x + _saturating_shift_left(_srdhm(x, one_minus), 2))
    return _saturating_shift_left(x, 1)


def _count_leading_zeros32(x):
    x = np.asarray(x, np.int64) & 0xFFFFFFFF
    n = np.full(x.shape, 32, np.int64)
    nz = x > 0
    n[nz] = 31 - np.floor(np.log2(x[nz].astype(np.float64))).astype(np.int64)
    return n


def softmax_int8_params(input_scale: float, beta: float):
    """(input_multiplier, input_left_shift, diff_min): TFLM's CalculateSoftmaxParams for int8 input."""
    real = min(float(beta) * float(np.float32(input_scale)) * (1 << (31 - _SCALED_DIFF_INTEGER_BITS)),
               (1 << 31) - 1.0)
    mult, shift = quantize_multiplier(real)
    if shift < 0:
        raise QuantizationError(f"softmax: input scale x beta {real / (1 << 26)!r} is too small for TFLM's "
                                f"int8 softmax (its left shift would be {shift})")
    max_input_rescaled = 1.0 * ((1 << _SCALED_DIFF_INTEGER_BITS) - 1) * \
        (1 << (31 - _SCALED_DIFF_INTEGER_BITS)) / (1 << shift)
    return mult, shift, -int(math.floor(max_input_rescaled))


def softmax_int8(x, input_multiplier: int, input_left_shift: int, diff_min: int) -> np.ndarray:
    """reference_ops::Softmax, int8 in, int8 out (scale 1/256, zero point -128), over the last axis."""
    x = np.asarray(x, np.int64)
    diff = x - x.max(axis=-1, keepdims=True)                       # <= 0
    used = diff >= diff_min
    rescaled = _srdhm(_wrap_int32(diff * (1 << input_left_shift)), input_multiplier)  # Q5.26
    e = exp_on_negative_values(np.where(used, rescaled, 0))        # Q0.31
    sum_of_exps = np.where(used, rounding_divide_by_pot(e, _ACCUMULATION_INTEGER_BITS), 0).sum(axis=-1, keepdims=True)
    sum_of_exps = _wrap_int32(sum_of_exps)                         # Q12.19
    headroom = _count_leading_zeros32(sum_of_exps)
    num_bits_over_unit = _ACCUMULATION_INTEGER_BITS - headroom
    shifted_sum_minus_one = _wrap_int32(((sum_of_exps << headroom) & 0xFFFFFFFF) - (1 << 31))
    shifted_scale = _one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = num_bits_over_unit + 31 - 8
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):                          # exponent differs per row
        row = rounding_divide_by_pot(_srdhm(shifted_scale[idx], e[idx]), int(exponent[idx][0])) - 128
        out[idx] = np.where(used[idx], saturate(row, INT8_MIN, INT8_MAX), INT8_MIN)
    return out.astype(np.int8)
