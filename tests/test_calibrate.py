"""Calibration: one quick run into a temporary file (never the real home cache). Checks
of structure and order only; nothing here is timed."""
import pytest

from edgelstm.costmodel.api import load_target
from edgelstm.costmodel.host.profile import HostTarget, load_host_file
from edgelstm.costmodel.target import Target, TargetError, load_target_file


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "host.toml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGELSTM_HOST_TARGET", str(path))
        import io, contextlib
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            t = load_target("host")        # no file yet: calibrates (quick) and says so
    return t, path, err.getvalue()


def test_first_use_calibrates_with_a_message(host):
    t, path, err = host
    assert path.exists() and "calibrating this machine" in err and str(path) in err
    assert t.name == "host" and t.kind == "host"


def test_file_parses_and_records_how(host):
    t, path, _ = host
    again = load_host_file(path)
    assert again == t and isinstance(t, HostTarget)
    assert load_target_file(path) == t.generic()
    for key in ("date", "cpu_model", "method", "quick", "duration_s"):
        assert key in t.calibration
    assert t.calibration["quick"] is True


def test_figures_positive_and_ordered(host):
    t, _, _ = host
    cal = t.calibration
    for dt in ("float32", "float64"):
        assert t.macs_per_cycle[dt] > 0
        assert t.transcendental_ns.get(dt, t.transcendental_ns["float32"]) > 0   # quick: float32 only
        for th in (1, t.cores):
            assert cal[f"peak_GFLOP_per_s_{dt}_{th}thread"] > 0
    names = [m.name for m in t.memory]
    assert names[0] == "L1" and names[-1] == "DRAM"
    caps = [m.capacity_bytes for m in t.memory]
    assert caps == sorted(caps)
    for m in t.memory:
        assert m.bandwidth_GB_per_s > 0 and m.bandwidth_1thread_GB_per_s > 0
    assert t.memory[0].bandwidth_1thread_GB_per_s >= t.memory[-1].bandwidth_1thread_GB_per_s
    assert t.memory[0].bandwidth_GB_per_s >= t.memory[-1].bandwidth_GB_per_s
    assert t.call_overhead_s > 0 and t.step_overhead_s > 0 and t.parallel_step_overhead_s > 0
    p = t.profile
    assert p.gemm and all(g.GFLOP_per_s > 0 for g in p.gemm)
    assert {g.routine for g in p.gemm} == {"dot", "own", "block", "matvec"}
    assert p.elementwise and all(e.ns_per_row > 0 for e in p.elementwise)


def test_host_prediction_uses_the_file(host):
    from edgelstm import LSTMSpec, predict
    t, _, _ = host
    p = predict(LSTMSpec(128, 256, 2), t, seq_len=100)
    assert p.latency_s > 0 and p.target == "host" and p.breakdown["input_gemm"] > 0


def test_generic_host_is_a_plain_target_and_gets_the_roofline(host, monkeypatch):
    """load_target("host", generic=True) is this machine as any catalog target (no profile);
    predict on it is the roofline of costmodel/predict.py, on the HostTarget the kernel model."""
    from edgelstm import LSTMSpec, predict
    from edgelstm.costmodel.predict import predict as roofline
    t, path, _ = host
    monkeypatch.setenv("EDGELSTM_HOST_TARGET", str(path))
    g = load_target("host", generic=True)
    assert type(g) is Target and not hasattr(g, "profile") and g == t.generic()
    spec = LSTMSpec(64, 64)
    assert predict(spec, g, batch=4, seq_len=20) == roofline(spec, g, batch=4, seq_len=20)
    assert predict(spec, "host", batch=4, seq_len=20) == predict(spec, t, batch=4, seq_len=20)
    assert predict(spec, str(path), batch=4, seq_len=20) == predict(spec, t, batch=4, seq_len=20)  # by its path
    assert predict(spec, t, batch=4, seq_len=20).latency_s != roofline(spec, g, batch=4, seq_len=20).latency_s


def test_an_older_host_file_asks_for_a_new_calibration(host, tmp_path):
    """A host file without the [host] profile table (edgelstm before the host package) still
    loads as a generic target, and as a host target it says to run calibrate again."""
    from edgelstm.costmodel._toml import tomllib
    t, path, _ = host
    data = tomllib.loads(path.read_text())
    old = path.read_text().split("\n[host]")[0]
    f = tmp_path / "old-host.toml"
    f.write_text(old)
    import dataclasses
    assert dataclasses.replace(load_target_file(f), path="") == dataclasses.replace(load_target_file(path), path="")
    with pytest.raises(TargetError, match="run `edgelstm calibrate` again"):
        load_host_file(f)
    assert "host" in data


def test_wrapper_path_is_measured_and_the_kernel_entry_points_are_restored(host):
    """lstm()'s Python side is timed with the JIT entry points stood in for; afterwards the
    kernel module has its real functions back (lstm still computes the right thing)."""
    import numpy as np
    from edgelstm import LSTMSpec, LSTMWeights, lstm
    from edgelstm.kernels import cpu, reference
    from edgelstm.costmodel.host.harness import Harness
    from edgelstm.costmodel.host.routines import Routines
    t, _, _ = host
    p = t.profile
    assert p.wrapper_s > 0 and p.wrapper_layer_s >= 0 and p.wrapper_dir_s >= 0
    # (the fixture's calibration ran in a child process: measure here, in this one)
    w_here = Routines(Harness(True)).wrapper_path()
    assert w_here["wrapper_s"] > 0
    for name in ("_gemm_panel", "_gemm_panel_parallel", "_layer_rows", "_layer_rows_serial"):
        assert hasattr(getattr(cpu, name), "py_func"), name      # a Numba dispatcher again
    w = LSTMWeights.random(LSTMSpec(8, 8, 2), seed=3, dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 2, 8))
    y, _ = lstm(x, w)
    y_ref, _ = reference.lstm_reference(x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)


def test_tables_in_passes_take_each_points_median():
    """in_rounds runs the table once per pass and keeps, per point, the median of its passes:
    one disturbed pass (a slow figure) does not move the point."""
    from edgelstm.costmodel.host.harness import Harness
    b = Harness(quick=False)
    b.rounds, b.round_repeats, b.repeats = 3, 3, 7
    figures = iter([[("a", 1, 10.0), ("b", 2, 5.0)],
                    [("a", 1, 2.0), ("b", 2, 6.0)],      # a disturbed pass for "a"
                    [("a", 1, 11.0), ("b", 2, 4.0)]])
    seen = []

    def table():
        seen.append(b.repeats)
        return next(figures)
    assert b.in_rounds(table) == [("a", 1, 10.0), ("b", 2, 5.0)]
    assert seen == [3, 3, 3] and b.repeats == 7       # fewer repeats per pass, restored after
    b.rounds = 1
    assert b.in_rounds(lambda: [("c", 1.0)]) == [("c", 1.0)]


def test_a_two_thread_figure_that_looks_time_shared_is_measured_again(monkeypatch):
    """A per-thread rate under SHARED_FRACTION of the one-thread rate (two threads sharing one
    core) is measured again, up to SHARED_RETRIES times, keeping the best; a plausible one, a
    one-thread one, or one with nothing to compare against is measured once."""
    from edgelstm.costmodel.host import calibrate as cal
    monkeypatch.setattr(cal, "SHARED_PAUSE_S", 0.0)

    def feed(values):
        it = iter(values)
        calls = []

        def measure():
            calls.append(1)
            return next(it)
        return measure, calls
    m, calls = feed([10.0, 12.0, 30.0, 50.0])
    assert cal._shared_retry(m, 40.0, 2) == 30.0 and len(calls) == 3        # stops once >= 0.6 x 40
    m, calls = feed([10.0, 11.0, 9.0, 12.0, 99.0])
    assert cal._shared_retry(m, 40.0, 2) == 12.0 and len(calls) == 1 + cal.SHARED_RETRIES
    for one, threads in ((40.0, 1), (None, 2), (10.0, 2)):
        m, calls = feed([8.0, 99.0])
        assert cal._shared_retry(m, one, threads) == 8.0 and len(calls) == 1


def test_python_side_figures_keep_the_less_disturbed_of_two_measurements():
    """Each figure keeps the smaller of two measurements; figures derived by differences
    (lstm()'s Python side per call, per layer, per direction) are kept or replaced together."""
    from edgelstm.costmodel.host.calibrate import _keep_least_disturbed
    res = {"py_view_s": 2e-7, "check_s": 1e-6, "wrapper_s": 13.5e-6, "wrapper_layer_s": 1e-6, "wrapper_dir_s": 0.0}
    _keep_least_disturbed(res, {"py_view_s": 3e-7, "check_s": 0.8e-6})
    assert res["py_view_s"] == 2e-7 and res["check_s"] == 0.8e-6
    _keep_least_disturbed(res, {"wrapper_s": 7e-6, "wrapper_layer_s": 4e-6, "wrapper_dir_s": 0.5e-6}, together=True)
    assert (res["wrapper_s"], res["wrapper_layer_s"], res["wrapper_dir_s"]) == (7e-6, 4e-6, 0.5e-6)
    _keep_least_disturbed(res, {"wrapper_s": 1e-6, "wrapper_layer_s": 20e-6, "wrapper_dir_s": 0.0}, together=True)
    assert res["wrapper_s"] == 7e-6                     # the sum is larger: the earlier set stays
    _keep_least_disturbed(res, {"helper_wake_s": 0.0})    # nothing measured (one thread): kept out
    assert res["helper_wake_s"] == 0.0


def test_calibrate_apart_runs_in_a_child_process(tmp_path, monkeypatch):
    """bench --calibrate and the first use of "host" calibrate in a child process, so the
    timings that follow run in a process without calibration's threads: here measuring in this
    process would fail, and the file is written all the same."""
    from edgelstm.costmodel.host import calibrate as cal
    monkeypatch.setattr(cal, "measure", lambda *a, **k: pytest.fail("calibration measured in this process"))
    path = cal.calibrate_apart(quick=True, out=tmp_path / "apart.toml")
    t = load_host_file(path)
    assert t.calibration["quick"] is True and t.profile.gemm


@pytest.mark.parametrize("m", [1, 3])
def test_team_step_stand_in_computes_the_half_product_on_m_rows(m):
    """The calibration's team step (`routines._team_steps`, timed by the "team" table at 1, 2
    and 4 rows) multiplies every row's h by its half of W_hh: against numpy."""
    import numpy as np
    from edgelstm.costmodel.host.routines import _team_steps
    from edgelstm.kernels import team
    from edgelstm.kernels.gemm import pack_panels
    H = 24
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2 * H, H))                       # this thread's 2H gate rows
    hbuf = np.zeros((2, m, H))
    hbuf[0] = rng.standard_normal((m, H))
    wp = pack_panels(w)
    z = np.zeros((m, wp.shape[0] // H))
    sync = team.new_sync()
    sync[team.FLAG1] = 1 << 40                                # a partner that is always ahead
    k0 = H // 2
    assert _team_steps(sync, 0, wp, hbuf, z, k0, 0, 1) == 0
    ref = hbuf[0] @ w.T
    np.testing.assert_allclose(z[:, :2 * H], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hbuf[1][:, k0:k0 + H // 2], 1 / (1 + np.abs(ref[:, :H // 2])), rtol=1e-12)
