"""The target catalog and its loader: every file loads, sources are there, and a bad
file gets an error that names the file and the key."""
import math

import pytest

from edgelstm.costmodel.target import (HOROWITZ_2014, TargetError, list_targets, load_target,
                                       sram_energy_pJ_per_byte)

CATALOG = ("cortex-m4", "cortex-m7", "cortex-m55", "cortex-a53", "cortex-a72", "cortex-a76",
           "jetson-orin-nano", "a100", "h100")

GOOD = '''
name = "toy"
kind = "accelerator"
clock_MHz = 1000
source = "made up"
[macs_per_cycle]
float32 = 1
source = "made up"
[overhead]
step_s = 1e-6
source = "made up"
[[memory]]
name = "SRAM"
kind = "sram"
capacity_bytes = 1048576
bandwidth_GB_per_s = 100
source = "made up"
[[memory]]
name = "DRAM"
kind = "dram"
capacity_bytes = 1073741824
bandwidth_GB_per_s = 0.1
source = "made up"
'''


def write(tmp_path, text, name="toy.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_catalog_lists_every_required_target_and_host():
    names = list_targets()
    for n in CATALOG + ("host",):
        assert n in names


@pytest.mark.parametrize("name", CATALOG)
def test_catalog_target_loads_with_sources(name):
    t = load_target(name)
    assert t.name == name
    assert t.clock_MHz > 0 and t.cores >= 1 and t.macs_per_cycle
    assert all(v > 0 for v in t.macs_per_cycle.values())
    for key in ("clock_MHz", "macs_per_cycle", "overhead", "energy"):
        assert t.sources[key]
    for m in t.memory:
        assert m.source and m.capacity_bytes > 0 and m.bandwidth_GB_per_s > 0 and m.energy_pJ_per_byte > 0
    assert any(m.kind in ("dram", "hbm", "flash") for m in t.memory)


def test_datasheet_figures_pinned():
    m7 = load_target("cortex-m7")
    assert m7.clock_MHz == 480 and m7.macs_per_cycle["int8"] == 2
    assert load_target("cortex-m4").clock_MHz == 168
    a100 = load_target("a100")  # 19.5 TFLOPS fp32, 312 TFLOPS fp16 tensor (dense)
    assert 2 * a100.peak_macs_per_s("float32", 108) == pytest.approx(19.5e12, rel=0.01)
    assert 2 * a100.peak_macs_per_s("float16", 108) == pytest.approx(312e12, rel=0.01)
    h100 = load_target("h100")
    assert 2 * h100.peak_macs_per_s("float16", 132) == pytest.approx(989e12, rel=0.01)
    assert h100.level("HBM3").bandwidth_GB_per_s == 3350


def test_horowitz_defaults():
    # ISSCC 2014, 45 nm: fp32 mult 3.7 + add 0.9 pJ; int8 mult 0.2 + add 0.03 pJ.
    assert HOROWITZ_2014["mac_pJ_float32"] == pytest.approx(4.6)
    assert HOROWITZ_2014["mac_pJ_int8"] == pytest.approx(0.23)
    assert HOROWITZ_2014["mac_pJ_float16"] == pytest.approx(1.5)
    # SRAM 64-bit reads: 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ.
    assert sram_energy_pJ_per_byte(8 * 1024) == pytest.approx(1.25)
    assert sram_energy_pJ_per_byte(32 * 1024) == pytest.approx(2.5)
    assert sram_energy_pJ_per_byte(1024 * 1024) == pytest.approx(12.5)
    assert sram_energy_pJ_per_byte(64 * 1024 ** 2) == pytest.approx(12.5)


def test_own_target_file_and_energy_override(tmp_path):
    t = load_target(write(tmp_path, GOOD))
    assert t.name == "toy" and t.energy["mac_pJ_float32"] == pytest.approx(4.6)
    t2 = load_target(write(tmp_path, GOOD + '[energy]\nmac_pJ_float32 = 1.0\nsource = "7 nm guess"\n', "t2.toml"))
    assert t2.energy["mac_pJ_float32"] == 1.0 and t2.sources["energy"] == "7 nm guess"


@pytest.mark.parametrize("old,new,message", [
    ('bandwidth_GB_per_s = 0.1', 'bandwidth_GB_per_s = -3',
     "toy.toml: memory[1].bandwidth_GB_per_s: expected a positive number, got -3"),
    ('clock_MHz = 1000\n', '', "toy.toml: clock_MHz: missing"),
    ('float32 = 1\n', 'float32 = "fast"\n', "toy.toml: macs_per_cycle.float32: expected a positive number"),
    ('float32 = 1\n', 'fp99 = 1\n', "toy.toml: macs_per_cycle.fp99: expected a dtype"),
    ('kind = "sram"', 'kind = "tape"', "toy.toml: memory[0].kind: expected one of"),
    ('capacity_bytes = 1048576', 'capacity_bytes = 1.5', "toy.toml: memory[0].capacity_bytes: expected an integer"),
    ('step_s = 1e-6\n', '', "toy.toml: overhead.step_s: missing"),
    ('kind = "dram"', 'kind = "hbm"', "toy.toml: memory[1].energy_pJ_per_byte: missing"),
    ('source = "made up"\n[[memory]]\nname = "DRAM"', '[[memory]]\nname = "DRAM"', "toy.toml: memory[0].source: missing"),
])
def test_bad_file_names_file_and_key(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(TargetError) as e:
        load_target(write(tmp_path, GOOD.replace(old, new, 1)))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(TargetError, match=r"broken\.toml: not valid TOML"):
        load_target(write(tmp_path, "name = \n", "broken.toml"))
    with pytest.raises(TargetError, match="no such target file"):
        load_target(tmp_path / "absent.toml")
    with pytest.raises(TargetError, match="no target named 'cortex-m99'"):
        load_target("cortex-m99")


def test_unsupported_dtype_is_named():
    with pytest.raises(TargetError, match="no macs_per_cycle.float16"):
        load_target("cortex-m4").peak_macs_per_s("float16")


def test_host_reads_env_path(tmp_path, monkeypatch):
    p = write(tmp_path, GOOD.replace('name = "toy"', 'name = "host"'), "myhost.toml")
    monkeypatch.setenv("EDGELSTM_HOST_TARGET", str(p))
    assert load_target("host").name == "host"
    assert math.isclose(load_target("host").level("DRAM").bandwidth_GB_per_s, 0.1)


def test_cli_targets_and_bad_target(tmp_path, monkeypatch, capsys):
    from edgelstm.cli import main
    monkeypatch.setenv("EDGELSTM_HOST_TARGET", str(tmp_path / "none.toml"))
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "cortex-m55" in out and "not calibrated yet" in out
    assert main(["size", "--input-size", "8", "--hidden-size", "8", "--target", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    bad = write(tmp_path, GOOD.replace("bandwidth_GB_per_s = 0.1", "bandwidth_GB_per_s = -3"))
    assert main(["size", "--input-size", "8", "--hidden-size", "8", "--target", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "toy.toml: memory[1].bandwidth_GB_per_s" in err


def test_roofline_gives_a_roof_per_memory_level():
    from edgelstm.costmodel.target import load_target
    t = load_target("cortex-m7")
    roofs = t.roofline()
    assert len(roofs) == len(t.memory)
    peak = 2 * t.peak_macs_per_s("float32" if "float32" in t.macs_per_cycle else next(iter(t.macs_per_cycle)),
                                 t.cores) / 1e9
    for (label, p, bw), m in zip(roofs, t.memory):
        assert m.name in label and p == pytest.approx(peak) and bw == pytest.approx(m.bandwidth_for(t.cores) / 1e9)


@pytest.mark.parametrize("name", CATALOG)
def test_catalog_target_written_from_the_schema_reads_back_the_same(tmp_path, name):
    """target_document / write_target_file write a target from the schema the parser reads
    (tomli-w): every catalog file written back and read again is the same target."""
    import dataclasses
    from edgelstm.costmodel.target import load_target_file, write_target_file
    t = load_target(name)
    p = write_target_file(t, tmp_path / f"{name}.toml", header="written back")
    again = load_target_file(p)
    assert dataclasses.replace(again, path="") == dataclasses.replace(t, path="")
    assert p.read_text().startswith("# written back\n")


def test_host_profile_errors_name_the_key(tmp_path):
    from edgelstm.costmodel.host.profile import load_host_file
    from test_host_model import HOSTY
    bad = HOSTY.replace("njit_arg_s = 1e-08", "njit_arg_s = -1")
    assert bad != HOSTY
    with pytest.raises(TargetError, match=r"hosty\.toml: host\.njit_arg_s: expected a number >= 0, got -1"):
        load_host_file(write(tmp_path, bad, "hosty.toml"))
    bad = HOSTY.replace('routine = "dot"', 'routine = "magic"', 1)
    with pytest.raises(TargetError, match=r"host\.gemm\[0\]\.routine: expected one of dot, own, block, matvec"):
        load_host_file(write(tmp_path, bad, "hosty.toml"))


def test_cli_targets_lists_an_older_host_file_as_unusable(tmp_path, monkeypatch, capsys):
    """A host file from before the [host] profile (top-level [[gemm]], [kernel]) does not stop
    `edgelstm targets`: the host row says what is wrong and what to do."""
    import json
    from edgelstm.cli import main
    old = write(tmp_path, GOOD.replace('name = "toy"', 'name = "host"') + "[kernel]\ngemm_min_batch = 32\n", "host.toml")
    monkeypatch.setenv("EDGELSTM_HOST_TARGET", str(old))
    assert main(["targets", "--json"]) == 0
    host = [t for t in json.loads(capsys.readouterr().out)["targets"] if t["name"] == "host"][0]
    assert host["calibrated"] is False and "run `edgelstm calibrate` again" in host["error"]
    assert main(["size", "--input-size", "8", "--hidden-size", "8", "--target", "host"]) == 2
    assert "run `edgelstm calibrate` again" in capsys.readouterr().err


def test_layer_overhead_read_written_and_charged_per_lstm_row(tmp_path):
    """[overhead] layer_s: read (default 0 when absent), written back by the one schema, and
    charged once per LSTM layer and direction per call (two layers, bidirectional: 4 rows)."""
    from edgelstm.costmodel.api import load_target, predict
    from edgelstm.costmodel.target import write_target_file
    from edgelstm.spec import LSTMSpec
    plain = load_target(str(write(tmp_path, GOOD)))
    assert plain.layer_overhead_s == 0.0
    t = load_target(str(write(tmp_path, GOOD.replace("step_s = 1e-6", "step_s = 1e-6\nlayer_s = 3e-5"), "l.toml")))
    assert t.layer_overhead_s == 3e-5
    again = load_target(str(write_target_file(t, tmp_path / "again.toml")))
    assert again.layer_overhead_s == 3e-5
    spec = LSTMSpec(8, 16, num_layers=2, bidirectional=True)
    a = predict(spec, t, batch=1, seq_len=5)
    b = predict(spec, plain, batch=1, seq_len=5)
    assert a.latency_s - b.latency_s == pytest.approx(4 * 3e-5)
    assert a.bound_breakdown["overhead"] - b.bound_breakdown["overhead"] == pytest.approx(4 * 3e-5)
