import json
import subprocess
import sys

import pytest

from edgelstm.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_size_table_has_layers_and_total(capsys):
    code, out, err = run(capsys, "size", "--input-size", "40", "--hidden-size", "64", "--num-layers", "2",
                         "--bidirectional", "--seq-len", "100")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert any(l.startswith("lstm0.layer1.reverse") for l in lines)
    total = next(l for l in lines if l.startswith("total"))
    assert "153,600" in total   # 2 x 4*64*(40+64+2) + 2 x 4*64*(128+64+2)


def test_size_json_is_one_stable_object(capsys):
    code, out, _ = run(capsys, "size", "--input-size", "80", "--hidden-size", "12", "--bias", "keras",
                       "--dtype", "int8", "--json")
    d = json.loads(out)
    assert code == 0
    assert {"params", "weight_bytes", "macs_per_step", "flops_per_step", "bytes_per_step", "layers"} <= set(d)
    assert d["params"] == 4464 and d["macs_per_step"] == 4 * 12 * (80 + 12)
    assert d["layers"][0]["params_total"] == 4464


def test_size_example(capsys):
    code, out, _ = run(capsys, "size", "--example", "seq2seq", "--json")
    assert code == 0 and json.loads(out)["params"] == 87_008_000


@pytest.mark.parametrize("argv, words", [
    (["size", "--input-size", "-3", "--hidden-size", "4"], "input_size"),
    (["size", "--input-size", "3", "--hidden-size", "4", "--dtype", "fp7"], "dtype"),
    (["size", "--input-size", "3", "--hidden-size", "4", "--proj-size", "4"], "proj_size"),
    (["size", "--input-size", "3", "--hidden-size", "4", "--frobnicate"], "unrecognized arguments"),
    (["size", "--input-size", "x", "--hidden-size", "4"], "--input-size"),
    (["size", "--hidden-size", "4"], "--input-size"),
    (["size", "--example", "nope"], "example"),
    (["size", "--input-size", "3", "--hidden-size", "4", "--convention", "fvcore"], "convention"),
    ([], "command"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err


def test_module_entry_point_has_no_traceback():
    p = subprocess.run([sys.executable, "-m", "edgelstm", "size", "--input-size", "0", "--hidden-size", "4"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == "error: LSTMSpec.input_size: expected an integer >= 1, got 0"
