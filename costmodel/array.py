"""A dataflow-aware model of a systolic-array accelerator, vectorized over designs.

An accelerator target may declare an `[array]`: a rows x cols MAC array with a dataflow
(os: output stationary, ws: weight stationary, is: input stationary), three
double-buffered operand SRAMs (ifmap, filter, ofmap), a DRAM interface in words per
cycle, and a vector unit for the LSTM's elementwise epilogue. This module maps each of
an LSTM's GEMMs onto such an array and returns cycles, energy and area. It is pure
NumPy: every function broadcasts over arrays of designs, with no Python loop per design.

The GEMM is A[M x K] @ B[K x N] (ifmap A, filter B, ofmap the M x N result), and the
mapping is SCALE-Sim's (Samajdar et al., "A Systematic Methodology for Characterizing
Scalability of DNN Accelerators using SCALE-Sim", ISPASS 2020; version 3.0.0):

    dataflow  array rows  array cols  streamed (T)  cycles per fold
    os        M           N           K             T + R + C - 2
    ws        K           N           M             T + 2R + C - 2   (R cycles load the weights)
    is        K           M           N             T + 2R + C - 2   (R cycles load the inputs)

with ceil(rows-dim / R) x ceil(cols-dim / C) folds run one after another, and one cycle
less in all (the last fold's final drain cycle). tests/test_scalesim.py checks that
these equal SCALE-Sim's reported cycles by running the simulator.

Memory (see docs/design-study.md): each operand is stored as array-sized tiles (its
dimension on the array padded to R or C, as SCALE-Sim's prefetch matrices are). An
operand that fits the active half of its double buffer is loaded once; one that does
not is streamed from DRAM, once per pass over it the dataflow makes, overlapped with
compute once its first fold's words have arrived. Each buffer has its own DRAM port of `dram_words_per_cycle` words per cycle
(SCALE-Sim's convention). GEMM cycles = the first fill of the active halves + max(compute,
each operand's streaming) + the ofmap's final drain.

Area and energy come from `array_tech.toml` (45 nm, Horowitz ISSCC 2014 and the other
sources named there); a target overrides any key in its `[array.tech]` table.
"""
from __future__ import annotations

import math
from ._toml import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, Optional

import numpy as np

DATAFLOWS = ("os", "ws", "is")
# Bytes per word on the array, and which row of the tech table a dtype uses.
WORD_BYTES = {"int8": 1, "int4": 1, "float16": 2, "bfloat16": 2, "float32": 4}
TECH_DTYPE = {"int8": "int8", "int4": "int8", "float16": "float16", "bfloat16": "float16",
              "float32": "float32"}
ARRAY_DTYPES = tuple(WORD_BYTES)


class ArrayError(ValueError):
    """Bad arguments to the array model; names the argument, what was expected and what was given."""


# -- validation ---------------------------------------------------------------------------
def _name_codes(a: np.ndarray, names, what: str) -> np.ndarray:
    """Index into `names` of each string in `a`; an ArrayError naming `what` and the first unknown."""
    a = a.astype(str)
    codes = np.full(a.shape, -1, dtype=np.int64)
    for i, n in enumerate(names):
        codes[a == n] = i
    if (codes < 0).any():
        bad = str(a[codes < 0].ravel()[0])
        raise ArrayError(f"{what}: expected one of {', '.join(names)}, got {bad!r}")
    return codes


def dataflow_codes(dataflow) -> np.ndarray:
    """0, 1, 2 for os, ws, is: from a string, a sequence or array of strings, or of codes."""
    a = np.asarray(dataflow)
    if a.dtype.kind in "US":
        return _name_codes(a, DATAFLOWS, "dataflow")
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 2):
            raise ArrayError(f"dataflow: expected codes 0 (os), 1 (ws) or 2 (is), got values "
                             f"from {a.min()} to {a.max()}")
        return a.astype(np.int64)
    raise ArrayError(f"dataflow: expected 'os', 'ws', 'is' (or an array of them), got {dataflow!r}")


def positive_ints(name: str, value) -> np.ndarray:
    """`value` as an int64 array of integers >= 1, or an ArrayError naming `name`."""
    a = np.asarray(value)
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise ArrayError(f"{name}: expected integers >= 1, got {value!r}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.floor(a)):
            raise ArrayError(f"{name}: expected integers >= 1, got non-integer values")
    if a.size and a.min() < 1:
        raise ArrayError(f"{name}: expected integers >= 1, got {a.min()}")
    return a.astype(np.int64)


def positive_floats(name: str, value, allow_zero: bool = False) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise ArrayError(f"{name}: expected numbers > 0, got {value!r}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)) or (a.size and (a.min() < 0 if allow_zero else a.min() <= 0)):
        want = ">= 0" if allow_zero else "> 0"
        raise ArrayError(f"{name}: expected finite numbers {want}, got values from {a.min()} to {a.max()}")
    return a


def _cdiv(a, b):
    return -(-a // b)


# -- compute: folds and cycles ---------------------------------------------------------------
def fold_geometry(M, N, K, rows, cols, code):
    """(row_folds, col_folds, cycles_per_fold) of A[M x K] @ B[K x N] on a rows x cols
    array, per dataflow code (0 os, 1 ws, 2 is). Arrays broadcast; no validation."""
    is_os = code == 0
    is_is = code == 2
    # The dimension on the array's rows, on its columns, and the one streamed through.
    dim_r = np.where(is_os, M, K)
    dim_c = np.where(is_is, M, N)
    t = np.where(is_os, K, np.where(is_is, N, M))
    # os fills and drains through the array (R + C - 2); ws and is also spend R cycles
    # loading the stationary operand before streaming.
    per_fold = t + cols - 2 + np.where(is_os, rows, 2 * rows)
    return _cdiv(dim_r, rows), _cdiv(dim_c, cols), per_fold


def gemm_cycles(M, N, K, rows, cols, dataflow):
    """Compute cycles of A[M x K] @ B[K x N] on a rows x cols systolic array, with ample
    buffers and no stalls: SCALE-Sim 3.0.0's 'Total Cycles' (see the module docstring).
    All arguments broadcast; dataflow is 'os', 'ws', 'is' or an array of them."""
    M, N, K = positive_ints("M", M), positive_ints("N", N), positive_ints("K", K)
    rows, cols = positive_ints("rows", rows), positive_ints("cols", cols)
    code = dataflow_codes(dataflow)
    rf, cf, per_fold = fold_geometry(M, N, K, rows, cols, code)
    return rf * cf * per_fold - 1


def operand_traffic(M, N, K, rows, cols, code):
    """Words of each operand as stored (array-sized tiles), SRAM reads and writes the
    array makes, and how many passes over each operand the dataflow makes.

    ifmap_words, filter_words: the operand padded along its array dimension.
    ifmap_reads, filter_reads: words the array reads from the SRAM (a tile is re-read for
    every fold it meets). ofmap_writes: words written, partial sums included (ws and is
    write a partial result per fold of K). ifmap_passes, filter_passes: whole passes over
    the operand when it does not fit its buffer (os re-reads a K x C filter tile for each
    row fold only when the tile itself does not fit: see `filter_tile_words`)."""
    is_os, is_ws, is_is = code == 0, code == 1, code == 2
    rf, cf, _ = fold_geometry(M, N, K, rows, cols, code)
    ifmap_words = np.where(is_os, rf * rows * K, np.where(is_ws, M * rf * rows, cf * cols * K))
    filter_words = np.where(is_is, rf * rows * N, cf * cols * K)
    mk, kn, mn = M * K, K * N, M * N
    ifmap_reads = np.where(is_is, mk, cf * mk)
    filter_reads = np.where(is_os, rf * kn, np.where(is_ws, kn, cf * kn))
    ofmap_writes = np.where(is_os, mn, rf * mn)
    ifmap_passes = np.where(is_is, 1, cf)
    filter_passes = np.where(is_os, rf, np.where(is_ws, 1, cf))
    filter_tile_words = np.where(is_os, K * cols, 0)
    # The words one fold needs of each operand: what must arrive before a streamed operand
    # lets the array start.
    ifmap_fold_words = np.where(is_os, rows * K, np.where(is_ws, M * rows, rows * cols))
    filter_fold_words = np.where(is_os, K * cols, np.where(is_ws, rows * cols, rows * N))
    return dict(ifmap_words=ifmap_words, filter_words=filter_words, ifmap_reads=ifmap_reads,
                filter_reads=filter_reads, ofmap_writes=ofmap_writes, ifmap_passes=ifmap_passes,
                filter_passes=filter_passes, filter_tile_words=filter_tile_words,
                ifmap_fold_words=ifmap_fold_words, filter_fold_words=filter_fold_words)


def shape_terms(M, N, K, rows, cols, code) -> dict:
    """Everything about a GEMM on an array that does not depend on the memories: compute
    cycles, operand words as stored, SRAM reads and writes, and the words streamed per
    run when an operand does not fit (passes x words). Broadcasts."""
    tr = operand_traffic(M, N, K, rows, cols, code)
    rf, cf, per_fold = fold_geometry(M, N, K, rows, cols, code)
    tr["compute"] = rf * cf * per_fold - 1
    tr["ifmap_stream_words"] = tr["ifmap_passes"] * tr["ifmap_words"]
    tr["filter_stream_words"] = tr["filter_passes"] * tr["filter_words"]
    return tr


def memory_cycles(t: dict, ifmap_valid, filter_valid, ifmap_active, filter_active, ofmap_active,
                  dram_words_per_cycle, ifmap_dram=True, filter_dram=True, ofmap_dram=True,
                  overlap: bool = False, window: Optional[dict] = None) -> dict:
    """Cycles of one GEMM with its memory traffic, from its shape_terms `t`.

    *_valid: the operand's real words (M*K, K*N); *_active: the active half of each double
    buffer, in words. *_dram: the operand comes from (goes to) DRAM; an on-chip operand
    that does not fit the active half of its buffer spills to DRAM anyway. An operand that
    fits is fetched whole before compute (its tiles, padding included: SCALE-Sim's
    prefetch); one that does not is streamed, its first fold's words before compute and
    the rest overlapped with it. overlap=True streams every DRAM operand that way (a
    double-buffered design that starts on the first fold: the LSTM's per-step weights).

    window: from window_prefetches, for designs using the 'scalesim' memory model: where
    its `on` mask holds, a spilled operand costs its read-buffer window's prefetches
    (`*_window_cycles`, fetching `*_window_words`) instead of one stream per pass, after
    a first fill of the whole active half (SCALE-Sim's prefetch_active_buffer)."""
    bw = dram_words_per_cycle

    def read_side(words, fold_words, stream_words, valid, active, from_dram, name):
        spill = valid > active
        dram = True if from_dram is True else spill | from_dram
        if overlap:
            first = np.minimum(fold_words, active) * dram
            stream = (np.where(spill, stream_words, words) - first) * dram
        else:
            # SCALE-Sim's prefetch fills at most the active half (the padding is fetched too).
            first = np.minimum(np.where(spill, fold_words, words), active) * dram
            stream = (stream_words - first) * spill
        fetched = first + stream
        if window is not None:
            on, wspill = window["on"], window[f"{name}_spill"]
            if not overlap:  # an operand the window holds whole is fetched once, up front
                fits = on & ~wspill
                first = np.where(fits, np.minimum(words, active) * dram, first)
                stream = np.where(fits, 0, stream)
                fetched = np.where(fits, first, fetched)
            first = np.where(on & wspill, np.minimum(words, active), first)
            # The window's prefetches, as words at `bw` so that the max below compares cycles.
            stream = np.where(on & wspill, window[f"{name}_window_cycles"] * bw, stream)
            fetched = np.where(on & wspill, first + window[f"{name}_window_words"], fetched)
        return first, stream, fetched

    f_if, s_if, w_if = read_side(t["ifmap_words"], t["ifmap_fold_words"], t["ifmap_stream_words"], ifmap_valid,
                                 ifmap_active, ifmap_dram, "ifmap")
    # os re-reads the filter once per row fold only when one K x C tile does not fit
    # (filter_tile_words is 0 for ws and is, whose passes are in filter_stream_words).
    tile = t["filter_tile_words"]
    f_stream = np.where((tile > 0) & (tile <= filter_active), t["filter_words"], t["filter_stream_words"])
    f_f, s_f, w_f = read_side(t["filter_words"], t["filter_fold_words"], f_stream, filter_valid, filter_active,
                              filter_dram, "filter")
    w = t["ofmap_writes"]
    tail = np.minimum(w, ofmap_active)
    s_o = w - tail
    if ofmap_dram is not True:
        o_out = (w > ofmap_active) | ofmap_dram
        tail = tail * o_out
        s_o = s_o * o_out
    fill = np.maximum(f_if, f_f) / bw
    stream = np.maximum(np.maximum(s_if, s_f), s_o) / bw
    drain = tail / bw
    if window is not None and not overlap:
        # SCALE-Sim's write buffer (memory/write_buffer.py), C = 2D words: once more than D
        # are held it drains D (ceil(D / bw) cycles, +1), crediting the space at once, one
        # drain at a time; the array waits only when the buffer is full. Its write port
        # keeps no occupancy, so after the last write only what is left is drained, in
        # chunks of ceil(D / bw) cycles, each a cycle after the one before. The writes are
        # taken as spread evenly over the run (compute plus read stalls).
        o_spill = window["on"] & (w > ofmap_active)
        D = ofmap_active
        lat = np.ceil(D / bw) + 1
        run = np.maximum(t["compute"], np.maximum(s_if, s_f) / bw)  # the run with read stalls
        first = run * np.minimum((D + 1) / w, 1.0)             # when the first drain starts
        must = np.maximum(np.ceil((w - 2 * D) / D), 0)         # drains started before the last write
        fit = np.floor(np.maximum(run - first, 0) / lat) + 1   # drains that fit in the run
        drains = np.maximum(np.minimum(np.floor((w - 1) / D), fit), must)
        last_write = np.where(must > 0, np.maximum(run, first + (must - 1) * lat), run)
        # The last drain started during the run ends ceil(D / bw) cycles later, maybe after
        # the final drain of what is left (rem_rows cycles, in chunks).
        last_start = np.maximum(run * np.minimum((drains * D + 1) / w, 1.0), first + (drains - 1) * lat)
        busy_after = np.where(drains > 0, last_start + lat - 1 - last_write, 0)
        rem_rows = np.ceil((w - drains * D) / bw)
        stream = np.where(o_spill, last_write, stream)
        drain = np.where(o_spill, np.maximum(rem_rows + np.ceil(rem_rows / np.ceil(D / bw)) - 1, busy_after),
                         drain)
    return dict(cycles=fill + np.maximum(t["compute"], stream) + drain, fill=fill, stream=stream, drain=drain,
                ifmap_dram_words=w_if, filter_dram_words=w_f, ofmap_dram_words=tail + s_o)


MEMORY_MODELS = ("stream", "scalesim")


def memory_model_codes(memory_model, name: str = "memory_model") -> np.ndarray:
    """0 for 'stream', 1 for 'scalesim': from a string or an array of strings or codes;
    errors name `name`."""
    a = np.asarray(memory_model)
    if a.dtype.kind in "US":
        return _name_codes(a, MEMORY_MODELS, name)
    if a.dtype.kind in "iu" and (a.size == 0 or (a.min() >= 0 and a.max() <= 1)):
        return a.astype(np.int64)
    raise ArrayError(f"{name}: expected one of {', '.join(MEMORY_MODELS)}, got {memory_model!r}")


def _tri(y):
    y = np.maximum(y, 0.0)
    return y * (y + 1) / 2


def _words_before_diagonal(d, T, W, nb, w_last):
    """Valid words before anti-diagonal d of nb stacked T x W tiles (the last w_last wide,
    the rest padding): a T x w tile holds tri(s) - tri(s - w) - tri(s - T) + tri(s - T - w)
    words before its own diagonal s. Tiles wholly before d count T x W; only the few that
    d crosses (at most ceil((T + W - 1) / T) + 1) are summed."""
    def part(s, w):
        return _tri(s) - _tri(s - w) - _tri(s - T) + _tri(s - T - w)
    whole = np.clip(np.floor((d - T - W + 1) / T) + 1, 0, nb - 1)
    out = whole * T * W + part(d - (nb - 1) * T, w_last)
    q_max = int(np.max(np.ceil((T + W - 1) / T) + 1)) if np.size(T) else 0
    for q in range(q_max):
        b = whole + q
        out = out + np.where(b <= nb - 2, part(d - b * T, W), 0.0)
    return out


def _window_walk(start, end, row_s, row_e, use, lines, A, P, d):
    """A read-buffer window walked over segments each read forward, in demand order.

    start, end: (segments, configs) line numbers of each segment's first and last word;
    row_s, row_e: the demand rows they are read in; use: which segments exist; lines, A, P
    and d (cycles per prefetch) per config. The window after k prefetches holds lines
    [kP, kP + A) (mod lines); a word's line is taken at its first occurrence at or after
    kP. Returns (prefetches, stall cycles): prefetch k is done at cycle k d - 1 whenever
    it was asked for, and a row that waits for prefetches finishes at x, where each
    prefetch done at L sets x to L + max(0, L - x) (service_reads counts a positive stall
    twice), from x = its cycle + 1."""
    k = np.zeros(lines.shape)
    p = np.maximum(P, 1)
    c = np.full(lines.shape, -1.0)   # cycle of the last row seen
    r_prev = np.full(lines.shape, -1.0)

    def at_row(c, r, k_old, k_new, ok):
        c = np.where(ok, c + (r - r_prev_holder[0]), c)
        m = k_new - k_old
        first = (k_old + 1) * d - 1
        last = k_new * d - 1
        o1 = np.maximum(first - (c + 1), 0.0)
        odd = m % 2 == 1
        o = np.where(o1 <= d, np.where(odd, o1, d - o1), np.where(m == 1, o1, np.where(odd, d, 0.0)))
        x = last + o
        return np.where(ok & (m > 0), np.maximum(c, x - 1), c)

    r_prev_holder = [r_prev]
    for i in range(start.shape[0]):
        ok = use[i]
        ls, le = start[i], end[i]
        x = ls + lines * np.ceil((k * p - ls) / lines)
        k1 = np.maximum(k, np.floor((x - A) / p) + 1)
        k2 = np.maximum(k1, np.floor((x + (le - ls) - A) / p) + 1)
        c = at_row(c, row_s[i], k, k1, ok)
        r_prev_holder[0] = np.where(ok, row_s[i], r_prev_holder[0])
        # Read forward, prefetch k is asked for when the demand reaches line (k-1)P + A,
        # at a row interpolated between the segment's first and last.
        span = np.maximum(le - ls, 1.0)
        kk = k1 + 1
        while True:
            more = ok & (kk <= k2)
            if not more.any():
                break
            row = row_s[i] + np.clip(((kk - 1) * p + A - x) / span, 0.0, 1.0) * (row_e[i] - row_s[i])
            row = np.maximum(np.ceil(row), r_prev_holder[0])
            c = at_row(c, row, kk - 1, kk, more)
            r_prev_holder[0] = np.where(more, row, r_prev_holder[0])
            kk = kk + 1
        c = at_row(c, row_e[i], k2, k2, ok)
        r_prev_holder[0] = np.where(ok, row_e[i], r_prev_holder[0])
        k = np.where(ok, k2, k)
    return k, np.maximum(c - r_prev_holder[0], 0.0)


def _operand_prefetches(M, N, K, R, C, code, cap, bw, operand, grouped=False):
    """SCALE-Sim's prefetches and stall cycles for one operand (see window_prefetches); 1-D
    arrays, one entry per configuration. Returns (prefetches, stall cycles, spill). The
    configurations that spill are walked in groups of one demand pattern and similar
    segment counts (grouped=True marks such a group), so that none walks another's."""
    is_os, is_ws, is_is = code == 0, code == 1, code == 2
    eps = np.ceil(cap / 100)                          # words per line
    active = np.ceil(cap / 2)
    lines = np.floor((M * K if operand == "ifmap" else K * N) / eps) + 1
    a_max, p_max = np.ceil(active / eps), np.ceil((cap - active) / eps)
    spill = lines > a_max
    A = np.where(spill, a_max, lines)
    P = np.where(spill, np.minimum(p_max, lines - A), 0)
    dim_c = np.where(is_is, M, N)
    rf, cf = np.ceil(np.where(is_os, M, K) / R), np.ceil(dim_c / C)
    pattern = (np.where(is_is, 2, 0) if operand == "ifmap" else np.where(is_os, 1, np.where(is_ws, 2, 0)))
    # Patterns 0 and 1: nb tiles of T rows x W stacked, fetched by anti-diagonals; each
    # column fold reads them in order (0), or each tile rf times in a row (1, os filter).
    T = np.where(pattern == 1, K, np.where(is_os, K, np.where(is_ws, M, N)))
    W = np.where(pattern == 1, C, R)
    split = np.where(pattern == 1, N, np.where(is_os, M, K))
    nb = np.ceil(split / W)
    w_last = split - (nb - 1) * W
    reps = np.where(pattern == 1, rf, 1)
    n_diag = np.where(pattern == 2, 0, nb * reps * np.where(pattern == 1, 1, cf))
    # Pattern 2 (ws filter, is ifmap): cf column tiles of K rows fetched row by row, each
    # fold of R rows read last row first.
    last_c = dim_c - (cf - 1) * C
    n_rev = np.where(pattern == 2, cf * K, 0)
    n_seg = np.where(spill, np.maximum(n_diag, n_rev), 0)
    if not grouped:
        n, stall = np.zeros(lines.shape), np.zeros(lines.shape)
        group = np.where(n_seg > 0, pattern * 64 + np.ceil(np.log2(np.maximum(n_seg, 1))), -1)
        for key in np.unique(group[group >= 0]):
            sel = group == key
            n[sel], stall[sel], _ = _operand_prefetches(M[sel], N[sel], K[sel], R[sel], C[sel], code[sel],
                                                        cap[sel], bw[sel], operand, grouped=True)
        return n, stall, spill
    S = int(n_seg.max()) if n_seg.size else 0
    i = np.arange(S, dtype=np.float64)[:, None]
    b = np.where(pattern == 1, i // reps % nb, i % nb)
    wb = np.where(b == nb - 1, w_last, W)
    d0 = b * T                                         # the tile's first diagonal: its (0, 0)
    last_diag = d0 + T + wb - 2                        # its last word (T - 1, wb - 1)
    # Words of earlier tiles that follow the last word on its diagonal.
    behind = np.maximum(0, np.minimum(W - T - wb + 1, d0))
    start_d = _words_before_diagonal(d0, T, W, nb, w_last)
    end_d = _words_before_diagonal(last_diag + 1, T, W, nb, w_last) - 1 - behind
    fc, within = i // K, i % K
    fr, j = within // R, within % R
    row = fr * R + np.minimum(R, K - fr * R) - 1 - j
    wv = np.where(fc == cf - 1, last_c, C)
    start_r = fc * K * C + row * wv
    start = np.where(pattern == 2, start_r, start_d)
    end = np.where(pattern == 2, start_r + wv - 1, end_d)
    # The demand rows (compute/systolic_compute_*.py): fold f = i for the tiles read along
    # diagonals (a skewed fold: its first word at row `pre`, its last T + wb - 2 rows on;
    # ws ifmap and is filter wait R rows first), the fold of its row for reversed rows
    # (one row each, the fold's padding rows first).
    _, _, per_fold = fold_geometry(M, N, K, R, C, code)
    pre = np.where(is_os, 0, R)
    rs_d = i * per_fold + pre
    re_d = rs_d + T + wb - 2
    rs_r = (fc * rf + fr) * per_fold + (R - np.minimum(R, K - fr * R)) + j
    row_s = np.where(pattern == 2, rs_r, rs_d)
    row_e = np.where(pattern == 2, rs_r, re_d)
    d = np.ceil((cap - active) / bw) + 1
    n, stall = _window_walk(start // eps, end // eps, row_s, row_e, i < n_seg, lines, A, P, d)
    return np.where(spill, n, 0.0), np.where(spill, stall, 0.0), spill


def window_prefetches(M, N, K, rows, cols, code, ifmap_cap_words, filter_cap_words, dram_words_per_cycle,
                      on=True) -> dict:
    """SCALE-Sim 3.0.0's read buffers (memory/read_buffer.py) when an operand does not fit:
    how many prefetches each makes, and the cycles they take. Broadcasts.

    The simulator keeps each operand as lines of ceil(capacity / 100) words in its fetch
    order (its prefetch matrix, padding left out) and a window of A lines over them (the
    active half: ceil(ceil(capacity / 2) / line words)). A demanded word outside the
    window moves the window forward, cyclically, by P lines (the prefetch half), one
    prefetch of ceil(P words / bandwidth) + 1 cycles each, until the window holds the word.
    The prefetches run back to back on the buffer's own clock, so a buffer bounds the run
    at (prefetches x cycles per prefetch). Whenever the demand order turns back behind
    the window, the window goes round the whole operand.

    The demand order is a sequence of segments each read forward; per dataflow
    (compute/systolic_compute_*.py):
    - os and ws ifmap, is filter: row-fold tiles (T x R; T = K, M, N) stacked and fetched
      by anti-diagonals; each column fold reads the tiles in order, each along its own
      diagonals, so a tile's first word comes before the last word of the tile before;
    - os filter: the K x C column tiles, fetched the same way, each read rf times in a row;
    - ws filter, is ifmap: K x C column tiles fetched row by row; each fold reads its R rows
      last row first, each row forward.
    The window is walked over the segments' first and last lines (a loop over segments,
    vectorized over the distinct configurations). tests/test_scalesim.py checks the totals
    against the simulator. Returns ifmap_/filter_ spill, prefetches, window_cycles,
    window_words (words fetched after the first fill), and `on`."""
    arrs = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (M, N, K, rows, cols, code)),
                               np.floor(np.asarray(ifmap_cap_words, dtype=np.float64)),
                               np.floor(np.asarray(filter_cap_words, dtype=np.float64)),
                               np.asarray(dram_words_per_cycle, dtype=np.float64),
                               np.asarray(on, dtype=np.float64))
    shape = arrs[0].shape
    flat = np.stack([a.ravel() for a in arrs], axis=1)
    want = flat[:, 9] > 0
    keys, inv = np.unique(flat[want, :9], axis=0, return_inverse=True)
    uM, uN, uK, uR, uC, ucode, ucap_if, ucap_f, ubw = keys.T
    out = {"on": arrs[9].astype(bool).reshape(shape)}
    compute = np.zeros(flat.shape[0])
    if want.any():
        rf, cf, per_fold = fold_geometry(uM, uN, uK, uR, uC, ucode.astype(np.int64))
        compute[want] = (rf * cf * per_fold - 1)[inv.ravel()]
    for name, cap, ucap in (("ifmap", arrs[6], ucap_if), ("filter", arrs[7], ucap_f)):
        n_u, stall_u, spill_u = _operand_prefetches(uM, uN, uK, uR, uC, ucode.astype(np.int64), ucap, ubw, name)
        n, stall = np.zeros(flat.shape[0]), np.zeros(flat.shape[0])
        spill = np.zeros(flat.shape[0], dtype=bool)
        n[want], stall[want], spill[want] = n_u[inv.ravel()], stall_u[inv.ravel()], spill_u[inv.ravel()]
        prefetch_words = cap - np.ceil(cap / 2)
        out[f"{name}_spill"] = spill.reshape(shape)
        out[f"{name}_prefetches"] = n.reshape(shape)
        # The run with this buffer's stalls: compute plus the stall cycles it adds.
        out[f"{name}_window_cycles"] = (compute + stall).reshape(shape)
        out[f"{name}_window_words"] = n.reshape(shape) * prefetch_words
    return out


def gemm_memory_cycles(M, N, K, rows, cols, code, ifmap_cap_words, filter_cap_words, ofmap_cap_words,
                       dram_words_per_cycle, ifmap_dram=True, filter_dram=True, ofmap_dram=True,
                       memory_model="stream"):
    """Cycles of one GEMM with its memory traffic, vectorized (no validation: callers
    validate). *_cap_words: each double buffer's capacity in words (half is active).
    memory_model: 'stream' (each spilled operand streamed once per pass: a weight-streaming
    design) or 'scalesim' (SCALE-Sim 3.0.0's read-buffer window: see window_prefetches),
    or an array of codes (MEMORY_MODELS index). Returns a dict: cycles, compute, fill,
    stream, drain, the DRAM words per operand and dram_words, plus the shape_terms entries."""
    t = shape_terms(M, N, K, rows, cols, code)
    window = None
    mm = memory_model_codes(memory_model)
    if np.any(mm == 1):
        window = window_prefetches(M, N, K, rows, cols, code, ifmap_cap_words, filter_cap_words,
                                   dram_words_per_cycle, mm == 1)
    m = memory_cycles(t, M * K, K * N, np.ceil(np.asarray(ifmap_cap_words) / 2),
                      np.ceil(np.asarray(filter_cap_words) / 2), np.ceil(np.asarray(ofmap_cap_words) / 2),
                      dram_words_per_cycle, ifmap_dram, filter_dram, ofmap_dram, window=window)
    m["dram_words"] = m["ifmap_dram_words"] + m["filter_dram_words"] + m["ofmap_dram_words"]
    return dict(t, **m)


# -- technology: area and energy --------------------------------------------------------------
def _load_default_tech() -> dict:
    text = resources.files("edgelstm.costmodel").joinpath("array_tech.toml").read_text()
    return tomllib.loads(text)


DEFAULT_TECH = _load_default_tech()


def merge_tech(overrides: Optional[dict], fname: str = "tech") -> dict:
    """The default tech table with `overrides` ({section: {key: value}}) applied; unknown
    sections or keys are an error naming them."""
    tech = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_TECH.items()}
    for sec, vals in (overrides or {}).items():
        if sec in ("node_nm", "node_source"):
            tech[sec] = vals
            continue
        if sec not in tech or not isinstance(tech[sec], dict) or not isinstance(vals, dict):
            raise ArrayError(f"{fname}: array.tech.{sec}: unknown section (known: "
                             f"{', '.join(k for k, v in DEFAULT_TECH.items() if isinstance(v, dict))})")
        for key, v in vals.items():
            if key not in tech[sec]:
                raise ArrayError(f"{fname}: array.tech.{sec}.{key}: unknown key (known: {', '.join(tech[sec])})")
            tech[sec][key] = v
    return tech


def mac_pJ(tech: dict, dtype: str) -> float:
    """Energy of one multiply-accumulate in a PE, registers included."""
    t, pe = TECH_DTYPE[dtype], tech["pe"]
    bits = 2 * 8 * WORD_BYTES[dtype] + pe[f"acc_bits_{t}"]
    return pe[f"mult_pJ_{t}"] + pe[f"add_pJ_{t}"] + bits * tech["register"]["pJ_per_bit"]


def pe_um2(tech: dict, dtype: str) -> float:
    """Area of one PE: multiplier, accumulating adder, operand and accumulator registers."""
    t, pe = TECH_DTYPE[dtype], tech["pe"]
    bits = 2 * 8 * WORD_BYTES[dtype] + pe[f"acc_bits_{t}"]
    return pe[f"mult_um2_{t}"] + pe[f"add_um2_{t}"] + bits * tech["register"]["um2_per_bit"]


def sram_pJ_per_byte(tech: dict, capacity_bytes):
    """Read energy per byte of an SRAM of `capacity_bytes`, log-log interpolated between the
    table's points (extrapolated below the first, held above the last). Broadcasts."""
    xs = np.log(np.asarray(tech["sram"]["points_bytes"], dtype=np.float64))
    ys = np.log(np.asarray(tech["sram"]["points_pJ_per_byte"], dtype=np.float64))
    x = np.log(np.clip(np.asarray(capacity_bytes, dtype=np.float64), 1.0, np.exp(xs[-1])))
    slope0 = (ys[1] - ys[0]) / (xs[1] - xs[0])
    y = np.where(x < xs[0], ys[0] + slope0 * (x - xs[0]), np.interp(x, xs, ys))
    return np.exp(y)


def sram_um2_per_byte(tech: dict) -> float:
    s = tech["sram"]
    return 8 * s["bitcell_um2"] / s["array_efficiency"]


# -- a target's [array] table -------------------------------------------------------------
@dataclass(frozen=True)
class ArrayConfig:
    """The array of an accelerator target (one design point)."""
    rows: int
    cols: int
    dataflow: str
    ifmap_sram_bytes: int
    filter_sram_bytes: int
    ofmap_sram_bytes: int
    dram_words_per_cycle: float
    sigmoid_per_cycle: int          # activation results per cycle (sigmoid)
    tanh_per_cycle: int             # activation results per cycle (tanh)
    vector_lanes: int               # elementwise operations per cycle (adds, products)
    tech: Dict[str, object] = field(default_factory=dict)
    source: str = ""
    memory_model: str = "stream"    # 'stream' (weight streaming) or 'scalesim' (see window_prefetches)

    def designs(self, clock_MHz: float) -> dict:
        """This configuration as a one-design dict for `lstm_cost` / explore.sweep."""
        return {"rows": [self.rows], "cols": [self.cols], "dataflow": [self.dataflow],
                "ifmap_sram_kB": [self.ifmap_sram_bytes / 1024], "filter_sram_kB": [self.filter_sram_bytes / 1024],
                "ofmap_sram_kB": [self.ofmap_sram_bytes / 1024],
                "dram_words_per_cycle": [self.dram_words_per_cycle], "clock_MHz": [clock_MHz],
                "sigmoid_per_cycle": [self.sigmoid_per_cycle], "tanh_per_cycle": [self.tanh_per_cycle],
                "vector_lanes": [self.vector_lanes], "memory_model": [self.memory_model]}


def parse_array(table, fname: str) -> ArrayConfig:
    """An ArrayConfig from a target file's [array] table; errors name the file and key."""
    if not isinstance(table, dict):
        raise ArrayError(f"{fname}: array: expected a table, got {table!r}")

    def num(key, integer=True, default=None):
        if key not in table:
            if default is not None:
                return default
            raise ArrayError(f"{fname}: array.{key}: missing")
        v = table[key]
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or not math.isfinite(v) or v <= 0:
            want = "an integer >= 1" if integer else "a positive number"
            raise ArrayError(f"{fname}: array.{key}: expected {want}, got {v!r}")
        return v

    df = table.get("dataflow")
    if df not in DATAFLOWS:
        raise ArrayError(f"{fname}: array.dataflow: expected one of {', '.join(DATAFLOWS)}, got {df!r}")
    source = table.get("source")
    if not isinstance(source, str) or not source:
        raise ArrayError(f"{fname}: array.source: missing (say where the array's figures come from)")
    cols = num("cols")
    memory_model = table.get("memory_model", "stream")
    if memory_model not in MEMORY_MODELS:
        raise ArrayError(f"{fname}: array.memory_model: expected one of {', '.join(MEMORY_MODELS)}, "
                         f"got {memory_model!r}")
    tech = table.get("tech", {})
    merge_tech(tech, fname)  # validates the overrides now
    return ArrayConfig(rows=num("rows"), cols=cols, dataflow=df,
                       ifmap_sram_bytes=num("ifmap_sram_bytes"), filter_sram_bytes=num("filter_sram_bytes"),
                       ofmap_sram_bytes=num("ofmap_sram_bytes"),
                       dram_words_per_cycle=num("dram_words_per_cycle", integer=False),
                       sigmoid_per_cycle=num("sigmoid_per_cycle", default=cols),
                       tanh_per_cycle=num("tanh_per_cycle", default=cols),
                       vector_lanes=num("vector_lanes", default=cols), tech=dict(tech), source=source,
                       memory_model=memory_model)


# -- design points -------------------------------------------------------------------------
REQUIRED_KEYS = ("rows", "cols", "dataflow", "ifmap_sram_kB", "filter_sram_kB", "ofmap_sram_kB",
                 "dram_words_per_cycle", "clock_MHz")
OPTIONAL_KEYS = ("sigmoid_per_cycle", "tanh_per_cycle", "vector_lanes",  # default: cols
                 "memory_model")  # default: 'stream'; 'scalesim' emulates SCALE-Sim's read buffers
MAX_DESIGNS = 20_000_000  # per call: the inputs and results of 20 M designs take about 2.5 GB


def normalize_designs(designs) -> dict:
    """Validate a dict of equal-length 1-D arrays (REQUIRED_KEYS, optionally OPTIONAL_KEYS;
    SRAM sizes in KiB = 1024 bytes) and return NumPy arrays: rows, cols, code, the three
    capacities in bytes, bw, clock_hz, sigmoid, tanh, lanes. Errors name the key."""
    if not isinstance(designs, dict):
        raise ArrayError(f"designs: expected a dict of equal-length arrays, got {type(designs).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in designs]
    if missing:
        raise ArrayError(f"designs: missing key(s) {', '.join(missing)} (required: {', '.join(REQUIRED_KEYS)})")
    unknown = [k for k in designs if k not in REQUIRED_KEYS + OPTIONAL_KEYS]
    if unknown:
        raise ArrayError(f"designs: unknown key(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    n = first = None
    for k, v in designs.items():
        a = np.asarray(v)
        if a.ndim != 1:
            raise ArrayError(f"designs[{k!r}]: expected a 1-D array, got shape {a.shape}")
        if n is None:
            n, first = a.shape[0], k
        elif a.shape[0] != n:
            raise ArrayError(f"designs[{k!r}]: expected length {n} (as designs[{first!r}]), got {a.shape[0]}")
    if n == 0:
        raise ArrayError("designs: expected at least one design, got arrays of length 0")
    if n > MAX_DESIGNS:
        raise ArrayError(f"designs: expected at most {MAX_DESIGNS:,} designs per call, got {n:,}")
    d = {
        "rows": positive_ints("designs['rows']", designs["rows"]),
        "cols": positive_ints("designs['cols']", designs["cols"]),
        "code": dataflow_codes(designs["dataflow"]),
        "bw": positive_floats("designs['dram_words_per_cycle']", designs["dram_words_per_cycle"]),
        "clock_hz": positive_floats("designs['clock_MHz']", designs["clock_MHz"]) * 1e6,
    }
    for k in ("ifmap", "filter", "ofmap"):
        d[f"{k}_bytes"] = positive_floats(f"designs['{k}_sram_kB']", designs[f"{k}_sram_kB"]) * 1024
    for k, name in (("sigmoid", "sigmoid_per_cycle"), ("tanh", "tanh_per_cycle"), ("lanes", "vector_lanes")):
        d[k] = positive_ints(f"designs[{name!r}]", designs[name]) if name in designs else d["cols"]
    d["memory"] = (memory_model_codes(designs["memory_model"], "designs['memory_model']") if "memory_model" in designs
                   else np.zeros(n, dtype=np.int64))
    return d


# -- an LSTM on the array -------------------------------------------------------------------
CHUNK = 1 << 15  # designs per pass: keeps the temporaries in cache
CORE_KEYS = ("latency_s", "step_latency_s", "energy_j", "step_energy_j", "area_mm2", "power_w",
             "leakage_w", "utilization", "fits")


def _triples(d):
    """Unique (rows, cols, dataflow) triples and each design's index into them: the shape
    terms of a GEMM depend on nothing else, so they are computed once per triple."""
    R, C, code = d["rows"], d["cols"], d["code"]
    cmax = int(C.max()) + 1
    key = (R * cmax + C) * 3 + code
    size = (int(R.max()) + 1) * cmax * 3
    if size <= 1 << 24:  # a dense table: O(n), no sort
        present = np.zeros(size, dtype=bool)
        present[key] = True
        ukey = np.flatnonzero(present)
        lut = np.zeros(size, dtype=np.int64)
        lut[ukey] = np.arange(ukey.size)
        inv = lut[key]
    else:
        ukey, inv = np.unique(key, return_inverse=True)
    return ukey // 3 // cmax, ukey // 3 % cmax, ukey % 3, inv


class _Gemm:
    """One GEMM shape's terms on every unique triple, gathered per design on demand."""

    KEYS = ("compute", "ifmap_words", "ifmap_stream_words", "filter_words", "filter_stream_words",
            "filter_tile_words", "ofmap_writes", "ifmap_reads", "filter_reads", "ifmap_fold_words",
            "filter_fold_words")

    def __init__(self, M, N, K, uR, uC, ucode):
        self.M, self.N, self.K = M, N, K
        t = shape_terms(M, N, K, uR, uC, ucode)
        self.t = {k: np.asarray(t[k], dtype=np.float64) for k in self.KEYS}

    window = None  # window_prefetches over every design, for the 'scalesim' memory model

    def terms(self, inv):
        return {k: v[inv] for k, v in self.t.items()}


def _epilogue_cycles(H, B, peephole, sig, tanh, lanes):
    """Vector-unit cycles of one step's epilogue for B rows of H units: gate sums, the
    activations (sigmoid and tanh units run in parallel), the cell update, tanh(c'), the
    output product; peepholes add 3 products and 3 sums."""
    hb = H * B
    act = np.maximum(_cdiv(3 * hb, sig), _cdiv(hb, tanh))
    ew = _cdiv(4 * hb, lanes) + _cdiv(3 * hb, lanes) + _cdiv(hb, lanes) + peephole * _cdiv(6 * hb, lanes)
    return act + ew + _cdiv(hb, tanh)


def _layer_rows(counts):
    """(kind, row) of the rows the array runs: LSTM layers and dense heads."""
    return [r for r in counts.layers if r.kind in ("lstm", "dense")]


def lstm_cost(counts, designs, tech: Optional[dict] = None, breakdown: bool = True) -> dict:
    """Latency, energy, area and utilization of the model described by `counts` (a Counts
    from costmodel.counts: its per-layer rows give E, H, P, the batch, the steps and the
    dtype) on every design of `designs` (see normalize_designs). Returns a dict of arrays,
    one entry per design: latency_s (the sequence), step_latency_s (one streamed step, the
    weights already in place), energy_j and step_energy_j (dynamic), area_mm2, leakage_w
    (static power of the logic), power_w (energy_j / latency_s + leakage_w), utilization (MACs / (cycles x rows x cols)), fits (every weight matrix
    stays in the filter buffer, the states and gates in theirs), and with `breakdown`,
    cycles_*, energy_*_j and area_*_mm2 breakdowns."""
    dtype = counts.dtype
    if dtype not in WORD_BYTES:
        raise ArrayError(f"dtype: the array model supports {', '.join(ARRAY_DTYPES)}, got {dtype!r}")
    tech = merge_tech(tech) if tech is None or "pe" not in tech else tech
    d = normalize_designs(designs) if "code" not in designs else designs
    uR, uC, ucode, inv = _triples(d)
    B, T = counts.batch, counts.seq_len
    # The GEMMs of each row, once per unique triple.
    plan = []
    for row in _layer_rows(counts):
        if row.kind == "lstm":
            E, H, P = row.input_size, row.hidden_size, row.out_size
            G = 4 * H
            g = {"in_seq": _Gemm(T * B, G, E, uR, uC, ucode), "in_step": _Gemm(B, G, E, uR, uC, ucode),
                 "rec": _Gemm(B, G, P, uR, uC, ucode)}
            if P != H:
                g["proj"] = _Gemm(B, P, H, uR, uC, ucode)
            plan.append((row, g))
        else:
            steps = T if row.every_step else 1
            plan.append((row, {"head_seq": _Gemm(steps * B, row.out_size, row.input_size, uR, uC, ucode),
                               "head_step": _Gemm(B, row.out_size, row.input_size, uR, uC, ucode)}))
    n = inv.shape[0]
    sim_mem = d["memory"] == 1
    if sim_mem.any():
        # SCALE-Sim's read-buffer window, once per GEMM for all designs (it walks each
        # distinct configuration once), sliced per chunk below.
        wb = WORD_BYTES[dtype]
        caps = [np.floor(d[f"{k}_bytes"] / wb) for k in ("ifmap", "filter")]
        for _, gs in plan:
            for g in gs.values():
                g.window = window_prefetches(g.M, g.N, g.K, d["rows"], d["cols"], d["code"], *caps, d["bw"], sim_mem)
    out = None
    for i in range(0, n, CHUNK):
        part = _cost_chunk(counts, plan, {k: v[i:i + CHUNK] for k, v in d.items()}, inv[i:i + CHUNK], tech,
                           slice(i, i + CHUNK))
        if not breakdown:
            part = {k: part[k] for k in CORE_KEYS}
        if out is None:
            out = {k: np.empty(n, dtype=np.asarray(v).dtype) for k, v in part.items()}
        for k, v in part.items():
            out[k][i:i + CHUNK] = v
    return out


def _cost_chunk(counts, plan, d, inv, tech, part=slice(None)) -> dict:
    dtype = counts.dtype
    wb = WORD_BYTES[dtype]
    B, T = counts.batch, counts.seq_len
    R, C, bw = d["rows"], d["cols"], d["bw"]
    n = R.shape[0]
    act = {k: np.ceil(np.floor(d[f"{k}_bytes"] / wb) / 2) for k in ("ifmap", "filter", "ofmap")}
    a_if, a_f, a_o = act["ifmap"], act["filter"], act["ofmap"]
    e_mac = mac_pJ(tech, dtype)
    e_sram = {k: sram_pJ_per_byte(tech, d[f"{k}_bytes"]) * wb for k in act}  # pJ per word
    e_dram = tech["dram"]["pJ_per_byte"] * wb
    vec = tech["vector"]
    terms = [(row, {k: dict(g.terms(inv), window=None if g.window is None else {n: v[part] for n, v in
                                                                                   g.window.items()})
                    for k, g in gs.items()}) for row, gs in plan]
    # The model's weights stay in the filter buffer when all of them fit its active half.
    weight_words = sum(t["filter_words"] for _, ts in terms for k, t in ts.items()
                       if k in ("in_seq", "rec", "proj", "head_seq"))
    resident = weight_words <= a_f
    load = np.where(resident, weight_words / bw, 0.0)  # once per sequence
    not_res = ~resident

    seq = load.copy()
    step = np.zeros(n)
    macs_seq = 0
    e_seq = {k: np.zeros(n) for k in ("mac", "sram", "dram", "vector")}
    e_seq["dram"] += load * bw * e_dram
    e_step = np.zeros(n)
    fits = resident.copy()
    br = {k: np.zeros(n) for k in ("input_gemm", "recurrent_gemm", "projection_gemm", "epilogue", "head")}
    br["weight_load"] = load

    # Designs on the 'scalesim' memory model: a spilled operand costs SCALE-Sim's read-buffer
    # window prefetches instead of one stream per pass.
    # (Designs on the 'scalesim' memory model: each GEMM's window terms, see lstm_cost.)
    def run(t, M, N, K, if_dram, o_dram):
        window = t["window"]
        m = memory_cycles(t, M * K, K * N, a_if, a_f, a_o, bw, if_dram, not_res, o_dram, overlap=True,
                          window=window)
        dram = m["ifmap_dram_words"] + m["filter_dram_words"] + m["ofmap_dram_words"]
        sram = (t["ifmap_reads"] + m["ifmap_dram_words"]) * e_sram["ifmap"] \
            + (t["filter_reads"] + m["filter_dram_words"]) * e_sram["filter"] + t["ofmap_writes"] * e_sram["ofmap"]
        return m["cycles"], sram, dram * e_dram

    for row, ts in terms:
        if row.kind == "dense":
            steps = T if row.every_step else 1
            for key, st, is_seq in (("head_seq", steps, True), ("head_step", 1, False)):
                cyc, s_pj, d_pj = run(ts[key], st * B, row.out_size, row.input_size, True, True)
                m_pj = st * B * row.out_size * row.input_size * e_mac
                if is_seq:
                    seq += cyc
                    br["head"] += cyc
                    macs_seq += st * B * row.out_size * row.input_size
                    e_seq["mac"] += m_pj
                    e_seq["sram"] += s_pj
                    e_seq["dram"] += d_pj
                else:
                    step += cyc
                    e_step += m_pj + s_pj + d_pj
            continue
        E, H, P = row.input_size, row.hidden_size, row.out_size
        G = 4 * H
        peep = int(row.params.get("peepholes", 0) > 0)
        # The recurrence, every step: h (on chip) @ W_hh, the epilogue, the projection.
        c_rec, s_rec, d_rec = run(ts["rec"], B, G, P, False, False)
        c_pr = s_pr = d_pr = 0.0
        m_pr = 0
        if "proj" in ts:
            c_pr, s_pr, d_pr = run(ts["proj"], B, P, H, False, False)
            m_pr = B * P * H
        gates_fit = B * G <= a_o
        epi = _epilogue_cycles(H, B, peep, d["sigmoid"], d["tanh"], d["lanes"])
        fits &= (B * P <= a_if) & gates_fit
        step_mac_pj = (B * G * P + m_pr + peep * 3 * H * B) * e_mac
        step_vec_pj = B * H * (5 * vec["transcendental_energy_macs"]
                               + (12 + 6 * peep) * vec["elementwise_energy_macs"]) * e_mac
        first = row.layer == 0
        for key, st, is_seq in (("in_seq", T, True), ("in_step", 1, False)):
            # The hoisted input projection: x from DRAM on the first layer, the previous
            # layer's outputs (on chip when they fit) after it; its gates stay on chip when
            # they fit, else they go to DRAM and each step reads its own back.
            x_dram = first | (st * B * E > a_if)
            g_dram = st * B * G > a_o
            c_in, s_in, d_in = run(ts[key], st * B, G, E, x_dram, g_dram)
            readback = np.where(g_dram, B * G / bw, 0.0)
            per_step = c_rec + epi + c_pr + readback
            cyc = c_in + st * per_step
            mac_pj = st * B * G * E * e_mac + st * step_mac_pj
            sram_pj = s_in + st * (s_rec + s_pr)
            dram_pj = d_in + st * (d_rec + d_pr + np.where(g_dram, B * G * e_dram, 0.0))
            if is_seq:
                seq += cyc
                macs_seq += st * B * (G * E + G * P) + st * m_pr
                e_seq["mac"] += mac_pj
                e_seq["vector"] += st * step_vec_pj
                e_seq["sram"] += sram_pj
                e_seq["dram"] += dram_pj
                br["input_gemm"] += c_in
                br["recurrent_gemm"] += st * c_rec
                br["projection_gemm"] += st * c_pr
                br["epilogue"] += st * (epi + readback)
            else:
                step += cyc
                e_step += mac_pj + step_vec_pj + sram_pj + dram_pj
        # embedding rows (a table lookup, no arithmetic) are not modelled on the array.

    clock = d["clock_hz"]
    energy = (e_seq["mac"] + e_seq["sram"] + e_seq["dram"] + e_seq["vector"]) * 1e-12
    latency = seq / clock
    pe_area = R * C * pe_um2(tech, dtype)
    sram_area = (d["ifmap_bytes"] + d["filter_bytes"] + d["ofmap_bytes"]) * sram_um2_per_byte(tech)
    t = TECH_DTYPE[dtype]
    lane_um2 = tech["pe"][f"mult_um2_{t}"] + tech["pe"][f"add_um2_{t}"]
    vec_area = ((d["sigmoid"] + d["tanh"]) * vec["activation_lane_macs"]
                + d["lanes"] * vec["elementwise_lane_macs"]) * lane_um2
    lk = tech["leakage"]
    leakage = (R * C * lane_um2 + vec_area) * lk["logic_uW_per_um2"] * 1e-6 \
        + (d["ifmap_bytes"] + d["filter_bytes"] + d["ofmap_bytes"]) / 1024 * lk["sram_uW_per_KiB"] * 1e-6
    return {
        "latency_s": latency, "step_latency_s": step / clock,
        "energy_j": energy, "step_energy_j": e_step * 1e-12,
        "area_mm2": (pe_area + sram_area + vec_area) * 1e-6, "power_w": energy / latency + leakage,
        "leakage_w": leakage,
        "utilization": macs_seq / (seq * R * C),
        "fits": fits,
        "cycles": seq, "step_cycles": step,
        **{f"cycles_{k}": v for k, v in br.items()},
        **{f"energy_{k}_j": v * 1e-12 for k, v in e_seq.items()},
        "area_pe_mm2": pe_area * 1e-6, "area_sram_mm2": sram_area * 1e-6, "area_vector_mm2": vec_area * 1e-6,
    }
