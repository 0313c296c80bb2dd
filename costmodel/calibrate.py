"""Calibration of this machine: micro-benchmarks (none of them an LSTM) -> the `host` target.

What the model needs, and what measures it:

    peak FLOP/s, fp32/fp64, 1 and all threads  a square BLAS GEMM (np.dot in @njit, the
                                               path a Numba kernel takes to BLAS)
    GEMM throughput at skinny shapes           the same, M x K @ K x 4K for a grid of M, K
    read bandwidth per cache level and DRAM    a @njit streaming sum over arrays sized to
                                               sit in each level, 1 and all threads
    fixed cost of a call                       a Python wrapper that checks shapes, then
                                               calls an @njit function
    fixed cost of a step                       an @njit loop whose trips take array views;
                                               with threads, a prange region per trip
    cost of a transcendental                   an @njit loop of sigmoid (exp) and tanh
    the CPU kernel's routines                  its own GEMM, block GEMM, matvec, np.dot from
                                               Python, on random matrices at gate shapes
    its per-row epilogue                       `_epilogue` + `_finish_row` from a JIT loop, and
                                               `_epilogue_gemm_step` from Python, on random
                                               vectors of 4H, H = 16..1024
    the lstm() wrapper's Python pieces         a small np.empty, a reshape view,
                                               numba.get_num_threads(), one input validation

Cache sizes come from /sys/devices/system/cpu/cpu0/cache, the CPU model from
/proc/cpuinfo. Each figure is the best of several repetitions: the machine is shared,
and the best run is the one least disturbed by others. The kernel-routine and elementwise
tables are measured in passes (three in a full calibration, one in --quick), each point
the median of its passes' best: a disturbance lasting seconds spoils one pass, not the point.
The wrapper's Python side is timed as a whole with the kernel's JIT entry points stood in
for by a do-nothing function (no LSTM arithmetic runs).
"""
from __future__ import annotations

import ctypes
import datetime
import glob
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from .target import host_target_path, load_target_file

METHOD = ("BLAS GEMM via np.dot in @njit for peak and skinny shapes; @njit streaming sum per cache "
          "level for bandwidth; empty @njit call behind a checking wrapper; @njit loop trips and "
          "prange regions for step overhead; @njit sigmoid/tanh loop for transcendentals; the CPU "
          "kernel's GEMM/matvec routines and per-row epilogue blocks on random inputs; Python-side "
          "wrapper pieces (np.empty, view, get_num_threads, input validation) timed alone, and the "
          "lstm() wrapper's Python side with its JIT calls stood in for; best of several repetitions, "
          "the routine and elementwise tables the median of 3 passes (1 with --quick)")


# -- the machine ---------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_clock_MHz() -> float:
    """The clock /proc/cpuinfo reports (nominal on a VM). Only the MACs-per-cycle figures
    depend on it; the model uses clock x MACs per cycle, which is the measured rate."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return 1000.0


def _parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(s[-1:], 1)
    return int(s.rstrip("KMG")) * mult


def _cpu_list_len(s: str) -> int:
    n = 0
    for part in s.strip().split(","):
        if "-" in part:
            a, b = part.split("-")
            n += int(b) - int(a) + 1
        elif part:
            n += 1
    return n


def caches():
    """[(name, capacity_bytes, shared)] for data and unified caches, L1 first."""
    out = []
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            kind = Path(d, "type").read_text().strip()
            if kind not in ("Data", "Unified"):
                continue
            level = int(Path(d, "level").read_text())
            size = _parse_size(Path(d, "size").read_text())
            shared = _cpu_list_len(Path(d, "shared_cpu_list").read_text()) > 1
            out.append((f"L{level}", size, shared))
        except (OSError, ValueError):
            continue
    if not out:  # no sysfs: typical sizes, flagged in the file's sources
        out = [("L1", 32 * 1024, False), ("L2", 1024 ** 2, False), ("L3", 8 * 1024 ** 2, True)]
    return sorted(out, key=lambda c: c[1])


def dram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 8 * 1024 ** 3


# -- BLAS threads: Numba's np.dot calls SciPy's OpenBLAS ----------------------------------
def _blas_lib():
    try:
        import scipy
        d = os.path.join(os.path.dirname(scipy.__file__), "..", "scipy.libs")
        for path in glob.glob(os.path.join(d, "libscipy_openblas*.so*")):
            lib = ctypes.CDLL(path)
            for name in ("scipy_openblas_set_num_threads", "openblas_set_num_threads"):
                if hasattr(lib, name):
                    return getattr(lib, name)
    except (ImportError, OSError):
        pass
    return None


class _BlasThreads:
    def __init__(self, n):
        self.n, self.setter = n, _blas_lib()

    def __enter__(self):
        if self.setter:
            self.setter(self.n)

    def __exit__(self, *exc):
        if self.setter:
            self.setter(os.cpu_count() or 1)


# -- the JIT micro-benchmarks ------------------------------------------------------------------
def _jit():
    """Compiled on first use (import of this module stays cheap)."""
    from numba import njit, prange

    @njit
    def gemm(a, b, reps):
        s = 0.0
        for _ in range(reps):
            c = np.dot(a, b)
            s += c[0, 0]
        return s

    # fastmath lets LLVM split the sum into vector accumulators: a read-bandwidth loop.
    @njit(fastmath=True)
    def read(a, reps):
        s = a.dtype.type(0)
        for _ in range(reps):
            for i in range(a.size):
                s += a[i]
        return s

    @njit(parallel=True, fastmath=True)
    def read_parallel(a2, reps):  # a2: (threads, n), a row per thread
        out = np.zeros(a2.shape[0], dtype=a2.dtype)
        for t in prange(a2.shape[0]):
            s = a2.dtype.type(0)
            for _ in range(reps):
                for i in range(a2.shape[1]):
                    s += a2[t, i]
            out[t] = s
        return out.sum()

    @njit
    def empty_call(x, w, h, out):
        return out.shape[0]

    @njit
    def steps(x, T):
        s = 0.0
        for t in range(T):
            v = x[t % x.shape[0]]
            s += v[0]
        return s

    @njit(parallel=True)
    def parallel_steps(x, T, nthreads):
        s = 0.0
        for t in range(T):
            part = np.zeros(nthreads)
            for j in prange(nthreads):
                part[j] = x[t % x.shape[0], j % x.shape[1]]
            s += part.sum()
        return s

    @njit
    def transcendentals(x, y, z, reps):  # libm, one element at a time
        for _ in range(reps):
            for i in range(x.size):
                y[i] = 1.0 / (1.0 + np.exp(-x[i]))
                z[i] = np.tanh(x[i])
        return y[0] + z[0]

    # A branch-free exp (Cody-Waite reduction, degree-12 Taylor, exponent bits built by
    # hand) that LLVM vectorizes: what a kernel without SVML uses for sigmoid and tanh.
    @njit(fastmath={"contract"})
    def vexp_sigmoid_tanh(x, y, z, e, ib, reps):
        n = x.size
        for _ in range(reps):
            for i in range(n):
                a = -abs(x[i])
                a = max(a, -708.0)
                k = np.floor(a * 1.4426950408889634 + 0.5)
                r = a - k * 0.6931471803691238 - k * 1.9082149292705877e-10
                p = 1.0 / 479001600.0
                for c in (39916800.0, 3628800.0, 362880.0, 40320.0, 5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0):
                    p = p * r + 1.0 / c
                e[i] = p
                ib[i] = (np.int64(k) + 1023) << 52
            sc = ib.view(np.float64)
            for i in range(n):
                ex = e[i] * sc[i]
                y[i] = 1.0 / (1.0 + ex) if x[i] >= 0 else ex / (1.0 + ex)
                z[i] = (1.0 - ex * ex) / (1.0 + ex * ex)
        return y[0] + z[0]

    @njit
    def args1(a0):
        return a0.shape[0]

    @njit
    def callee1(a0):
        s = 0.0
        for j in range(a0.shape[0]):
            s += a0[j] * j
        return s

    @njit
    def callee8(a0, a1, a2, a3, a4, a5, a6, a7):
        s = 0.0
        for j in range(a0.shape[0]):
            s += a0[j] * a1[j] + a2[j] * a3[j] + a4[j] * a5[j] + a6[j] * a7[j]
        return s

    @njit
    def inner_calls(x, reps, eight):  # a JIT-to-JIT call per trip, its arguments row views
        s = 0.0
        n = x.shape[0]
        for r in range(reps):
            i = r % n
            if eight:
                s += callee8(x[i], x[i - 1], x[i - 2], x[i - 3], x[i - 4], x[i - 5], x[i - 6], x[i - 7])
            else:
                s += callee1(x[i])
        return s

    @njit
    def allocs(n, reps):  # small arrays allocated inside JIT code (the runtime's allocator)
        s = 0.0
        for _ in range(reps):
            a = np.empty(n)
            a[0] = 1.0
            s += a[0]
        return s

    @njit
    def args16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
        return a0.shape[0] + a15.shape[0]

    d = dict(gemm=gemm, read=read, read_parallel=read_parallel, empty_call=empty_call,
             steps=steps, parallel_steps=parallel_steps, transcendentals=transcendentals,
             vexp=vexp_sigmoid_tanh, args1=args1, args16=args16, inner_calls=inner_calls,
             allocs=allocs)
    try:
        d.update(_routine_jit())
    except ImportError:  # no kernels module: the routine tables are left out
        pass
    return d


def _routine_jit():
    """Loops over the CPU kernel's building-block routines (a register-blocked small GEMM, a
    matvec, the vectorized exp), timed on random matrices: what each costs on this machine
    at a given shape and in the cache level its operand lives in. None of them is an LSTM."""
    from numba import njit, prange
    from edgelstm.kernels.cpu import _axpy_multi, _epilogue, _finish_row, _gemm_acc, _vexp_neg

    @njit
    def block_gemm(X, W, out, m, reps):       # out[:m] += X[:m] W^T, reps times
        for _ in range(reps):
            _gemm_acc(X, W, out, m)
        return out[0, 0]

    @njit(parallel=True)
    def block_gemm_par(X, W, outs, m, reps):  # each thread its own output, the same W
        for t in prange(outs.shape[0]):
            for _ in range(reps):
                _gemm_acc(X, W, outs[t], m)
        return outs[0, 0, 0]

    @njit
    def matvec(z, wT, h, act, reps):          # z += W v with W^T packed (K, N)
        for _ in range(reps):
            _axpy_multi(z, wT, h, act, 1)
        return z[0, 0]

    @njit(parallel=True)
    def matvec_par(zs, wT, h, act, reps):
        for t in prange(zs.shape[0]):
            for _ in range(reps):
                _axpy_multi(zs[t], wT, h, act, 1)
        return zs[0, 0, 0]

    @njit(fastmath={"contract"}, error_model="numpy")
    def sigmoid_pass(x, y, a, ib, n, reps):   # y = sigmoid(x): one pass to -|x|, exp, one back
        for _ in range(reps):
            for j in range(n):
                a[j] = -abs(np.float64(x[j]))
            _vexp_neg(a, ib, n)
            for j in range(n):
                s = 1.0 / (1.0 + a[j])
                y[j] = s if x[j] >= 0.0 else a[j] * s
        return y[0]

    # The rows path's per-row elementwise work, as the kernel does it for each active row:
    # copy the row's gates, `_epilogue`, `_finish_row`; JIT-to-JIT calls included. Rows cycle
    # through a small random batch, scratch shared as in the kernel's block.
    @njit
    def epi_rows(xp, z, c, peep, a, s, ib, hf, whrT, h, y, reps):
        n = xp.shape[0]
        for r in range(reps):
            q = r % n
            z[0, :] = xp[q]
            _epilogue(z[0], c[q], peep, False, a, s, ib, hf)
            _finish_row(hf, whrT, False, h[q], y[q])
        return y[0, 0]

    @njit(parallel=True)
    def epi_rows_par(xp, z, c, peep, a, s, ib, hf, whrT, h, y, reps):  # each thread its own rows
        n = xp.shape[0]
        for t in prange(z.shape[0]):
            for r in range(reps):
                q = r % n
                z[t, :] = xp[q]
                _epilogue(z[t], c[t, q], peep, False, a[t], s[t], ib[t], hf[t])
                _finish_row(hf[t], whrT, False, h[t, q], y[t, q])
        return y[0, 0, 0]

    return dict(block_gemm=block_gemm, block_gemm_par=block_gemm_par, matvec=matvec,
                matvec_par=matvec_par, sigmoid_pass=sigmoid_pass, epi_rows=epi_rows,
                epi_rows_par=epi_rows_par)


def _best(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _reps_for(seconds_each: float, target_s: float) -> int:
    return max(1, int(target_s / max(seconds_each, 1e-9)))


class _Bench:
    def __init__(self, quick: bool, log):
        self.quick, self.log = quick, log
        self.k = _jit()
        self.repeats = 3 if quick else 7
        self.budget_s = 0.01 if quick else 0.05   # per timed run
        # The kernel-routine and elementwise tables: passes over the whole table, each point
        # the best of round_repeats runs per pass (in_rounds).
        self.rounds, self.round_repeats = (1, 3) if quick else (3, 3)

    def in_rounds(self, table):
        """`table()` (a list of tuples whose last item is the figure) measured in
        self.rounds passes, one after the other, each point's figure the median of its
        passes. A disturbance on this shared machine (another tenant's burst, a vCPU
        descheduled) lasts seconds and spoils every repetition of the one point being timed
        then; spread over passes a minute apart, it spoils one pass, and the median drops it.
        Each pass takes the best of fewer repetitions, so the whole costs about the same."""
        if self.rounds == 1:
            return table()
        saved, self.repeats = self.repeats, self.round_repeats
        try:
            passes = [table() for _ in range(self.rounds)]
        finally:
            self.repeats = saved
        return [row[:-1] + (statistics.median(p[i][-1] for p in passes),) for i, row in enumerate(passes[0])]

    def per_rep_s(self, f, budget_s=None) -> float:
        """Seconds per repetition of f(reps): reps sized so one run takes about the time
        budget, then the best of self.repeats runs."""
        one = _best(lambda: f(1), 2)
        reps = _reps_for(one, budget_s or self.budget_s)
        return _best(lambda: f(reps), self.repeats) / reps

    def gemm_flops(self, dtype, m, k, n) -> float:
        rng = np.random.default_rng(0)
        a, b = rng.random((m, k)).astype(dtype), rng.random((k, n)).astype(dtype)
        g = self.k["gemm"]
        return 2.0 * m * k * n / self.per_rep_s(lambda reps: g(a, b, reps))

    def read_bandwidth(self, nbytes, threads) -> float:
        """Bytes/s of a streaming sum; each thread reads its own nbytes."""
        n = max(1024, nbytes // 4)
        if threads == 1:
            a = np.ones(n, np.float32)
            f = lambda reps: self.k["read"](a, reps)
        else:
            a = np.ones((threads, n), np.float32)
            f = lambda reps: self.k["read_parallel"](a, reps)
        budget = self.budget_s * (1 if nbytes < 64 * 2 ** 20 else 4)
        return threads * 4.0 * n / self.per_rep_s(f, budget)

    def blas_call(self, dtype, m, k, n) -> float:
        """FLOP/s of one np.dot(a, b, out=c) called from Python, per call (dispatch, BLAS
        thread wake-up and the product): the calls the kernel's large-batch path makes."""
        rng = np.random.default_rng(0)
        a, b = rng.random((m, k)).astype(dtype), rng.random((k, n)).astype(dtype)
        c = np.empty((m, n), dtype)
        np.dot(a, b, out=c)
        one = _best(lambda: np.dot(a, b, out=c), 3)
        reps = max(3, _reps_for(one, self.budget_s))

        def loop():
            for _ in range(reps):
                np.dot(a, b, out=c)
        return 2.0 * m * k * n * reps / _best(loop, self.repeats)

    def own_gemm(self, dtype, m, k, n, parallel) -> float:
        """FLOP/s of one call of the kernel's register-blocked dot-product GEMM routine
        (out = X W^T + bias), serial or as a prange region; per call, from Python."""
        from edgelstm.kernels.cpu import _gemm_bias, _gemm_bias_parallel
        rng = np.random.default_rng(0)
        X, W = rng.random((m, k)).astype(dtype), rng.random((n, k)).astype(dtype)
        bias, out = np.zeros(n, dtype), np.empty((m, n), dtype)
        f = _gemm_bias_parallel if parallel else _gemm_bias
        f(X, W, bias, out)
        one = _best(lambda: f(X, W, bias, out), 2)
        reps = max(1, _reps_for(one, self.budget_s))

        def loop():
            for _ in range(reps):
                f(X, W, bias, out)
        return 2.0 * m * k * n * reps / _best(loop, self.repeats)

    def block_gemm(self, dtype, m, k, n, threads) -> float:
        """FLOP/s per thread of the small GEMM out[:m] += X[:m] W^T (W (n, k)) repeated on the
        same W, so W sits in the level that holds it; `threads` threads at once, each its own
        output (all read the same W)."""
        rng = np.random.default_rng(0)
        X, W = rng.random((8, k)).astype(dtype), rng.random((n, k)).astype(dtype)
        if threads == 1:
            out = np.zeros((8, n), dtype)
            f = lambda reps: self.k["block_gemm"](X, W, out, m, reps)
        else:
            outs = np.zeros((threads, 8, n), dtype)
            f = lambda reps: self.k["block_gemm_par"](X, W, outs, m, reps)
        f(1)
        return 2.0 * m * k * n / self.per_rep_s(f)

    def matvec(self, dtype, k, n, threads) -> float:
        """FLOP/s per thread of z += W v, W^T packed (k, n) and re-read every call."""
        rng = np.random.default_rng(0)
        wT, h = rng.random((k, n)).astype(dtype), rng.random((1, k)).astype(dtype)
        act = np.zeros(1, np.int64)
        if threads == 1:
            z = np.zeros((1, n), dtype)
            f = lambda reps: self.k["matvec"](z, wT, h, act, reps)
        else:
            zs = np.zeros((threads, 1, n), dtype)
            f = lambda reps: self.k["matvec_par"](zs, wT, h, act, reps)
        f(1)
        return 2.0 * k * n / self.per_rep_s(f)

    def sigmoid_pass(self, dtype, n) -> float:
        """Seconds of one vectorized sigmoid pass over n elements (the kernel's exp)."""
        x = np.linspace(-4, 4, n).astype(dtype)
        y, a, ib = np.empty_like(x), np.empty(n), np.empty(n, np.int64)
        f = lambda reps: self.k["sigmoid_pass"](x, y, a, ib, n, reps)
        f(1)
        return self.per_rep_s(f)

    def epilogue_rows(self, dtype, H, threads) -> float:
        """Seconds per row of the rows path's elementwise work (gate copy, `_epilogue`,
        `_finish_row` on random vectors of 4H), from a JIT loop; with threads > 1, per thread
        while every thread runs its own rows."""
        rng = np.random.default_rng(0)
        G, n, t = 4 * H, 8, max(threads, 1)
        xp, c = rng.standard_normal((n, G)).astype(dtype), rng.standard_normal((t, n, H)).astype(dtype)
        peep, whrT = np.zeros((3, 1), dtype), np.zeros((1, 1), dtype)
        z, hf = np.empty((t, G), dtype), np.empty((t, H), dtype)
        a, s, ib = np.empty((t, G)), np.empty((t, G)), np.empty((t, G), np.int64)
        h, y = np.zeros((t, n, H), dtype), np.zeros((t, n, H), dtype)
        if threads == 1:
            f = lambda reps: self.k["epi_rows"](xp, z, c[0], peep, a[0], s[0], ib[0], hf[0], whrT, h[0], y[0], reps)
        else:
            f = lambda reps: self.k["epi_rows_par"](xp, z, c, peep, a, s, ib, hf, whrT, h, y, reps)
        f(1)
        one = _best(lambda: f(8), 2) / 8
        reps = _reps_for(one, self.budget_s)
        return _best(lambda: f(reps), self.repeats) / reps

    def epilogue_gemm_step(self, dtype, H, B, njit17_s) -> float:
        """Seconds per row of the gemm path's per-step epilogue (`_epilogue_gemm_step`, serial,
        as the kernel runs it below parallel_epilogue_min_elements) over B random rows, one
        Python call; the call's dispatch (njit_call with its 17 arguments, measured apart) is
        taken out."""
        from edgelstm.kernels.cpu import _epilogue_gemm_step_serial as f
        rng = np.random.default_rng(0)
        G = 4 * H
        zb, xp_t = rng.standard_normal((B, G)).astype(dtype), np.zeros((B, G), dtype)
        c, h, y_t = rng.standard_normal((B, H)).astype(dtype), np.zeros((B, H), dtype), np.zeros((B, H), dtype)
        whrT, peep, lens = np.zeros((1, 1), dtype), np.zeros((3, 1), dtype), np.ones(B, np.int64)
        a, s, ib, hf = np.empty((B, G)), np.empty((B, G)), np.empty((B, G), np.int64), np.empty((B, H), dtype)
        args = (zb, xp_t, 0, whrT, peep, False, False, lens, 0, h, c, y_t, 0, a, s, ib, hf)
        f(*args)
        one = _best(lambda: f(*args), 3)
        reps = max(3, _reps_for(one, self.budget_s))

        def loop():
            for _ in range(reps):
                f(*args)
        return max(_best(loop, self.repeats) / reps - njit17_s, 0.0) / B

    def per_python_call_s(self, fn) -> float:
        """Seconds per call of fn() from a Python loop (2,000 calls per run with --quick,
        20,000 otherwise; the best of self.repeats runs)."""
        n = 2000 if self.quick else 20000

        def loop():
            for _ in range(n):
                fn()
        return _best(loop, self.repeats) / n

    def python_costs(self) -> dict:
        """Python-side pieces of the lstm() wrapper, each timed alone: a small np.empty, a
        reshape view, numba.get_num_threads(), and one call of the wrapper's input validation
        (edgelstm._checks.check_lstm_inputs) on random input."""
        import numba
        x = np.zeros((4, 2, 16), np.float32)
        per = self.per_python_call_s
        out = {"py_alloc_s": per(lambda: np.empty((4, 2, 64), np.float32)),
               "py_view_s": per(lambda: x.reshape(8, 16)),
               "py_threads_s": per(numba.get_num_threads)}
        try:
            from edgelstm._checks import check_lstm_inputs
            from edgelstm.spec import LSTMSpec
            from edgelstm.weights import LSTMWeights
            w = LSTMWeights.random(LSTMSpec(input_size=16, hidden_size=16), seed=0, dtype="float32")
            xr = np.random.default_rng(0).standard_normal((4, 2, 16)).astype(np.float32)
            out["check_s"] = per(lambda: check_lstm_inputs(xr, w, None, None, None, False))
        except ImportError:
            out["check_s"] = 0.0
        out.update(self.wrapper_path())
        return out

    def wrapper_path(self) -> dict:
        """The Python side of edgelstm.lstm() (validation, allocations, the per-layer and
        per-direction bookkeeping in kernels/cpu.py:lstm_cpu) timed alone: the kernel's JIT
        entry points are replaced by a do-nothing Python function for the measurement, so no
        LSTM arithmetic runs; the stand-in's own call cost is taken out. Timed at T=1, B=1,
        H=16 for one layer, two layers and one bidirectional layer, which separates a fixed
        part, a part per layer and a part per direction."""
        try:
            from edgelstm import lstm
            from edgelstm.kernels import cpu
            from edgelstm.spec import LSTMSpec
            from edgelstm.weights import LSTMWeights
        except ImportError:
            return {}
        entries = ("_gemm_bias", "_gemm_bias_parallel", "_layer_rows", "_layer_rows_serial")
        if not all(hasattr(cpu, e) for e in entries):
            return {}

        def stand_in(*args):
            return None
        x = np.zeros((1, 1, 16), np.float32)
        per = self.per_python_call_s
        a4, a15 = [x] * 4, [x] * 15
        stub4, stub15 = per(lambda: stand_in(*a4)), per(lambda: stand_in(*a15))
        specs = {"one": LSTMSpec(16, 16), "two": LSTMSpec(16, 16, num_layers=2),
                 "bi": LSTMSpec(16, 16, bidirectional=True)}
        ws = {k: LSTMWeights.random(s, seed=0, dtype="float32") for k, s in specs.items()}
        for w in ws.values():
            lstm(x, w)           # compile and pack before the entry points are swapped
        saved = {e: getattr(cpu, e) for e in entries}
        try:
            for e in entries:
                setattr(cpu, e, stand_in)
            t = {k: per(lambda w=w: lstm(x, w)) for k, w in ws.items()}
        finally:
            for e, f in saved.items():
                setattr(cpu, e, f)
        # one: fixed + layer + dir + a projection (4 args) and a recurrence (15 args) call;
        # two: fixed + 2 (layer + dir) + 2 of each call; bi: fixed + layer + 2 dir + 1 + 2 calls.
        layer_dir = max(t["two"] - t["one"] - stub4 - stub15, 0.0)
        per_dir = min(max(t["bi"] - t["one"] - stub15, 0.0), layer_dir)
        fixed = max(t["one"] - layer_dir - stub4 - stub15, 0.0)
        return {"wrapper_s": fixed, "wrapper_layer_s": layer_dir - per_dir, "wrapper_dir_s": per_dir}

    def inner_calls(self) -> tuple:
        """(seconds of a call between @njit functions taking one array-view argument, seconds
        per further view argument)."""
        x = np.ones((64, 1))
        f = self.k["inner_calls"]
        f(x, 10, False), f(x, 10, True)
        n = 10 ** 5 if self.quick else 10 ** 6
        t1 = _best(lambda: f(x, n, False), self.repeats) / n
        t8 = _best(lambda: f(x, n, True), self.repeats) / n
        return t1, max(t8 - t1, 0.0) / 7

    def alloc(self) -> float:
        """Seconds of a small np.empty inside @njit code."""
        f = self.k["allocs"]
        f(64, 10)
        n = 10 ** 5 if self.quick else 10 ** 6
        return _best(lambda: f(64, n), self.repeats) / n

    def njit_args(self) -> tuple:
        """(seconds of a Python call of an @njit function with one array argument, seconds
        per further array argument): dispatch types and unboxes every argument. The arrays
        are 2-D and the function is compiled for float32 and float64, so dispatch has to
        pick a signature, as it does for a kernel entry point."""
        f1, f16 = self.k["args1"], self.k["args16"]
        for dt in (np.float64, np.float32):
            a = np.zeros((4, 4), dt)
            f1(a), f16(*([a] * 16))
        n = 2000 if self.quick else 20000
        arr = [a] * 16

        def l1():
            for _ in range(n):
                f1(a)

        def l16():
            for _ in range(n):
                f16(*arr)
        t1, t16 = _best(l1, self.repeats) / n, _best(l16, self.repeats) / n
        return t1, max(t16 - t1, 0.0) / 15

    def call_overhead(self) -> float:
        x = np.zeros((4, 1, 8), np.float32)
        w = np.zeros((32, 8), np.float32)
        h = np.zeros((1, 8), np.float32)
        kern = self.k["empty_call"]

        def wrapper(x, w, h):  # what a kernel's Python wrapper does before the JIT call
            if not isinstance(x, np.ndarray) or x.ndim != 3 or x.dtype != w.dtype:
                raise ValueError("x")
            if w.shape[1] != x.shape[2] or h.shape != (x.shape[1], x.shape[2]):
                raise ValueError("w")
            out = np.empty((x.shape[0], x.shape[1], h.shape[1]), dtype=x.dtype)
            return kern(x, w, h, out)

        wrapper(x, w, h)
        n = 2000 if self.quick else 20000

        def loop():
            for _ in range(n):
                wrapper(x, w, h)
        return _best(loop, self.repeats) / n

    def step_overhead(self) -> float:
        x = np.ones((64, 16), np.float64)
        T = 10 ** 6
        f = self.k["steps"]
        f(x, 10)
        return (_best(lambda: f(x, T), self.repeats) - _best(lambda: f(x, 1), self.repeats)) / T

    def parallel_step_overhead(self, threads) -> float:
        import numba
        x = np.ones((64, 16), np.float64)
        f = self.k["parallel_steps"]
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            f(x, 10, threads)
            T = 2000 if self.quick else 20000
            return (_best(lambda: f(x, T, threads), self.repeats) - _best(lambda: f(x, 1, threads), self.repeats)) / T
        finally:
            numba.set_num_threads(old)

    def transcendental_s(self, dtype, vectorized=True) -> float:
        """Seconds per sigmoid or tanh (2 per element) over 1024 L1-resident elements."""
        x = np.linspace(-4, 4, 1024).astype(dtype)
        y, z = np.empty_like(x), np.empty_like(x)
        if vectorized:
            e, ib = np.empty(x.size), np.empty(x.size, np.int64)
            f = lambda reps: self.k["vexp"](x, y, z, e, ib, reps)
        else:
            f = lambda reps: self.k["transcendentals"](x, y, z, reps)
        f(1)
        return self.per_rep_s(f) / (2 * x.size)


# -- the run -------------------------------------------------------------------------------
GEMM_M = (1, 4, 16, 64, 256)
GEMM_K = (64, 256, 1024)   # N = 4K: the shape of a gate product
# The CPU kernel's routines, timed at shapes whose operand W (k x 4k) sits in L1, L2, L3 and
# beyond (float32: 16 KB, 256 KB, 1 MB, 4 MB, 16 MB; float64 twice that).
ROUTINE_K = (32, 128, 256, 512, 1024)
ROUTINE_K_QUICK = (32, 128, 512, 1024)   # --quick: without the L2-boundary point (quick stays under 30 s)
DOT_M = (1, 16, 64, 256, 1024)     # np.dot from Python: rows of a step's product or of a projection
OWN_M = (1, 4, 32, 256)            # the register-blocked projection GEMM, serial and prange
EPI_H = (16, 64, 256, 1024)        # hidden sizes of the elementwise (epilogue) tables
EPI_B = 64                         # rows of the gemm path's per-step epilogue call
BLOCK_M = (4, 8)                   # the small GEMM on a block of rows
SIGMOID_N = (96, 3072)             # elements per vectorized sigmoid pass


def measure(quick: bool = False, log=None) -> dict:
    """All the figures, as a dict (the `host` TOML is written from it)."""
    import numba
    log = log or (lambda msg: None)
    t_start = time.perf_counter()
    cores = numba.config.NUMBA_NUM_THREADS
    b = _Bench(quick, log)
    thread_counts = sorted({1, cores})
    res = {"cores": cores, "quick": quick, "peak": {}, "gemm": [], "bandwidth": {}}
    log("peak FLOP/s (BLAS GEMM)")
    n_peak = 512 if quick else 1024
    for th in thread_counts:
        with _BlasThreads(th):
            for dt in ("float32", "float64"):
                res["peak"][dt, th] = b.gemm_flops(dt, n_peak, n_peak, n_peak)
                for m in GEMM_M:
                    for k in GEMM_K:
                        res["gemm"].append((dt, th, m, k, 4 * k, b.gemm_flops(dt, m, k, 4 * k)))
    # On a shared machine, an all-thread figure below the one-thread one measures the
    # neighbours (BLAS threads spinning on a busy core), not this machine: keep the floor.
    one = {(dt, m, k): f for dt, th, m, k, n, f in res["gemm"] if th == 1}
    res["gemm"] = [(dt, th, m, k, n, max(f, one[dt, m, k])) for dt, th, m, k, n, f in res["gemm"]]
    res["peak"] = {(dt, th): max(v, res["peak"][dt, 1]) for (dt, th), v in res["peak"].items()}
    if "block_gemm" in b.k:
        log("the CPU kernel's routines at gate-product shapes (not an LSTM)")

        def routines():
            rt = []
            for dt in ("float32", "float64"):
                for k in (ROUTINE_K_QUICK if quick else ROUTINE_K):
                    for m in DOT_M:
                        rt.append(("dot", dt, cores, m, k, 4 * k, b.blas_call(dt, m, k, 4 * k)))
                    for m in OWN_M:
                        rt.append(("own", dt, 1, m, k, 4 * k, b.own_gemm(dt, m, k, 4 * k, False)))
                        if cores > 1:
                            rt.append(("own", dt, cores, m, k, 4 * k, b.own_gemm(dt, m, k, 4 * k, True)))
                    for th in thread_counts:
                        for m in BLOCK_M:
                            rt.append(("block", dt, th, m, k, 4 * k, b.block_gemm(dt, m, k, 4 * k, th)))
                        rt.append(("matvec", dt, th, 1, k, 4 * k, b.matvec(dt, k, 4 * k, th)))
            return rt
        res["routines"] = b.in_rounds(routines)
        sig = {(dt, n): b.sigmoid_pass(dt, n) for dt in ("float32", "float64") for n in SIGMOID_N}
        n0, n1 = SIGMOID_N
        res["sigmoid_ns"] = {dt: 1e9 * max(sig[dt, n1] - sig[dt, n0], 1e-12) / (n1 - n0)
                             for dt in ("float32", "float64")}
        res["sigmoid_pass_ns"] = {dt: max(1e9 * sig[dt, n0] - res["sigmoid_ns"][dt] * n0, 0.0)
                                  for dt in ("float32", "float64")}
        res["njit_call_s"], res["njit_arg_s"] = b.njit_args()
        res["inner_call_s"], res["inner_arg_s"] = b.inner_calls()
        log("the CPU kernel's elementwise blocks (epilogue per row) and Python-side wrapper pieces")
        nj17 = res["njit_call_s"] + 16 * res["njit_arg_s"]

        def elementwise():
            ew = []
            for dt in ("float32", "float64"):
                for H in EPI_H:
                    for th in thread_counts:
                        ew.append(("rows", dt, th, H, 1, b.epilogue_rows(dt, H, th)))
                    ew.append(("gemm_step", dt, 1, H, EPI_B, b.epilogue_gemm_step(dt, H, EPI_B, nj17)))
            return ew
        res["elementwise"] = b.in_rounds(elementwise)
        res.update(b.python_costs())
        res["alloc_s"] = b.alloc()
    log("read bandwidth per level")
    levels = caches()
    dram_ws = max(4 * levels[-1][1], (128 if quick else 512) * 2 ** 20)
    for name, size, shared in levels + [("DRAM", dram_ws * 2, True)]:
        for th in thread_counts:
            # half the level: the sum's array and nothing else; a shared level is split.
            ws = (size // 2) // (th if shared and name != "DRAM" else 1)
            if name == "DRAM":
                ws = dram_ws // th
            res["bandwidth"][name, th] = b.read_bandwidth(ws, th)
    log("overheads and transcendentals")
    res["call_s"] = b.call_overhead()
    res["step_s"] = max(b.step_overhead(), 1e-10)
    res["parallel_step_s"] = b.parallel_step_overhead(cores) if cores > 1 else res["step_s"]
    res["transcendental_ns"] = {dt: 1e9 * b.transcendental_s(dt) for dt in ("float32", "float64")}
    res["libm_transcendental_ns"] = {dt: 1e9 * b.transcendental_s(dt, False) for dt in ("float32", "float64")}
    try:  # the CPU kernel's work split, recorded for the record (the model reads the live config)
        from edgelstm.kernels.cpu import config as kc
        res["kernel"] = {"gemm_min_batch": kc.gemm_min_batch, "rows_per_block": kc.max_rows_per_block}
    except Exception:  # no kernels module: the model assumes one product per step
        res["kernel"] = {}
    res["caches"] = levels
    res["duration_s"] = time.perf_counter() - t_start
    return res


def _toml_str(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def host_toml(res: dict) -> str:
    """The `host` target file (same schema as the catalog) from measured figures."""
    cores = res["cores"]
    clock = cpu_clock_MHz()
    model = cpu_model()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    src = f"edgelstm calibrate ({'quick' if res['quick'] else 'full'}) on {date}"
    peak = res["peak"]
    eff = [peak[dt, cores] / (cores * peak[dt, 1]) for dt in ("float32", "float64")] if cores > 1 else [1.0]
    L = [f"# This machine, measured by `edgelstm calibrate`. Regenerate rather than edit.",
         f"name = \"host\"", f"description = {_toml_str('this machine: ' + model)}", "kind = \"host\"",
         f"clock_MHz = {clock:.1f}", f"cores = {cores}", f"source = {_toml_str('/proc/cpuinfo; ' + src)}",
         f"parallel_efficiency = {min(1.0, sum(eff) / len(eff)):.3f}", "",
         "[macs_per_cycle]  # one core: measured peak GEMM FLOP/s / 2 / clock"]
    for dt in ("float32", "float64"):
        L.append(f"{dt} = {peak[dt, 1] / 2 / (clock * 1e6):.3f}")
    L += [f"source = {_toml_str(src + ', square BLAS GEMM')}", "", "[overhead]",
          f"call_s = {res['call_s']:.4g}", f"step_s = {res['step_s']:.4g}",
          f"parallel_step_s = {res['parallel_step_s']:.4g}",
          *([f"njit_call_s = {res['njit_call_s']:.4g}", f"njit_arg_s = {res['njit_arg_s']:.4g}",
             f"inner_call_s = {res['inner_call_s']:.4g}", f"inner_arg_s = {res['inner_arg_s']:.4g}",
             f"alloc_s = {res['alloc_s']:.4g}"] if "njit_call_s" in res else []),
          *([f"py_alloc_s = {res['py_alloc_s']:.4g}", f"py_view_s = {res['py_view_s']:.4g}",
             f"py_threads_s = {res['py_threads_s']:.4g}", f"check_s = {res['check_s']:.4g}"]
            if "py_alloc_s" in res else []),
          *([f"wrapper_s = {res['wrapper_s']:.4g}", f"wrapper_layer_s = {res['wrapper_layer_s']:.4g}",
             f"wrapper_dir_s = {res['wrapper_dir_s']:.4g}"] if "wrapper_s" in res else []),
          f"source = {_toml_str(src + ': checking wrapper + empty @njit call; @njit loop trip; prange region per trip')}",
          "", "[transcendental]"]
    ns = res.get("sigmoid_ns") or res["transcendental_ns"]
    L += [f"ns_{dt} = {v:.4g}" for dt, v in ns.items()]
    L += [f"pass_ns_{dt} = {v:.4g}" for dt, v in res.get("sigmoid_pass_ns", {}).items()]
    L += [f"cycles = {ns['float32'] * clock / 1e3:.4g}",
          f"source = {_toml_str(src + ': vectorized sigmoid passes (the CPU kernel exp) over ' + ' and '.join(map(str, SIGMOID_N)) + ' elements: per element (ns_) and per pass (pass_ns_), one core')}", ""]
    if res.get("kernel"):
        L += ["[kernel]  # edgelstm.kernels.cpu.config at calibration time"]
        L += [f"{k} = {v}" for k, v in res["kernel"].items()] + [""]
    th_all = cores
    for name, size, shared in res["caches"] + [("DRAM", dram_bytes(), True)]:
        bw1, bwn = res["bandwidth"][name, 1], res["bandwidth"][name, th_all]
        L += ["[[memory]]", f"name = \"{name}\"", f"kind = \"{'dram' if name == 'DRAM' else 'cache'}\"",
              f"capacity_bytes = {size}", f"bandwidth_GB_per_s = {max(bwn, bw1) / 1e9:.4g}",
              f"bandwidth_1thread_GB_per_s = {bw1 / 1e9:.4g}", f"shared = {'true' if shared else 'false'}",
              f"source = {_toml_str(('/proc/meminfo' if name == 'DRAM' else '/sys/devices/system/cpu/cpu0/cache') + '; bandwidth: ' + src + ', streaming sum')}",
              ""]
    for dt, th, m, k, n, flops in res["gemm"]:
        L += ["[[gemm]]", f"dtype = \"{dt}\"", f"threads = {th}", f"m = {m}", f"k = {k}", f"n = {n}",
              f"GFLOP_per_s = {flops / 1e9:.4g}", ""]
    for name, dt, th, m, k, n, flops in res.get("routines", []):
        L += ["[[gemm]]", f"routine = \"{name}\"", f"dtype = \"{dt}\"", f"threads = {th}", f"m = {m}", f"k = {k}",
              f"n = {n}", f"GFLOP_per_s = {flops / 1e9:.4g}", ""]
    for name, dt, th, H, B, sec in res.get("elementwise", []):
        L += ["[[elementwise]]", f"routine = \"{name}\"", f"dtype = \"{dt}\"", f"threads = {th}",
              f"hidden = {H}", f"batch = {B}", f"ns_per_row = {max(sec * 1e9, 1e-3):.4g}", ""]
    import numba
    L += ["[calibration]", f"date = \"{date}\"", f"cpu_model = {_toml_str(model)}",
          f"method = {_toml_str(METHOD)}", f"quick = {'true' if res['quick'] else 'false'}",
          f"duration_s = {res['duration_s']:.1f}", f"numba = \"{numba.__version__}\"",
          f"numpy = \"{np.__version__}\"", f"python = \"{platform.python_version()}\"",
          f"blas_threads_controlled = {'true' if _blas_lib() else 'false'}"]
    for dt, v in res["libm_transcendental_ns"].items():
        L.append(f"libm_transcendental_ns_{dt} = {v:.4g}")
    for (name, th), v in sorted(res["bandwidth"].items()):
        L.append(f"read_GB_per_s_{name}_{th}thread = {v / 1e9:.4g}")
    for (dt, th), v in sorted(res["peak"].items()):
        L.append(f"peak_GFLOP_per_s_{dt}_{th}thread = {v / 1e9:.4g}")
    return "\n".join(L) + "\n"


def calibrate(quick: bool = False, out=None, log=None) -> Path:
    """Measure this machine and write the `host` target file; returns its path.
    out: a path; default $EDGELSTM_HOST_TARGET or ~/.cache/edgelstm/host.toml."""
    path = Path(out).expanduser() if out else host_target_path()
    res = measure(quick=quick, log=log)
    text = host_toml(res)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)        # never leave a half-written file behind
    load_target_file(path)       # it must parse as a target
    return path
