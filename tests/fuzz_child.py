"""The fuzz suite's child process (test_fuzz.py starts it through hostile_files.run_capped).

`setup(workdir)` imports everything, writes the seed files and a canary file, and starts
an inotify watch on the canary (it sees opens and reads from C code too: HDF5's external
storage, onnx's external data). Then the parent caps the address space and `run(kind, n)`
runs a hypothesis search of n mutated files of one kind through the public entry points:

- onnx, keras: load_model(path) and `edgelstm size --model path`;
- target: load_target(path) and `edgelstm size ... --target path --json`;
- grid: sweep.load_grid(path) and `edgelstm bench --grid path` (the sweep itself stubbed).

Each example must end in the documented error class (ModelFileError, TargetError,
BenchError) or succeed; the CLI must exit 0, or 2 with one line on stderr; a MemoryError
(an allocation beyond the cap) fails the search; the canary must never be opened.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import io
import json
import math
import os
import sys
import zipfile

import numpy as np

W = {}          # the child's state: workdir, canary, inotify fd, seeds


# -- the canary --------------------------------------------------------------------------------
def _watch(path: str) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    IN_ACCESS, IN_OPEN = 0x1, 0x20
    if fd < 0 or libc.inotify_add_watch(fd, path.encode(), IN_ACCESS | IN_OPEN) < 0:
        raise OSError(ctypes.get_errno(), "inotify")
    return fd


def canary_events() -> int:
    n = 0
    while True:
        try:
            n += len(os.read(W["inotify"], 4096))
        except BlockingIOError:
            return n


def _check_canary(what):
    assert canary_events() == 0, f"{what}: the canary file outside the model was opened or read"


# -- seeds ------------------------------------------------------------------------------------
def _keras_seed():
    import h5py
    from hostile_files import keras_config
    cfg = keras_config(E=3, H=4, head=2)
    lstm = cfg["config"]["layers"][1]
    lstm["config"]["return_sequences"] = True
    bi = {"class_name": "Bidirectional", "config": {"name": "bidirectional", "merge_mode": "concat", "layer": {
        "class_name": "LSTM", "config": {"name": "inner", "units": 2, "use_bias": True, "return_sequences": False}}}}
    cfg["config"]["layers"].insert(2, bi)
    rng = np.random.default_rng(0)
    bio = io.BytesIO()
    with h5py.File(bio, "w") as h:
        for path, shapes in (("layers/lstm/cell/vars", ((3, 16), (4, 16), (16,))),
                             ("layers/bidirectional/forward_layer/cell/vars", ((4, 8), (2, 8), (8,))),
                             ("layers/bidirectional/backward_layer/cell/vars", ((4, 8), (2, 8), (8,))),
                             ("layers/dense/vars", ((4, 2), (2,)))):
            g = h.create_group(path)
            for i, s in enumerate(shapes):
                g[str(i)] = rng.uniform(-0.5, 0.5, s).astype(np.float32)
    return cfg, bio.getvalue()


def setup(workdir: str) -> None:
    import h5py  # noqa: F401
    import hypothesis  # noqa: F401
    import onnx  # noqa: F401
    import edgelstm.cli  # noqa: F401
    from edgelstm.costmodel.predict import predict
    from edgelstm.costmodel.target import catalog_dir
    from edgelstm.importers import load_model
    from hostile_files import keras_zip, onnx_chain
    import tomllib
    W["dir"] = workdir
    canary = os.path.join(workdir, "canary.txt")
    with open(canary, "wb") as f:
        f.write(b"CANARY-!" * 64)
    W["canary"] = canary
    W["inotify"] = _watch(canary)
    with open(canary, "rb") as f:           # the watch is live: this open is seen
        f.read()
    assert canary_events() > 0
    W["onnx"] = onnx_chain(2)
    W["keras"] = _keras_seed()
    seed_path = os.path.join(workdir, "seed.keras")
    keras_zip(seed_path, config=W["keras"][0], h5=W["keras"][1])
    load_model(seed_path)                    # seeds are valid: mutations start from a model
    W["targets"] = [tomllib.loads((catalog_dir() / f"{n}.toml").read_text()) for n in ("cortex-m7", "edge-npu")]
    predict(edgelstm_spec(), "cortex-m7")     # warm every import predict makes
    W["grid"] = {"configs": [{"hidden_size": 8, "batch": 1, "seq_len": 2}],
                 "axes": {"hidden_size": [8, 16], "batch": 1, "seq_len": [2], "dtype": "float32"}}
    host = os.path.join(workdir, "host.toml")
    with open(host, "w") as f:
        f.write((catalog_dir() / "cortex-m7.toml").read_text())
    os.environ["EDGELSTM_HOST_TARGET"] = host    # bench never calibrates here
    from edgelstm import sweep
    sweep.run = lambda *a, **k: []               # bench: the grid is the input under test, not the timing


def edgelstm_spec():
    from edgelstm import LSTMSpec
    return LSTMSpec(8, 16)


# -- strategies -------------------------------------------------------------------------------
def _st():
    from hypothesis import strategies as st
    return st


def scalar_values(none=True):
    st = _st()
    return st.one_of(*([st.none()] if none else []), st.booleans(), st.sampled_from([0, 1, -1, 2, 4, 16, 10**6, 10**9, 2**31, 2**63,
                                                                 10**30]),
                     st.integers(-5, 100), st.floats(allow_nan=True), st.sampled_from([math.inf, -math.inf]),
                     st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
                     st.sampled_from(["LSTM", "Dense", "abc", "", "float32", "pytorch", "sram", "../canary.txt"]))


def json_values():
    st = _st()
    return st.recursive(scalar_values(), lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.sampled_from(["config", "layers", "class_name", "units", "name", "hidden_size", "batch", "x"]) |
        st.text(max_size=4), c, max_size=4), max_leaves=10)


def _paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, prefix + (i,))


def mutate_tree(data, tree, values=None, max_edits=3):
    """Replace, delete or duplicate a few random subtrees of a JSON-like tree."""
    st = _st()
    tree = copy.deepcopy(tree)
    for _ in range(data.draw(st.integers(1, max_edits))):
        paths = list(_paths(tree))
        path = data.draw(st.sampled_from(paths))
        op = data.draw(st.sampled_from(["replace", "replace", "delete", "wrap"]))
        if not path:
            if op == "replace":
                tree = data.draw(values if values is not None else json_values())
            continue
        parent = tree
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]] if data.draw(st.booleans()) else {"config": parent[key]}
        else:
            parent[key] = data.draw(values if values is not None else json_values())
    return tree


def mutate_bytes(data, blob: bytes) -> bytes:
    st = _st()
    b = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8))):
        if not b:
            break
        i = data.draw(st.integers(0, len(b) - 1))
        op = data.draw(st.sampled_from(["set", "set", "insert", "delete", "truncate"]))
        if op == "set":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[i:i + data.draw(st.integers(1, 16))]
        else:
            del b[i:]
    return bytes(b)


# -- checks -----------------------------------------------------------------------------------
def cli(argv):
    """`edgelstm argv` in process: exit 0, or 2 with exactly one line on stderr."""
    from edgelstm.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    e = err.getvalue()
    assert code in (0, 2), (code, e[-500:])
    if code == 2:
        assert len(e.strip().splitlines()) == 1, e[-2000:]
    if code == 0 and "--json" in argv:
        json.loads(out.getvalue(), parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(c)))
    return code


def check_model(path):
    canary_events()           # building the input may touch it; loading it must not
    from edgelstm.importers import load_model
    from edgelstm.model import ModelFileError
    try:
        load_model(path)
    except ModelFileError:
        pass
    _check_canary(path)
    cli(["size", "--model", path])
    _check_canary(path)


# -- ONNX -------------------------------------------------------------------------------------
def _mutate_onnx(data, model):
    from onnx import TensorProto, helper
    st = _st()
    m = copy.deepcopy(model)
    g = m.graph
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["inputs", "attr", "op", "rewire", "dims", "dtype", "external", "raw",
                                        "node", "bytes"]))
        node = g.node[data.draw(st.integers(0, len(g.node) - 1))] if len(g.node) else None
        init = g.initializer[data.draw(st.integers(0, len(g.initializer) - 1))] if len(g.initializer) else None
        names = [t for n in g.node for t in list(n.input) + list(n.output)] + [t.name for t in g.initializer] + [""]
        if op == "inputs" and node is not None:
            del node.input[data.draw(st.integers(0, len(node.input))):]
        elif op == "attr" and node is not None:
            name = data.draw(st.sampled_from(["hidden_size", "direction", "layout", "activations", "clip",
                                              "input_forget", "alpha", "transB", "axis", "value", "perm"]))
            value = data.draw(st.one_of(st.integers(-3, 2**40), st.floats(allow_nan=True), st.text(max_size=5),
                                        st.lists(st.integers(-2, 5), max_size=3),
                                        st.lists(st.sampled_from(["Sigmoid", "Tanh", "Relu"]), max_size=6)))
            for a in list(node.attribute):
                if a.name == name:
                    node.attribute.remove(a)
            try:
                node.attribute.append(helper.make_attribute(name, value))
            except (ValueError, TypeError):
                pass
        elif op == "op" and node is not None:
            node.op_type = data.draw(st.sampled_from(["LSTM", "MatMul", "Gemm", "Gather", "Add", "Reshape",
                                                      "Squeeze", "Constant", "Concat", "Slice", "Relu",
                                                      "Transpose", "Identity", "Cast"]))
        elif op == "rewire" and node is not None and node.input:
            node.input[data.draw(st.integers(0, len(node.input) - 1))] = data.draw(st.sampled_from(names))
        elif op == "dims" and init is not None:
            init.dims[:] = data.draw(st.lists(st.sampled_from([0, 1, 2, 8, 16, 10**6, 10**9, 2**40, -1]),
                                              max_size=4))
        elif op == "dtype" and init is not None:
            init.data_type = data.draw(st.integers(0, 25))
        elif op == "external" and init is not None:
            init.data_location = TensorProto.EXTERNAL
            loc = data.draw(st.sampled_from([W["canary"], "canary.txt", "../canary.txt", "./canary.txt"]))
            for k, v in (("location", loc), ("offset", "0"), ("length", "64")):
                e = init.external_data.add()
                e.key, e.value = k, v
        elif op == "raw" and init is not None:
            init.raw_data = data.draw(st.binary(max_size=80))
        elif op == "node":
            g.node.append(helper.make_node(
                data.draw(st.sampled_from(["LSTM", "MatMul", "Gemm", "Gather", "Constant", "Add", "Transpose"])),
                data.draw(st.lists(st.sampled_from(names), max_size=4)),
                data.draw(st.lists(st.sampled_from(names + ["new"]), max_size=2))))
    blob = m.SerializeToString()
    if data.draw(st.integers(0, 4)) == 0:
        blob = mutate_bytes(data, blob)
    return blob


# -- Keras --------------------------------------------------------------------------------------
def _mutate_h5(data, blob: bytes) -> bytes:
    import h5py
    st = _st()
    datasets = ["layers/lstm/cell/vars/0", "layers/lstm/cell/vars/1", "layers/lstm/cell/vars/2",
                "layers/bidirectional/forward_layer/cell/vars/0", "layers/dense/vars/0", "layers/dense/vars/1"]
    bio = io.BytesIO(blob)
    touched = []
    with h5py.File(bio, "r+") as h:
        for _ in range(data.draw(st.integers(1, 3))):
            path = data.draw(st.sampled_from(datasets + ["layers/lstm/cell", "layers/lstm", "layers/dense/vars"]))
            op = data.draw(st.sampled_from(["shape", "external", "softlink", "extlink", "hardlink", "virtual",
                                            "group", "delete", "dtype", "gzip"]))
            if any(path.startswith(t) or t.startswith(path) for t in touched):
                continue                     # replaced already (maybe by a link: not followed here)
            touched.append(path)
            parent, name = h[path].parent, path.rsplit("/", 1)[1]
            del h[path]
            if op == "shape":
                shape = tuple(data.draw(st.lists(st.sampled_from([0, 1, 3, 4, 16, 10**6, 10**9]), max_size=3)))
                chunked = bool(shape) and all(shape)      # a fill value, no data: a tiny file
                parent.create_dataset(name, shape=shape, dtype="f4", fillvalue=1.0,
                                      chunks=tuple(1 for _ in shape) if chunked else None)
            elif op == "external":
                parent.create_dataset(name, shape=(3, 16), dtype="f4", external=[(W["canary"], 0, 192)])
            elif op == "softlink":
                parent[name] = h5py.SoftLink(data.draw(st.sampled_from(["/" + path, "/layers", "/", "/nope"])))
            elif op == "extlink":
                parent[name] = h5py.ExternalLink(W["canary"], "/data")
            elif op == "hardlink":
                parent[name] = h["layers"]
            elif op == "virtual":
                layout = h5py.VirtualLayout(shape=(3, 16), dtype="f4")
                layout[:] = h5py.VirtualSource(W["canary"], "data", shape=(3, 16))
                parent.create_virtual_dataset(name, layout)
            elif op == "group":
                parent.create_group(name)
            elif op == "dtype":
                parent.create_dataset(name, data=np.zeros((3, 16), data.draw(st.sampled_from(
                    ["i4", "f2", "f8", "S4", "c8", "u1", "?"]))))
            elif op == "gzip":
                parent.create_dataset(name, data=np.zeros((3, 16), "f4"), compression="gzip")
    out = bio.getvalue()
    if data.draw(st.integers(0, 5)) == 0:
        out = mutate_bytes(data, out)
    return out


def _mutate_keras(data, path):
    from hostile_files import keras_zip
    st = _st()
    cfg, h5 = W["keras"]
    what = data.draw(st.sampled_from(["config", "config", "h5", "h5", "zip", "bomb"]))
    if what == "config":
        cfg = mutate_tree(data, cfg)
    elif what == "h5":
        h5 = _mutate_h5(data, h5)
    if what == "bomb":                       # a member far larger decompressed than the limit
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("config.json", json.dumps(cfg))
            with z.open("model.weights.h5", "w", force_zip64=True) as f:
                for _ in range(data.draw(st.integers(5, 8))):
                    f.write(bytes(1 << 24))
        return
    keras_zip(path, config=json.dumps(cfg, allow_nan=True), h5=h5)
    if what == "zip":
        with open(path, "rb") as f:
            blob = mutate_bytes(data, f.read())
        with open(path, "wb") as f:
            f.write(blob)


# -- targets and grids ------------------------------------------------------------------------------
def toml_dumps(d: dict) -> str:
    """A minimal TOML writer (inline tables and arrays) for the fuzz inputs."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {val(x)}" for k, x in v.items()) + "}"
        return '"none"'                   # TOML has no null
    d = d if isinstance(d, dict) else {"x": d}
    return "".join(f"{json.dumps(str(k))} = {val(v)}\n" for k, v in d.items())


def _toml_values():
    st = _st()
    return st.recursive(scalar_values(none=False),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                        max_leaves=6)


def check_target(path):
    canary_events()           # building the input may touch it; loading it must not
    from edgelstm.costmodel.target import TargetError, load_target
    try:
        load_target(path)
    except TargetError:
        pass
    cli(["size", "--input-size", "8", "--hidden-size", "16", "--target", path, "--json"])


def check_grid(path):
    canary_events()           # building the input may touch it; loading it must not
    from edgelstm import sweep
    try:
        sweep.load_grid(path)
    except sweep.BenchError:
        pass
    cli(["bench", "--grid", path, "--no-plots", "--out", os.path.join(W["dir"], "out")])


# -- the searches --------------------------------------------------------------------------------
def run(kind: str, examples: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    d = W["dir"]

    @settings(max_examples=examples, deadline=None, database=None, print_blob=True,
              derandomize=not os.environ.get("FUZZ_RANDOM"),
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def search(data):
        if kind == "onnx":
            path = os.path.join(d, "m.onnx")
            with open(path, "wb") as f:
                f.write(_mutate_onnx(data, W["onnx"]))
            check_model(path)
        elif kind == "keras":
            path = os.path.join(d, "m.keras")
            _mutate_keras(data, path)
            check_model(path)
        elif kind == "target":
            path = os.path.join(d, "t.toml")
            seed = W["targets"][data.draw(st.integers(0, len(W["targets"]) - 1))]
            text = toml_dumps(mutate_tree(data, seed, _toml_values()))
            if data.draw(st.integers(0, 4)) == 0:
                text = mutate_bytes(data, text.encode()).decode("utf-8", "replace")
            with open(path, "w") as f:
                f.write(text)
            check_target(path)
        else:
            toml = data.draw(st.booleans())
            path = os.path.join(d, "g.toml" if toml else "g.json")
            tree = mutate_tree(data, W["grid"], _toml_values() if toml else None)
            with open(path, "w") as f:
                f.write(toml_dumps(tree) if toml and isinstance(tree, dict) else json.dumps(tree))
            check_grid(path)
        _check_canary(kind)

    search()
    print(f"fuzz {kind}: {examples} examples, no escape, canary untouched", file=sys.stderr)
