"""The CPU kernel's plan: its tunables, which path a call takes, and what each path does per
call, per layer, per block and per step. Declared once, here, and read by both
`kernels/cpu.py` (which runs it) and the host cost model (`costmodel/host/`, which charges
each item its calibrated price). Nothing here imports Numba.

When kernels/cpu.py changes what it allocates, passes or calls, change the counts below with
it: tests/test_plan.py checks every count against the kernel's own code (signatures, the
np.empty/np.zeros calls in each routine), so a count that drifts fails a test.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CPUConfig:
    """Tunables, read at call time (change `edgelstm.kernels.cpu.config`, the same object)."""
    # The hoisted input projection uses BLAS only on the gemm path: a threaded BLAS call next
    # to Numba's own threads leaves both pools spinning for two cores (8 ms stalls measured).
    parallel_projection_min_macs: int = 1 << 22   # Numba GEMM threaded from this size
    gemm_min_batch: int = 32        # batch >= this: one BLAS GEMM per step instead of matvecs
    max_rows_per_block: int = 8     # rows sharing one pass over W_hh in the rows kernel
    parallel_epilogue_min_elements: int = 1 << 20   # B*H from this: gemm-path epilogue threaded
    # One block of rows (B=1 on 2 threads) runs the parallel rows variant from this many steps,
    # the serial one below. Measured with fresh Numba caches (B=1, T=100, float32): serial 58 µs
    # vs parallel 45 µs at H=32, 110 vs 86-93 µs at H=64, equal at H=256 (0.14-0.24 µs more per
    # step serially; cause not identified: the two variants are compiled differently by parfor
    # lowering); the one-iteration parallel region costs ~1 µs per call (T=1: 3.3 vs 2.3 µs).
    parallel_single_block_min_steps: int = 32
    # (B=64, H=1024 measured no faster threaded: the per-step GEMM dominates, and every
    # parallel region is a join that a loaded machine can stretch by a time slice)


config = CPUConfig()


@dataclass(frozen=True)
class LayerPlan:
    """How one layer of one call runs (`plan_layer`)."""
    path: str                 # "rows" (per-row products in blocks) or "gemm" (a BLAS GEMM per step)
    projection: str           # the hoisted input GEMM: "blas", "own_parallel" or "own_serial"
    rows_per_block: int       # rows path: rows sharing one pass over W_hh
    blocks: int               # rows path: blocks of rows (one per prange iteration)
    rows_parallel: bool       # rows path: the prange variant (else the serial one)
    epilogue_parallel: bool   # gemm path: the per-step epilogue threaded


def plan_layer(T: int, B: int, E: int, H: int, D: int, nthreads: int, cfg: CPUConfig = None) -> LayerPlan:
    """The path a layer with input size E takes for T steps of B rows on `nthreads` threads."""
    cfg = cfg or config
    gemm = B >= cfg.gemm_min_batch
    if gemm:
        projection = "blas"
    elif nthreads > 1 and T * B * E * D * 4 * H >= cfg.parallel_projection_min_macs:
        projection = "own_parallel"
    else:
        projection = "own_serial"
    rpb = max(1, min(cfg.max_rows_per_block, -(-B // max(nthreads, 1))))
    blocks = -(-B // rpb)
    rows_parallel = rpb < B or (nthreads > 1 and T >= cfg.parallel_single_block_min_steps)
    epilogue_parallel = nthreads > 1 and B * H >= cfg.parallel_epilogue_min_elements
    return LayerPlan("gemm" if gemm else "rows", projection, rpb, blocks, rows_parallel, epilogue_parallel)


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
    projection_entry: str = "_gemm_bias_impl"           # once per layer (own GEMM)
    rows_entry: str = "_layer_rows_impl"                # once per layer and direction (rows path)
    gemm_step_entry: str = "_epilogue_gemm_step_impl"   # once per step (gemm path)
    projection_args: int = 4
    rows_args: int = 15
    gemm_step_args: int = 17
    # Rows path, inside JIT code: scratch arrays per block (`_layer_rows_impl`); per block and
    # step, one product call (`_gemm_acc` or `_axpy_multi`, 4 or 5 arguments: 4 counted);
    # per row and step, calls to `_epilogue` (8 arguments), `_vexp_neg` twice (3 each) and
    # `_finish_row` (5): 4 calls, 19 arguments.
    rows_block_allocs: int = 7
    product_args: int = 4
    row_calls: int = 4
    row_call_args: int = 19
    # Gemm path, Python side (`_layer_gemm`): scratch arrays per layer and direction, one
    # numba.get_num_threads() per layer; per step, the views xp[t] and y[t].
    gemm_layer_allocs: int = 5
    gemm_step_views: int = 2


FACTS = CPUFacts()
