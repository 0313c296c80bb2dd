"""kernels/plan.py against kernels/cpu.py: every count the host cost model charges is checked
against the kernel's own code (signatures of its entry points, the arrays its routines
allocate, the calls its epilogue makes), and the path the plan names is the one that runs."""
import ast
import inspect
import textwrap

import numpy as np
import pytest

from edgelstm.kernels import cpu, plan, resident, team
from edgelstm.kernels.plan import FACTS, config, plan_layer

NP_ALLOC = {"empty", "zeros", "array"}


def _n_params(fn) -> int:
    fn = getattr(fn, "py_func", fn)
    return len(inspect.signature(fn).parameters)


def _tree(fn):
    fn = getattr(fn, "py_func", fn)
    return ast.parse(textwrap.dedent(inspect.getsource(fn)))


def _allocated_names(fn) -> int:
    """Names assigned from an np.empty / np.zeros / np.array call (a conditional counts once)."""
    n = 0
    for node in ast.walk(_tree(fn)):
        if isinstance(node, ast.Assign):
            if any(isinstance(a, ast.Attribute) and a.attr in NP_ALLOC and getattr(a.value, "id", "") == "np"
                   for a in ast.walk(node.value)):
                n += len(node.targets)
    return n


def _calls(fn, name) -> int:
    return sum(isinstance(n, ast.Call) and getattr(n.func, "id", "") == name for n in ast.walk(_tree(fn)))


def test_entry_point_arguments():
    assert _n_params(getattr(cpu, FACTS.projection_entry)) == FACTS.projection_args
    assert _n_params(getattr(cpu, FACTS.rows_entry)) == FACTS.rows_args
    assert _n_params(getattr(team, FACTS.team_entry)) == FACTS.team_args
    assert _n_params(getattr(team, FACTS.team_proj_entry)) == FACTS.team_proj_args
    assert _n_params(getattr(team, FACTS.team_rows_entry)) == FACTS.team_rows_args
    assert _n_params(getattr(resident, FACTS.team_lead_entry)) == FACTS.team_lead_args
    assert _n_params(getattr(cpu, FACTS.gemm_step_entry)) == FACTS.gemm_step_args
    # the per-block product: _gemm_panel_acc, called once per block and step
    assert _n_params(cpu._gemm_panel_acc) == FACTS.product_args
    # (twice in the source: the one-row branch and the several-rows branch; one call per step)
    assert _calls(cpu._layer_rows_impl, "_gemm_panel_acc") == 2


def test_allocations_counted_from_the_code():
    assert _allocated_names(cpu._layer_rows_impl) == FACTS.rows_block_allocs
    assert _allocated_names(cpu._layer_gemm) == FACTS.gemm_layer_allocs
    assert _allocated_names(cpu.lstm_cpu) == FACTS.call_allocs


def test_per_row_calls_of_the_epilogue():
    # per row and step: _epilogue (one loop that calls nothing but inlined activations) and
    # _finish_row (each written twice in the source: the one-row branch and the several-rows
    # branch)
    assert _calls(cpu._layer_rows_impl, "_epilogue") == 2 and _calls(cpu._layer_rows_impl, "_finish_row") == 2
    assert FACTS.row_calls == 2
    assert _n_params(cpu._epilogue) + _n_params(cpu._finish_row) == FACTS.row_call_args


@pytest.mark.parametrize("T,B,H,threads", [(10, 1, 32, 2), (100, 1, 32, 2), (10, 8, 64, 2), (5, 64, 32, 2),
                                           (200, 16, 256, 1), (5, 40, 512, 2), (100, 1, 256, 2), (10, 20, 16, 2)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_cpu_takes_the_planned_path(monkeypatch, T, B, H, threads, bidirectional):
    """lstm_cpu calls the entry points plan_layer names (each entry stood in for by a recorder
    that does nothing: the path is what is checked, not the numbers)."""
    import numba
    from edgelstm import LSTMSpec, LSTMWeights
    seen = []
    entries = ("_gemm_panel", "_gemm_panel_parallel", "_layer_rows",
               "_layer_rows_serial", "_layer_gemm", "_layer_gemm_split", "_layer_pipelined", "_layer_team_or_serial")
    for name in entries:
        monkeypatch.setattr(cpu, name, lambda *a, _n=name, **k: seen.append(_n))
    spec = LSTMSpec(H, H, bidirectional=bidirectional)
    w = LSTMWeights.random(spec, seed=0, dtype="float32")
    x = np.zeros((T, B, H), np.float32)
    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        nth = numba.get_num_threads()
        cpu._pipe_state["serial_until"] = cpu._team_state["serial_until"] = 0.0
        cpu.lstm_cpu(x, w, None, None, None)
    finally:
        numba.set_num_threads(old)
    p = plan_layer(T, B, H, H, spec.num_directions, nth, itemsize=4)
    proj = {"own_serial": {"_gemm_panel"}, "own_halves": {"_gemm_panel"},
            "own_parallel": {"_gemm_panel_parallel"}, "blas": set(),
            "own_pipelined": {"_layer_pipelined"}, "team": set()}[p.projection]
    rec = {"split": {"_layer_gemm_split"}, "blas": {"_layer_gemm"}, "prange": {"_layer_rows"},
           "team": {"_layer_team_or_serial"}}.get(p.recurrence, {"_layer_rows_serial"})
    if p.projection == "own_pipelined":          # the pipelined layer does both
        rec = set()
    if p.projection == "team":                   # so does the team (or its serial fallback)
        rec = {"_layer_team_or_serial"}
    assert set(seen) == proj | rec, (p, seen)
    assert (p.path == "gemm") == (B >= config.gemm_min_batch and 4 * H * H * 4 > config.gemm_min_l2_multiple
                                  * (plan.l2_bytes() or 1 << 20))
    assert p.two_cores == (nth > 1 and (p.projection in ("own_halves", "own_pipelined", "team")
                                        or p.recurrence in ("two_blocks", "two_directions", "team", "split")))
