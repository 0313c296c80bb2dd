"""edgelstm.explore and the array model: checks that do not need the simulator.

The simulator checks (gemm_cycles equal to SCALE-Sim 3.0.0, stalls) are in
tests/test_scalesim.py. Here: the issue's published SCALE-Sim figures, the vectorized
sweep against the same model one design at a time, the MACs against costmodel.counts,
physical bounds, the Pareto front against a brute-force definition, predict() on an
accelerator target, the CLI, and bad input.
"""
import csv
import json

import numpy as np
import pytest

import edgelstm as el
from edgelstm import explore
from edgelstm.cli import main
from edgelstm.costmodel import array as A
from edgelstm.costmodel.counts import count
from edgelstm.costmodel.target import TargetError, load_target, parse_target

SPEC = el.LSTMSpec(input_size=40, hidden_size=64)


def random_designs(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"rows": rng.choice([2, 4, 8, 16, 32, 64, 128], n), "cols": rng.choice([2, 4, 8, 16, 32, 64, 128], n),
            "dataflow": rng.choice(np.array(["os", "ws", "is"]), n),
            "ifmap_sram_kB": rng.choice([0.25, 1, 4], n), "filter_sram_kB": rng.choice([2, 8, 32, 128], n),
            "ofmap_sram_kB": rng.choice([0.25, 1, 4], n), "dram_words_per_cycle": rng.choice([0.5, 1, 4, 16], n),
            "clock_MHz": rng.choice([10.0, 100.0, 400.0], n)}


# -- gemm_cycles ------------------------------------------------------------------------------
def test_gemm_cycles_reproduces_the_issue_scalesim_figures():
    # SCALE-Sim 3.0.0 on M=1, N=256, K=64, 32 x 32 (issue 15): 1007 os, 1519 ws, 699 is.
    assert explore.gemm_cycles(1, 256, 64, 32, 32, ["os", "ws", "is"]).tolist() == [1007, 1519, 699]


def test_gemm_cycles_broadcasts_like_scalar_calls():
    M = np.array([1, 3, 17])[:, None]
    rows = np.array([8, 16, 128])[None, :]
    grid = explore.gemm_cycles(M, 200, 33, rows, 32, "ws")
    assert grid.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            assert grid[i, j] == explore.gemm_cycles(int(M[i, 0]), 200, 33, int(rows[0, j]), 32, "ws")


@pytest.mark.parametrize("kwargs, match", [
    (dict(M=0), "M: expected integers >= 1"),
    (dict(rows=2.5), "rows: expected integers >= 1"),
    (dict(dataflow="rs"), "dataflow: expected one of os, ws, is, got 'rs'"),
    (dict(dataflow=[0, 3]), "dataflow: expected codes 0"),
])
def test_gemm_cycles_bad_input(kwargs, match):
    args = dict(M=1, N=4, K=4, rows=8, cols=8, dataflow="os")
    args.update(kwargs)
    with pytest.raises(explore.ExploreError, match=match):
        explore.gemm_cycles(**args)


# -- sweep ---------------------------------------------------------------------------------
def test_sweep_vectorized_equals_one_design_at_a_time(monkeypatch):
    # Several chunks (CHUNK shrunk), shared (rows, cols, dataflow) triples, projection and
    # two layers: the vectorized path must give what each design gives alone.
    monkeypatch.setattr(A, "CHUNK", 16)
    spec = el.LSTMSpec(input_size=24, hidden_size=32, num_layers=2, proj_size=16)
    d = random_designs(60, seed=3)
    all_at_once = explore.sweep(spec, d, batch=2, seq_len=7, dtype="int8")
    for i in range(0, 60, 7):
        one = explore.sweep(spec, {k: v[i:i + 1] for k, v in d.items()}, batch=2, seq_len=7, dtype="int8")
        for k in all_at_once:
            assert one[k][0] == pytest.approx(all_at_once[k][i], rel=1e-12), (k, i)


def test_sweep_macs_match_counts():
    # utilization x cycles x PEs recovers the MACs of the sequence: the same number
    # costmodel.counts computes on its own.
    spec = el.LSTMSpec(input_size=40, hidden_size=48, num_layers=2, proj_size=24)
    d = random_designs(500, seed=1)
    r = explore.sweep(spec, d, batch=3, seq_len=11, dtype="int8", breakdown=True)
    macs = r["utilization"] * r["cycles"] * d["rows"] * d["cols"]
    expected = count(spec, batch=3, seq_len=11, dtype="int8").macs_per_sequence
    np.testing.assert_allclose(macs, expected, rtol=1e-12)


def test_sweep_respects_physical_bounds():
    d = random_designs(3000, seed=2)
    r = explore.sweep(SPEC, d, batch=1, seq_len=50, dtype="int8", breakdown=True)
    c = count(SPEC, batch=1, seq_len=50, dtype="int8")
    pes = d["rows"] * d["cols"]
    # Never faster than the roofline (every PE busy every cycle), never above 100%.
    assert np.all(r["cycles"] >= c.macs_per_sequence / pes)
    assert np.all((r["utilization"] > 0) & (r["utilization"] <= 1))
    # The recurrence: T steps of at least the recurrent GEMM's compute cycles each.
    rec = explore.gemm_cycles(1, 4 * 64, 64, d["rows"], d["cols"], d["dataflow"])
    assert np.all(r["cycles"] >= 50 * rec)
    # Everything positive and finite; areas add up.
    for k in ("latency_s", "step_latency_s", "energy_j", "step_energy_j", "area_mm2", "power_w", "leakage_w"):
        assert np.all(np.isfinite(r[k]) & (r[k] > 0)), k
    np.testing.assert_allclose(r["area_mm2"], r["area_pe_mm2"] + r["area_sram_mm2"] + r["area_vector_mm2"])


def test_sweep_batch_one_is_far_from_the_roofline():
    # The issue's point: at batch 1, a 32 x 32 array runs the step at 1-2% utilization.
    d = explore.grid(rows=[32], cols=[32], dataflow=["os", "ws", "is"], ifmap_sram_kB=[64], filter_sram_kB=[512],
                     ofmap_sram_kB=[64], dram_words_per_cycle=[16], clock_MHz=[200])
    spec = el.LSTMSpec(input_size=64, hidden_size=64)
    r = explore.sweep(spec, d, seq_len=100, dtype="int8")
    assert np.all(r["utilization"] < 0.05)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("rows"), "missing key"),
    (lambda d: d.update(clock_MHz=d["clock_MHz"][:-1]),
     r"designs\['clock_MHz'\]: expected length 5 \(as designs\['rows'\]\), got 4"),
    (lambda d: d.update(colour=d["rows"]), "unknown key"),
    (lambda d: d.update(dataflow=np.array(["os", "ws", "xx", "is", "os"])), "got 'xx'"),
    (lambda d: d.update(clock_MHz=-d["clock_MHz"]), r"designs\['clock_MHz'\]: expected finite numbers > 0"),
    (lambda d: d.update(cols=d["cols"].reshape(5, 1)), "expected a 1-D array"),
])
def test_sweep_bad_designs(mutate, match):
    d = random_designs(5)
    mutate(d)
    with pytest.raises(explore.ExploreError, match=match):
        explore.sweep(SPEC, d)


def test_sweep_bad_dtype():
    with pytest.raises(explore.ExploreError, match="dtype: expected one of int8"):
        explore.sweep(SPEC, random_designs(3), dtype="float64")


def test_grid_refuses_huge_products_before_allocating():
    with pytest.raises(explore.ExploreError, match="expected at most"):
        explore.grid(**{k: list(range(1, 101)) for k in A.REQUIRED_KEYS if k != "dataflow"}, dataflow=["os"])


# -- pareto and constraints -------------------------------------------------------------
def brute_force_front(points):
    """The definition: i is kept if no j is <= everywhere and < somewhere."""
    keep = []
    for i, p in enumerate(points):
        dominated = any(np.all(q <= p) and np.any(q < p) for j, q in enumerate(points) if j != i)
        if not dominated:
            keep.append(i)
    return keep


def test_pareto_equals_brute_force():
    rng = np.random.default_rng(4)
    n = 400
    # Ties on purpose: a coarse grid of values.
    res = {"latency_s": rng.integers(1, 30, n) * 1e-3, "energy_j": rng.integers(1, 30, n) * 1e-6,
           "area_mm2": rng.integers(1, 10, n) * 0.1, "utilization": rng.random(n)}
    front = explore.pareto(res, objectives=("latency_s", "energy_j", "area_mm2"))
    pts = np.stack([res["latency_s"], res["energy_j"], res["area_mm2"]], axis=1)
    expected_points = {tuple(pts[i]) for i in brute_force_front(pts)}
    assert {tuple(pts[i]) for i in front} == expected_points
    assert len(front) == len(expected_points)  # one design per distinct front point
    # utilization is maximized
    front_u = explore.pareto(res, objectives=("latency_s", "utilization"))
    pts_u = np.stack([res["latency_s"], -res["utilization"]], axis=1)
    assert {tuple(pts_u[i]) for i in front_u} == {tuple(pts_u[i]) for i in brute_force_front(pts_u)}


def test_pareto_with_mask_and_bad_objectives():
    res = {"latency_s": np.array([1.0, 2.0, 3.0]), "energy_j": np.array([3.0, 2.0, 1.0])}
    assert sorted(explore.pareto(res, ("latency_s", "energy_j"), where=np.array([False, True, True]))) == [1, 2]
    with pytest.raises(explore.ExploreError, match="objectives: expected keys among"):
        explore.pareto(res, ("speed",))
    with pytest.raises(explore.ExploreError, match="where: expected a boolean mask of length 3"):
        explore.pareto(res, ("latency_s",), where=np.array([1, 0, 1]))


def test_constraints_meaning():
    r = explore.sweep(SPEC, random_designs(2000, seed=5), seq_len=1)
    ok = explore.constraints(r, rate_hz=100, power_w=1e-3, area_mm2=0.5)
    avg_power = r["step_energy_j"] * 100 + r["leakage_w"]
    expected = (r["step_latency_s"] <= 0.01) & (avg_power <= 1e-3) & (r["area_mm2"] <= 0.5)
    assert np.array_equal(ok, expected) and 0 < ok.sum() < 2000
    with pytest.raises(explore.ExploreError, match="power_w: expected a number > 0"):
        explore.constraints(r, power_w=-1)


def test_sweep_memory_model_per_design_and_default():
    # memory_model="scalesim" for every design, or per design in a mixed sweep: each design
    # gets what it gets alone; the default is the streaming model; with buffers that hold
    # every operand the two agree (the window never moves).
    spec = el.LSTMSpec(input_size=24, hidden_size=32, num_layers=2, proj_size=16)
    d = random_designs(40, seed=5)
    stream = explore.sweep(spec, d, batch=2, seq_len=5)
    assert np.array_equal(stream["latency_s"], explore.sweep(spec, d, batch=2, seq_len=5,
                                                             memory_model="stream")["latency_s"])
    win = explore.sweep(spec, d, batch=2, seq_len=5, memory_model="scalesim")
    mixed = explore.sweep(spec, dict(d, memory_model=np.where(np.arange(40) % 2 == 0, "scalesim", "stream")),
                          batch=2, seq_len=5)
    expect = np.where(np.arange(40) % 2 == 0, win["latency_s"], stream["latency_s"])
    assert np.allclose(mixed["latency_s"], expect, rtol=1e-12)
    assert not np.allclose(win["latency_s"], stream["latency_s"])  # these small buffers spill
    big = dict(d, ifmap_sram_kB=np.full(40, 4096), filter_sram_kB=np.full(40, 4096), ofmap_sram_kB=np.full(40, 4096))
    assert np.allclose(explore.sweep(spec, big, memory_model="scalesim")["latency_s"],
                       explore.sweep(spec, big)["latency_s"], rtol=1e-12)
    with pytest.raises(explore.ExploreError, match=r"memory_model: expected one of stream, scalesim, got 'lru'"):
        explore.sweep(spec, d, memory_model="lru")
    with pytest.raises(explore.ExploreError, match=r"designs\['memory_model'\]: expected one of stream, scalesim, "
                                                   r"got 'lru'"):
        explore.sweep(spec, dict(d, memory_model=np.full(40, "lru")))


# -- predict on an accelerator target ------------------------------------------------------
def test_predict_uses_the_array_on_an_accelerator_target():
    t = load_target("edge-npu")
    assert t.kind == "accelerator" and t.array is not None
    p = el.predict(SPEC, t, batch=1, seq_len=100, dtype="int8")
    r = explore.sweep(SPEC, t.array.designs(t.clock_MHz), batch=1, seq_len=100, dtype="int8")
    assert p.latency_s == pytest.approx(r["latency_s"][0], rel=1e-12)
    assert p.step_latency_s == pytest.approx(r["step_latency_s"][0], rel=1e-12)
    assert p.energy_j == pytest.approx(r["energy_j"][0], rel=1e-12)
    # The roofline of the same target (256 MACs/cycle) would be over 10x faster at batch 1.
    roofline_s = count(SPEC, batch=1, seq_len=100, dtype="int8").macs_per_sequence / (256 * t.clock_MHz * 1e6)
    assert p.latency_s > 10 * roofline_s


def test_cpu_and_gpu_targets_keep_the_roofline():
    for name in ("cortex-m7", "a100"):
        t = load_target(name)
        assert t.array is None
        p = el.predict(SPEC, t, batch=1, seq_len=10, dtype="float32")
        assert not any("systolic" in n for n in p.notes)


def test_target_array_table_errors_name_file_and_key():
    from edgelstm.costmodel._toml import tomllib
    from importlib import resources
    data = tomllib.loads((resources.files("edgelstm.costmodel.targets") / "edge-npu.toml").read_text())
    data["array"]["dataflow"] = "rs"
    with pytest.raises(TargetError, match=r"npu.toml: array.dataflow: expected one of os, ws, is, got 'rs'"):
        parse_target(data, "npu.toml")
    data["array"]["dataflow"] = "os"
    data["array"]["tech"] = {"pe": {"mult_pJ_int9": 1.0}}
    with pytest.raises(TargetError, match=r"array.tech.pe.mult_pJ_int9: unknown key"):
        parse_target(data, "npu.toml")
    del data["array"]["tech"]
    data["array"]["memory_model"] = "lru"
    with pytest.raises(TargetError, match=r"npu.toml: array.memory_model: expected one of stream, scalesim"):
        parse_target(data, "npu.toml")


def test_target_array_memory_model_reaches_predict():
    from edgelstm.costmodel._toml import tomllib
    from importlib import resources
    data = tomllib.loads((resources.files("edgelstm.costmodel.targets") / "edge-npu.toml").read_text())
    data["array"]["memory_model"] = "scalesim"
    t = parse_target(data, "npu.toml")
    assert t.array.memory_model == "scalesim" and load_target("edge-npu").array.memory_model == "stream"
    p = el.predict(SPEC, t, batch=1, seq_len=20, dtype="int8")
    r = explore.sweep(SPEC, load_target("edge-npu").array.designs(t.clock_MHz), batch=1, seq_len=20,
                      dtype="int8", tech=t.array.tech or None)
    r_sim = explore.sweep(SPEC, {k: v for k, v in t.array.designs(t.clock_MHz).items() if k != "memory_model"},
                          batch=1, seq_len=20, dtype="int8", memory_model="scalesim", tech=t.array.tech or None)
    assert p.latency_s == pytest.approx(r_sim["latency_s"][0], rel=1e-12)
    assert r["latency_s"][0] <= r_sim["latency_s"][0]


# -- the CLI ---------------------------------------------------------------------------------
GRID = """
rows = [4, 8, 16]
cols = [4, 8, 16]
dataflow = ["os", "ws", "is"]
ifmap_sram_kB = [1]
filter_sram_kB = [8, 64]
ofmap_sram_kB = [1]
dram_words_per_cycle = [1, 4]
clock_MHz = [50, 200]

[budget]
rate_hz = 100
power_w = 0.002
"""


def test_cli_explore_writes_reports(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    rc = main(["explore", "--grid", str(grid), "--input-size", "40", "--hidden-size", "64", "--out", str(out),
               "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["designs"] == 3 * 3 * 3 * 2 * 2 * 2
    assert 0 < len(summary["front"]) <= summary["within_budget"] <= summary["designs"]
    with open(out / "designs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["designs"]
    # The CSV says what sweep() says for the same design.
    d0 = {k: [v] for k, v in explore.grid(**{k: v for k, v in summary["grid"].items()}).items()}
    d0 = {k: np.asarray(v)[:, 0] for k, v in d0.items()}
    r0 = explore.sweep(SPEC, d0, dtype="int8")
    assert float(rows[0]["step_latency_s"]) == pytest.approx(r0["step_latency_s"][0])
    pytest.importorskip("matplotlib", reason="the plots need the plot extra (matplotlib)")
    for png in ("pareto.png", "utilization.png", "latency_sram.png"):
        assert (out / png).stat().st_size > 1000


@pytest.mark.parametrize("text, match", [
    ("rows = [8]\n", "missing key"),
    (GRID.replace("rows = [4, 8, 16]", "rows = [4, -8]"), "rows: expected numbers > 0, got -8"),
    (GRID.replace('dataflow = ["os", "ws", "is"]', 'dataflow = ["xs"]'), "dataflow: expected one of os, ws, is"),
    (GRID + "\ncolour = [1]\n", None),  # TOML: a key after a table belongs to the table
    (GRID.replace("rows = [4, 8, 16]", "rows = " + str(list(range(1, 3000)))).replace(
        "clock_MHz = [50, 200]", "clock_MHz = " + str(list(range(1, 3000)))), "expected at most 5,000,000"),
    ("rows = [", "not valid TOML"),
])
def test_cli_explore_bad_grid(tmp_path, capsys, text, match):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    rc = main(["explore", "--grid", str(grid), "--input-size", "40", "--hidden-size", "64", "--out",
               str(tmp_path / "o"), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    if match:
        assert match in err
    else:
        assert "budget.colour: unknown key" in err


def test_cli_targets_lists_the_example_accelerator(capsys):
    assert main(["targets", "--json"]) == 0
    items = {t["name"]: t for t in json.loads(capsys.readouterr().out)["targets"]}
    assert items["edge-npu"]["kind"] == "accelerator"
