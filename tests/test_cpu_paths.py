"""Every path of kernels/cpu.py, forced by lowering its threshold, against the float64
reference (kernels/reference.py) and torch.nn.LSTM. The default thresholds send small test
shapes down the serial paths only; each case below names the routines it makes run."""
import types

import numpy as np
import pytest

import edgelstm as el
from edgelstm.kernels import cpu, guard
from edgelstm.kernels.reference import lstm_reference
from edgelstm.run import lstm

BIG = 1 << 62
PATHS = {
    # name: config overrides (and whether this process acts as a forked child)
    # blocks of 2 rows: B=6 makes 3 blocks, the prange rows kernel (2 blocks go through run_two)
    "rows-parallel+gemm_bias_parallel": dict(gemm_min_batch=BIG, parallel_projection_min_macs=1,
                                             max_rows_per_block=2, regions_min_threads=2),
    # the same 3 blocks on two threads without regions: two groups of blocks over run_two
    "rows-two-groups-run_two": dict(gemm_min_batch=BIG, max_rows_per_block=2, two_block_min_macs=1,
                                    projection_halves_min_macs=1),
    "rows-two-blocks-run_two": dict(gemm_min_batch=BIG, max_rows_per_block=3, two_block_min_macs=1),
    # the same batch with too little work per block for a second core: one core, blocks of 3
    "rows-two-blocks-one-core": dict(gemm_min_batch=BIG, max_rows_per_block=3, two_block_min_macs=BIG),
    "rows-serial-blocks+serial-projection": dict(gemm_min_batch=BIG, parallel_projection_min_macs=BIG),
    # gemm path: without a projection the split GEMM + epilogue halves (_layer_gemm_split over
    # guard.run_two, small row blocks so several run); with one, BLAS and the row epilogue
    "gemm-split": dict(gemm_min_batch=1, gemm_min_l2_multiple=0, gemm_row_block=4),
    "gemm+parallel-epilogue": dict(gemm_min_batch=1, gemm_min_l2_multiple=0, parallel_epilogue_min_elements=1),
    "gemm+serial-epilogue": dict(gemm_min_batch=1, gemm_min_l2_multiple=0, parallel_epilogue_min_elements=BIG),
    "one-block-run_two": dict(gemm_min_batch=BIG, max_rows_per_block=BIG, two_core_min_macs=1,
                              projection_halves_min_macs=1),
    "one-block-serial": dict(gemm_min_batch=BIG, max_rows_per_block=BIG, two_core_min_macs=BIG,
                             projection_halves_min_macs=BIG),
    "one-block-parallel-variant": dict(gemm_min_batch=BIG, max_rows_per_block=BIG,
                                       parallel_single_block_min_steps=1),
    "forked-child": dict(gemm_min_batch=BIG, parallel_projection_min_macs=1, max_rows_per_block=2,
                         regions_min_threads=2, forked=True),
}


@pytest.fixture(params=list(PATHS))
def kernel_path(request, monkeypatch):
    cfg = dict(PATHS[request.param])
    if cfg.pop("forked", False):
        monkeypatch.setitem(guard._state, "forked_child", True)
    for k, v in cfg.items():
        monkeypatch.setattr(cpu.config, k, v)
    return request.param


def _inputs(spec, T, B, dtype, seed):
    rng = np.random.default_rng(seed)
    LD = spec.num_layers * spec.num_directions
    return (rng.standard_normal((T, B, spec.input_size)).astype(dtype),
            rng.standard_normal((LD, B, spec.out_size)).astype(dtype),
            rng.standard_normal((LD, B, spec.hidden_size)).astype(dtype))


def _close(got, ref, dtype):
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip((got[0], *got[1]), (ref[0], *ref[1])):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("proj", [3, 0])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("B", [1, 6])
def test_path_matches_reference(kernel_path, dtype, B, proj):
    spec = el.LSTMSpec(5, 7, num_layers=2, bidirectional=True, proj_size=proj, peephole=True)
    w = el.LSTMWeights.random(spec, seed=3, dtype=dtype)
    x, h0, c0 = _inputs(spec, 9, B, dtype, seed=B)
    lengths = np.array([9, 2, 5, 9, 1, 7][:B])
    for L in (None, lengths):
        _close(lstm(x, w, h0, c0, lengths=L), lstm_reference(x, w, h0, c0, lengths=L), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_path_matches_torch(kernel_path, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    m = torch.nn.LSTM(6, 12, num_layers=2, bidirectional=True).to(getattr(torch, dtype))
    w = el.LSTMWeights.from_torch(m)
    x, h0, c0 = _inputs(w.spec, 11, 5, dtype, seed=7)
    y, (h, c) = lstm(x, w, h0, c0)
    with torch.no_grad():
        yt, (ht, ct) = m(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    _close((y, (h, c)), (yt.numpy(), (ht.numpy(), ct.numpy())), dtype)


def test_run_two_uses_the_helper_and_propagates_errors(monkeypatch):
    import numba
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: run_two runs both tasks in the caller")
    monkeypatch.setattr(cpu.config, "two_core_min_macs", 1)
    spec = el.LSTMSpec(4, 6, bidirectional=True)
    w = el.LSTMWeights.random(spec, seed=0, dtype="float64")
    x, h0, c0 = _inputs(spec, 50, 1, "float64", seed=0)
    _close(lstm(x, w, h0, c0), lstm_reference(x, w, h0, c0), "float64")
    assert guard._helper is not None and guard._helper.thread.is_alive()
    ran = []

    def boom():
        raise KeyError("second task")
    with pytest.raises(KeyError, match="second task"):       # whoever ran it, the caller sees it
        guard.run_two(lambda: ran.append(1), boom)
    assert ran == [1]
    out = []
    guard.run_two(lambda: out.append("a"), lambda: out.append("b"))   # still usable afterwards
    assert sorted(out) == ["a", "b"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("B", [2, 5])
def test_team_rows_matches_reference(B, dtype, monkeypatch):
    """team_layer_rows (B > 1: each thread half of the units of every row), forced on, with
    equal and with variable lengths (rows past their end carry their state, y rows stay zero)."""
    _force_team(monkeypatch)
    spec = el.LSTMSpec(5, 37, num_layers=2, peephole=True)
    w = el.LSTMWeights.random(spec, seed=9, dtype=dtype)
    x, h0, c0 = _inputs(spec, 12, B, dtype, seed=10)
    runs = cpu._team_state["runs"]
    for L in (None, np.array([12, 3, 7, 1, 12][:B])):
        cpu._team_state["serial_until"] = 0.0
        _close(lstm(x, w, h0, c0, lengths=L), lstm_reference(x, w, h0, c0, lengths=L), dtype)
    assert cpu._team_state["runs"] == runs + 4


def test_team_with_projection_matches_torch(monkeypatch):
    """team_layer_proj against torch.nn.LSTM(proj_size=...): two layers, B=1, float32."""
    torch = pytest.importorskip("torch")
    _force_team(monkeypatch)
    torch.manual_seed(2)
    m = torch.nn.LSTM(6, 40, num_layers=2, proj_size=11)
    w = el.LSTMWeights.from_torch(m)
    x, h0, c0 = _inputs(w.spec, 17, 1, "float32", seed=8)
    runs = cpu._team_state["runs"]
    y, (h, c) = lstm(x, w, h0, c0)
    assert cpu._team_state["runs"] == runs + 2
    with torch.no_grad():
        yt, (ht, ct) = m(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    _close((y, (h, c)), (yt.numpy(), (ht.numpy(), ct.numpy())), "float32")


def _force_team(monkeypatch, wait_for_helper=True):
    """The two-thread team for every unidirectional layer without projection up to B=16 (and
    with one at B=1), whatever its size (skips with one Numba thread); wait_for_helper: the
    caller waits for the helper's claim however long."""
    import numba
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: no team")
    monkeypatch.setattr(cpu.config, "team_min_macs", 1)
    monkeypatch.setattr(cpu.config, "team_rows_max_batch", 16)
    monkeypatch.setattr(cpu.config, "team_rows_min_weight_bytes", 1)
    # no back-off: a first call that compiles a team kernel in the helper thread (seconds, on a
    # fresh clone) waits long enough to count as a busy core and would send the next layer to
    # the serial plan (tests/test_cpu_paths.py's back-off test sets its own)
    monkeypatch.setattr(cpu.config, "team_backoff_s", 0.0)
    monkeypatch.setattr(cpu.config, "team_l2_fraction", 0.0)
    monkeypatch.setattr(cpu.config, "resident_spin", 0)      # guard.py's helper: no resident one
    if wait_for_helper:
        monkeypatch.setattr(cpu.config, "team_claim_spins", 1 << 40)


def _force_resident_team(monkeypatch):
    """The team through the resident helper (kernels/resident.py) for every unidirectional B=1
    layer, and only through it; returns the helper once it spins."""
    import time
    import numba
    from edgelstm.kernels import resident
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: no team")
    monkeypatch.setattr(cpu.config, "resident_spin", 20000)
    monkeypatch.setattr(cpu.config, "team_min_macs", 1 << 62)
    monkeypatch.setattr(cpu.config, "team_resident_min_macs", 1)
    monkeypatch.setattr(cpu.config, "team_l2_fraction", 0.0)
    # (finite: a helper that went to sleep while something compiled must not hang the caller)
    monkeypatch.setattr(cpu.config, "resident_claim_spins", 1 << 21)
    helper = resident.get(cpu.config)
    deadline = time.monotonic() + 120          # (its first start compiles the loop)
    while not resident.awake():
        assert time.monotonic() < deadline, "the resident helper never started spinning"
        helper.nudge()
        time.sleep(0.001)
    return helper


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", [el.LSTMSpec(5, 33, num_layers=2, peephole=True),
                                  el.LSTMSpec(3, 70, bidirectional=True, bias="keras"),
                                  # team_layer_proj: odd P (uneven halves of y), P below one panel
                                  el.LSTMSpec(5, 33, num_layers=2, proj_size=13, peephole=True),
                                  el.LSTMSpec(4, 70, proj_size=1)], ids=str)
def test_team_matches_reference(spec, dtype, monkeypatch):
    """The two-thread B=1 team (team.py; team_layer_proj with a projection), forced on for every
    layer; a bidirectional spec runs its directions through run_two instead, so it checks that
    the team is not taken there."""
    _force_team(monkeypatch)
    w = el.LSTMWeights.random(spec, seed=4, dtype=dtype)
    x, h0, c0 = _inputs(spec, 13, 1, dtype, seed=5)
    runs = cpu._team_state["runs"]
    for L in (None, np.array([6])):
        cpu._team_state["serial_until"] = 0.0
        _close(lstm(x, w, h0, c0, lengths=L), lstm_reference(x, w, h0, c0, lengths=L), dtype)
    assert (cpu._team_state["runs"] > runs) == (not spec.bidirectional)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", [el.LSTMSpec(5, 33, num_layers=2, peephole=True), el.LSTMSpec(7, 64)], ids=str)
def test_resident_team_matches_reference(spec, dtype, monkeypatch):
    """The B=1 team with the resident helper as thread 1 (its arguments rebuilt from the
    mailbox's addresses and shapes), with and without lengths, against the float64 reference."""
    from edgelstm.kernels import resident
    w = el.LSTMWeights.random(spec, seed=4, dtype=dtype)
    x, h0, c0 = _inputs(spec, 13, 1, dtype, seed=5)
    _force_resident_team(monkeypatch)
    lstm(x, w, h0, c0)                  # compiles team_lead (the helper may doze meanwhile)
    runs = cpu._team_state["resident_runs"]
    # Every call is checked; the rounds repeat (up to 10) until one went through the resident
    # helper: in about 1 run of 5 of this file, a round of three calls found it not spinning
    # at the start of each call (not explained; those calls run serially, correctly).
    for _ in range(10):
        for L in (None, np.array([6]), None):
            _force_resident_team(monkeypatch)
            cpu._team_state["serial_until"] = 0.0
            cpu._team_state["team_hist"].clear()
            _close(lstm(x, w, h0, c0, lengths=L), lstm_reference(x, w, h0, c0, lengths=L), dtype)
        if cpu._team_state["resident_runs"] > runs:
            break
    assert cpu._team_state["resident_runs"] > runs, {k: v for k, v in cpu._team_state.items() if "hist" not in k}
    assert resident._resident.mail[resident.STATE] == resident.EMPTY      # every job given back


def test_resident_team_not_taken_falls_back_to_serial(monkeypatch):
    """A mailbox that says the helper spins, with no thread serving it: the caller's claim wait
    runs out, it retracts the job (nothing may read this call's arrays later) and runs the layer
    serially from its saved state."""
    from edgelstm.kernels import resident
    _force_resident_team(monkeypatch)
    monkeypatch.setattr(cpu.config, "resident_claim_spins", 1000)
    spec = el.LSTMSpec(4, 40, num_layers=2)
    w = el.LSTMWeights.random(spec, seed=6, dtype="float64")
    x, h0, c0 = _inputs(spec, 9, 1, "float64", seed=6)
    ref = lstm_reference(x, w, h0, c0)
    lstm(x, w, h0, c0)                                  # compiled while the real helper serves
    real = resident._resident
    fake = types.SimpleNamespace(mail=np.zeros(resident.MAILBOX_LEN, np.int64), pid=real.pid,
                                 awake=lambda: True, nudge=lambda: None, nap=lambda: None)
    fake.mail[resident.AWAKE] = resident.SPINNING
    monkeypatch.setattr(resident, "_resident", fake)
    cpu._team_state["serial_until"] = 0.0
    cpu._team_state["cancel_streak"] = 0
    cancels = cpu._team_state["cancels"]
    _close(lstm(x, w, h0, c0), ref, "float64")
    assert cpu._team_state["cancels"] == cancels + 2
    assert fake.mail[resident.STATE] == resident.EMPTY  # retracted, not left for a helper to take


@pytest.mark.parametrize("name,proj,B", [("team_layer", 0, 1), ("team_layer_proj", 9, 1),
                                          ("team_layer_rows", 0, 3)])
def test_team_abort_and_cancel_fall_back_to_serial(name, proj, B, monkeypatch):
    """A partner that never answers: the caller gives up (cancelled claim, or an abort after
    max_yields) and the layer is recomputed serially from its saved state."""
    _force_team(monkeypatch, wait_for_helper=False)
    spec = el.LSTMSpec(4, 40, num_layers=2, proj_size=proj)
    w = el.LSTMWeights.random(spec, seed=6, dtype="float64")
    x, h0, c0 = _inputs(spec, 9, B, "float64", seed=6)
    lengths = np.array([9, 4, 7][:B])
    ref = lstm_reference(x, w, h0, c0, lengths=lengths)
    # 1) the helper is never asked: the claim is cancelled after team_claim_spins
    monkeypatch.setattr(guard, "post_to_helper", lambda fn: True)
    cpu._team_state["serial_until"] = 0.0
    cpu._team_state["cancel_streak"] = 0
    cancels = cpu._team_state["cancels"]
    _close(lstm(x[:, :, :], w, h0, c0, lengths=lengths), ref, "float64")
    # two layers, two cancelled claims in a row: backs off after the second, not the first
    assert cpu._team_state["cancels"] == cancels + 2
    assert cpu._team_state["serial_until"] > 0.0
    # 2) the helper claims, then never takes a step: the caller aborts after max_yields
    monkeypatch.undo()
    from edgelstm.kernels import team
    real = getattr(team, name)
    at = {"team_layer": 16, "team_layer_proj": 19, "team_layer_rows": 16}[name]   # sync; tid follows

    def lazy_partner(*args):
        if args[at + 1] == 1:
            team.claim_as_helper(args[at])                # claims, then never takes a step
            return 0
        return real(*args)
    monkeypatch.setattr(team, name, lazy_partner)
    _force_team(monkeypatch)
    monkeypatch.setattr(cpu.config, "team_spin_limit", 10)
    monkeypatch.setattr(cpu.config, "team_max_yields", 50)
    cpu._team_state["serial_until"] = 0.0
    fallbacks = cpu._team_state["fallbacks"]
    _close(lstm(x, w, h0, c0, lengths=lengths), ref, "float64")
    assert cpu._team_state["fallbacks"] > fallbacks


def test_team_backs_off_when_slower_than_serial(monkeypatch):
    """Two team calls in a row slower per step than the serial plan's recent median for the same
    layer shape (here a serial time of 1 ps per step, which no call can beat) send the next calls
    to the serial plan; one slow call does not. The serial plan taken while backing off records
    its own time per step, and every call gives the reference's numbers."""
    _force_team(monkeypatch)
    monkeypatch.setattr(cpu.config, "team_backoff_s", type(cpu.config)().team_backoff_s)
    spec = el.LSTMSpec(6, 40)
    w = el.LSTMWeights.random(spec, seed=7, dtype="float64")
    x, h0, c0 = _inputs(spec, 11, 1, "float64", seed=7)
    ref = lstm_reference(x, w, h0, c0)
    key = (6, 40, 40, 1, 8)     # (E, H, P, B, itemsize)
    monkeypatch.setitem(cpu._team_state, "serial_hist", {key: [1e-12]})
    monkeypatch.setitem(cpu._team_state, "team_hist", {})
    monkeypatch.setitem(cpu._team_state, "serial_until", 0.0)
    slower, runs = cpu._team_state["slower"], cpu._team_state["runs"]
    _close(lstm(x, w, h0, c0), ref, "float64")                # the team; one slow call: stays on
    assert cpu._team_state["runs"] == runs + 1 and cpu._team_state["slower"] == slower
    assert cpu._team_state["serial_until"] == 0.0
    _close(lstm(x, w, h0, c0), ref, "float64")                # the team again, then backs off
    assert cpu._team_state["runs"] == runs + 2 and cpu._team_state["slower"] == slower + 1
    assert cpu._team_state["serial_until"] > 0.0
    _close(lstm(x, w, h0, c0), ref, "float64")                # serial, timed
    assert cpu._team_state["runs"] == runs + 2
    assert cpu._serial_step_s(key) > 1e-12                     # the median of 1 ps and a real time


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pipelined_projection_matches_reference(dtype, monkeypatch):
    """B=1 unidirectional layers with the projection in chunks shared with the helper thread;
    with lengths (chunks past the end are claimed and skipped) and an odd chunk size."""
    import numba
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: no helper")
    monkeypatch.setattr(cpu.config, "pipeline_chunk_steps", 3)
    monkeypatch.setattr(cpu.config, "pipeline_min_macs", 1)
    spec = el.LSTMSpec(5, 20, num_layers=3, proj_size=4, peephole=True)
    w = el.LSTMWeights.random(spec, seed=8, dtype=dtype)
    x, h0, c0 = _inputs(spec, 17, 1, dtype, seed=8)
    runs = cpu._pipe_state["runs"]
    for L in (None, np.array([10])):
        cpu._pipe_state["serial_until"] = 0.0
        _close(lstm(x, w, h0, c0, lengths=L), lstm_reference(x, w, h0, c0, lengths=L), dtype)
    assert cpu._pipe_state["runs"] >= runs + 6


def test_pipelined_abort_recomputes_serially(monkeypatch):
    """A chunk claimed by the helper and never finished: the caller aborts after max_yields,
    waits for the helper to stop, and recomputes the layer from its saved state."""
    import numba
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: no helper")
    from edgelstm.kernels import atomics  # noqa: F401
    monkeypatch.setattr(cpu.config, "pipeline_chunk_steps", 4)
    monkeypatch.setattr(cpu.config, "pipeline_min_macs", 1)
    monkeypatch.setattr(cpu.config, "team_spin_limit", 10)
    monkeypatch.setattr(cpu.config, "team_max_yields", 50)

    def helper_claims_everything_and_stops(x2, wp, bp, xp2, chunk, sync):
        sync[cpu._PIPE_BASE::16] = 1              # every chunk claimed, none ever done
        return 0
    monkeypatch.setattr(cpu, "_proj_chunks_helper", helper_claims_everything_and_stops)
    monkeypatch.setattr(guard, "post_to_helper", lambda fn: (fn(), True)[1])
    spec = el.LSTMSpec(4, 9, num_layers=2)
    w = el.LSTMWeights.random(spec, seed=9, dtype="float64")
    x, h0, c0 = _inputs(spec, 12, 1, "float64", seed=9)
    cpu._pipe_state["serial_until"] = 0.0
    fallbacks = cpu._pipe_state["fallbacks"]
    _close(lstm(x, w, h0, c0), lstm_reference(x, w, h0, c0), "float64")
    assert cpu._pipe_state["fallbacks"] > fallbacks
