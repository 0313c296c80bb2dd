"""Generic micro-benchmarks of this machine, none of them an LSTM and none of them edgelstm's
kernel: peak GEMM FLOP/s (np.dot in @njit, the path a Numba kernel takes to BLAS), read
bandwidth of a streaming sum per cache level and DRAM, the cost of a call behind a checking
wrapper, of a loop trip and of a prange region, of a vectorized exp, and what Numba and
Python charge for dispatch, JIT-to-JIT calls, allocations and views. The JIT functions are
cached on disk (cache=True): a second calibration does not compile them again."""
from __future__ import annotations

import statistics
import time

import numpy as np
from numba import prange

from edgelstm.kernels import team as _team
from edgelstm.kernels.activations import sigmoid, tanh
from edgelstm.kernels.guard import njit_cached   # the disk cache where writable, recompiling a bad entry

from .harness import Harness, best


@njit_cached()
def _gemm(a, b, reps):
    s = 0.0
    for _ in range(reps):
        c = np.dot(a, b)
        s += c[0, 0]
    return s


# fastmath lets LLVM split the sum into vector accumulators: a read-bandwidth loop.
@njit_cached(fastmath=True)
def _read(a, reps):
    s = a.dtype.type(0)
    for _ in range(reps):
        for i in range(a.size):
            s += a[i]
    return s


@njit_cached(parallel=True, fastmath=True)
def _read_parallel(a2, reps):  # a2: (threads, n), a row per thread
    out = np.zeros(a2.shape[0], dtype=a2.dtype)
    for t in prange(a2.shape[0]):
        s = a2.dtype.type(0)
        for _ in range(reps):
            for i in range(a2.shape[1]):
                s += a2[t, i]
        out[t] = s
    return out.sum()


@njit_cached()
def _empty_call(x, w, h, out):
    return out.shape[0]


@njit_cached()
def _steps(x, T):
    s = 0.0
    for t in range(T):
        v = x[t % x.shape[0]]
        s += v[0]
    return s


@njit_cached(parallel=True)
def _parallel_steps(x, T, nthreads):
    s = 0.0
    for t in range(T):
        part = np.zeros(nthreads)
        for j in prange(nthreads):
            part[j] = x[t % x.shape[0], j % x.shape[1]]
        s += part.sum()
    return s


# Sigmoid and tanh over a vector through the kernel's activations (kernels/activations.py), in
# the precision of x, as the kernel computes a float32 model's activations in float32 (a
# degree-7 polynomial, 16 lanes on AVX-512) and a float64 model's in float64 (degree 12, 8 lanes).
@njit_cached(fastmath={"contract"}, error_model="numpy")
def _sigmoid_tanh(x, y, z, reps):
    for _ in range(reps):
        for i in range(x.size):
            y[i] = sigmoid(x[i])
            z[i] = tanh(x[i])
    return y[0] + z[0]


@njit_cached()
def _args1(a0):
    return a0.shape[0]


@njit_cached()
def _args16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    return a0.shape[0] + a15.shape[0]


@njit_cached()
def _callee1(a0):
    s = 0.0
    for j in range(a0.shape[0]):
        s += a0[j] * j
    return s


@njit_cached()
def _callee8(a0, a1, a2, a3, a4, a5, a6, a7):
    s = 0.0
    for j in range(a0.shape[0]):
        s += a0[j] * a1[j] + a2[j] * a3[j] + a4[j] * a5[j] + a6[j] * a7[j]
    return s


@njit_cached()
def _inner_calls(x, reps, eight):  # a JIT-to-JIT call per trip, its arguments row views
    s = 0.0
    n = x.shape[0]
    for r in range(reps):
        i = r % n
        if eight:
            s += _callee8(x[i], x[i - 1], x[i - 2], x[i - 3], x[i - 4], x[i - 5], x[i - 6], x[i - 7])
        else:
            s += _callee1(x[i])
    return s


@njit_cached()
def _allocs(n, reps):  # small arrays allocated inside JIT code (the runtime's allocator)
    s = 0.0
    for _ in range(reps):
        a = np.empty(n)
        a[0] = 1.0
        s += a[0]
    return s


@njit_cached(nogil=True)
def _pingpong(sync, tid, n):
    """n crossings of the team's step barrier by thread tid (kernels/team.py's flags)."""
    for s in range(n):
        if _team.cross(sync, tid, s + 1, 2000, 1 << 40) < 0:
            return -1
    return 0


def barrier_crossing_s(n: int = 2000) -> float:
    """Seconds per crossing of the team's two-thread step barrier with no work between
    crossings: this thread and one other, n crossings each (used by calibration and by
    bench/bench_kernels.py)."""
    import threading
    _pingpong(_team.new_sync(), 0, 0)
    sync = _team.new_sync()
    th = threading.Thread(target=_pingpong, args=(sync, 1, n))
    th.start()
    t0 = time.perf_counter()
    _pingpong(sync, 0, n)
    dt = time.perf_counter() - t0
    th.join()
    return dt / n


class Micro:
    """The generic micro-benchmarks, timed with a Harness."""

    def __init__(self, h: Harness):
        self.h = h

    def gemm_flops(self, dtype, m, k, n) -> float:
        rng = np.random.default_rng(0)
        a, b = rng.random((m, k)).astype(dtype), rng.random((k, n)).astype(dtype)
        return 2.0 * m * k * n / self.h.per_rep_s(lambda reps: _gemm(a, b, reps))

    def read_bandwidth(self, nbytes, threads) -> float:
        """Bytes/s of a streaming sum; each thread reads its own nbytes."""
        n = max(1024, nbytes // 4)
        if threads == 1:
            a = np.ones(n, np.float32)
            f = lambda reps: _read(a, reps)
        else:
            a = np.ones((threads, n), np.float32)
            f = lambda reps: _read_parallel(a, reps)
        budget = self.h.budget_s * (1 if nbytes < 64 * 2 ** 20 else 4)
        return threads * 4.0 * n / self.h.per_rep_s(f, budget)

    def call_overhead(self) -> float:
        """A Python wrapper that checks shapes, then calls an empty @njit function."""
        x = np.zeros((4, 1, 8), np.float32)
        w = np.zeros((32, 8), np.float32)
        h = np.zeros((1, 8), np.float32)

        def wrapper(x, w, h):  # what a kernel's Python wrapper does before the JIT call
            if not isinstance(x, np.ndarray) or x.ndim != 3 or x.dtype != w.dtype:
                raise ValueError("x")
            if w.shape[1] != x.shape[2] or h.shape != (x.shape[1], x.shape[2]):
                raise ValueError("w")
            out = np.empty((x.shape[0], x.shape[1], h.shape[1]), dtype=x.dtype)
            return _empty_call(x, w, h, out)
        wrapper(x, w, h)
        return self.h.per_python_call_s(lambda: wrapper(x, w, h))

    def step_overhead(self) -> float:
        """An @njit loop trip that takes an array view."""
        x = np.ones((64, 16), np.float64)
        _steps(x, 10)
        return max(self.h.per_rep_s(lambda T: _steps(x, T)), 1e-10)

    def parallel_step_overhead(self, threads) -> float:
        """A prange region of `threads` trips, once per loop trip."""
        import numba
        x = np.ones((64, 16), np.float64)
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            _parallel_steps(x, 10, threads)
            # Many regions in one call, less one region: the cost of a region whose threads
            # are awake (the first region's wake-up, which a loaded machine can stretch to
            # tens of ms, is taken out rather than charged to every step).
            T = 200 if self.h.quick else 20000
            r = self.h.repeats
            many = best(lambda: _parallel_steps(x, T, threads), r)
            one = best(lambda: _parallel_steps(x, 1, threads), r)
            # A wake-up stretched by other processes can exceed T regions (seen with T=200 on a
            # loaded 2-core machine): then charge the regions whole rather than report zero.
            return (many - one) / T if many > one else many / T
        finally:
            numba.set_num_threads(old)

    def transcendental_s(self, dtype) -> float:
        """Seconds per sigmoid or tanh (2 per element) over 1024 L1-resident elements."""
        x = np.linspace(-4, 4, 1024).astype(dtype)
        y, z = np.empty_like(x), np.empty_like(x)
        f = lambda reps: _sigmoid_tanh(x, y, z, reps)
        f(1)
        return self.h.per_rep_s(f) / (2 * x.size)

    def njit_args(self) -> tuple:
        """(seconds of a Python call of an @njit function with one array argument, seconds
        per further array argument): dispatch types and unboxes every argument. The arrays
        are 2-D and the function is compiled for float32 and float64, so dispatch has to
        pick a signature, as it does for a kernel entry point."""
        for dt in (np.float64, np.float32):
            a = np.zeros((4, 4), dt)
            _args1(a), _args16(*([a] * 16))
        arr = [a] * 16
        t1 = self.h.per_python_call_s(lambda: _args1(a))
        t16 = self.h.per_python_call_s(lambda: _args16(*arr))
        return t1, max(t16 - t1, 0.0) / 15

    def inner_calls(self) -> tuple:
        """(seconds of a call between @njit functions taking one array-view argument, seconds
        per further view argument)."""
        x = np.ones((64, 1))
        _inner_calls(x, 10, False), _inner_calls(x, 10, True)
        t1 = self.h.per_rep_s(lambda n: _inner_calls(x, n, False))
        t8 = self.h.per_rep_s(lambda n: _inner_calls(x, n, True))
        return t1, max(t8 - t1, 0.0) / 7

    def alloc(self) -> float:
        """Seconds of a small np.empty inside @njit code."""
        _allocs(64, 10)
        return self.h.per_rep_s(lambda n: _allocs(64, n))

    def team_pieces(self, threads: int) -> dict:
        """The two-thread team's own synchronization (kernels/team.py), no LSTM: seconds per
        crossing of its step barrier by two threads with no work between crossings (the median
        of 5 runs of 2000 crossings), and seconds from posting a job to the helper thread until
        it runs (median of 31 posts, each after a 2 ms pause so the helper has gone to sleep,
        as between two calls). 0 with one thread."""
        if threads < 2:
            return {"team_barrier_s": 0.0, "helper_wake_s": 0.0}
        import threading
        from edgelstm.kernels import guard
        barrier = statistics.median(barrier_crossing_s(2000) for _ in range(5))
        waits = []
        for _ in range(31):
            time.sleep(0.002)
            ran, done = [], threading.Event()
            t0 = time.perf_counter()
            if not guard.post_to_helper(lambda: (ran.append(time.perf_counter()), done.set())):
                break
            done.wait()
            waits.append(ran[0] - t0)
        return {"team_barrier_s": barrier, "helper_wake_s": statistics.median(waits) if waits else 0.0}

    def python_pieces(self) -> dict:
        """A small np.empty, a reshape view and numba.get_num_threads(), each from Python."""
        import numba
        x = np.zeros((4, 2, 16), np.float32)
        per = self.h.per_python_call_s
        return {"py_alloc_s": per(lambda: np.empty((4, 2, 64), np.float32)),
                "py_view_s": per(lambda: x.reshape(8, 16)),
                "py_threads_s": per(numba.get_num_threads)}


def compile_all(dtypes, threads, parallel_read: bool = True) -> None:
    """Compile (or load from the cache) the micro-benchmarks above on tiny inputs."""
    for dt in dtypes:
        a = np.ones((4, 4), dt)
        _gemm(a, a, 1)
        _args1(a), _args16(*([a] * 16))
    v = np.ones(1024, np.float32)
    _read(v, 1)
    if max(threads) > 1:
        if parallel_read:
            _read_parallel(np.ones((2, 1024), np.float32), 1)
        _parallel_steps(np.ones((4, 4)), 2, 2)
    _empty_call(v, v, v, v)
    _steps(np.ones((4, 4)), 2)
    for dt in (np.float32, np.float64):
        vd = v.astype(dt)
        _sigmoid_tanh(vd, vd.copy(), vd.copy(), 1)
    x = np.ones((64, 1))
    _inner_calls(x, 2, False), _inner_calls(x, 2, True)
    _allocs(4, 1)
