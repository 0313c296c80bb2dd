"""Issue 16, hostile files and environments: one named test per reproduction.

Each test builds the hostile input the issue describes (small on disk) and checks that
edgelstm refuses it with its documented error, naming the file, before the memory or
the local file is touched."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from hostile_files import keras_config, keras_zip, lstm_vars, onnx_chain, replace_var, run_capped, weights_h5

import edgelstm as el
from edgelstm.importers import load_model
from edgelstm.model import ModelFileError

h5py = pytest.importorskip("h5py")


def _canary(tmp_path):
    """A local file no model may read: its bytes are recognisable."""
    p = tmp_path / "canary.txt"
    p.write_bytes(b"CANARY-" * 200)
    return p


def _ok_keras(tmp_path):
    """The well-formed twin of the hostile files below loads and matches its weights."""
    m = load_model(keras_zip(tmp_path / "ok.keras"))
    k, r, b = lstm_vars()
    ref = el.LSTMWeights.from_keras(k, r, b)
    np.testing.assert_array_equal(m.weights.stacks[0].layers[0][0].w_ih, ref.layers[0][0].w_ih)


# -- 1. a .keras file must not read local files ---------------------------------------------
def test_keras_h5_external_storage_is_refused(tmp_path):
    _ok_keras(tmp_path)
    canary = _canary(tmp_path)
    E, H = 3, 4
    h5 = weights_h5(E, H, edit=replace_var("0", shape=(E, 4 * H), dtype=np.float32,
                                           external=[(str(canary), 0, E * 4 * H * 4)]))
    path = keras_zip(tmp_path / "ext.keras", h5=h5)
    with pytest.raises(ModelFileError, match=r"ext\.keras: model\.weights\.h5 'layers/lstm/cell/vars/0': "
                                             r"refused: the dataset's storage is an external file"):
        load_model(path)


def test_keras_h5_etc_passwd_external_storage_is_refused(tmp_path):
    """The issue's exact payload: external=[("/etc/passwd", 0, 512)]."""
    h5 = weights_h5(edit=replace_var("0", shape=(16, 8), dtype=np.float32, external=[("/etc/passwd", 0, 512)]))
    with pytest.raises(ModelFileError, match="refused: the dataset's storage is an external file"):
        load_model(keras_zip(tmp_path / "passwd.keras", h5=h5))


def test_keras_h5_external_link_is_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h:
        h["data"] = np.frombuffer(b"CANARY-!" * 6, np.float32).reshape(3, 4)

    def edit(h, E, H):
        del h["layers/lstm/cell/vars/0"]
        h["layers/lstm/cell/vars/0"] = h5py.ExternalLink(str(other), "/data")
    path = keras_zip(tmp_path / "extlink.keras", h5=weights_h5(edit=edit))
    with pytest.raises(ModelFileError, match=r"'layers/lstm/cell/vars/0': refused: it is an external link"):
        load_model(path)


def test_keras_h5_soft_link_loop_is_refused(tmp_path):
    def edit(h, E, H):                 # layers/lstm/cell -> /layers/lstm/cell: a loop
        del h["layers/lstm/cell"]
        h["layers/lstm/cell"] = h5py.SoftLink("/layers/lstm/cell")
    path = keras_zip(tmp_path / "loop.keras", h5=weights_h5(edit=edit))
    with pytest.raises(ModelFileError, match=r"'layers/lstm/cell': refused: it is a soft link"):
        load_model(path)


def test_keras_h5_hard_link_cycle_is_not_walked(tmp_path):
    """A group that hard-links to its parent: traversal is along fixed paths, so it ends."""
    def edit(h, E, H):
        h["layers/lstm/cell/vars/up"] = h["layers/lstm"]
    m = load_model(keras_zip(tmp_path / "cycle.keras", h5=weights_h5(edit=edit)))
    assert m.spec.stacks[0].hidden_size == 4


def test_keras_h5_virtual_dataset_is_refused(tmp_path):
    canary_h5 = tmp_path / "src.h5"
    with h5py.File(canary_h5, "w") as h:
        h["data"] = np.ones((3, 16), np.float32)

    def edit(h, E, H):
        del h["layers/lstm/cell/vars/0"]
        layout = h5py.VirtualLayout(shape=(E, 4 * H), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(canary_h5), "data", shape=(3, 16))
        h["layers/lstm/cell/vars"].create_virtual_dataset("0", layout)
    path = keras_zip(tmp_path / "vds.keras", h5=weights_h5(edit=edit))
    with pytest.raises(ModelFileError, match="refused: a virtual dataset"):
        load_model(path)


def test_keras_h5_group_where_a_dataset_should_be(tmp_path):
    def edit(h, E, H):
        del h["layers/lstm/cell/vars/1"]
        h.create_group("layers/lstm/cell/vars/1")
    path = keras_zip(tmp_path / "group.keras", h5=weights_h5(edit=edit))
    with pytest.raises(ModelFileError, match=r"'layers/lstm/cell/vars/1': expected a dataset, got a group"):
        load_model(path)


def test_onnx_external_data_is_refused(tmp_path):
    """The ONNX importer's twin of the trick: an initializer whose data is an outside file."""
    onnx = pytest.importorskip("onnx")
    canary = _canary(tmp_path)
    m = onnx_chain(1)
    w = m.graph.initializer[1]                        # W0
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", str(canary)), ("offset", "0"), ("length", str(4 * 16))):
        e = w.external_data.add()
        e.key, e.value = k, v
    path = tmp_path / "extdata.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(ModelFileError, match=r"extdata\.onnx: .*'W0'.*external"):
        load_model(path)


# -- 2. memory before allocation ------------------------------------------------------------
def _bomb(path, nbytes, config=None):
    """A .keras whose model.weights.h5 is `nbytes` of deflated zeros (about nbytes/1000 on disk)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("config.json", json.dumps(config or keras_config()))
        with z.open("model.weights.h5", "w", force_zip64=True) as f:
            chunk = bytes(1 << 24)
            for _ in range(nbytes // len(chunk)):
                f.write(chunk)
    return path


def test_keras_zip_bomb_is_refused_before_decompressing(tmp_path):
    """The issue's bomb: 1.5 GiB of zeros as model.weights.h5. Refused by its declared size,
    in a child whose address space may grow by 256 MiB only (it reached 3.1 GB before)."""
    path = _bomb(tmp_path / "bomb.keras", 3 * 2**29)
    assert path.stat().st_size < 10 * 2**20
    r = run_capped_load(path, 256 * 2**20)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ModelFileError" in r.stdout and "model.weights.h5 (decompressed) needs 1.5 GiB" in r.stdout
    assert "above the limit of 1 GiB" in r.stdout and "EDGELSTM_MAX_BYTES" in r.stdout


def run_capped_load(path, cap, env=None):
    return run_capped("from edgelstm.importers import load_model\nfrom edgelstm.model import ModelFileError\nimport h5py, onnx, zipfile",
                      f"try:\n    load_model({str(path)!r})\n    print('LOADED')\n"
                      f"except ModelFileError as e:\n    print('ModelFileError', e)", cap, env)


def test_max_bytes_is_overridable(tmp_path, monkeypatch):
    path = _bomb(tmp_path / "small-bomb.keras", 2**25)          # 32 MiB of zeros
    monkeypatch.setenv("EDGELSTM_MAX_BYTES", "16MiB")
    with pytest.raises(ModelFileError, match=r"needs 32 MiB \(33,554,432 bytes\), above the limit of 16 MiB"):
        load_model(path)
    monkeypatch.setenv("EDGELSTM_MAX_BYTES", "64MiB")           # allowed now: read, then not HDF5
    with pytest.raises(ModelFileError, match="not a readable HDF5 file"):
        load_model(path)
    monkeypatch.setenv("EDGELSTM_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="^EDGELSTM_MAX_BYTES: expected a number of bytes"):
        load_model(path)


@pytest.mark.parametrize("units, shape, words", [
    (4, (4, 10**9), r"expected shape \(\?, 16\) from the config, got \(4, 1000000000\)"),
    (4, (10**6, 10**6), r"expected shape \(\?, 16\) from the config, got \(1000000, 1000000\)"),
    (250_000_000, (4, 10**9), r"the weights read so far needs 14.9 GiB"),   # the shape the config implies
])
def test_h5_dataset_declaring_its_own_shape_is_checked_before_it_is_read(tmp_path, units, shape, words):
    """A 3 KB h5 dataset of shape (4, 1e9) (a fill value, no data): refused before it is read."""
    h5 = weights_h5(edit=replace_var("0", shape=shape, dtype=np.float32, fillvalue=1.0, chunks=(1, 1024)))
    assert len(h5) < 16 * 1024
    cfg = keras_config(E=4, H=units)
    path = keras_zip(tmp_path / "shape.keras", config=cfg, h5=h5)
    r = run_capped_load(path, 256 * 2**20)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ModelFileError" in r.stdout
    import re
    assert re.search(words, r.stdout), r.stdout


def test_bench_grid_of_a_billion_configs_is_counted_not_built(tmp_path, capsys, monkeypatch):
    from edgelstm import sweep
    from edgelstm.cli import main
    grid = tmp_path / "grid.json"
    axes = {"hidden_size": list(range(1, 1001)), "batch": list(range(1, 1001)), "seq_len": list(range(1, 1001))}
    grid.write_text(json.dumps({"axes": axes}))
    built = []
    monkeypatch.setattr(sweep, "_config", lambda *a: built.append(a))
    assert main(["bench", "--grid", str(grid), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert built == [] and len(err.strip().splitlines()) == 1
    assert f"{grid}: axes: 1,000,000,000 configurations, above the limit of 10,000" in err
    monkeypatch.setenv("EDGELSTM_MAX_CONFIGS", "5")
    with pytest.raises(sweep.BenchError, match="6 configurations, above the limit of 5"):
        sweep.parse_spec_string("hidden_size=1|2|3,batch=1|2")


def test_size_a_billion_layers_is_closed_form(capsys):
    """count() of 1e9 layers: layers above the first are one row x (L-1). Its totals equal
    the vectorized count_grid's, and below the merge threshold the per-layer rows."""
    from edgelstm.cli import main
    from edgelstm.costmodel.counts import MAX_LAYER_ROWS, count_grid
    assert main(["size", "--input-size", "4", "--hidden-size", "8", "--num-layers", "1000000000", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    g = count_grid(4, 8, num_layers=10**9)
    assert d["params"] == int(g["params"]) and d["macs_per_step"] == int(g["macs_per_step"])
    assert len(d["layers"]) == 2 and d["layers"][1]["repeat"] == 10**9 - 1
    spec = el.LSTMSpec(4, 8, num_layers=MAX_LAYER_ROWS + 1)          # merged
    flat = el.LSTMSpec(4, 8, num_layers=MAX_LAYER_ROWS)               # one row per layer
    a, b = el.count(spec, batch=3, seq_len=5), el.count(flat, batch=3, seq_len=5)
    row = b.layers[-1]
    assert a.params - b.params == row.params_total and a.macs_per_sequence - b.macs_per_sequence == 5 * row.macs_per_step
    for case in a.traffic:
        assert a.traffic[case].bytes_per_sequence > b.traffic[case].bytes_per_sequence


def test_count_of_many_layers_matches_torch(monkeypatch):
    """Above the merge threshold (lowered to 8 rows here: a torch.nn.LSTM of 2049 layers
    takes seconds to build), params equal torch.nn.LSTM's own parameter count."""
    torch = pytest.importorskip("torch")
    from edgelstm.costmodel import counts
    monkeypatch.setattr(counts, "MAX_LAYER_ROWS", 8)
    for L, bi, proj in ((9, False, 0), (5, True, 1), (30, True, 0)):
        m = torch.nn.LSTM(3, 2, num_layers=L, bidirectional=bi, proj_size=proj)
        c = el.count(el.LSTMSpec(3, 2, num_layers=L, bidirectional=bi, proj_size=proj), batch=2)
        assert [r.repeat for r in c.layers] == [1] * (1 + bi) + [L - 1] * (1 + bi)
        assert c.params == sum(p.numel() for p in m.parameters())


def test_target_dev_zero_is_refused_before_reading(monkeypatch, capsys):
    from edgelstm.cli import main
    from edgelstm.costmodel.target import TargetError, load_target
    with pytest.raises(TargetError, match="/dev/zero: is a device, expected a target file"):
        load_target("/dev/zero")
    monkeypatch.setenv("EDGELSTM_HOST_TARGET", "/dev/zero")
    with pytest.raises(TargetError, match="/dev/zero: is a device"):
        load_target("host")
    assert main(["size", "--input-size", "3", "--hidden-size", "4", "--target", "host"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_model_file_that_is_a_fifo_or_device_is_refused(tmp_path):
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)                     # open() would block forever on a FIFO without a writer
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model(fifo)
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model("/dev/zero")


def test_weights_random_huge_is_refused_before_allocating():
    spec = el.LSTMSpec(8, 20000)
    with pytest.raises(el.weights.WeightsError, match=r"needs 5.96 GiB \(6,403,200,000 bytes\), above the "
                                                      r"limit of 1 GiB"):
        el.LSTMWeights.random(spec)
    # Drawn in the dtype asked for, within PyTorch's U(-1/sqrt(H), 1/sqrt(H)).
    w = el.LSTMWeights.random(el.LSTMSpec(8, 64, 2, True, 16), dtype="float32")
    a = w.layers[1][1].w_ih
    assert a.dtype == np.float32 and np.abs(a).max() <= 1 / 8 and a.std() > 0.06
    with pytest.raises(el.weights.WeightsError, match="above the limit of 1 KiB"):
        el.LSTMWeights.random(el.LSTMSpec(8, 64), max_bytes=1024)


def test_weight_count_matches_torch():
    torch = pytest.importorskip("torch")
    from edgelstm.weights import weight_count
    for s in (el.LSTMSpec(5, 7), el.LSTMSpec(5, 7, 3, True, 2), el.LSTMSpec(5, 7, 2, bias="none")):
        m = torch.nn.LSTM(s.input_size, s.hidden_size, s.num_layers, bias=s.bias != "none",
                          bidirectional=s.bidirectional, proj_size=s.proj_size)
        assert weight_count(s) == sum(p.numel() for p in m.parameters())


def test_bench_spec_hidden_size_a_million_is_one_line(capsys):
    from edgelstm.cli import main
    assert main(["bench", "--spec", "hidden_size=1000000", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "configuration E=1000000 H=1000000" in err and "above the limit of 1 GiB" in err


# -- 4. environments: output locations checked before the work ------------------------------
def _unwritable(tmp_path):
    """A path below a regular file: no user (root included) can create it."""
    f = tmp_path / "a-file"
    f.write_text("x")
    return f / "sub" / "host.toml"


def test_calibrate_into_unwritable_host_target_fails_before_measuring(tmp_path, monkeypatch, capsys):
    from edgelstm.cli import main
    from edgelstm.costmodel.host import calibrate as cal
    monkeypatch.setattr(cal, "calibrate", lambda *a, **k: pytest.fail("calibration ran"))
    monkeypatch.setattr(cal, "calibrate_apart", lambda *a, **k: pytest.fail("calibration ran"))
    monkeypatch.setenv("EDGELSTM_HOST_TARGET", str(_unwritable(tmp_path)))
    assert main(["calibrate", "--quick"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot create the host target file" in err
    assert main(["calibrate", "--quick", "--out", "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    # bench's first run calibrates into the same place: checked before too
    monkeypatch.setattr("edgelstm.sweep.run", lambda *a, **k: pytest.fail("the sweep ran"))
    assert main(["bench", "--quick", "--no-plots", "--out", str(tmp_path / "out")]) == 2
    assert "cannot create the host target file" in capsys.readouterr().err


def test_bench_unwritable_out_fails_before_the_sweep(tmp_path, monkeypatch, capsys):
    from edgelstm.cli import main
    monkeypatch.setattr("edgelstm.sweep.run", lambda *a, **k: pytest.fail("the sweep ran"))
    f = tmp_path / "a-file"
    f.write_text("x")
    for out in (str(f / "x"), "/etc/passwd/x", str(f)):
        assert main(["bench", "--quick", "--no-plots", "--out", out]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "bench --out directory" in err, err


# -- 5. one-line errors naming the file -------------------------------------------------------
def _onnx_file(tmp_path, name, mutate, n=2):
    pytest.importorskip("onnx")
    m = onnx_chain(n)
    mutate(m)
    p = tmp_path / name
    p.write_bytes(m.SerializeToString())
    return p


def _cli_one_line(capsys, *argv):
    from edgelstm.cli import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
    return err


def _set_attr(node, name, value):
    from onnx import helper
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def _gather_without_inputs(m):
    from onnx import helper
    m.graph.node.insert(0, helper.make_node("Gather", [], ["E0"], name="emb"))
    m.graph.node[1].input[0] = "E0"


def _matmul_without_weight(m):
    from onnx import helper
    m.graph.node.append(helper.make_node("MatMul", ["Z1"], ["OUT"], name="head"))


ONNX_CASES = [
    ("lstm-no-inputs.onnx", lambda m: m.graph.node[0].ClearField("input"),
     r"LSTM node 'lstm0': expected an input X and an output, got inputs \[\]"),
    ("lstm-no-weights.onnx", lambda m: m.graph.node[0].input.__delitem__(slice(1, None)),
     "LSTM node 'lstm0': W and R inputs are required"),
    ("matmul-no-weight.onnx", _matmul_without_weight, "MatMul node 'head': expected 2 inputs and an output, got 1"),
    ("gather-no-inputs.onnx", _gather_without_inputs,
     r"Gather node 'emb' before the first LSTM: expected 2 inputs \(data, indices\), got \[\]"),
    ("hidden-abc.onnx", lambda m: _set_attr(m.graph.node[0], "hidden_size", "abc"),
     "LSTM node 'lstm0': hidden_size: expected an integer >= 1, got 'abc'"),
    ("dims.onnx", lambda m: m.graph.initializer[1].dims.__setitem__(slice(None), [1, 8, 7]),
     r"initializer 'W0': its data does not match its dims \[1, 8, 7\]"),
]


@pytest.mark.parametrize("name, mutate, words", ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_onnx_malformed_nodes_are_one_line_errors_naming_the_file(tmp_path, capsys, name, mutate, words):
    import re
    path = _onnx_file(tmp_path, name, mutate)
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert str(e.value).startswith(f"{path}: ") and re.search(words, str(e.value)), str(e.value)
    err = _cli_one_line(capsys, "size", "--model", str(path))
    assert str(path) in err


def _keras_cfg(edit):
    c = keras_config()
    edit(c)
    return c


def _units(v):
    return lambda c: c["config"]["layers"][1]["config"].__setitem__("units", v)


KERAS_CASES = [
    ("config-list", lambda c: c.__setitem__("config", [1]), r"config: expected a JSON object, got \[1\]"),
    ("layers-ints", lambda c: c["config"].__setitem__("layers", [1, 2, 3]),
     r"config.layers\[0\]: expected a JSON object, got 1"),
    ("units-null", _units(None), r"layer 'lstm' \(LSTM\): units: expected an integer >= 1, got None"),
    ("units-inf", _units(float("inf")), r"units: expected an integer >= 1, got inf"),
    ("units-abc", _units("abc"), r"units: expected an integer >= 1, got 'abc'"),
    ("units-float", _units(4.5), r"units: expected an integer >= 1, got 4.5"),
]


@pytest.mark.parametrize("name, edit, words", KERAS_CASES, ids=[c[0] for c in KERAS_CASES])
@pytest.mark.parametrize("ext", [".keras", ".json"])
def test_keras_malformed_configs_are_one_line_errors_naming_the_file(tmp_path, capsys, name, edit, words, ext):
    import re
    cfg = _keras_cfg(edit)
    path = tmp_path / (name + ext)
    if ext == ".keras":
        keras_zip(path, config=cfg)
    else:
        path.write_text(json.dumps(cfg))          # json writes inf as Infinity, as a hostile file may
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert str(e.value).startswith(f"{path}: ") and re.search(words, str(e.value)), str(e.value)
    assert str(path) in _cli_one_line(capsys, "size", "--model", str(path))


def test_keras_config_nested_100k_deep(tmp_path, capsys):
    for path in (tmp_path / "deep.json", tmp_path / "deep.keras"):
        text = "[" * 100_000 + "]" * 100_000
        if path.suffix == ".keras":
            keras_zip(path, config=text)
        else:
            path.write_text(text)
        with pytest.raises(ModelFileError, match=f"{path}: the Keras config is nested too deeply"):
            load_model(path)
        _cli_one_line(capsys, "size", "--model", str(path))


def test_non_utf8_files_are_named_by_full_path(tmp_path, monkeypatch, capsys):
    from edgelstm import sweep
    from edgelstm.costmodel.target import TargetError, load_target
    monkeypatch.chdir(tmp_path)
    for name in ("t.toml", "g.json", "k.json"):
        (tmp_path / name).write_bytes(b'{"class_name": "Sequential", "x": "caf\xe9"}')
    with pytest.raises(TargetError, match=f"^{tmp_path}/t.toml: the target file is not UTF-8 text"):
        load_target("./t.toml")
    with pytest.raises(sweep.BenchError, match=f"^{tmp_path}/g.json: the grid file is not UTF-8 text"):
        sweep.load_grid("g.json")
    with pytest.raises(ModelFileError, match=r"k.json: the Keras config is not UTF-8 text \(byte 38\)"):
        load_model("k.json")


TOML_GOOD = """name = "t"
kind = "mcu"
clock_MHz = 100
source = "test"
[macs_per_cycle]
float32 = 1
source = "test"
[overhead]
step_s = 1e-6
source = "test"
[[memory]]
name = "sram"
kind = "sram"
capacity_bytes = 65536
bandwidth_GB_per_s = 1
source = "test"
"""


@pytest.mark.parametrize("extra, words", [
    ("gemm = 5\n", r"gemm: not a key of a target file \(known: .*\) \(a host file written by an older "
                    r"edgelstm: run `edgelstm calibrate` again\)"),
    ("colour = [1]\n", r"colour: not a key of a target file \(known: name, description, kind"),
])
def test_target_toml_wrong_value_types_name_the_file_and_key(tmp_path, capsys, extra, words):
    from edgelstm.costmodel.target import TargetError, load_target
    path = tmp_path / "t.toml"
    path.write_text(extra + TOML_GOOD)
    with pytest.raises(TargetError, match=f"^{path}: {words}"):
        load_target(str(path))
    _cli_one_line(capsys, "size", "--input-size", "3", "--hidden-size", "4", "--target", str(path))
    path.write_text(TOML_GOOD)
    assert load_target(str(path)).name == "t"


@pytest.mark.parametrize("grid, words", [
    ({"configs": 5}, "configs: expected a list of tables, got 5"),
    ({"configs": [5]}, r"configs: expected a list of tables, got \[5\]"),
    ({"axes": [1, 2]}, r"axes: expected a table of key: \[values\], got \[1, 2\]"),
    ({"axes": {"hidden_size": [[8]]}}, r"hidden_size: expected a value or a list of values, got \[8\]"),
    ({"axes": {"hidden_size": []}}, "hidden_size: expected one or more values"),
])
def test_grid_wrong_shapes_are_one_line(tmp_path, capsys, grid, words):
    from edgelstm import sweep
    path = tmp_path / "g.json"
    path.write_text(json.dumps(grid))
    with pytest.raises(sweep.BenchError, match=words):
        sweep.load_grid(path)
    assert str(path) in _cli_one_line(capsys, "bench", "--grid", str(path), "--no-plots")


@pytest.mark.filterwarnings("ignore:.*bfloat16")
def test_torch_bfloat16_weights_are_converted_to_float32(tmp_path):
    """bfloat16 -> float32 is exact: the imported weights run like torch's float32 LSTM on the
    same (bf16-rounded) values, and a warning says they were converted."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.LSTM(3, 5, num_layers=2).to(torch.bfloat16)
    ref_m = torch.nn.LSTM(3, 5, num_layers=2)
    ref_m.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    with torch.no_grad():
        ref = ref_m(torch.from_numpy(x))[0].numpy()
    with pytest.warns(UserWarning, match="bfloat16 weights converted to float32"):
        w = el.LSTMWeights.from_torch(m)
    np.testing.assert_allclose(el.lstm(x, w)[0], ref, atol=1e-5)
    torch.save(m.state_dict(), tmp_path / "bf16.pt")
    with pytest.warns(UserWarning, match="bfloat16"):
        model = load_model(tmp_path / "bf16.pt", spec=el.ModelSpec(el.LSTMSpec(3, 5, 2)))
    np.testing.assert_allclose(model(x), ref, atol=1e-5)
    with pytest.warns(UserWarning, match="bfloat16"):
        module_model = load_model(torch.nn.Sequential(m))
    np.testing.assert_allclose(module_model(x), ref, atol=1e-5)


def test_size_json_never_prints_infinity(capsys):
    """Sizes whose figures overflow a float: JSON null, never Infinity (not JSON); larger
    still, one line and exit 2 instead of an OverflowError traceback."""
    from edgelstm.cli import main
    big = str(10**153)
    assert main(["size", "--input-size", "4", "--hidden-size", big, "--target", "cortex-m7", "--json"]) == 0
    out = capsys.readouterr().out
    d = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert d["params"] > 10**306 and None in d["predictions"][0].values()
    _cli_one_line(capsys, "size", "--input-size", "4", "--hidden-size", str(10**170), "--target", "cortex-m7")
    assert main(["size", "--input-size", "4", "--hidden-size", str(10**400), "--json"]) == 0
    d = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert d["params"] > 10**800


# -- 6. time: ONNX import is linear in the graph ----------------------------------------------
def test_onnx_import_work_is_linear_in_the_chain_length(tmp_path, monkeypatch):
    """N chained LSTM nodes took 4.5 s at N=1000 and 78 s at N=4000 (each LSTM's successor was
    found by walking up from every LSTM: N^2 walks). Work is counted, not timed: nodes visited
    by the importer's graph walks, at N and 4N, and per node. (bench/bench_import.py times it.)"""
    pytest.importorskip("onnx")
    from edgelstm.importers import onnx_import
    graphs = []

    class Counting(onnx_import._Graph):
        def __init__(self, *a):
            super().__init__(*a)
            graphs.append(self)
    monkeypatch.setattr(onnx_import, "_Graph", Counting)
    visits = {}
    for n in (100, 400):
        p = tmp_path / f"chain{n}.onnx"
        p.write_bytes(onnx_chain(n).SerializeToString())
        m = load_model(p)
        assert m.spec.stacks[0].num_layers == n
        visits[n] = graphs[-1].visits
        assert visits[n] <= 3 * len(graphs[-1].nodes)        # each node a bounded number of times
    assert visits[400] <= 4.2 * visits[100]


def test_torch_state_dict_records_are_sized_before_torch_load(tmp_path, monkeypatch):
    """A torch zip whose records inflate past the limit is refused before torch.load
    allocates storages for them (the .pt twin of the .keras bomb)."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "bomb.pt"
    torch.save(torch.nn.LSTM(3, 4).state_dict(), path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        with z.open("bomb/data/99", "w", force_zip64=True) as f:
            for _ in range(4):
                f.write(bytes(1 << 23))
    monkeypatch.setenv("EDGELSTM_MAX_BYTES", "16MiB")
    with pytest.raises(ModelFileError, match=r"bomb\.pt: the state_dict's tensors \(decompressed\) needs 32"):
        load_model(path, spec=el.ModelSpec(el.LSTMSpec(3, 4)))


def test_onnx_file_starting_like_a_zip_is_refused(tmp_path):
    """Found by tests/test_fuzz.py: b'PK\\x03\\x04' then garbage raised zipfile.BadZipFile."""
    path = tmp_path / "pk.onnx"
    path.write_bytes(b"PK\x03\x04" + onnx_chain(1).SerializeToString())
    with pytest.raises(ModelFileError, match=r"pk\.onnx: refused: the file is a zip archive, not an ONNX model"):
        load_model(path)


def test_keras_corrupt_deflate_stream_is_a_model_file_error(tmp_path):
    """Found by tests/test_fuzz.py: one flipped byte in a deflated member raised zlib.error."""
    path = keras_zip(tmp_path / "z.keras")
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    blob[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match=r"z\.keras: (cannot read the \.keras zip|not a readable \.keras zip)"):
        load_model(path)
