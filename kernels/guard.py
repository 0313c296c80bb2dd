"""What the CPU kernels need from their environment, made safe: Numba's disk cache, fork, and
Python threads.

- `njit_cached(**options)`: `njit(cache=True, ...)` that falls back to no disk cache when no
  cache location is writable (a read-only install whose user cache directory is unwritable
  too: Numba raises "no locator available" at decoration, i.e. at import), and that recompiles
  when a cache file cannot be read back (a truncated `.nbc` raises UnpicklingError or EOFError
  on every call otherwise), warning once with the directory to clear.
- `parallel_allowed()`: False in a process forked from one that had started Numba's thread
  pool. GNU OpenMP's pool does not survive fork (the child hangs in its first parallel region:
  "fork() called from a process already using GNU OpenMP"), so a forked child runs every
  kernel's serial variant instead.
- `parallel_lock()`: a context manager around every call of a parallel (prange) variant. The
  workqueue layer is not thread-safe (concurrent regions abort the process: "Concurrent access
  has been detected"), so until the layer is known to be 'omp' or 'tbb' (both thread-safe),
  parallel calls from several Python threads are serialized. Serial variants need no lock.
- `run_two(first, second)`: run two independent nogil kernel calls on two cores without a
  Numba parallel region. A helper thread is woken to take `second`; the calling thread runs
  `first`, then takes `second` itself if the helper has not claimed it yet. The caller only
  ever waits for work the helper has actually started, never for a thread to be scheduled:
  when another process keeps a core busy, the call degrades to the serial time instead of a
  join that waits for a time slice (8 ms measured for Numba's team on a loaded 2-core machine).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
import warnings

import numba
from numba import njit

# ---------------------------------------------------------------------------------------
# Numba's disk cache
# ---------------------------------------------------------------------------------------
_warned_dirs: set = set()


def _kernel_sources_digest() -> str:
    """A digest of every source file of kernels/: part of each cached function's key."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


_SOURCES = _kernel_sources_digest()


def _safe_cache(disp):
    """Wrap the dispatcher's cache so that an unreadable entry means 'not cached', and so that an
    entry is found only for the kernels' sources it was compiled from. Numba keys a cached
    function by its own file and bytecode: a kernel compiled against another module's older
    routine (an inlined tile of gemm.py, the epilogue of rowops.py) would otherwise be loaded
    after that routine changed, and run the old code."""
    cache = getattr(disp, "_cache", None)
    if cache is None or not hasattr(cache, "load_overload"):
        return disp
    if hasattr(cache, "_index_key"):
        key = cache._index_key
        cache._index_key = lambda sig, codegen: (key(sig, codegen), _SOURCES)
    load = cache.load_overload

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception as exc:     # truncated or corrupt .nbi/.nbc: recompile, and say where
            where = getattr(cache, "_cache_path", "Numba's cache directory")
            if where not in _warned_dirs:
                _warned_dirs.add(where)
                warnings.warn(f"edgelstm: a Numba cache file for {disp.py_func.__qualname__} could not "
                              f"be read ({type(exc).__name__}: {exc}); recompiling. If this repeats, "
                              f"delete the directory {where}", RuntimeWarning, stacklevel=2)
            return None
    cache.load_overload = load_overload
    return disp


def njit_cached(**options):
    """njit with the disk cache where one can be written, and without it where none can."""
    def decorate(func):
        try:
            disp = njit(cache=True, **options)(func)
        except RuntimeError as exc:            # "cannot cache function ...: no locator available"
            if "cache" not in str(exc):
                raise
            return njit(cache=False, **options)(func)
        return _safe_cache(disp)
    return decorate


# ---------------------------------------------------------------------------------------
# fork and threads
# ---------------------------------------------------------------------------------------
_state = {"forked_child": False}


def _pool_started() -> bool:
    try:
        numba.threading_layer()
    except ValueError:          # "Threading layer is not initialized."
        return False
    return True


def _after_fork_in_child():
    global _helper
    if _pool_started() or _state["forked_child"]:
        _state["forked_child"] = True
    _helper = None                       # the helper thread did not survive the fork
    _reset_locks()                       # nor did whoever held these locks


def parallel_allowed() -> bool:
    """Whether a Numba parallel region may run in this process (see the module docstring)."""
    return not _state["forked_child"] and numba.get_num_threads() > 1


_region_lock = threading.Lock()
_THREAD_SAFE_LAYERS = ("omp", "tbb")


def parallel_lock():
    """A lock for a parallel-region call: real until the layer is known thread-safe."""
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    return _NULL if layer in _THREAD_SAFE_LAYERS else _region_lock


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL = NULL_LOCK = _Null()


# ---------------------------------------------------------------------------------------
# two tasks on two cores
# ---------------------------------------------------------------------------------------
class _Job:
    __slots__ = ("fn", "claim", "done", "error")

    def __init__(self, fn):
        self.fn = fn
        self.claim = threading.Lock()
        self.done = threading.Event()
        self.error = None

    def run_if_unclaimed(self) -> bool:
        if not self.claim.acquire(blocking=False):
            return False
        try:
            self.fn()
        except BaseException as exc:     # re-raised in the caller
            self.error = exc
        finally:
            self.done.set()
        return True


def _sched_getcpu():
    """libc's sched_getcpu (the CPU the calling thread runs on), or None where there is none."""
    try:
        import ctypes
        f = ctypes.CDLL(None, use_errno=True).sched_getcpu
        f.restype = ctypes.c_int
        f.argtypes = ()
        return f if f() >= 0 else None
    except (OSError, AttributeError):
        return None


_getcpu = _sched_getcpu()


class _Helper:
    """One daemon thread that runs posted jobs it manages to claim.

    Placement: the helper may run anywhere the process may, except the CPU its caller is on at
    the time of the post. Left to itself, Linux's wake-affine placement puts a thread woken by a
    running thread on the waker's CPU when the other looks busy for a moment (a vCPU the
    hypervisor has just preempted counts as busy), and a helper that sleeps between millisecond
    calls keeps that CPU: on the 2-vCPU test VM the two directions of a bidirectional layer then
    time-shared one core on 65-82% of calls for seconds at a time (1.4-1.5 ms against 0.8 ms).
    The mask is set again only when the caller is seen on another CPU (one syscall)."""

    def __init__(self):
        self.wake = threading.Event()
        self.job = None
        self.avoid = None                  # the caller's CPU the helper's mask leaves out
        self.thread = threading.Thread(target=self._loop, name="edgelstm-helper", daemon=True)
        self.thread.start()

    def place(self):
        """Keep the helper off the caller's current CPU (no-op without sched_getcpu/affinity)."""
        if _getcpu is None or not hasattr(os, "sched_setaffinity"):
            return
        cpu = _getcpu()
        if cpu == self.avoid:
            return
        try:
            allowed = os.sched_getaffinity(0)
            others = allowed - {cpu}
            tid = self.thread.native_id
            if others and tid is not None:
                os.sched_setaffinity(tid, others)
            self.avoid = cpu
        except OSError:                    # a sandbox that forbids it: leave placement alone
            self.avoid = cpu

    def _loop(self):
        while True:
            self.wake.wait()
            self.wake.clear()
            job, self.job = self.job, None
            if job is not None:
                job.run_if_unclaimed()

    def post(self, job):
        for hook in before_helper_post:     # the resident helper (resident.py) stops spinning
            hook()
        self.place()
        self.job = job
        self.wake.set()


_helper = None
before_helper_post = []               # called before the helper is woken for a job
_helper_lock = threading.Lock()       # one caller at a time uses the helper; others run serially


def _reset_locks():
    global _helper_lock, _region_lock
    _helper_lock = threading.Lock()
    _region_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def claim_helper() -> bool:
    """Take the second core for one call (the resident helper's mailbox, kernels/resident.py),
    if no other caller has it; release_helper() after. One caller at a time, as for run_two."""
    return numba.get_num_threads() >= 2 and _helper_lock.acquire(blocking=False)


def release_helper() -> None:
    _helper_lock.release()


def post_to_helper(fn) -> bool:
    """Start fn() on the helper thread without waiting for it, if no other caller is using the
    helper (returns False then, and fn is not run). The caller must not rely on fn having run:
    kernels/team.py pairs this with a claim word that the caller can cancel."""
    global _helper
    if numba.get_num_threads() < 2 or not _helper_lock.acquire(blocking=False):
        return False
    try:
        if _helper is None:
            _helper = _Helper()
        _helper.post(_Job(fn))
    finally:
        _helper_lock.release()
    return True


def run_two(first, second, parallel: bool = True):
    """first(); second() — on two cores when `parallel` and a helper is free (see above)."""
    global _helper
    if not parallel or numba.get_num_threads() < 2 or not _helper_lock.acquire(blocking=False):
        first()
        second()
        return
    try:
        if _helper is None:
            _helper = _Helper()
        job = _Job(second)
        _helper.post(job)
        try:
            first()
        finally:                          # the helper may be running `second`: never leave it behind
            if not job.run_if_unclaimed():
                job.done.wait()
        if job.error is not None:
            raise job.error
    finally:
        _helper_lock.release()
