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

from hostile_files import keras_config, keras_zip, lstm_vars, onnx_chain, replace_var, weights_h5

import edgelstm as el
from edgelstm.model import ModelFileError, load_model

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
