"""The array model against the real SCALE-Sim 3.0.0 simulator.

SCALE-Sim 3.0.0 fails under numpy >= 2.4 (it calls int() on one-element arrays), which
edgelstm uses, so it runs in a virtual environment of its own (scalesim==3.0.0 and
numpy<2.4), created once and cached outside the repository in
~/.cache/edgelstm-scalesim-3.0.0 ($EDGELSTM_SCALESIM_VENV overrides the path). The
simulator runs as one subprocess per session (tests/scalesim_runner.py --serve); each
test sends it GEMMs and reads back its COMPUTE_REPORT figures. The shapes stay small:
SCALE-Sim takes about 0.25 ms per demand row.

Tests skip, saying why, only when the environment cannot be created (no network to PyPI).
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgelstm.costmodel.array import dataflow_codes, gemm_memory_cycles
from edgelstm.explore import gemm_cycles

SCALESIM_VERSION = "3.0.0"
RUNNER = Path(__file__).with_name("scalesim_runner.py")
AMPLE_KB = 4096  # buffers that hold every operand of these shapes


def _venv_dir() -> Path:
    env = os.environ.get("EDGELSTM_SCALESIM_VENV")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / f"edgelstm-scalesim-{SCALESIM_VERSION}"


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _ensure_venv() -> Path:
    """The cached environment's python; created (about 25 s with network) when missing."""
    venv = _venv_dir()
    ready = venv / ".edgelstm-ready"
    if ready.exists() and _python(venv).exists():
        return _python(venv)
    tmp = venv.with_name(venv.name + f".tmp{os.getpid()}")
    t0 = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, text=True)
        subprocess.run([str(_python(tmp)), "-m", "pip", "install", "--quiet", f"scalesim=={SCALESIM_VERSION}",
                        "numpy<2.4"], check=True, capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        pytest.skip(f"cannot install scalesim=={SCALESIM_VERSION} with numpy<2.4 into {tmp} "
                    f"(no network to PyPI?): {detail.strip().splitlines()[-1] if detail.strip() else e}")
    (tmp / ".edgelstm-ready").write_text(f"created in {time.perf_counter() - t0:.1f} s\n")
    if venv.exists() and not ready.exists():
        shutil.rmtree(venv, ignore_errors=True)  # an unfinished one of ours
    try:
        os.replace(tmp, venv)  # atomic; a concurrent session may have won the race
    except OSError:
        return _python(tmp)
    return _python(venv)


class ScaleSim:
    """The simulator in a subprocess: run(jobs) -> COMPUTE_REPORT rows."""

    def __init__(self, python: Path):
        self.proc = subprocess.Popen([str(python), str(RUNNER), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, job: dict) -> dict:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"SCALE-Sim runner died: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def scalesim():
    sim = ScaleSim(_ensure_venv())
    yield sim
    sim.close()


def _job(M, N, K, rows, cols, dataflow, ifmap_kB=AMPLE_KB, filter_kB=AMPLE_KB, ofmap_kB=AMPLE_KB, bandwidth=None):
    job = dict(M=M, N=N, K=K, rows=rows, cols=cols, dataflow=dataflow,
               ifmap_kB=ifmap_kB, filter_kB=filter_kB, ofmap_kB=ofmap_kB)
    if bandwidth is not None:
        job["bandwidth"] = bandwidth
    return job


def _model_total(job, memory_model="stream") -> float:
    # SCALE-Sim's word is one byte and its "kB" is 1024 words.
    g = gemm_memory_cycles(np.int64(job["M"]), np.int64(job["N"]), np.int64(job["K"]), np.int64(job["rows"]),
                           np.int64(job["cols"]), dataflow_codes(job["dataflow"]), job["ifmap_kB"] * 1024.0,
                           job["filter_kB"] * 1024.0, job["ofmap_kB"] * 1024.0, float(job["bandwidth"]),
                           memory_model=memory_model)
    return float(g["cycles"])


@pytest.mark.parametrize("dataflow, published", [("os", 1007), ("ws", 1519), ("is", 699)])
def test_issue_example_one_lstm_step(scalesim, dataflow, published):
    # The recurrent GEMM of one step of H=64, B=1 (M=1, N=4H=256, K=64) on 32 x 32.
    sim = scalesim.run(_job(1, 256, 64, 32, 32, dataflow))
    assert sim["total_cycles"] == published
    assert int(gemm_cycles(1, 256, 64, 32, 32, dataflow)) == sim["total_cycles"]


# The GEMMs of an LSTM step: the recurrent product (M = B, K = P, N = 4H), the hoisted
# input projection (M = T*B, K = E, N = 4H) and the projection (M = B, K = H, N = P).
@st.composite
def lstm_gemms(draw):
    B = draw(st.integers(1, 8))
    H = draw(st.integers(1, 48))
    kind = draw(st.sampled_from(["recurrent", "input", "projection"]))
    if kind == "recurrent":
        M, K, N = B, draw(st.integers(1, H)), 4 * H
    elif kind == "input":
        M, K, N = draw(st.integers(1, 4)) * B, draw(st.integers(1, 64)), 4 * H
    else:
        M, K, N = B, H, draw(st.integers(1, H))
    rows = draw(st.sampled_from([8, 16, 32, 64, 128]))
    cols = draw(st.sampled_from([8, 16, 32, 64, 128]))
    return M, N, K, rows, cols, draw(st.sampled_from(["os", "ws", "is"]))


@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lstm_gemms())
def test_gemm_cycles_equal_scalesim(scalesim, gemm):
    M, N, K, rows, cols, dataflow = gemm
    sim = scalesim.run(_job(M, N, K, rows, cols, dataflow))
    assert sim["stall_cycles"] == 0
    assert int(gemm_cycles(M, N, K, rows, cols, dataflow)) == sim["total_cycles"], gemm


def test_gemm_cycles_corners_equal_scalesim(scalesim):
    # The extremes of the range: 8 x 8 and 128 x 128, non-square, shapes that fill a
    # fold exactly and shapes one past it.
    cases = [(1, 4, 1, 8, 8), (8, 32, 8, 8, 8), (9, 33, 9, 8, 8), (1, 256, 128, 128, 128),
             (4, 129, 64, 128, 8), (2, 64, 17, 8, 128)]
    for M, N, K, rows, cols in cases:
        for df in ("os", "ws", "is"):
            sim = scalesim.run(_job(M, N, K, rows, cols, df))
            assert int(gemm_cycles(M, N, K, rows, cols, df)) == sim["total_cycles"], (M, N, K, rows, cols, df)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lstm_gemms(), st.sampled_from([1, 2, 4, 8, 16]))
def test_low_bandwidth_within_15_percent(scalesim, gemm, bandwidth):
    # Bandwidth too low, buffers large enough: the operands are fetched at `bandwidth`
    # words per cycle before compute and the results drained after it. SCALE-Sim's
    # "Total Cycles (incl. prefetch)" counts both; its "Total Cycles" leaves the fetch out.
    M, N, K, rows, cols, dataflow = gemm
    job = _job(M, N, K, rows, cols, dataflow, bandwidth=bandwidth)
    sim = scalesim.run(job)["total_cycles_incl_prefetch"]
    assert abs(_model_total(job) - sim) <= 0.15 * sim, (job, sim, _model_total(job))


def test_small_buffers_never_below_model(scalesim):
    # Buffers too small (the weights, 5-20 KiB, do not fit a 1-8 KiB filter buffer):
    # the model streams each operand once per pass the dataflow makes. SCALE-Sim 3.0.0
    # streams its read buffer as a window over the operand in its fetch order, and a miss
    # moves the window on around the whole operand, so it reports 1x to tens of times
    # more (docs/design-study.md has the measured spread). What holds everywhere: the
    # model never reports more than SCALE-Sim (to 15%), and when the operands fit it is
    # exact (test_low_bandwidth_within_15_percent).
    rng = np.random.default_rng(15)
    ratios = []
    for _ in range(24):
        H = int(rng.choice([16, 32, 48]))
        job = _job(int(rng.choice([1, 2, 4])), 4 * H, int(rng.choice([H, 40])), int(rng.choice([8, 16, 32])),
                   int(rng.choice([8, 16, 32])), str(rng.choice(["os", "ws", "is"])),
                   ifmap_kB=int(rng.choice([1, 64])), filter_kB=int(rng.choice([1, 2, 4, 8])),
                   ofmap_kB=int(rng.choice([1, 64])), bandwidth=int(rng.choice([2, 4, 8, 16])))
        sim = scalesim.run(job)["total_cycles_incl_prefetch"]
        model = _model_total(job)
        assert model <= 1.15 * sim, (job, sim, model)
        ratios.append(sim / model)
    # The stalls are real in both: with the weights streamed, neither is near compute alone.
    assert np.median(ratios) >= 1.0


# Buffers too small: the weights (5-20 KiB) do not fit a 1-8 KiB filter buffer, and the
# ifmap of the larger M (an input projection over several steps) not a 1 KiB one.
@st.composite
def small_buffer_jobs(draw, ofmap_kB=(64,)):
    H = draw(st.sampled_from([16, 32, 48]))
    return _job(draw(st.sampled_from([1, 2, 4, 16, 24, 48])), 4 * H, draw(st.sampled_from([H, 40])),
                draw(st.sampled_from([8, 16, 32])), draw(st.sampled_from([8, 16, 32])),
                draw(st.sampled_from(["os", "ws", "is"])), ifmap_kB=draw(st.sampled_from([1, 64])),
                filter_kB=draw(st.sampled_from([1, 2, 4, 8])), ofmap_kB=draw(st.sampled_from(ofmap_kB)),
                bandwidth=draw(st.sampled_from([2, 4, 8, 16])))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small_buffer_jobs())
def test_scalesim_memory_model_within_15_percent_with_small_read_buffers(scalesim, job):
    # memory_model="scalesim" walks SCALE-Sim's read-buffer window over the demand order
    # of each dataflow (costmodel.array.window_prefetches): with the ifmap or filter
    # buffer too small, its total with stalls is within 15% of the simulator's (146 of 146
    # random shapes, 0.98x-1.11x), where the streaming model is off by up to 21x. The
    # examples are fixed (derandomize) so that CI judges the same shapes every run.
    sim = scalesim.run(job)["total_cycles_incl_prefetch"]
    model = _model_total(job, "scalesim")
    assert abs(model - sim) <= 0.15 * sim, (job, sim, model)


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small_buffer_jobs(ofmap_kB=(1, 2)))
def test_scalesim_memory_model_within_15_percent_with_a_small_ofmap_buffer_too(scalesim, job):
    # The ofmap buffer too small as well: its write stalls are modelled from the writes
    # spread evenly over the run, which is coarser: 150 of 154 random shapes are within
    # 15% (the rest, input-stationary, up to 1.31x); the examples are fixed (derandomize).
    sim = scalesim.run(job)["total_cycles_incl_prefetch"]
    model = _model_total(job, "scalesim")
    assert abs(model - sim) <= 0.15 * sim, (job, sim, model)


def test_scalesim_memory_model_stall_cycles_match_scalesim(scalesim):
    # The stall cycles themselves (SCALE-Sim's "Stall Cycles"), with both read buffers too
    # small, for each dataflow: the model's stalls (the run with the slower buffer's
    # stalls, less the compute cycles) are within 15% of the simulator's.
    from edgelstm.costmodel.array import window_prefetches
    for df in ("os", "ws", "is"):
        job = _job(24, 192, 48, 16, 16, df, ifmap_kB=1, filter_kB=1, ofmap_kB=64, bandwidth=4)
        sim = scalesim.run(job)["stall_cycles"]
        w = window_prefetches(24, 192, 48, 16, 16, dataflow_codes(df), 1024, 1024, 4)
        assert w["ifmap_spill"] and w["filter_spill"]
        stall = max(float(w["ifmap_window_cycles"]), float(w["filter_window_cycles"])) - int(
            gemm_cycles(24, 192, 48, 16, 16, df))
        assert abs(stall - sim) <= 0.15 * sim, (df, sim, stall)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_lstm_gemms_on_the_array_equal_scalesim(scalesim, dataflow):
    # The LSTM model end to end: with buffers that hold everything and a DRAM fast enough
    # to cost nothing, the cycles sweep() books for the input projection, the recurrent
    # product and the projection of a 2-layer LSTM with projection are SCALE-Sim's cycles
    # for those GEMMs (the recurrent and projection ones once per step).
    import edgelstm as el
    from edgelstm import explore
    B, T, E, H, P = 2, 3, 12, 20, 8
    spec = el.LSTMSpec(input_size=E, hidden_size=H, num_layers=2, proj_size=P)
    d = {"rows": [16], "cols": [8], "dataflow": [dataflow], "ifmap_sram_kB": [4096], "filter_sram_kB": [4096],
         "ofmap_sram_kB": [4096], "dram_words_per_cycle": [1e9], "clock_MHz": [100]}
    r = explore.sweep(spec, d, batch=B, seq_len=T, dtype="int8", breakdown=True)

    def sim(M, N, K):
        return scalesim.run(_job(M, N, K, 16, 8, dataflow))["total_cycles"]

    assert r["cycles_input_gemm"][0] == pytest.approx(sim(T * B, 4 * H, E) + sim(T * B, 4 * H, P), abs=1e-3)
    assert r["cycles_recurrent_gemm"][0] == pytest.approx(2 * T * sim(B, 4 * H, P), abs=1e-3)
    assert r["cycles_projection_gemm"][0] == pytest.approx(2 * T * sim(B, P, H), abs=1e-3)
