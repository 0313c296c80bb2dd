"""The CPU kernel's plan: its tunables, which path a call takes, and what each path does per
call, per layer, per block and per step. Declared once, here, and read by both
`kernels/cpu.py` (which runs it) and the host cost model (`costmodel/host/`, which charges
each item its calibrated price). Nothing here imports Numba.

When kernels/cpu.py changes what it allocates, passes or calls, change the counts below with
it: tests/test_plan.py checks every count against the kernel's own code (signatures, the
np.empty/np.zeros calls in each routine), so a count that drifts fails a test.
"""
from __future__ import annotations

import functools
import glob
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CPUConfig:
    """Tunables, read at call time (change `edgelstm.kernels.cpu.config`, the same object)."""
    # The hoisted input projection uses BLAS only on the gemm path: a threaded BLAS call next
    # to Numba's own threads leaves both pools spinning for two cores (8 ms stalls measured).
    parallel_projection_min_macs: int = 1 << 22   # Numba GEMM threaded from this size
    gemm_min_batch: int = 32        # batch >= this: one BLAS GEMM per step instead of matvecs
    # ... and only when W_hh (4H x H) is larger than this many times one core's L2 (1 MiB when
    # sysfs does not say): below it the rows path, whose whole time loop is JIT code, was faster
    # than the gemm path's per-step Python loop (measured at B=64, T=100 or 30, 2 threads, idle
    # Zen 4 with 1 MiB L2: H=32 2.8 vs 10.2 ms, H=128 14.7 vs 23.0 ms, H=512 48 vs 55 ms; at
    # H=1024, W_hh 16 MiB, the gemm path won, 158 vs 168 ms).
    gemm_min_l2_multiple: float = 8.0
    max_rows_per_block: int = 8     # rows sharing one pass over W_hh in the rows kernel
    parallel_epilogue_min_elements: int = 1 << 20   # B*H from this: gemm-path epilogue threaded
    # One block of rows (B=1) runs the serial rows variant unless the sequence has at least this
    # many steps; the parallel variant (a prange of one iteration) wakes the whole thread team
    # and joins it, and when another process keeps a core busy that join waits for a time slice:
    # 8.0 ms against 0.2 ms serially for B=1 H=64 T=100 on the shared 2-core machine. With the
    # float32 epilogue the serial variant is as fast as the parallel one when idle. Off by default.
    parallel_single_block_min_steps: int = 1 << 62
    # Two independent tasks of one block (the two directions of a layer; the two halves of the
    # hoisted projection) run on two cores (guard.run_two) from this many MACs per task: below
    # it the helper thread's wake-up (tens of µs) costs more than the half it saves.
    two_core_min_macs: int = 1 << 20
    # Two blocks of rows on two cores (recurrence "two_blocks") only from this many recurrent
    # MACs per block (T * rows_per_block * 4H * P); below it one core runs the batch in blocks of
    # up to max_rows_per_block rows, and B <= 8 rows share each pass over W_hh instead of two
    # cores streaming it for half the rows each. Measured (idle Zen 4, float32, interleaved
    # medians, one thread / two blocks): B=2 T=7 H=96 0.36x (48 against 133 µs), B=2 T=30 H=64
    # 0.57x, B=2 T=30 H=128 (2.0M per block) 0.69x, B=16 T=1 H=64 (0.13M) 0.52x, B=16 T=10
    # H=64 (1.3M) 0.98x; from 2M: B=2 T=10 H=256 (2.6M) 1.06x, B=3 T=100 H=64 (3.3M) 1.14x,
    # B=2 T=100 H=128 1.18x, B=16 T=1 H=256 (2.1M) 1.35x, B=2 T=100 H=256 1.73x. (guard.run_two's
    # helper takes about 50 µs to start on the test VM: a task shorter than that gains nothing.)
    two_block_min_macs: int = 1 << 21
    # The hoisted projection of one block of rows in two halves over guard.run_two from this many
    # MACs (T * B * E * D * 4H); a GEMM runs about twice as many MACs per second as the B=1
    # recurrence, so its halves need about twice the MACs to outlast the helper's start.
    # Measured (idle Zen 4, float32, one thread / halves): 0.78-0.99x at 2.6-3.9M (E=256 H=128
    # T=30 0.78x, E=64 H=64 B=4 T=40 0.80x, E=512 H=128 T=16 0.82x), 1.01-1.09x at 5.2-8.4M,
    # 1.09-1.40x at 16-21M.
    projection_halves_min_macs: int = 1 << 23
    # Numba parallel regions (prange) for a layer's blocks of rows and its projection only from
    # this many threads; below it the work is paired over guard.run_two (see plan_layer).
    regions_min_threads: int = 3
    # B=1, one direction: the two-thread team (team.py) from this many recurrent MACs per layer
    # (T * 4H * H; with a projection T * 5H * P, W_hh and W_hr), which pays for its start (the helper's wake-up and the second
    # call, 40-60 µs on the test VM). Measured (idle Zen 4, 1 MiB L2, interleaved medians, the
    # helper kept off the caller's CPU, float32): team over serial at T=100 0.99x H=64 (1.6M
    # MACs), 1.16-1.22x H=96, 1.05-1.12x H=128, 1.25-1.33x H=192, 1.42-1.66x H=256, 1.73x H=512,
    # 1.85x H=1024; at H=128 T=30 (2.0M) 1.19x, T=10 0.67x; H=64 T=30 0.6-0.72x. (Measured
    # before the helper was kept off the caller's CPU, it had lost below one L2: 0.66x at H=64,
    # 0.70x H=128: the two threads had often shared one core.) Repeated later the same day, the
    # margins below 4M MACs were within the noise: 0.99x H=96 T=100, 0.82x H=128 T=30, 1.05x
    # H=128 T=60, 1.01x H=256 T=10 (2.6M), 1.12x H=256 T=20 (5.2M); and a team call's time has
    # a longer tail than the serial one (the helper's wake-up), which a median sees.
    # With the panel GEMMs (fifth session) the serial step got faster and the break-even moved up:
    # team over serial at T=100, two runs of 61 interleaved rounds: H=104 0.84x, H=112 0.95x,
    # H=128 0.97x and 1.04x, H=144 1.07x, H=160 1.11x and 1.16x, H=176 1.26x, H=192 1.18x, H=256
    # 1.45x. From 8M MACs (H >= 145 at T=100); the margins below it were within the noise.
    team_min_macs: int = 1 << 23
    # ... or from this many when the resident helper (kernels/resident.py) is spinning: its
    # start costs no wake-up, only the post. (Measured: see docs/kernels.md, sixth session.)
    team_resident_min_macs: int = 1 << 20
    # Pauses the resident helper spins after its last job (20000: about 0.5 ms here) before it
    # dozes. 0, the default: no resident helper; the team goes through guard.py's helper from
    # team_min_macs. Opt in on a machine whose second core is free: idle, B=1 T=100 calls took
    # 0.106 against 0.13 ms (H=64), 0.164 against 0.245 (H=96), 0.273 against 0.43 (H=128);
    # with one core kept busy by another process its spinning took time from the caller's own
    # serial calls (B=1 H=64 grew 2.4-4.3x under bench_kernels --contention, against 1.13x
    # without it), which the contention target forbids.
    resident_spin: int = 0
    # ... then dozes this long, looking for work every resident_doze_us (a caller that finds it
    # dozing asks it to spin and runs serially), then sleeps in Python.
    resident_doze_us: int = 50
    resident_doze_s: float = 0.2
    # Pauses the caller waits for the resident helper to claim a team (a spinning helper takes
    # the mailbox's job within a microsecond and claims it before the caller has done its half
    # of the projection; the guard helper's wake-up needs team_claim_spins).
    resident_claim_spins: int = 2000
    # A resident team that was cancelled twice, or slower than the serial plan twice, backs off
    # for this long (team_backoff_s for the guard helper's team, whose failures cost more).
    resident_backoff_s: float = 0.02
    # ... and only when this layer's W_hh is larger than this fraction of one core's L2 (read
    # from sysfs; l2_bytes > 0 overrides it). 0 (the default): whatever the L2.
    team_l2_fraction: float = 0.0
    # B > 1, one direction, no projection: the team (team.team_layer_rows: each core half of the
    # hidden units of every row, one barrier per step) instead of two groups of rows (each core
    # all of W_hh, no barrier) up to this batch, when W_hh has at least this many bytes (and the
    # layer has team_min_macs). Both do the same multiply-adds per core; the team streams half
    # the weights, which pays where the rows are too few to hide the stream. Measured (seventh
    # session, idle Zen 4, 1 MiB L2, T=100 unless given, E=H, medians of 5 interleaved rounds;
    # team over two groups): float32 B=2 H=64 0.91x, H=96 0.92x, H=128 1.26x, H=160 1.31x, H=256
    # 1.45x; B=3 H=128 1.26x; B=4 H=128 1.01x, H=256 1.19x, H=512 1.10x, H=1024 (T=50) 1.31x;
    # B=8 H=128-1024 0.95-1.04x; B=16 0.95-1.03x. float64 B=2 H=96 1.02x, H=128 1.36x, H=1024 1.76x;
    # B=4 H=128 1.06x, H=256 1.11x; B=8 H=256 0.99x, H=512 0.97x, H=1024 1.22x; B=16 H=1024 1.15x.
    team_rows_max_batch: int = 4
    team_rows_min_weight_bytes: int = 1 << 18
    l2_bytes: int = 0
    team_claim_spins: int = 20000     # pauses the caller waits for the helper to claim the team
    team_spin_limit: int = 2000       # pauses before a waiting team thread yields its core
    team_max_yields: int = 200000     # then the team aborts and the layer is recomputed serially
    # After a team call that could not start, aborted, or was slower per step than the serial
    # plan (kernels/cpu.py: _team_state), the next calls run serially for this long (a core is
    # busy elsewhere), then the team is tried again.
    team_backoff_s: float = 0.2
    # B=1, one direction: the helper computes chunks of this many steps of the input projection
    # while the caller runs the recurrence (whichever claims a chunk first computes it).
    pipeline_chunk_steps: int = 16
    # From this many projection MACs per layer. Measured (B=1 T=100 float32, interleaved
    # medians, loaded machine): H=256 2 layers 4.72 ms pipelined vs 5.39 ms plain (projections
    # of 13M and 26M MACs); H=64 E=40 0.204 vs 0.169 ms (1M MACs: the helper's wake-up and the
    # chunk hand-offs cost more than they save).
    pipeline_min_macs: int = 1 << 22
    # Large batch without projection: both GEMMs are edgelstm's own (_gemm_panel), split in
    # two halves over guard.run_two; with a projection, BLAS (np.dot) and the row epilogue.
    gemm_row_block: int = 64          # rows of X per pass over W (64 x 1024 float32 = 256 KB, L2)
    # (B=64, H=1024 measured no faster threaded: the per-step GEMM dominates, and every
    # parallel region is a join that a loaded machine can stretch by a time slice)


config = CPUConfig()


def _parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(s[-1:], 1)
    return int(s.rstrip("KMG")) * mult


@functools.lru_cache(maxsize=1)
def sysfs_caches() -> tuple:
    """((name, capacity_bytes, shared), ...) of cpu0's data and unified caches from sysfs,
    smallest first; () where sysfs says nothing."""
    out = []
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            if Path(d, "type").read_text().strip() not in ("Data", "Unified"):
                continue
            level = int(Path(d, "level").read_text())
            size = _parse_size(Path(d, "size").read_text())
            cpus = Path(d, "shared_cpu_list").read_text().strip()
            shared = any(c in cpus for c in ",-")
            out.append((f"L{level}", size, shared))
        except (OSError, ValueError):
            continue
    return tuple(sorted(out, key=lambda c: c[1]))


def l2_bytes(cfg: "CPUConfig" = None) -> int:
    """One core's L2 in bytes: cfg.l2_bytes if set, else sysfs, else 0 (unknown: no team)."""
    cfg = cfg or config
    if cfg.l2_bytes:
        return cfg.l2_bytes
    return next((size for name, size, _ in sysfs_caches() if name == "L2"), 0)


@dataclass(frozen=True)
class LayerPlan:
    """How one layer of one call runs (`plan_layer`), before the run-time fallbacks: work that
    is planned for two cores (`two_cores`) runs on one when the helper thread is busy or does
    not start in time, and the B=1 pipelined projection and team back off to the plain serial
    order for config.team_backoff_s after a call that had to yield (kernels/guard.py, cpu.py)."""
    path: str                 # "rows" (per-row products in blocks) or "gemm" (a GEMM per step)
    projection: str           # the hoisted input GEMM: "blas" (np.dot: gemm path with a projection),
                              # "own_halves" (own GEMM, two halves of the rows over run_two),
                              # "own_pipelined" (B=1: chunks beside the recurrence),
                              # "own_parallel" (prange) or "own_serial"
    rows_per_block: int       # rows path: rows sharing one pass over W_hh
    blocks: int               # rows path: blocks of rows ("two_blocks": the first ceil(blocks/2) on the caller)
    rows_parallel: bool       # rows path: the prange variant (else the serial kernel)
    epilogue_parallel: bool   # gemm path with a projection: the per-step epilogue threaded
    recurrence: str = ""      # rows: "serial", "two_blocks", "two_directions", "prange", "team";
                              # gemm: "split" (own GEMM + epilogue per half of the units) or "blas"
    two_cores: bool = False   # some of this layer's work is planned on two cores (guard.run_two)


def plan_layer(T: int, B: int, E: int, H: int, D: int, nthreads: int, cfg: CPUConfig = None,
               proj: int = 0, forked: bool = False, team: bool = True, itemsize: int = 4,
               resident: bool = False) -> LayerPlan:
    """The path a layer with input size E takes for T steps of B rows on `nthreads` threads
    (`proj`: the projection size P, 0 without; `forked`: a forked child, where no Numba region runs;
    `team`: the two-thread team may be used, False while it backs off after a busy core;
    `resident`: the resident helper is spinning, so a team starts without a wake-up)."""
    cfg = cfg or config
    multi = nthreads > 1
    region_ok = multi and not forked
    gemm = (B >= cfg.gemm_min_batch
            and 4 * H * H * itemsize > cfg.gemm_min_l2_multiple * (l2_bytes(cfg) or 1 << 20))
    rpb = max(1, min(cfg.max_rows_per_block, -(-B // max(nthreads, 1))))
    blocks = -(-B // rpb)
    # Two blocks, or on two threads two groups of blocks, one per core through guard.run_two,
    # or (too little work per block for a second core) one core. On two threads the kernel uses
    # no Numba region beside run_two: its helper thread and Numba's TBB worker then take turns
    # on the second CPU badly (a prange projection of 800 x 64 x 256 float64 took 354 µs in a
    # loop of its own and 713 µs median when each call was followed by a run_two call).
    pair = nthreads < cfg.regions_min_threads or blocks == 2
    enough = T * rpb * 4 * H * H >= cfg.two_block_min_macs
    two_blocks = multi and blocks >= 2 and pair and enough
    one_core = multi and blocks >= 2 and pair and not enough
    if one_core:
        rpb = max(1, min(cfg.max_rows_per_block, B))
        blocks = -(-B // rpb)
    one_block = rpb >= B
    macs = T * B * E * D * 4 * H
    rec_macs = 5 * H * proj if proj else 4 * H * H     # recurrent MACs per row and step (W_hh, W_hr)
    epilogue_parallel = False
    rows_parallel = False
    if gemm:
        recurrence = "blas" if proj else "split"
        projection = "own_halves"
        epilogue_parallel = proj and region_ok and B * H >= cfg.parallel_epilogue_min_elements
    else:
        if (B > 1 and D == 1 and not proj and multi and team and B <= cfg.team_rows_max_batch
                and 4 * H * H * itemsize >= cfg.team_rows_min_weight_bytes
                and T * B * 4 * H * H >= cfg.team_min_macs):
            recurrence = "team"
        elif two_blocks:
            recurrence = "two_blocks"
        elif one_core and not one_block:
            recurrence = "serial"
        elif not one_block or (region_ok and T >= cfg.parallel_single_block_min_steps):
            recurrence = "prange" if region_ok else "serial"
            rows_parallel = region_ok
        elif D == 2:
            recurrence = "two_directions" if multi and T * B * (4 * H * H) >= cfg.two_core_min_macs else "serial"
        elif (B == 1 and multi and team
              and T * rec_macs >= (cfg.team_resident_min_macs if resident and cfg.resident_spin > 0 and not proj
                                   else cfg.team_min_macs)
              and (cfg.team_l2_fraction <= 0
                   or (l2_bytes(cfg) > 0 and rec_macs * itemsize > cfg.team_l2_fraction * l2_bytes(cfg)))):
            recurrence = "team"
        else:
            recurrence = "serial"
        pipelined = (B == 1 and D == 1 and multi and T >= 2 * cfg.pipeline_chunk_steps
                     and macs >= cfg.pipeline_min_macs and recurrence == "serial")
        if recurrence == "team":
            projection = "team"           # each thread its own units' rows of W_ih, in the team call
        elif pipelined:
            projection = "own_pipelined"
        elif ((one_block or nthreads < cfg.regions_min_threads)
              and multi and T * B >= 8 and macs >= cfg.projection_halves_min_macs):
            projection = "own_halves"
        elif not one_block and region_ok and macs >= cfg.parallel_projection_min_macs:
            # several blocks: a prange region (on two threads only for a mid-size projection,
            # below projection_halves_min_macs: its workers start in a few µs where run_two's
            # helper takes 50-60 µs; B=16 T=1 H=256, 2 layers: 0.40 ms with the region against
            # 0.56 serial or in halves)
            projection = "own_parallel"
        else:
            projection = "own_serial"
    two = multi and (projection in ("own_halves", "own_pipelined", "team")
                     or recurrence in ("two_blocks", "two_directions", "team", "split"))
    return LayerPlan("gemm" if gemm else "rows", projection, rpb, blocks, rows_parallel, epilogue_parallel,
                     recurrence, two)


@dataclass(frozen=True)
class CPUFacts:
    """What kernels/cpu.py does, counted from its code (tests/test_plan.py checks each count).
    Names in brackets are the kernel's functions."""
    # Per lstm() call, Python side (lstm_cpu): h_n, c_n, lengths, xp, y allocated; the input
    # made contiguous and xp reshaped (views).
    call_allocs: int = 5
    call_views: int = 2
    # Per layer, Python side: the input's reshape; per layer and direction: h_n[i], c_n[i].
    layer_views: int = 1
    dir_views: int = 2
    # JIT entry points called from Python, and their arguments (dispatch unboxes each).
    projection_entry: str = "_gemm_panel_impl"          # once per layer (own GEMM)
    rows_entry: str = "_layer_rows_impl"                # once per layer and direction (rows path)
    gemm_step_entry: str = "_epilogue_gemm_step_impl"   # once per step (gemm path)
    projection_args: int = 5
    rows_args: int = 16
    gemm_step_args: int = 14
    # Rows path, inside JIT code: scratch arrays per block (`_layer_rows_impl`); per block and
    # step, one product call (`_gemm_panel_acc`, 4 arguments);
    # per row and step, calls to `_epilogue` (5 arguments) and `_finish_row` (5): 2 calls,
    # 10 arguments.
    rows_block_allocs: int = 4
    product_args: int = 4
    row_calls: int = 2
    row_call_args: int = 10
    # Gemm path, Python side (`_layer_gemm`): scratch arrays per layer and direction, one
    # numba.get_num_threads() per layer; per step, the views xp[t] and y[t].
    gemm_layer_allocs: int = 2
    gemm_step_views: int = 2
    # B=1 team (`team.team_layer`): one call per thread and layer, its arguments; per step one
    # barrier crossing.
    team_entry: str = "team_layer"
    team_args: int = 21
    # ... with a projection (`team.team_layer_proj`): per step the same one barrier crossing.
    team_proj_entry: str = "team_layer_proj"
    team_proj_args: int = 24
    # ... for B > 1 rows (`team.team_layer_rows`).
    team_rows_entry: str = "team_layer_rows"
    team_rows_args: int = 21
    # ... or, with the resident helper (`resident.team_lead`), one call on the caller's side that
    # posts the helper's half and runs its own; no wake-up.
    team_lead_entry: str = "team_lead"
    team_lead_args: int = 26


FACTS = CPUFacts()
