"""The CPU kernels in hostile environments (issue 16, sections 3 and 4): fork after a parallel
call, concurrent Python threads under each threading layer, no writable Numba cache, a
truncated cache file. Each case runs in a subprocess with a timeout: a hang or an abort there
must not take the test session with it."""
import os
import subprocess
import sys
import textwrap

import pytest

LAYERS = ["omp", "workqueue", "tbb"]

# A bidirectional spec at B=16 (several blocks: the parallel rows kernel and the prange
# projection run) and at B=1 (serial kernels, directions through guard.run_two).
_PRELUDE = """
import sys, numpy as np, numba
import edgelstm as el
from edgelstm.kernels import cpu
from edgelstm.kernels.reference import lstm_reference
cpu.config.parallel_projection_min_macs = 1       # every parallel path runs
cpu.config.two_core_min_macs = 1
cpu.config.two_block_min_macs = 1
cpu.config.projection_halves_min_macs = 1
cpu.config.regions_min_threads = 2
spec = el.LSTMSpec(4, 6, bidirectional=True)
w = el.LSTMWeights.random(spec, seed=0, dtype="float64")
xs = [np.random.default_rng(i).standard_normal((7, B, 4)) for i, B in enumerate((16, 1, 40, 3))]
refs = [lstm_reference(x, w)[0] for x in xs]
def check(i):
    return bool(np.allclose(el.lstm(xs[i], w)[0], refs[i], rtol=1e-12, atol=1e-12))
try:
    ok0 = check(0)           # starts the thread pool
    layer = numba.threading_layer()
except ValueError as exc:    # the layer cannot be loaded here
    print("LAYER-MISSING", exc)
    sys.exit(3)
assert ok0
"""


# Four Python threads calling check(i) `rounds` times each; every result must be True.
_FOUR_THREADS = """
import threading
bad = []
def work(i):
    for _ in range({rounds}):
        if not check(i):
            bad.append(i)
ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
assert not bad, bad
"""


def _run(code, env_extra, timeout=240):
    env = dict(os.environ, **env_extra)
    # The tbb wheel puts libtbb.so.12 in <prefix>/lib, which a venv's interpreter does not search.
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (os.path.join(sys.prefix, "lib"),
                                                         env.get("LD_LIBRARY_PATH")) if p)
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung for {timeout} s; stderr: {exc.stderr}")


def _check_layer(proc, layer):
    if proc.returncode == 3 and "LAYER-MISSING" in proc.stdout:
        pytest.skip(f"threading layer {layer!r} cannot be loaded here: {proc.stdout.strip()}")
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])


@pytest.mark.parametrize("layer", LAYERS)
def test_fork_pool_after_parallel_call(layer):
    """GNU OpenMP's pool does not survive fork: without the guard the child hangs."""
    proc = _run(_PRELUDE + """
import multiprocessing as mp
with mp.get_context("fork").Pool(2) as pool:
    res = pool.map(check, [0, 1, 2, 3, 0, 1])
assert all(res), res
assert check(0)              # and the parent still runs its parallel paths
print("layer", layer)
""", {"NUMBA_THREADING_LAYER": layer})
    _check_layer(proc, layer)
    assert f"layer {layer}" in proc.stdout


@pytest.mark.parametrize("layer", LAYERS)
def test_four_python_threads(layer):
    """workqueue aborts on concurrent regions ("Concurrent access has been detected") unless
    parallel calls are serialized; every layer must give the single-threaded results."""
    proc = _run(_PRELUDE + _FOUR_THREADS.format(rounds=20) + """
print("layer", layer)
""", {"NUMBA_THREADING_LAYER": layer})
    _check_layer(proc, layer)
    assert f"layer {layer}" in proc.stdout


def test_no_writable_cache_location_runs_without_disk_cache():
    """Numba raises "cannot cache function ...: no locator available" at decoration when no
    cache directory is writable (a read-only install whose user cache is unwritable too). As
    root every directory is writable here, so the locators are taken away instead: the same
    failure, at the same place."""
    proc = _run("""
from numba.core import caching
caching.CacheImpl._locator_classes = []
import numpy as np, edgelstm as el
from edgelstm.kernels.reference import lstm_reference
w = el.LSTMWeights.random(el.LSTMSpec(3, 5), seed=0, dtype="float64")
x = np.random.default_rng(0).standard_normal((4, 2, 3))
assert np.allclose(el.lstm(x, w)[0], lstm_reference(x, w)[0], rtol=1e-12, atol=1e-12)
from edgelstm.kernels import cpu
assert cpu._epilogue._cache.__class__.__name__ == "NullCache"
print("ran without cache")
""", {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ran without cache" in proc.stdout


def test_truncated_cache_file_recompiles_and_names_the_directory(tmp_path):
    code = """
import numpy as np, edgelstm as el
from edgelstm.kernels.reference import lstm_reference
w = el.LSTMWeights.random(el.LSTMSpec(3, 5), seed=0, dtype="float64")
x = np.random.default_rng(0).standard_normal((4, 1, 3))
assert np.allclose(el.lstm(x, w)[0], lstm_reference(x, w)[0], rtol=1e-12, atol=1e-12)
print("ok")
"""
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first = _run(code, env)
    assert first.returncode == 0, first.stderr[-3000:]
    nbc = sorted(tmp_path.rglob("*.nbc"))
    assert nbc
    for f in nbc:                                 # every cached function cut in half
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    second = _run(code, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "ok" in second.stdout
    assert "could not be read" in second.stderr and str(tmp_path) in second.stderr
    third = _run(code, env)                       # the recompiled entries were written back
    assert third.returncode == 0 and "could not be read" not in third.stderr, third.stderr[-3000:]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and at least two allowed CPUs")
def test_helper_is_kept_off_the_callers_cpu():
    """After a post, the helper thread's CPU mask leaves out the CPU the caller ran on, so Linux
    cannot place the two halves of a run_two call on one core; the job still runs, and where the
    caller's CPU cannot be read, the mask is left alone."""
    code = textwrap.dedent("""
        import os, threading, numba
        numba.set_num_threads(2)
        from edgelstm.kernels import guard
        if guard._getcpu is None:
            print("no-getcpu"); raise SystemExit
        ran = []
        guard.run_two(lambda: None, lambda: ran.append(threading.current_thread().name))
        avoid = guard._helper.avoid                  # the caller's CPU when it posted
        mask = os.sched_getaffinity(guard._helper.thread.native_id)
        print(avoid in mask, avoid in os.sched_getaffinity(0) and len(mask) > 0, ran)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "no-getcpu":
        pytest.skip("no sched_getcpu in this libc")
    in_mask, nonempty, ran = out.stdout.strip().split(" ", 2)
    assert in_mask == "False" and nonempty == "True"
    assert ran in ("['edgelstm-helper']", "['MainThread']")


def test_resident_helper_survives_fork_threads_and_exit():
    """The resident helper (kernels/resident.py) spinning in JIT code: a fork pool whose children
    run the team themselves, four Python threads sharing the one helper, and an interpreter
    exit while it spins; every result equal to the reference's, no hang."""
    proc = _run("""
import threading, time, multiprocessing as mp
import numpy as np, edgelstm as el
from edgelstm.kernels import cpu, resident
from edgelstm.kernels.reference import lstm_reference
cpu.config.resident_spin = 20000
cpu.config.team_min_macs = 1 << 62
cpu.config.team_resident_min_macs = 1
spec = el.LSTMSpec(5, 40, num_layers=2)
w = el.LSTMWeights.random(spec, seed=0, dtype="float64")
xs = [np.random.default_rng(i).standard_normal((9, 1, 5)) for i in range(4)]
refs = [lstm_reference(x, w)[0] for x in xs]
def check(i):
    return bool(np.allclose(el.lstm(xs[i], w)[0], refs[i], rtol=1e-12, atol=1e-12))
helper = resident.get(cpu.config)
deadline = time.monotonic() + 120
while cpu._team_state["resident_runs"] == 0:
    assert time.monotonic() < deadline
    helper.nudge()
    assert check(0)
with mp.get_context("fork").Pool(2) as pool:
    res = pool.map(check, [0, 1, 2, 3] * 3)
assert all(res), res
""" + _FOUR_THREADS.format(rounds=30) + """
assert check(1)
while not resident.awake():        # exit while it spins
    helper.nudge()
    time.sleep(0.001)
print("ok", cpu._team_state["resident_runs"])
""", {})
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    assert proc.stdout.startswith("ok")
