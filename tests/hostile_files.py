"""Builders of small model files, well formed or hostile, without Keras or a framework:
a .keras zip from a config dict and an h5 builder, ONNX graphs of chained LSTMs.
Used by test_hostile.py (one reproduction each) and test_fuzz.py (mutated)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np

T = 6


def keras_config(E=3, H=4, use_bias=True, head=None):
    """A Sequential [Input, LSTM(H) (, Dense(head))] config as Keras 3 saves it (trimmed)."""
    layers = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, T, E], "name": "input_layer"}},
        {"class_name": "LSTM", "config": {"name": "lstm", "units": H, "activation": "tanh",
                                          "recurrent_activation": "sigmoid", "use_bias": use_bias,
                                          "return_sequences": False},
         "build_config": {"input_shape": [None, T, E]}},
    ]
    if head:
        layers.append({"class_name": "Dense", "config": {"name": "dense", "units": head, "activation": "linear",
                                                         "use_bias": True}})
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def lstm_vars(E=3, H=4, seed=0):
    """Keras's (kernel (E, 4H), recurrent_kernel (H, 4H), bias (4H,)) for one LSTM."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, s).astype(np.float32) for s in ((E, 4 * H), (H, 4 * H), (4 * H,))]


def weights_h5(E=3, H=4, seed=0, edit=None) -> bytes:
    """model.weights.h5 for keras_config(E, H); `edit(h5, E, H)` changes it before it is closed."""
    import h5py
    bio = io.BytesIO()
    with h5py.File(bio, "w") as h:
        g = h.create_group("layers/lstm/cell/vars")
        for i, a in enumerate(lstm_vars(E, H, seed)):
            g[str(i)] = a
        if edit is not None:
            edit(h, E, H)
    return bio.getvalue()


def keras_zip(path, config=None, h5: bytes = None, *, members=None, compression=zipfile.ZIP_DEFLATED):
    """A .keras archive: config.json (a dict, or raw bytes) and model.weights.h5."""
    config = keras_config() if config is None else config
    h5 = weights_h5() if h5 is None else h5
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("config.json", config if isinstance(config, (bytes, str)) else json.dumps(config))
        z.writestr("model.weights.h5", h5)
        for name, data in (members or {}).items():
            z.writestr(name, data)
    return path


def replace_var(name="0", **create):
    """An h5 edit: replace layers/lstm/cell/vars/<name> by create_dataset(**create)."""
    def edit(h, E, H):
        g = h["layers/lstm/cell/vars"]
        del g[name]
        g.create_dataset(name, **create)
    return edit


# -- ONNX ----------------------------------------------------------------------------------
def onnx_chain(n_lstm: int, E=2, H=2, seed=0):
    """An onnx ModelProto: X -> LSTM -> Squeeze -> LSTM -> ... (n_lstm LSTM nodes), the
    Squeeze dropping Y's direction axis as exporters do."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    nodes, inits = [], [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    x, e = "X", E
    for k in range(n_lstm):
        W = rng.uniform(-0.5, 0.5, (1, 4 * H, e)).astype(np.float32)
        R = rng.uniform(-0.5, 0.5, (1, 4 * H, H)).astype(np.float32)
        inits += [numpy_helper.from_array(W, f"W{k}"), numpy_helper.from_array(R, f"R{k}")]
        nodes.append(helper.make_node("LSTM", [x, f"W{k}", f"R{k}"], [f"Y{k}"], name=f"lstm{k}", hidden_size=H))
        nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [f"Z{k}"]))
        x, e = f"Z{k}", H
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, 1, E])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


# -- a child process with a memory cap -----------------------------------------------------
_CAP = '''
import resource
def _vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
_limit = _vm_bytes() + {cap}
resource.setrlimit(resource.RLIMIT_AS, (_limit, _limit))
'''


def run_capped(setup: str, body: str, cap_bytes: int, env=None, timeout: float = 300):
    """Run `setup` (imports) in a fresh Python, then cap its address space at what it uses
    plus cap_bytes (resource.setrlimit RLIMIT_AS) and run `body`: an allocation beyond the
    cap raises MemoryError in the child. Returns the CompletedProcess."""
    import os
    import subprocess
    import sys
    code = "\n".join([setup, _CAP.format(cap=int(cap_bytes)), body])
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.abspath(__file__)),
                                                    e.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=e)
