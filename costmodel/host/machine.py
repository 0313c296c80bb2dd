"""Machine facts for calibration: CPU model and clock, cache sizes, memory size, and control
of the BLAS thread pool that Numba's np.dot calls (SciPy's OpenBLAS)."""
from __future__ import annotations

import ctypes
import glob
import os
import platform
from pathlib import Path

from edgelstm.kernels.plan import sysfs_caches


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


def caches():
    """[(name, capacity_bytes, shared)] for data and unified caches, L1 first (the kernel's own
    reader, kernels/plan.py, which picks the team's path from the L2 size)."""
    out = list(sysfs_caches())
    if not out:  # no sysfs: typical sizes, flagged in the file's sources
        out = [("L1", 32 * 1024, False), ("L2", 1024 ** 2, False), ("L3", 8 * 1024 ** 2, True)]
    return out


def dram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 8 * 1024 ** 3


def blas_thread_setter():
    """openblas_set_num_threads of the BLAS Numba's np.dot calls, or None."""
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


class BlasThreads:
    """`with BlasThreads(n):` the BLAS pool runs n threads, then all cores again."""

    def __init__(self, n):
        self.n, self.setter = n, blas_thread_setter()

    def __enter__(self):
        if self.setter:
            self.setter(self.n)

    def __exit__(self, *exc):
        if self.setter:
            self.setter(os.cpu_count() or 1)
