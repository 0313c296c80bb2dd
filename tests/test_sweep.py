"""The bench sweep's parsing, summary and report writers, on synthetic results (not timed)."""
import json

import pytest

from edgelstm import LSTMSpec
from edgelstm import sweep
from edgelstm.cli import main


def synthetic(measured, predicted, dtype="float32", H=64, generic=None):
    cfg = sweep.Config(LSTMSpec(H, H), batch=1, seq_len=10, dtype=dtype)
    return sweep.Result(label=cfg.label(), spec={"input_size": H, "hidden_size": H}, batch=1, seq_len=10,
                        dtype=dtype, threads=2, measured_s=measured, repeats=5, compile_s=0.5,
                        predicted_s=predicted, bound="L2", flops=2_000_000, bytes=1_000_000,
                        generic_predicted_s=generic or predicted, generic_bound="compute")


RESULTS = [synthetic(1e-3, 1.1e-3, generic=1.3e-3), synthetic(2e-3, 1.5e-3, "float64", generic=1.6e-3),
           synthetic(4e-4, 4.2e-4, H=128, generic=4.2e-4), synthetic(1e-2, 1.0e-2, generic=1.5e-2)]
LINE = ("host kernel model: median |error| 7.5%, 75% within ±15% (3/4); generic roofline: median |error| 25.0%, "
        "25% within ±15% (1/4), 50% within ±25% (2/4) (the generic model's error here is the uncertainty band "
        "of its edge predictions)")


def test_result_derives_error_and_rates():
    r = synthetic(2e-3, 2.5e-3)
    assert r.error_pct == pytest.approx(25.0)
    assert r.gflops_per_s == pytest.approx(1.0) and r.gbytes_per_s == pytest.approx(0.5)
    assert r.flops_per_byte == pytest.approx(2.0)


def test_summary_counts_the_share_within_15_percent():
    s = sweep.summarize(RESULTS)
    # errors: +10%, -25%, +5%, 0%; generic: +30%, -20%, +5%, +50%
    assert s["n"] == 4 and s["within_15pct"] == 3 and s["within_15pct_share"] == 0.75
    assert s["median_abs_error_pct"] == pytest.approx(7.5)
    assert s["generic_within_15pct"] == 1 and s["generic_within_25pct"] == 2
    assert s["generic_median_abs_error_pct"] == pytest.approx(25.0)
    assert sweep.summary_line(s) == LINE
    assert sweep.summarize([])["n"] == 0


def test_json_schema_and_markdown(tmp_path):
    machine = {"cpu": "test cpu", "threads": 2, "target": "host"}
    paths = sweep.write_reports(RESULTS, machine, tmp_path, plots=False)
    d = json.loads((tmp_path / "results.json").read_text())
    assert d["schema"] == sweep.SCHEMA and d["threads"] == 2 and d["machine"]["cpu"] == "test cpu"
    assert set(d["summary"]) >= {"n", "median_abs_error_pct", "within_15pct_share"}
    row = d["results"][1]
    assert {"label", "spec", "batch", "seq_len", "dtype", "threads", "measured_s", "predicted_s", "error_pct",
            "bound", "gflops_per_s", "compile_s", "repeats", "generic_predicted_s", "generic_error_pct"} <= set(row)
    assert row["dtype"] == "float64" and row["error_pct"] == pytest.approx(-25.0)
    md = (tmp_path / "results.md").read_text().splitlines()
    header = next(l for l in md if l.startswith("| config"))
    assert header == ("| config | measured | predicted | error % | bound | generic | generic error % | GFLOP/s "
                      "| % of roofline | compile |")
    assert sum(l.startswith("| E=") for l in md) == 4
    assert md[-1] == LINE
    assert [p.name for p in paths] == ["results.json", "results.md"]


def test_plots_are_valid_png(tmp_path):
    pytest.importorskip("matplotlib")
    paths = sweep.plot(RESULTS, tmp_path)
    assert [p.name for p in paths] == ["roofline.png", "predicted_vs_measured.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        import matplotlib.image
        assert matplotlib.image.imread(p).shape[2] in (3, 4)


def test_spec_strings_and_grid_files(tmp_path):
    cfgs = sweep.parse_spec_string("hidden_size=32|64,batch=1|4,seq_len=10,num_layers=2,dtype=float64")
    assert len(cfgs) == 4 and all(c.spec.num_layers == 2 and c.dtype == "float64" for c in cfgs)
    assert cfgs[0].spec.input_size == 32          # E = H unless given
    g = tmp_path / "g.toml"
    g.write_text('configs = [{input_size = 10, hidden_size = 20, batch = 2}]\n[axes]\nhidden_size = [8, 16]\n')
    got = sweep.load_grid(g)
    assert [(c.spec.input_size, c.spec.hidden_size, c.batch) for c in got] == [(10, 20, 2), (8, 8, 1), (16, 16, 1)]


def test_default_grids_span_the_issue_ranges():
    full = sweep.default_grid()
    Hs = {c.spec.hidden_size for c in full}
    assert min(Hs) == 32 and max(Hs) == 1024
    assert {c.batch for c in full} >= {1, 64} and {c.seq_len for c in full} >= {1, 200}
    assert {c.spec.num_layers for c in full} == {1, 2, 3} and {c.dtype for c in full} == {"float32", "float64"}
    assert len(sweep.default_grid(quick=True)) < len(full)


@pytest.mark.parametrize("argv, words", [
    (["bench", "--spec", "hidden_size=0"], "hidden_size"),
    (["bench", "--spec", "hidden_size=abc"], "expected an integer"),
    (["bench", "--spec", "batch=3"], "hidden_size"),
    (["bench", "--spec", "hidden_size=8,dtype=int8"], "dtype"),
    (["bench", "--spec", "hidden_size=8,colour=red"], "unknown key"),
    (["bench", "--grid", "/nonexistent/grid.json"], "cannot read"),
    (["bench", "--threads", "0"], "--threads"),
    (["bench", "--min-time", "-1"], "--min-time"),
])
def test_bench_bad_input_is_one_line_and_exit_2(capsys, argv, words):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and words in err


def test_bench_bad_grid_file(tmp_path, capsys):
    g = tmp_path / "g.json"
    g.write_text("{not json")
    assert main(["bench", "--grid", str(g)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    g.write_text('{"something": 1}')
    assert main(["bench", "--grid", str(g)]) == 2
    assert "'configs' list" in capsys.readouterr().err


def test_run_times_every_configuration_in_passes_over_the_grid(monkeypatch):
    """run() makes `rounds` passes over the whole list (not one window per configuration)
    and reports each configuration's median over the repeats of all its passes; the first
    pass's first call is the one whose excess is reported as compile time."""
    calls = []

    def fake_time_call(fn, min_time_s, min_repeats=5, max_repeats=200):
        calls.append((fn, min_time_s, min_repeats))
        k = len(calls)
        return 1.0 + k, [1e-3 * k, 1e-3 * k]     # first-call time, two repeats

    monkeypatch.setattr(sweep, "time_call", fake_time_call)
    monkeypatch.setattr(sweep, "_workload", lambda cfg: cfg)
    cfgs = [sweep.Config(LSTMSpec(8, 8), 1, 2, "float32"), sweep.Config(LSTMSpec(8, 16), 2, 3, "float64")]
    res = sweep.run(cfgs, "cortex-a72", threads=1, min_time_s=0.3, progress=False, rounds=3)
    assert [c[0] for c in calls] == cfgs * 3                         # grid order, three passes
    assert all(c[1] == pytest.approx(0.1) and c[2] == 2 for c in calls)
    # config 0 was timed in calls 1, 3, 5 (repeats 1, 3, 5 ms), config 1 in calls 2, 4, 6
    assert [r.repeats for r in res] == [6, 6]
    assert res[0].measured_s == pytest.approx(3e-3) and res[1].measured_s == pytest.approx(4e-3)
    assert res[0].compile_s == pytest.approx(2.0 - 3e-3) and res[1].compile_s == pytest.approx(3.0 - 4e-3)


def test_bench_calibrate_first_predicts_with_a_fresh_file_in_out(tmp_path, monkeypatch, capsys):
    """--calibrate calibrates into OUT/host.toml before measuring and predicts with that file
    (calibration itself is stood in for here by writing a made-up host file: it is tested in
    test_calibrate.py); the host file in the user's cache is not touched. Each result has the
    host kernel model's and the generic roofline's prediction, and machine_info records
    where the file came from."""
    from edgelstm.costmodel.host import calibrate as cal
    from edgelstm.costmodel.target import host_target_path
    from test_host_model import HOSTY
    asked = []

    def fake_calibrate(quick=False, out=None, progress=False):
        asked.append(quick)
        out.write_text(HOSTY.replace('name = "toy"', 'name = "host"') + '[calibration]\ndate = "2026-11-29"\n'
                       'method = "made up"\n')
        return out
    monkeypatch.setattr(cal, "calibrate_apart", fake_calibrate)
    monkeypatch.setenv("EDGELSTM_HOST_TARGET", str(tmp_path / "home-host.toml"))
    out = tmp_path / "res"
    rc = main(["bench", "--calibrate", "--spec", "hidden_size=8,batch=1,seq_len=2", "--min-time", "0.01",
               "--no-plots", "--out", str(out)])
    assert rc == 0 and asked == [True]
    d = json.loads((out / "results.json").read_text())
    m = d["machine"]
    assert m["target_path"] == str(out / "host.toml")
    assert m["target_calibrated_at"] == "2026-11-29" and m["target_method"] == "made up"
    r = d["results"][0]
    assert r["predicted_s"] > 0 and r["generic_predicted_s"] > 0 and r["predicted_s"] != r["generic_predicted_s"]
    assert not (tmp_path / "home-host.toml").exists() and host_target_path() == tmp_path / "home-host.toml"
    assert "calibrating this machine (quick)" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-a76", "a100"])
@pytest.mark.parametrize("spec", [LSTMSpec(40, 64), LSTMSpec(128, 256, num_layers=2)], ids=str)
def test_roofline_bound_is_below_the_prediction(target, spec):
    """The model's latency adds overheads, the epilogue and the projection to the bound that
    limits each step: it can never beat the plain roofline of the same counts."""
    from edgelstm import load_target, predict
    t = load_target(target)
    roof = sweep.roofline_s(spec, t, 1, 100, "float32", 1)
    assert 0 < roof <= predict(spec, t, batch=1, seq_len=100, dtype="float32", threads=1).latency_s
    r = synthetic(2 * roof, roof)
    r.roofline_s = roof
    r.__post_init__()
    assert r.roofline_pct == pytest.approx(50.0)


def test_heldout_grid_loads_and_is_apart_from_the_default_grids():
    """tests/heldout_grid.toml (drawn once, never used to build the model) parses as a bench
    grid and shares no configuration with the grids the model was built and checked on."""
    from pathlib import Path
    built = {c.label() for c in sweep.default_grid() + sweep.default_grid(quick=True)}
    seen = set()
    for name in ("heldout_grid.toml", "heldout_grid2.toml"):     # the second drawn later, apart
        held = sweep.load_grid(Path(__file__).parent / name)
        assert len(held) == 12
        labels = {c.label() for c in held}
        assert not labels & built and not labels & seen
        seen |= labels
        assert {c.dtype for c in held} == {"float32", "float64"} and any(c.spec.bidirectional for c in held)


def test_machine_info_reports_the_targets_calibration(tmp_path):
    """results.json's machine block names the target file and its [calibration] table
    (it read fields Target never had, so these were always missing)."""
    from edgelstm.costmodel.target import catalog_dir, load_target
    text = (catalog_dir() / "cortex-a72.toml").read_text()
    p = tmp_path / "calibrated.toml"
    p.write_text(text + '\n[calibration]\ndate = "2026-11-29T10:00:00"\nmethod = "micro-benchmarks"\n'
                        'cpu_model = "Some CPU"\nquick = true\n')
    info = sweep.machine_info(1, load_target(str(p)))
    assert info["target_path"] == str(p)
    assert info["target_calibrated_at"] == "2026-11-29T10:00:00"
    assert info["target_method"] == "micro-benchmarks" and info["target_calibrated_on"] == "Some CPU"
    assert info["target_quick_calibration"] is True


def test_median_of_runs_judges_each_configuration_on_its_median(tmp_path):
    """bench/median_of_runs.py: per configuration the median measured time of the runs
    against the median of their predictions; runs of different grids are refused."""
    import json
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    try:
        from median_of_runs import main, median_of_runs
    finally:
        sys.path.pop(0)

    def run(rows):
        return {"results": [{"label": k, "measured_s": m, "predicted_s": p, "generic_predicted_s": g}
                            for k, m, p, g in rows]}
    runs = [run([("a", 1.0, 1.0, 0.5), ("b", 2.0, 1.0, 2.0)]),
            run([("a", 3.0, 1.2, 0.6), ("b", 2.2, 1.1, 2.0)]),
            run([("a", 1.2, 1.1, 0.7), ("b", 9.0, 1.0, 2.0)])]
    s = median_of_runs(runs)
    # a: median measured 1.2, predicted 1.1 -> -8.3%, generic 0.6 -> -50%;
    # b: median measured 2.2, predicted 1.0 -> -54.5%, generic 2.0 -> -9.1%
    got = {k: (h, g) for k, h, g, _ in s["rows"]}
    assert got["a"][0] == pytest.approx(100 * (1.1 / 1.2 - 1)) and got["a"][1] == pytest.approx(-50.0)
    assert got["b"][0] == pytest.approx(100 * (1.0 / 2.2 - 1)) and got["b"][1] == pytest.approx(100 * (2 / 2.2 - 1))
    assert (s["host_within_15"], s["generic_within_25"]) == (1, 1)
    with pytest.raises(ValueError, match="runs: run 2"):
        median_of_runs([runs[0], run([("a", 1.0, 1.0, 1.0)])])
    for i, r in enumerate(runs):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(r))
    assert main([str(tmp_path / "0"), str(tmp_path / "1"), str(tmp_path / "2")]) == 0
    assert main([str(tmp_path / "0"), str(tmp_path / "missing")]) == 2
