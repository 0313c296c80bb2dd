"""`edgelstm calibrate`: measure this machine and write the `host` file.

What is measured, and by what (none of it an LSTM):

    generic figures (micro.py)         peak FLOP/s (square BLAS GEMM in @njit), read bandwidth
      -> the catalog-style target      per cache level and DRAM (streaming sum, 1 and all
                                       threads), call, loop-trip and prange overheads, a
                                       vectorized exp per element
    host profile (routines.py,         the CPU kernel's GEMMs, matvec, sigmoid pass and per-row
      micro.py) -> [host]              epilogues on random inputs; Numba dispatch per argument,
                                       JIT-to-JIT calls, allocations; Python views, allocations,
                                       lstm()'s validation and its Python side with the JIT
                                       calls stood in for

Machine facts (cache sizes, CPU model) come from machine.py, the timing harness from
harness.py; the file is written from the schemas of target.py and profile.py.
"""
from __future__ import annotations

import datetime
import platform
import time
from pathlib import Path

import numpy as np

from ..target import HOROWITZ_2014, HOROWITZ_SOURCE, MemoryLevel, Target, host_target_path
from .harness import Harness
from .machine import BlasThreads, blas_thread_setter, caches, cpu_clock_MHz, cpu_model, dram_bytes
from .profile import ElementwisePoint, GemmPoint, HostProfile, write_host_file
from edgelstm.kernels.plan import FACTS

METHOD = ("square BLAS GEMM via np.dot in @njit for peak; @njit streaming sum per cache level for "
          "bandwidth; empty @njit call behind a checking wrapper; @njit loop trips and prange regions "
          "for step overhead; vectorized exp for transcendentals; the CPU kernel's GEMM/matvec "
          "routines and per-row epilogue blocks on random inputs; Python-side wrapper pieces and "
          "lstm()'s Python side with its JIT calls stood in for; best of several repetitions, the "
          "routine and elementwise tables the median of 3 passes (1 with --quick)")

# The CPU kernel's routines, timed at shapes whose operand W (k x 4k) sits in L1, L2, L3 and
# beyond (float32: 16 KB, 64 KB, 256 KB, 1 MB, 4 MB, 16 MB; float64 twice that). (k=64 was
# added where the projection used to change form; it also splits L1 from L2 for the matvec.)
ROUTINE_K = (32, 64, 128, 256, 512, 1024)
ROUTINE_K_QUICK = (32, 128, 512)       # L1, L2, L3 (float32): larger W takes the L3 point
DOT_M = (1, 16, 64, 256, 1024)     # np.dot from Python: rows of a step's product or of a projection
DOT_M_QUICK = (1, 64, 256)
OWN_M = (1, 4, 32, 256)            # the projection's panel GEMM, serial and prange
# ... and the prange variant also at this many rows: the projection of T*B rows (6400 at B=64,
# T=100) runs its blocks of rows on both cores at a rate m=256 does not show (measured at
# B=64 H=256: at least 67 GMAC/s over the call against 51 from the m=256 point).
OWN_M_PAR_EXTRA = (2048,)
ROWBLOCKS_M = (64, 512)            # the large-batch path's GEMM: a step's batch rows, a projection's rows
BLAS_SETTLE_S = 0.3                # after BLAS calls, before timing anything on two threads
OWN_M_QUICK = (1, 32, 256)
EPI_H = (16, 64, 256, 1024)        # hidden sizes of the elementwise (epilogue) tables
EPI_B = 64                         # rows of the gemm path's per-step epilogue call
BLOCK_M = (1, 2, 4, 8)             # the rows kernel's product on a block of rows (register tiles of 1, 2, 4)
TEAM_M = (1, 2, 4)                 # the team's step: B=1 (team_layer) and 2-4 rows (team_layer_rows)
SIGMOID_N = (96, 3072)             # elements per vectorized sigmoid pass
DTYPES = ("float32", "float64")


class _Bar:
    """A tqdm progress bar on stderr over the calibration's measurements (none when
    `show` is False); `log` gets a line per stage."""

    def __init__(self, total: int, show: bool, log):
        self.log = log
        self.bar = None
        if show:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc="calibrate", unit="pt", leave=True, dynamic_ncols=True)

    def stage(self, msg: str):
        if self.bar is not None:
            self.bar.set_postfix_str(msg, refresh=True)
        elif self.log:
            self.log(msg)

    def tick(self, n: int = 1):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def measure(quick: bool = False, log=None, progress: bool = False) -> dict:
    """All the figures, as a dict (the `host` file is written from it)."""
    import numba
    from .micro import Micro
    from .routines import Routines
    t_start = time.perf_counter()
    cores = numba.config.NUMBA_NUM_THREADS
    h = Harness(quick)
    mi, ro = Micro(h), Routines(h)
    threads = sorted({1, cores})
    ks, dot_m, own_m = (ROUTINE_K_QUICK, DOT_M_QUICK, OWN_M_QUICK) if quick else (ROUTINE_K, DOT_M, OWN_M)
    # --quick: the kernel's tables in float32 on one thread only, which compiles a third of
    # the JIT code (compiling is most of a first run); host/model.py derives what is missing
    # (float64 from the measured peak ratio, all threads from the one-thread tables).
    kdts, kthreads = (("float32",), [1]) if quick else (DTYPES, threads)
    own_par = (False, True) if (cores > 1 and not quick) else (False,)
    team_table = cores > 1 and not quick
    rowblocks_table = not quick
    levels = caches()
    own_points = sum(len(own_m) + (len(OWN_M_PAR_EXTRA) if par else 0) for par in own_par)
    n_routines = len(kdts) * len(ks) * (len(dot_m) + own_points
                                        + len(kthreads) * (len(BLOCK_M) + 1 + rowblocks_table * len(ROWBLOCKS_M))
                                        + team_table * len(TEAM_M)) * h.rounds
    n_ew = len(kdts) * len(EPI_H) * (len(kthreads) + (not quick) + 1) * h.rounds
    bw_threads = [1] if quick else threads
    total = 2 * len(threads) + n_routines + n_ew + (len(levels) + 1) * len(bw_threads) + 12
    bar = _Bar(total, progress, log)
    res = {"cores": cores, "quick": quick, "peak": {}, "bandwidth": {}}
    try:
        # Compiling is most of a first calibration: the kernel's routines compile in a second
        # process (into Numba's on-disk cache, which both read) while this one compiles the
        # generic micro-benchmarks; then, with no compiler running, everything is timed.
        bar.stage("compiling the micro-benchmarks (once; cached on disk)")
        warm = _compile_aside(kdts, kthreads) if cores > 1 else None
        from .micro import compile_all
        compile_all(DTYPES, threads, parallel_read=len(bw_threads) > 1)
        _join(warm)
        bar.stage("peak FLOP/s (square BLAS GEMM)")
        n_peak = 256 if quick else 1024
        for th in threads:
            with BlasThreads(th):
                for dt in DTYPES:
                    res["peak"][dt, th] = mi.gemm_flops(dt, n_peak, n_peak, n_peak)
                    bar.tick()
        # On a shared machine an all-thread figure below the one-thread one measures the
        # neighbours (BLAS threads spinning on a busy core), not this machine: keep the floor.
        res["peak"] = {(dt, th): max(v, res["peak"][dt, 1]) for (dt, th), v in res["peak"].items()}
        time.sleep(BLAS_SETTLE_S)           # BLAS's threads stop spinning before the next figures
        bar.stage("dispatch, calls and allocations")
        res["njit_call_s"], res["njit_arg_s"] = mi.njit_args()
        res["inner_call_s"], res["inner_arg_s"] = mi.inner_calls()
        res["alloc_s"] = mi.alloc()
        bar.tick(4)
        bar.stage("Python-side pieces of lstm()")
        res.update(mi.python_pieces())
        res.update(mi.team_pieces(max(threads)))
        res["check_s"] = ro.check()
        res.update(ro.wrapper_path())
        bar.tick(4)
        bar.stage("read bandwidth per level")
        dram_ws = max(4 * levels[-1][1], (64 if quick else 512) * 2 ** 20)
        for name, size, shared in levels + [("DRAM", dram_ws * 2, True)]:
            for th in bw_threads:   # --quick: one thread (all cores are given the one-thread figure)
                # half the level: the sum's array and nothing else; a shared level is split.
                ws = (size // 2) // (th if shared and name != "DRAM" else 1)
                if name == "DRAM":
                    ws = dram_ws // th
                res["bandwidth"][name, th] = mi.read_bandwidth(ws, th)
                bar.tick()
        bar.stage("overheads and transcendentals")
        res["call_s"] = mi.call_overhead()
        res["step_s"] = mi.step_overhead()
        res["parallel_step_s"] = mi.parallel_step_overhead(cores) if cores > 1 else res["step_s"]
        res["transcendental_ns"] = {dt: 1e9 * mi.transcendental_s(dt) for dt in kdts}
        bar.tick(4)
        bar.stage("the CPU kernel's routines at gate-product shapes")

        def routines():
            rt = []
            for dt in kdts:
                for k in ks:
                    for par in own_par:
                        for m in own_m + (OWN_M_PAR_EXTRA if par else ()):
                            rt.append(("own", dt, cores if par else 1, m, k, 4 * k, ro.own_gemm(dt, m, k, 4 * k, par)))
                            bar.tick()
                    one = {}
                    for th in kthreads:
                        for m in BLOCK_M:
                            f = _shared_retry(lambda: ro.block_gemm(dt, m, k, 4 * k, th), one.get(("block", m)), th)
                            one.setdefault(("block", m), f)
                            rt.append(("block", dt, th, m, k, 4 * k, f))
                            bar.tick()
                        f = _shared_retry(lambda: ro.matvec(dt, k, 4 * k, th), one.get("matvec"), th)
                        one.setdefault("matvec", f)
                        rt.append(("matvec", dt, th, 1, k, 4 * k, f))
                        bar.tick()
                    if team_table:      # the team's step at H = k on m rows: two threads, W_hh halves
                        for m in TEAM_M:
                            rt.append(("team", dt, 2, m, k, 2 * k, ro.team_step(dt, k, m)))
                            bar.tick()
                    if rowblocks_table:  # the large-batch path's GEMM: a step's rows, a projection's
                        for th in kthreads:
                            for m in ROWBLOCKS_M:
                                # (two threads each on half the columns: together twice one's rate)
                                f = _shared_retry(lambda: ro.rowblocks(dt, m, k, 4 * k, th) / th,
                                                  one.get(("rowblocks", m)), th) * th
                                one.setdefault(("rowblocks", m), f)
                                rt.append(("rowblocks", dt, th, m, k, 4 * k, f))
                                bar.tick()
            # np.dot last, then a pause: OpenBLAS's worker threads keep spinning after a call
            # (up to about 0.1-0.3 s) and took a core from the two-thread points timed after
            # them (the prange projection at k=32 measured 33-49 GFLOP/s right after np.dot
            # calls and 65.5 after a 0.3 s pause; the two-thread block GEMM 16 against 31).
            for dt in kdts:
                for k in ks:
                    for m in dot_m:
                        rt.append(("dot", dt, cores, m, k, 4 * k, ro.blas_call(dt, m, k, 4 * k)))
                        bar.tick()
            time.sleep(BLAS_SETTLE_S)
            return rt
        res["routines"] = _floor_routines(h.in_rounds(routines), cores)
        bar.stage("the kernel's sigmoid pass")
        sig = {(dt, n): ro.sigmoid_pass(dt, n) for dt in kdts for n in SIGMOID_N}
        n0, n1 = SIGMOID_N
        res["sigmoid_ns"] = {dt: 1e9 * max(sig[dt, n1] - sig[dt, n0], 1e-12) / (n1 - n0) for dt in kdts}
        res["sigmoid_pass_ns"] = {dt: max(1e9 * sig[dt, n0] - res["sigmoid_ns"][dt] * n0, 0.0) for dt in kdts}
        bar.stage("the kernel's per-row epilogue blocks")
        nj_step = res["njit_call_s"] + (FACTS.gemm_step_args - 1) * res["njit_arg_s"]

        def elementwise():
            ew = []
            for dt in kdts:
                for H in EPI_H:
                    one = None
                    for th in kthreads:
                        # (seconds per row: retried as the rate 1/s)
                        sec = 1.0 / _shared_retry(lambda: 1.0 / ro.epilogue_rows(dt, H, th),
                                                  None if one is None else 1.0 / one, th)
                        one = sec if one is None else one
                        ew.append(("rows", dt, th, H, 1, sec))
                        bar.tick()
                    if not quick:   # --quick: the gemm path's epilogue takes the rows table
                        ew.append(("gemm_step", dt, 1, H, EPI_B, ro.epilogue_gemm_step(dt, H, EPI_B, nj_step)))
                        bar.tick()
                    # a projected layer's extra per row: h = W_hr hf (P = H/2), one thread
                    ew.append(("finish_proj", dt, 1, H, 1, ro.finish_proj(dt, H)))
                    bar.tick()
            return ew
        res["elementwise"] = _floor_elementwise(h.in_rounds(elementwise), cores)
        if not quick:
            # The Python-side figures again, a minute later: each is the best of runs made within
            # a few tens of ms, so a disturbance of a second spoils all of them (one calibration
            # measured lstm()'s Python side at 13.5 µs per call and the helper's start at 123 µs,
            # against 6.9-7.3 and about 50 in the others). The less disturbed of the two is kept.
            _keep_least_disturbed(res, mi.python_pieces())
            _keep_least_disturbed(res, {"check_s": ro.check()})
            _keep_least_disturbed(res, ro.wrapper_path(), together=True)
            _keep_least_disturbed(res, {"helper_wake_s": mi.team_pieces(max(threads))["helper_wake_s"]})
    finally:
        bar.close()
    from edgelstm.kernels.plan import config as kc
    res["kernel"] = {"gemm_min_batch": kc.gemm_min_batch, "max_rows_per_block": kc.max_rows_per_block}
    res["caches"] = levels
    res["duration_s"] = time.perf_counter() - t_start
    return res


def _keep_least_disturbed(res: dict, again: dict, together: bool = False) -> None:
    """Keep, of res's figures and the same figures measured again, the smaller (noise only adds
    time): each key on its own, or (together) the set whose sum is smaller, for figures derived
    from one another by differences."""
    if together:
        if sum(again.values()) < sum(res.get(k, float("inf")) for k in again):
            res.update(again)
        return
    for k, v in again.items():
        if k not in res or (v > 0 and v < res[k]):
            res[k] = v


def _compile_aside(dtypes, threads):
    """A child process that compiles (into Numba's on-disk cache) the wrappers of the
    kernel's routines routines.py times, or None when it cannot start."""
    import subprocess
    import sys
    code = ("from edgelstm.costmodel.host.routines import compile_all; "
            f"compile_all({tuple(dtypes)!r}, {tuple(threads)!r})")
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def _join(proc):
    """Wait for the compiling child (what it did not finish compiles here, on first call)."""
    if proc is not None:
        try:
            proc.wait(timeout=300)
        except Exception:
            proc.kill()


# A figure measured with every thread running, each on its own data, whose per-thread rate is
# under this fraction of the one-thread rate was taken while the threads shared one core (the
# neighbours held the other, or the scheduler put both threads on one CPU): it is measured again
# after a pause, up to SHARED_RETRIES more times, and the best is kept. Seen on the 2-vCPU test
# VM: the two-thread matvec at k=64-128 measured 22.9-24.1 GFLOP/s per thread in all three passes
# of one calibration (the one-thread rate was 45.7-48.2), 41.8-44.2 in the next.
SHARED_FRACTION = 0.6
SHARED_RETRIES = 3
SHARED_PAUSE_S = 0.05


def _shared_retry(measure, one_rate, threads):
    """measure() (a rate per thread), again while it looks time-shared against one_rate (the
    one-thread rate of the same point; None: nothing to compare with, measured once)."""
    best = measure()
    if threads <= 1 or one_rate is None:
        return best
    for _ in range(SHARED_RETRIES):
        if best >= SHARED_FRACTION * one_rate:
            break
        time.sleep(SHARED_PAUSE_S)
        best = max(best, measure())
    return best


# On a shared machine a figure measured with every thread running can be far below what the
# threads can do: a prange region waits for a thread that the neighbours' work keeps off its
# core (regions of 8 ms measured for 2 µs of work under a load of 6 on 2 cores). Such a
# figure measures the neighbours, not this machine, so each all-thread figure is held to
# what its threads do by time-sharing one core: a region's call no slower than the serial
# call, a thread's rate no lower than the one-thread rate divided by the threads.
def _floor_routines(rows, cores):
    one = {(r, dt, m, k): f for r, dt, th, m, k, n, f in rows if th == 1}
    out = []
    for r, dt, th, m, k, n, f in rows:
        if th > 1 and (r, dt, m, k) in one:
            f = max(f, one[r, dt, m, k] if r == "own" else one[r, dt, m, k] / th)
        out.append((r, dt, th, m, k, n, f))
    return out


def _floor_elementwise(rows, cores):
    one = {(r, dt, H): sec for r, dt, th, H, B, sec in rows if th == 1}
    return [(r, dt, th, H, B, min(sec, one[r, dt, H] * th) if th > 1 and (r, dt, H) in one else sec)
            for r, dt, th, H, B, sec in rows]


def host_target(res: dict) -> Target:
    """This machine as a catalog-style target, from the generic figures."""
    cores, clock, model = res["cores"], cpu_clock_MHz(), cpu_model()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    src = f"edgelstm calibrate ({'quick' if res['quick'] else 'full'}) on {date}"
    peak, bw = res["peak"], res["bandwidth"]
    eff = [peak[dt, cores] / (cores * peak[dt, 1]) for dt in DTYPES] if cores > 1 else [1.0]
    memory = []
    for name, size, shared in res["caches"] + [("DRAM", dram_bytes(), True)]:
        bw1 = bw[name, 1]
        bwn = bw.get((name, cores), bw1)
        level = MemoryLevel(
            name=name, kind="dram" if name == "DRAM" else "cache", capacity_bytes=size,
            bandwidth_GB_per_s=float(f"{max(bwn, bw1) / 1e9:.4g}"), bandwidth_1thread_GB_per_s=float(f"{bw1 / 1e9:.4g}"),
            energy_pJ_per_byte=0.0, shared=shared,
            source=("/proc/meminfo" if name == "DRAM" else "/sys/devices/system/cpu/cpu0/cache")
            + f"; bandwidth: {src}, streaming sum")
        memory.append(level)
    from ..target import HOROWITZ_DRAM_PJ_PER_BYTE, sram_energy_pJ_per_byte
    import dataclasses
    memory = [dataclasses.replace(m, energy_pJ_per_byte=HOROWITZ_DRAM_PJ_PER_BYTE if m.kind == "dram"
                                  else sram_energy_pJ_per_byte(m.capacity_bytes)) for m in memory]
    ns = res["transcendental_ns"]
    g = lambda x: float(f"{x:.4g}")
    calibration = {"date": date, "cpu_model": model, "method": METHOD, "quick": res["quick"],
                   "duration_s": round(res["duration_s"], 1), "numba": _numba_version(), "numpy": np.__version__,
                   "python": platform.python_version(), "blas_threads_controlled": blas_thread_setter() is not None}
    calibration.update({f"read_GB_per_s_{n}_{th}thread": g(v / 1e9) for (n, th), v in sorted(bw.items())})
    calibration.update({f"peak_GFLOP_per_s_{dt}_{th}thread": g(v / 1e9) for (dt, th), v in sorted(peak.items())})
    return Target(
        name="host", description=f"this machine: {model}", kind="host", clock_MHz=round(clock, 1), cores=cores,
        macs_per_cycle={dt: float(f"{peak[dt, 1] / 2 / (clock * 1e6):.4g}") for dt in DTYPES},
        # The runtime that runs here is lstm(): its Python side per call and per layer, timed with
        # the JIT entry points stood in for (routines.wrapper_path), plus one JIT dispatch, when
        # measured; else the generic checking wrapper + empty @njit call.
        memory=tuple(memory),
        call_overhead_s=g(res["wrapper_s"] + res["njit_call_s"] if res.get("wrapper_s") else res["call_s"]),
        layer_overhead_s=g(res.get("wrapper_layer_s", 0.0) + res.get("wrapper_dir_s", 0.0)),
        step_overhead_s=g(res["step_s"]),
        persistent_step_overhead_s=0.0, parallel_step_overhead_s=g(res["parallel_step_s"]),
        transcendental_cycles=g(ns["float32"] * clock / 1e3), transcendental_ns={dt: g(v) for dt, v in ns.items()},
        parallel_efficiency=round(min(1.0, sum(eff) / len(eff)), 3), energy=dict(HOROWITZ_2014),
        sources={"clock_MHz": f"/proc/cpuinfo; {src}", "macs_per_cycle": f"{src}, square BLAS GEMM",
                 "overhead": f"{src}: lstm()'s Python side per call (+ one @njit dispatch) and per layer, its JIT "
                             f"calls stood in for; @njit loop trip; prange region per trip",
                 "transcendental": f"{src}: a vectorized exp (sigmoid and tanh) over 1024 elements, one core",
                 "energy": HOROWITZ_SOURCE},
        calibration=calibration)


def _numba_version() -> str:
    import numba
    return numba.__version__


def host_profile(res: dict) -> HostProfile:
    """The CPU kernel's profile on this machine, from the routine and Python-side figures."""
    g = lambda x: float(f"{x:.4g}")
    keys = ("njit_call_s", "njit_arg_s", "inner_call_s", "inner_arg_s", "alloc_s", "py_alloc_s", "py_view_s",
            "py_threads_s", "check_s", "wrapper_s", "wrapper_layer_s", "wrapper_dir_s", "team_barrier_s",
            "helper_wake_s")
    return HostProfile(
        **{k: g(res.get(k, 0.0)) for k in keys},
        sigmoid_ns={dt: g(v) for dt, v in res["sigmoid_ns"].items()},
        sigmoid_pass_ns={dt: g(v) for dt, v in res["sigmoid_pass_ns"].items()},
        kernel=dict(res["kernel"]),
        gemm=tuple(GemmPoint(name, dt, th, m, k, n, g(f / 1e9)) for name, dt, th, m, k, n, f in res["routines"]),
        elementwise=tuple(ElementwisePoint(name, dt, th, H, max(g(s * 1e9), 1e-3), B)
                          for name, dt, th, H, B, s in res["elementwise"]))


def calibrate(quick: bool = False, out=None, log=None, progress: bool = False) -> Path:
    """Measure this machine and write the `host` file; returns its path. out: a path;
    default $EDGELSTM_HOST_TARGET or ~/.cache/edgelstm/host.toml. progress: a tqdm bar on
    stderr (else `log` gets a line per stage)."""
    path = Path(out).expanduser() if out else host_target_path()
    res = measure(quick=quick, log=log, progress=progress)
    return write_host_file(host_target(res), host_profile(res), path)


_CHILD = """
import sys
from edgelstm.costmodel.host.calibrate import calibrate
try:
    calibrate(quick={quick!r}, out={out!r}, progress={progress!r})
except Exception as e:
    print(f"edgelstm: calibration failed: {{type(e).__name__}}: {{e}}", file=sys.stderr)
    sys.exit(1)
"""


def calibrate_apart(quick: bool = False, out=None, progress: bool = False) -> Path:
    """calibrate() in a child process (its progress bar on this process's stderr); returns the
    path written. For callers that go on to time the kernel in this process: calibration leaves
    the process with its own threads and pools (a Python thread per two-thread point, BLAS and
    Numba workers), and the kernel's helper thread then competed with them. Measured on the test
    VM: the default grid timed right after a full calibration in the same process came out 39,
    32 and 41 of 60 within ±15% of the host model, and 54 and 56 of 60 with two of those host
    files in a fresh process."""
    import subprocess
    import sys
    from ..target import TargetError
    path = Path(out).expanduser() if out else host_target_path()
    code = _CHILD.format(quick=bool(quick), out=str(path), progress=bool(progress))
    r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        raise TargetError(f"calibration in a child process failed (exit code {r.returncode}); "
                          f"`edgelstm calibrate` shows why")
    return path
