"""LSTMWeights: the parameters of one LSTMSpec, in edgelstm's canonical layout.

Canonical layout, per layer l and direction d (PyTorch's, gate order i, f, g, o):

    w_ih  (4H, E_l)   input weights
    w_hh  (4H, P)     recurrent weights
    b_ih  (4H,)       "pytorch": input bias; "keras": the one bias; "none": None
    b_hh  (4H,)       "pytorch" only, else None
    w_hr  (P, H)      projection (proj_size > 0), else None
    peep  (3, H)      peepholes p_i, p_f, p_o (peephole=True), else None

Converters from other frameworks' layouts live in `edgelstm.convert` (the one place
that knows other gate orders); they are attached here as classmethods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from .spec import LSTMSpec

FLOAT_DTYPES = ("float32", "float64")


class WeightsError(ValueError):
    """A weight tensor does not match its spec."""


@dataclass(frozen=True)
class LayerWeights:
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: Optional[np.ndarray] = None
    b_hh: Optional[np.ndarray] = None
    w_hr: Optional[np.ndarray] = None
    peep: Optional[np.ndarray] = None

    def bias_sum(self) -> np.ndarray:
        """b_ih + b_hh (zeros without bias): the kernels add one pre-summed bias."""
        b = np.zeros(self.w_ih.shape[0], dtype=self.w_ih.dtype)
        if self.b_ih is not None:
            b = b + self.b_ih
        if self.b_hh is not None:
            b = b + self.b_hh
        return b


def expected_shapes(spec: LSTMSpec, layer: int) -> Dict[str, Optional[Tuple[int, ...]]]:
    """The shape of every canonical tensor of one layer (None: the tensor is absent)."""
    H, P, E = spec.hidden_size, spec.out_size, spec.layer_input_size(layer)
    return {
        "w_ih": (4 * H, E),
        "w_hh": (4 * H, P),
        "b_ih": (4 * H,) if spec.bias != "none" else None,
        "b_hh": (4 * H,) if spec.bias == "pytorch" else None,
        "w_hr": (P, H) if spec.proj_size else None,
        "peep": (3, H) if spec.peephole else None,
    }


def weight_count(spec: LSTMSpec) -> int:
    """Elements of all the stack's tensors (closed form in num_layers: layers above the first
    have one shape), to size an allocation before it is made."""
    per = [sum(int(np.prod(s, dtype=object)) for s in expected_shapes(spec, l).values() if s is not None)
           for l in range(min(spec.num_layers, 2))]
    return spec.num_directions * (per[0] + (spec.num_layers - 1) * (per[1] if len(per) > 1 else 0))


def frozen_copy(a, dtype=None) -> np.ndarray:
    """A C-contiguous, read-only copy of `a` (never a view of the caller's memory)."""
    out = np.array(a, dtype=dtype, order="C", copy=True)
    out.flags.writeable = False
    return out


def _dtype_name(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in FLOAT_DTYPES:
        raise WeightsError(f"dtype: expected one of {', '.join(FLOAT_DTYPES)}, got {name}")
    return name


class LSTMWeights:
    """Parameters of an LSTM stack: `.spec`, `.dtype`, and `.layers[l][d]` (LayerWeights).

    Arrays are C-contiguous copies in one float dtype, made on construction (and so on
    every import: `from_torch`, `from_keras`, `from_onnx`) and frozen: they are read-only,
    so an in-place edit (`w.layers[0][0].w_hh[:] = 0`) raises instead of leaving the
    packed copies that kernels cache on the object (`.packed(kind)`) silently stale.
    Edits to the source (a torch module's parameters, say) are not seen: the weights are
    a snapshot. To change weights, build new ones (`LSTMWeights(spec, layers)` with the
    new arrays, or `w.replace(...)`).
    """

    def __init__(self, spec: LSTMSpec, layers, dtype="float32", *, _adopt: bool = False):
        if not isinstance(spec, LSTMSpec):
            raise WeightsError(f"spec: expected an LSTMSpec, got {type(spec).__name__}")
        self.spec = spec
        self.dtype = np.dtype(_dtype_name(dtype))
        layers = list(layers)
        if len(layers) != spec.num_layers:
            raise WeightsError(f"layers: expected {spec.num_layers} layers for {spec}, got {len(layers)}")
        checked = []
        for l, dirs in enumerate(layers):
            dirs = list(dirs)
            if len(dirs) != spec.num_directions:
                raise WeightsError(f"layers[{l}]: expected {spec.num_directions} directions, got {len(dirs)}")
            checked.append(tuple(self._checked(l, d, lw, _adopt) for d, lw in enumerate(dirs)))
        self.layers: Tuple[Tuple[LayerWeights, ...], ...] = tuple(checked)
        self._packed: Dict[object, object] = {}

    def _checked(self, l: int, d: int, lw, adopt: bool = False) -> LayerWeights:
        if isinstance(lw, dict):
            lw = LayerWeights(**lw)
        if not isinstance(lw, LayerWeights):
            raise WeightsError(f"layers[{l}][{d}]: expected LayerWeights or a dict, got {type(lw).__name__}")
        out = {}
        for name, shape in expected_shapes(self.spec, l).items():
            a = getattr(lw, name)
            where = f"layer {l} direction {d} tensor {name}"
            if shape is None:
                if a is not None:
                    raise WeightsError(f"{where}: expected none for {self.spec}, got shape {np.shape(a)}")
                out[name] = None
                continue
            if a is None:
                raise WeightsError(f"{where}: expected shape {shape}, got none")
            a = np.asarray(a)
            if a.shape != shape:
                raise WeightsError(f"{where}: expected shape {shape}, got {a.shape}")
            if not np.issubdtype(a.dtype, np.floating):
                raise WeightsError(f"{where}: expected a floating dtype, got {a.dtype}")
            if adopt and a.dtype == self.dtype and a.flags.c_contiguous and a.flags.owndata:
                a.flags.writeable = False          # fresh arrays of ours (random): no second copy
                out[name] = a
            else:
                out[name] = frozen_copy(a, self.dtype)
        return LayerWeights(**out)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def random(cls, spec: LSTMSpec, seed: int = 0, dtype="float32", scale: Optional[float] = None, *,
               max_bytes: Optional[int] = None):
        """Uniform(-k, k) with k = 1/sqrt(H), PyTorch's initialisation, drawn in `dtype`.

        The weights' size is computed first and refused above the byte limit (max_bytes,
        else $EDGELSTM_MAX_BYTES, else 1 GiB: edgelstm._files) before anything is drawn."""
        from ._files import check_bytes
        if not isinstance(spec, LSTMSpec):
            raise WeightsError(f"spec: expected an LSTMSpec, got {type(spec).__name__}")
        dt = np.dtype(_dtype_name(dtype))
        check_bytes(weight_count(spec) * dt.itemsize, f"LSTMWeights.random({spec}, dtype={dt.name})",
                    max_bytes, error=WeightsError)
        rng = np.random.default_rng(seed)
        k = scale if scale is not None else 1.0 / np.sqrt(spec.hidden_size)

        def draw(shape):            # in dt directly: no float64 copy of the whole tensor
            a = rng.random(shape, dtype=dt)
            a *= dt.type(2 * k)
            a -= dt.type(k)
            return a

        layers = []
        for l in range(spec.num_layers):
            dirs = []
            for _ in range(spec.num_directions):
                t = {name: (None if shape is None else draw(shape))
                     for name, shape in expected_shapes(spec, l).items()}
                dirs.append(LayerWeights(**t))
            layers.append(dirs)
        return cls(spec, layers, dtype=dt, _adopt=True)

    # -- other frameworks (edgelstm.convert; torch/keras/onnx stay optional) ----------
    # edgelstm.convert builds LSTMWeights, so this module cannot import it back (an import
    # cycle): convert registers its functions in CONVERTERS when it is imported, which
    # edgelstm/__init__.py does right after importing this module.
    @classmethod
    def from_torch(cls, module, dtype=None) -> "LSTMWeights":
        """From a torch.nn.LSTM (see edgelstm.convert.from_torch)."""
        return _converter("from_torch")(module, dtype=dtype)

    def to_torch_state_dict(self) -> dict:
        """nn.LSTM state_dict tensors (see edgelstm.convert.to_torch_state_dict)."""
        return _converter("to_torch_state_dict")(self)

    @classmethod
    def from_keras(cls, kernel, recurrent_kernel=None, bias=None, *, dtype=None) -> "LSTMWeights":
        """From Keras LSTM arrays or a Keras LSTM/Bidirectional layer (edgelstm.convert.from_keras)."""
        return _converter("from_keras")(kernel, recurrent_kernel, bias, dtype=dtype)

    @classmethod
    def from_onnx(cls, W, R, B=None, P=None, *, direction=None, hidden_size=None, dtype=None) -> "LSTMWeights":
        """From one ONNX LSTM node's W, R, B, P (see edgelstm.convert.from_onnx)."""
        return _converter("from_onnx")(W, R, B, P, direction=direction, hidden_size=hidden_size, dtype=dtype)

    def replace(self, layer: int, direction: int = 0, **tensors) -> "LSTMWeights":
        """New weights with some tensors of one layer and direction replaced (copied, checked)."""
        layers = [list(d) for d in self.layers]
        lw = layers[layer][direction]
        layers[layer][direction] = LayerWeights(**{**lw.__dict__, **tensors})
        return LSTMWeights(self.spec, layers, dtype=self.dtype)

    def astype(self, dtype) -> "LSTMWeights":
        if np.dtype(dtype) == self.dtype:
            return self
        return LSTMWeights(self.spec, self.layers, dtype=dtype)

    def packed(self, kind, build):
        """The cached packed form `kind`, built once by `build(self)`."""
        if kind not in self._packed:
            self._packed[kind] = build(self)
        return self._packed[kind]

    def __repr__(self) -> str:
        return f"LSTMWeights({self.spec}, dtype={self.dtype.name})"


# Conversions from and to other frameworks, registered by edgelstm.convert at its import.
CONVERTERS: Dict[str, object] = {}


def _converter(name: str):
    if name not in CONVERTERS:   # only if edgelstm.convert was never imported (edgelstm/__init__ does)
        raise WeightsError(f"{name}: edgelstm.convert is not loaded (import edgelstm first)")
    return CONVERTERS[name]
