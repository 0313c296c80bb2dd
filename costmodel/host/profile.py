"""The host profile: what calibration measured of edgelstm's own CPU kernel on this machine.

A host file is a catalog-style target file (costmodel/target.py's schema: peak, bandwidth
per level, overheads; what the generic roofline reads) plus a `[host]` table with the
profile below (what `predict_host` reads). Both are read and written from one schema each:
`PROFILE` here, `target.SCHEMA` for the rest.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..target import (Key, Table, Target, TargetError, _Reader, parse_target, read_document, read_rows,
                      read_table, write_table, write_target_file)

FORMAT = 3            # [host] format: 2 since the host profile has its own table, 3 since the
                      # kernel's products are panel GEMMs (its tables time other routines)
KERNEL_DTYPES = ("float32", "float64")
ROUTINES = ("dot", "own", "block", "matvec", "team", "rowblocks")
EW_ROUTINES = ("rows", "gemm_step", "finish_proj")


@dataclass(frozen=True)
class GemmPoint:
    """A matrix product (M x K) @ (K x N) by one of the CPU kernel's routines, timed on random
    matrices: "dot" (np.dot called from Python, per call), "own" (the projection's panel GEMM,
    one call; threads > 1: a prange region), "block" (the rows kernel's product on a block of
    m rows, `_gemm_panel_acc`, per thread with `threads` running), "matvec" (z += W v in axpy
    form, `_axpy_rows`: a row's h = W_hr hf; per thread with `threads` running), "team" (the
    B=1 team's step without its epilogue: each of two threads streams its own half of W_hh,
    k x n = H x 2H, publishes its units' h and crosses the step barrier; per thread),
    "rowblocks" (the large-batch path's GEMM, `_gemm_panel` in the gemm path's row blocks;
    threads = 2: the output columns in two halves on two threads at once, FLOP/s of the
    whole)."""
    routine: str
    dtype: str
    threads: int
    m: int
    k: int
    n: int
    GFLOP_per_s: float


@dataclass(frozen=True)
class ElementwisePoint:
    """Seconds per batch row of one of the CPU kernel's elementwise blocks at hidden size
    `hidden`, timed on random vectors: "rows" (gate copy, `_epilogue`, `_finish_row` from a
    JIT loop; per thread with `threads` running), "gemm_step" (`_epilogue_gemm_step`, one
    Python call over `batch` rows, its dispatch taken out)."""
    routine: str
    dtype: str
    threads: int
    hidden: int
    ns_per_row: float
    batch: int = 1


@dataclass(frozen=True)
class HostProfile:
    njit_call_s: float         # a Python call of an @njit function with one array argument
    njit_arg_s: float          # each further array argument of such a call
    inner_call_s: float        # a call between JIT functions with one array-view argument
    inner_arg_s: float         # each further view argument of such a call
    alloc_s: float             # a small array allocated inside JIT code
    py_alloc_s: float          # a small np.empty called from Python
    py_view_s: float           # a reshape (a view) from Python
    py_threads_s: float        # numba.get_num_threads() from Python
    check_s: float             # lstm()'s input validation (edgelstm._checks), one call
    # lstm()'s Python side timed as a whole, its JIT calls stood in for: per call, per layer,
    # per direction (0: not measured; the pieces above are composed instead).
    wrapper_s: float
    wrapper_layer_s: float
    wrapper_dir_s: float
    sigmoid_ns: Dict[str, float]       # the kernel's vectorized sigmoid pass, ns per element
    sigmoid_pass_ns: Dict[str, float]  # ... and its fixed cost per pass
    kernel: Dict[str, int]             # kernels/plan.py's config at calibration (a record)
    gemm: Tuple[GemmPoint, ...] = ()
    elementwise: Tuple[ElementwisePoint, ...] = ()
    # The B=1 two-thread team (kernels/team.py): one crossing of its step barrier, and the
    # helper thread's wake-up from a post to running (0: not measured).
    team_barrier_s: float = 0.0
    helper_wake_s: float = 0.0


@dataclass(frozen=True)
class HostTarget(Target):
    """This machine: the generic figures (a Target) and the profile of the CPU kernel."""
    profile: Optional[HostProfile] = None

    def generic(self) -> Target:
        """This machine as any catalog target: the profile left out."""
        return Target(**{f.name: getattr(self, f.name) for f in fields(Target)})


_S = lambda key: Key(key, "number0")
PROFILE = Table("host", (Key("format", "integer"),) + tuple(_S(k) for k in (
    "njit_call_s", "njit_arg_s", "inner_call_s", "inner_arg_s", "alloc_s", "py_alloc_s", "py_view_s",
    "py_threads_s", "check_s", "wrapper_s", "wrapper_layer_s", "wrapper_dir_s")) + (
    Key("team_barrier_s", "number0", 0.0), Key("helper_wake_s", "number0", 0.0)), source="none")
SIGMOID_NS = Table("sigmoid_ns", map_attr="sigmoid_ns", map_keys=KERNEL_DTYPES, source="none")
SIGMOID_PASS_NS = Table("sigmoid_pass_ns", map_attr="sigmoid_pass_ns", map_keys=KERNEL_DTYPES,
                        map_kind="number0", source="none")
KERNEL = Table("kernel", (Key("gemm_min_batch", "integer"), Key("max_rows_per_block", "integer")), source="none")
GEMM = Table("gemm", (Key("routine", "string", choices=ROUTINES), Key("dtype", "string", choices=KERNEL_DTYPES),
                      Key("threads", "integer"), Key("m", "integer"), Key("k", "integer"), Key("n", "integer"),
                      Key("GFLOP_per_s", "number")), source="none", array=True)
ELEMENTWISE = Table("elementwise", (Key("routine", "string", choices=EW_ROUTINES),
                                    Key("dtype", "string", choices=KERNEL_DTYPES), Key("threads", "integer"),
                                    Key("hidden", "integer"), Key("ns_per_row", "number"),
                                    Key("batch", "integer", 1)), source="none", array=True)


def parse_profile(data: dict, fname: str) -> HostProfile:
    r = _Reader(fname, data)
    if not isinstance(data.get("host"), dict) or data["host"].get("format") != FORMAT:
        raise TargetError(f"{fname}: written by an older edgelstm (no [host] table of format {FORMAT}): "
                          f"run `edgelstm calibrate` again")
    h = r.sub("host")
    top = read_table(h, PROFILE)
    top.pop("format")
    return HostProfile(
        **top, sigmoid_ns=read_table(h.sub("sigmoid_ns"), SIGMOID_NS)["sigmoid_ns"],
        sigmoid_pass_ns=read_table(h.sub("sigmoid_pass_ns"), SIGMOID_PASS_NS)["sigmoid_pass_ns"],
        kernel=read_table(h.sub("kernel"), KERNEL),
        gemm=tuple(GemmPoint(**g) for g in read_rows(h, GEMM, required=False)),
        elementwise=tuple(ElementwisePoint(**e) for e in read_rows(h, ELEMENTWISE, required=False)))


def profile_document(p: HostProfile) -> dict:
    """The [host] table of a profile, from the same tables parse_profile reads."""
    v = asdict(p)
    doc = write_table(dict(v, format=FORMAT), PROFILE)
    doc["sigmoid_ns"] = write_table(v, SIGMOID_NS)
    doc["sigmoid_pass_ns"] = write_table(v, SIGMOID_PASS_NS)
    doc["kernel"] = write_table(p.kernel, KERNEL)
    doc["gemm"] = [write_table(g, GEMM) for g in v["gemm"]]
    doc["elementwise"] = [write_table(e, ELEMENTWISE) for e in v["elementwise"]]
    return doc


def load_host_file(path) -> HostTarget:
    p = Path(path).absolute()
    data = read_document(p)
    t = parse_target(data, str(p), str(p))
    return HostTarget(**{f.name: getattr(t, f.name) for f in fields(Target)}, profile=parse_profile(data, str(p)))


def write_host_file(t: Target, profile: HostProfile, path) -> Path:
    """The host file: the generic target and its [host] profile; checked by reading it back."""
    p = write_target_file(t, path, header="This machine, measured by `edgelstm calibrate`. Regenerate rather than edit.",
                          extra={"host": profile_document(profile)})
    load_host_file(p)
    return p
