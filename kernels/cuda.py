"""numba.cuda LSTM kernels: the hoisted input GEMM, a fused step kernel, a persistent kernel.

Versions (all compute in x's dtype; float32 is the one compiled to PTX and benchmarked):

- `input_proj`: tiled shared-memory GEMM, gx = x W_ih^T + (b_ih + b_hh), for all T*B rows
  and both directions in one launch (grid z = direction). cuDNN's first trick: the input
  half of the gate products has no recurrence, so it is one big GEMM.
- `lstm_step` (+ `proj_step` when proj_size > 0): one launch per time step for every
  layer's directions at once. A block owns a tile of hidden units j of one (batch row,
  direction) and computes all four gates for them: recurrent product from an h tile in
  shared memory, bias already in gx, peepholes, activations, cell and hidden update.
- `lstm_persistent`: one block per direction loops over all T steps; W_hh (and W_hr)
  are loaded once into shared memory and stay there, h and c live in shared memory,
  and steps are separated by `cuda.syncthreads()`. Chosen automatically when it fits
  the shared-memory budget (`persistent_smem_bytes`, `PERSISTENT_SMEM_BYTES`).
  One block per direction, not a grid-wide persistent kernel: `cuda.cg.this_grid().sync()`
  runs on the simulator but its PTX compile asks for a CUDA driver, which this project's
  machines do not have, so it could not be checked here.

Directions share every launch (grid z, or the persistent grid's x), rather than two CUDA
streams: the same overlap with half the launches. Packed-sequence `lengths` are handled
in the kernels: a row past its end keeps its state and writes zeros to y; the reverse
direction of row b visits t = lengths[b]-1 .. 0.

Import policy: importing this module never fails; numba.cuda is imported under a guard,
and `lstm_cuda` / `CudaStream` raise `CudaUnavailableError` saying what is missing.
`fastmath` is off on purpose: the kernels are tested against the float64 reference at
float32 rounding, and the gates' exp/tanh are a small share of the step's time.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import _checks

try:                                              # guarded: edgelstm never needs numba.cuda
    from numba import cuda
    from numba import float32, float64, int32, void
    _IMPORT_ERROR = None
except Exception as e:                            # numba-cuda missing or broken
    cuda = None
    _IMPORT_ERROR = e

# ---- configuration: the one place for tunables and the persistent-kernel budget ----------
GEMM_TILE = 16                    # input GEMM: 16x16 output tile, 16x16 threads per block
STEP_MAX_BLOCK = 256              # step kernels: threads per block <= this (shared h tile size)
PERSISTENT_MAX_THREADS = 1024     # persistent kernel: one block, at most this many threads
PERSISTENT_SMEM_BYTES = 48 * 1024  # static shared memory one block may use on every GPU since sm_20
# Persistent-kernel budget rule (per block = per direction), in elements of x's dtype:
#   4H*P (W_hh) + P*H (W_hr, with a projection) + B*P (h) + 2*B*H (c, and h before projection)
# times the itemsize must be <= PERSISTENT_SMEM_BYTES. See `persistent_smem_bytes`.


class CudaUnavailableError(RuntimeError):
    """device="cuda" was asked for, but numba-cuda or a CUDA GPU/driver is missing."""


def _cuda():
    """numba.cuda, or a clear error saying what is missing."""
    if cuda is None:
        raise CudaUnavailableError(
            "device='cuda' needs numba-cuda, which could not be imported "
            f"({type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}); install it with "
            "pip install 'numba-cuda[cu13]' (or edgelstm[cuda])")
    from numba import config
    if not (config.ENABLE_CUDASIM or cuda.is_available()):
        raise CudaUnavailableError(
            "device='cuda' needs a CUDA GPU and driver, but numba.cuda.is_available() is False "
            "(no GPU or no CUDA driver found); use device='cpu', or set NUMBA_ENABLE_CUDASIM=1 "
            "before importing numba to run on Numba's (slow) CUDA simulator")
    return cuda


def persistent_smem_bytes(spec, batch: int, itemsize: int = 4) -> int:
    """Shared memory the persistent kernel needs for one direction of one layer (bytes)."""
    H, P = spec.hidden_size, spec.out_size
    elems = 4 * H * P + (P * H if spec.proj_size else 0) + batch * P + 2 * batch * H
    return elems * itemsize


def persistent_fits(spec, batch: int, itemsize: int = 4) -> bool:
    """Whether `lstm_cuda` picks the persistent kernel (every layer has the same W_hh size)."""
    return persistent_smem_bytes(spec, batch, itemsize) <= PERSISTENT_SMEM_BYTES


def model_implementation(spec, batch: int, itemsize: int = 4) -> str:
    """The cost model's name for what `lstm_cuda(persistent=None)` runs for this spec and
    batch: "persistent-block" (`lstm_persistent`, one block per direction) when it fits the
    shared-memory budget, else "fused" (the per-step kernels). Predict it with
    `edgelstm.predict(spec, target, implementation=model_implementation(spec, batch))`."""
    return "persistent-block" if persistent_fits(spec, batch, itemsize) else "fused"


def _round32(n: int) -> int:
    return max(32, (n + 31) // 32 * 32)


# ---- device functions ------------------------------------------------------------------
if cuda is not None:
    @cuda.jit(device=True, inline=True)
    def _sigmoid(z):
        return 1.0 / (1.0 + math.exp(-z))   # exp(-z) -> inf gives 0 exactly: no NaN

    @cuda.jit(device=True, inline=True)
    def _store_y(y, y_bf, t, b, col, v):
        """y is (T, B, D*P), or (B, T, D*P) for the batch-first top layer."""
        if y_bf:
            y[b, t, col] = v
        else:
            y[t, b, col] = v

    @cuda.jit(device=True, inline=True)
    def _time_index(d, s, length):
        """Step s of direction d visits t = s forward, t = length-1-s in reverse."""
        return s if d == 0 else length - 1 - s


# ---- kernels (built per dtype: shared arrays need their dtype at compile time) -------------
def _kernel_functions(nbtype):
    """The Python functions of every kernel for one numba float type (uncompiled)."""

    def input_proj(x, x_bf, w_t, bias, gx):
        """gx[d, t, b, n] = sum_k x[t, b, k] w_t[d, k, n] + bias[d, n].

        x (T, B, E) or (B, T, E) with x_bf; w_t (D, E, 4H); bias (D, 4H); gx (D, T, B, 4H).
        grid (ceil(4H/16), ceil(T*B/16), D), block (16, 16).
        """
        a_tile = cuda.shared.array((GEMM_TILE, GEMM_TILE), nbtype)
        b_tile = cuda.shared.array((GEMM_TILE, GEMM_TILE), nbtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        n = cuda.blockIdx.x * GEMM_TILE + tx           # gate column
        m = cuda.blockIdx.y * GEMM_TILE + ty           # row t*B + b
        d = cuda.blockIdx.z
        B = gx.shape[2]
        M = gx.shape[1] * B
        G = gx.shape[3]
        E = w_t.shape[1]
        t = m // B
        b = m - t * B
        acc = nbtype(0)
        for k0 in range(0, E, GEMM_TILE):
            k = k0 + tx
            if m < M and k < E:
                a_tile[ty, tx] = x[b, t, k] if x_bf else x[t, b, k]
            else:
                a_tile[ty, tx] = 0
            k = k0 + ty
            if k < E and n < G:
                b_tile[ty, tx] = w_t[d, k, n]
            else:
                b_tile[ty, tx] = 0
            cuda.syncthreads()
            for kk in range(GEMM_TILE):
                acc += a_tile[ty, kk] * b_tile[kk, tx]
            cuda.syncthreads()
        if m < M and n < G:
            gx[d, t, b, n] = acc + bias[d, n]

    def lstm_step(gx, whh_t, peep, has_peep, h_prev, h_next, c, hfull, has_proj,
                  y, y_bf, lengths, s):
        """One time step of every direction of one layer.

        gx (D, T, B, 4H); whh_t (D, P, 4H); peep (D, 3, H); h_prev/h_next (D, B, P);
        c (D, B, H) updated in place; hfull (D, B, H): o*tanh(c) before the projection
        (written instead of h_next when has_proj); y (T, B, D*P) or (B, T, D*P);
        lengths (B,) int32. grid (ceil(H/blk), B, D), block (blk,), blk <= STEP_MAX_BLOCK.
        """
        h_tile = cuda.shared.array(STEP_MAX_BLOCK, nbtype)
        tid = cuda.threadIdx.x
        blk = cuda.blockDim.x
        j = cuda.blockIdx.x * blk + tid
        b = cuda.blockIdx.y
        d = cuda.blockIdx.z
        H = c.shape[2]
        P = h_prev.shape[2]
        length = lengths[b]
        active = s < length                            # uniform over the block (same b)
        ai = nbtype(0)
        af = nbtype(0)
        ag = nbtype(0)
        ao = nbtype(0)
        if active:
            t = _time_index(d, s, length)
            for k0 in range(0, P, blk):
                cuda.syncthreads()                     # previous tile fully read
                if k0 + tid < P:
                    h_tile[tid] = h_prev[d, b, k0 + tid]
                cuda.syncthreads()
                if j < H:
                    for kk in range(min(blk, P - k0)):
                        hk = h_tile[kk]
                        k = k0 + kk
                        ai += whh_t[d, k, j] * hk
                        af += whh_t[d, k, H + j] * hk
                        ag += whh_t[d, k, 2 * H + j] * hk
                        ao += whh_t[d, k, 3 * H + j] * hk
        if j < H:
            if active:
                ai += gx[d, t, b, j]
                af += gx[d, t, b, H + j]
                ag += gx[d, t, b, 2 * H + j]
                ao += gx[d, t, b, 3 * H + j]
                c_old = c[d, b, j]
                if has_peep:
                    ai += peep[d, 0, j] * c_old
                    af += peep[d, 1, j] * c_old
                c_new = _sigmoid(af) * c_old + _sigmoid(ai) * math.tanh(ag)
                if has_peep:
                    ao += peep[d, 2, j] * c_new
                h = _sigmoid(ao) * math.tanh(c_new)
                c[d, b, j] = c_new
                if has_proj:
                    hfull[d, b, j] = h
                else:
                    h_next[d, b, j] = h
                    _store_y(y, y_bf, t, b, d * P + j, h)
            elif not has_proj:                         # past the row's end: keep h, y = 0
                h_next[d, b, j] = h_prev[d, b, j]
                _store_y(y, y_bf, s, b, d * P + j, 0)

    def proj_step(whr_t, hfull, h_prev, h_next, y, y_bf, lengths, s):
        """h_next[d, b, p] = sum_j whr_t[d, j, p] hfull[d, b, j] (the projection of one step).

        whr_t (D, H, P); hfull (D, B, H); h_prev/h_next (D, B, P).
        grid (ceil(P/blk), B, D), block (blk,), blk <= STEP_MAX_BLOCK.
        """
        h_tile = cuda.shared.array(STEP_MAX_BLOCK, nbtype)
        tid = cuda.threadIdx.x
        blk = cuda.blockDim.x
        p = cuda.blockIdx.x * blk + tid
        b = cuda.blockIdx.y
        d = cuda.blockIdx.z
        H = hfull.shape[2]
        P = h_prev.shape[2]
        length = lengths[b]
        active = s < length
        acc = nbtype(0)
        if active:
            for j0 in range(0, H, blk):
                cuda.syncthreads()
                if j0 + tid < H:
                    h_tile[tid] = hfull[d, b, j0 + tid]
                cuda.syncthreads()
                if p < P:
                    for jj in range(min(blk, H - j0)):
                        acc += whr_t[d, j0 + jj, p] * h_tile[jj]
        if p < P:
            if active:
                h_next[d, b, p] = acc
                _store_y(y, y_bf, _time_index(d, s, length), b, d * P + p, acc)
            else:
                h_next[d, b, p] = h_prev[d, b, p]
                _store_y(y, y_bf, s, b, d * P + p, 0)

    smem_elems = PERSISTENT_SMEM_BYTES // np.dtype(str(nbtype)).itemsize

    def lstm_persistent(gx, whh_t, whr_t, has_proj, peep, has_peep, h, c, y, y_bf,
                        lengths, n_steps):
        """All n_steps of one layer; block d runs direction d. h (D, B, P), c (D, B, H) in/out.

        Shared memory layout (elements): W_hh^T [P*4H] | W_hr^T [H*P if has_proj] |
        h [B*P] | c [B*H] | h before projection [B*H]. grid (D,), block (<= 1024,).
        """
        smem = cuda.shared.array(smem_elems, nbtype)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        d = cuda.blockIdx.x
        B = h.shape[1]
        P = h.shape[2]
        H = c.shape[2]
        G = 4 * H
        wr0 = P * G
        h0 = wr0 + (H * P if has_proj else 0)
        c0 = h0 + B * P
        u0 = c0 + B * H
        for i in range(tid, P * G, nt):                 # weights: loaded once, kept
            smem[i] = whh_t[d, i // G, i % G]
        if has_proj:
            for i in range(tid, H * P, nt):
                smem[wr0 + i] = whr_t[d, i // P, i % P]
        for i in range(tid, B * P, nt):
            smem[h0 + i] = h[d, i // P, i % P]
        for i in range(tid, B * H, nt):
            smem[c0 + i] = c[d, i // H, i % H]
        cuda.syncthreads()
        for s in range(n_steps):
            for i in range(tid, B * H, nt):            # gates and cell of every (b, j)
                b = i // H
                j = i - b * H
                length = lengths[b]
                if s < length:
                    t = _time_index(d, s, length)
                    ai = gx[d, t, b, j]
                    af = gx[d, t, b, H + j]
                    ag = gx[d, t, b, 2 * H + j]
                    ao = gx[d, t, b, 3 * H + j]
                    hb = h0 + b * P
                    for k in range(P):
                        hk = smem[hb + k]
                        w = k * G + j
                        ai += smem[w] * hk
                        af += smem[w + H] * hk
                        ag += smem[w + 2 * H] * hk
                        ao += smem[w + 3 * H] * hk
                    c_old = smem[c0 + i]
                    if has_peep:
                        ai += peep[d, 0, j] * c_old
                        af += peep[d, 1, j] * c_old
                    c_new = _sigmoid(af) * c_old + _sigmoid(ai) * math.tanh(ag)
                    if has_peep:
                        ao += peep[d, 2, j] * c_new
                    smem[c0 + i] = c_new
                    smem[u0 + i] = _sigmoid(ao) * math.tanh(c_new)
            cuda.syncthreads()                         # every h read; every u written
            for i in range(tid, B * P, nt):            # new h (projected) and y
                b = i // P
                p = i - b * P
                length = lengths[b]
                if s < length:
                    if has_proj:
                        v = nbtype(0)
                        ub = u0 + b * H
                        for jj in range(H):
                            v += smem[wr0 + jj * P + p] * smem[ub + jj]
                    else:
                        v = smem[u0 + i]
                    smem[h0 + i] = v
                    _store_y(y, y_bf, _time_index(d, s, length), b, d * P + p, v)
                else:
                    _store_y(y, y_bf, s, b, d * P + p, 0)
            cuda.syncthreads()                         # h ready for the next step
        for i in range(tid, B * P, nt):
            h[d, i // P, i % P] = smem[h0 + i]
        for i in range(tid, B * H, nt):
            c[d, i // H, i % H] = smem[c0 + i]

    return {"input_proj": input_proj, "lstm_step": lstm_step, "proj_step": proj_step,
            "lstm_persistent": lstm_persistent}


def _signatures(nbtype):
    """Typed signatures (C-contiguous arrays) of every kernel, for compile_ptx."""
    a2, a3, a4 = nbtype[:, ::1], nbtype[:, :, ::1], nbtype[:, :, :, ::1]
    i1 = int32[::1]
    return {
        "input_proj": void(a3, int32, a3, a2, a4),
        "lstm_step": void(a4, a3, a3, int32, a3, a3, a3, a3, int32, a3, int32, i1, int32),
        "proj_step": void(a3, a3, a3, a3, a3, int32, i1, int32),
        "lstm_persistent": void(a4, a3, a3, int32, a3, int32, a3, a3, a3, int32, i1, int32),
    }


@functools.lru_cache(maxsize=None)
def _kernels(dtype_name: str):
    """Compiled (lazily, per argument types) dispatchers for one dtype."""
    cu = _cuda()
    nbtype = {"float32": float32, "float64": float64}[dtype_name]
    return {name: cu.jit(fn) for name, fn in _kernel_functions(nbtype).items()}


def compile_all_ptx(cc=(8, 0)):
    """{kernel name: PTX text} of every float32 kernel for compute capability `cc`.

    Needs numba-cuda and its NVVM (the [cu13] wheels), not a GPU.
    """
    if cuda is None:
        raise CudaUnavailableError(f"compile_all_ptx needs numba-cuda, which could not be imported "
                                   f"({type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR})")
    sigs = _signatures(float32)
    out = {}
    for name, fn in _kernel_functions(float32).items():
        ptx, _ = cuda.compile_ptx(fn, sigs[name], cc=tuple(cc))
        out[name] = ptx
    return out


def ptx_local_memory_lines(ptx: str):
    """Lines of PTX that declare or touch local memory (`.local`, ld.local, st.local).

    NVVM emits local memory for stack frames: local arrays, or values it cannot keep in
    (virtual) registers. Register spills proper are decided later by ptxas; this is the
    check that can be made on the PTX itself.
    """
    return [ln.strip() for ln in ptx.splitlines()
            if ".local" in ln or "ld.local" in ln or "st.local" in ln]


# ---- packing ----------------------------------------------------------------------------
def _pack(weights):
    """Per layer: the device arrays the kernels read, in their layouts, all directions stacked."""
    cu = _cuda()
    spec = weights.spec
    H = spec.hidden_size
    dt = weights.dtype
    layers = []
    for dirs in weights.layers:
        D = len(dirs)
        whr = (np.stack([lw.w_hr.T for lw in dirs]) if spec.proj_size
               else np.zeros((D, 1, 1), dt))
        peep = (np.stack([lw.peep for lw in dirs]) if spec.peephole
                else np.zeros((D, 3, H), dt))
        host = {
            "w_ih_t": np.stack([lw.w_ih.T for lw in dirs]),      # (D, E_l, 4H)
            "bias": np.stack([lw.bias_sum() for lw in dirs]),    # (D, 4H)
            "whh_t": np.stack([lw.w_hh.T for lw in dirs]),       # (D, P, 4H)
            "whr_t": whr,                                        # (D, H, P)
            "peep": peep,                                        # (D, 3, H)
        }
        layers.append({k: cu.to_device(np.ascontiguousarray(v, dtype=dt)) for k, v in host.items()})
    return layers


def _packed(weights):
    return weights.packed(("cuda", weights.dtype.name), _pack)


def _is_device(a) -> bool:
    """A numba device array (real or simulated) or any __cuda_array_interface__ exporter."""
    return (a is not None and not isinstance(a, np.ndarray)
            and (hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__")))


def _as_device(cu, a):
    """A numba device array viewing the device array `a` (no copy)."""
    return a if hasattr(a, "copy_to_host") else cu.as_cuda_array(a)


def _to_device(cu, a, dtype, stream):
    """A device array of dtype: device arrays pass through, NumPy is copied."""
    if _is_device(a):
        return _as_device(cu, a)
    return cu.to_device(np.ascontiguousarray(a, dtype=dtype), stream=stream)


# ---- launchers --------------------------------------------------------------------------
def _launch_input_proj(k, x, x_bf, pk, gx, stream):
    D, T, B, G = gx.shape
    grid = ((G + GEMM_TILE - 1) // GEMM_TILE, (T * B + GEMM_TILE - 1) // GEMM_TILE, D)
    k["input_proj"][grid, (GEMM_TILE, GEMM_TILE), stream](x, int(x_bf), pk["w_ih_t"], pk["bias"], gx)


def _step_block(n: int) -> int:
    return min(STEP_MAX_BLOCK, _round32(n))


def _launch_step(k, spec, pk, gx, h_prev, h_next, c, hfull, y, y_bf, lengths, s, stream):
    D, _, B, _ = gx.shape
    H, P = spec.hidden_size, spec.out_size
    proj = int(spec.proj_size > 0)
    blk = _step_block(H)
    k["lstm_step"][((H + blk - 1) // blk, B, D), blk, stream](
        gx, pk["whh_t"], pk["peep"], int(spec.peephole), h_prev, h_next, c, hfull, proj,
        y, int(y_bf), lengths, s)
    if proj:
        blk = _step_block(P)
        k["proj_step"][((P + blk - 1) // blk, B, D), blk, stream](
            pk["whr_t"], hfull, h_prev, h_next, y, int(y_bf), lengths, s)


def _launch_persistent(k, spec, pk, gx, h, c, y, y_bf, lengths, n_steps, stream):
    D, _, B, _ = gx.shape
    H, P = spec.hidden_size, spec.out_size
    threads = min(PERSISTENT_MAX_THREADS, _round32(max(B * H, B * P)))
    k["lstm_persistent"][D, threads, stream](
        gx, pk["whh_t"], pk["whr_t"], int(spec.proj_size > 0), pk["peep"], int(spec.peephole),
        h, c, y, int(y_bf), lengths, n_steps)


def _initial_state(cu, a, l, D, shape, dtype, stream):
    """Layer l's slice of h0/c0 as a fresh contiguous device array (zeros when None)."""
    if a is None:
        return cu.to_device(np.zeros(shape, dtype), stream=stream)
    if _is_device(a):
        out = cu.device_array(shape, dtype, stream=stream)
        out.copy_to_device(_as_device(cu, a)[l * D:(l + 1) * D], stream=stream)
        return out
    return cu.to_device(np.ascontiguousarray(a[l * D:(l + 1) * D], dtype=dtype), stream=stream)


def lstm_cuda(x, weights, h0=None, c0=None, lengths=None, batch_first=False, *,
              persistent=None):
    """torch.nn.LSTM semantics on a CUDA GPU. Returns (y, (h_n, c_n)).

    NumPy in -> NumPy out; device arrays in -> numba device arrays out. y is (T, B, D*P)
    ((B, T, D*P) with batch_first), h_n (L*D, B, P), c_n (L*D, B, H), in x's dtype.
    persistent: None picks the persistent kernel when `persistent_fits`; True/False force
    it (True raises if it does not fit).
    """
    cu = _cuda()
    chk = _checks.check_lstm_inputs(x, weights, h0, c0, lengths, batch_first)
    spec, T, B, dt = weights.spec, chk.seq_len, chk.batch, chk.dtype
    L, D, H, P = spec.num_layers, spec.num_directions, spec.hidden_size, spec.out_size
    fits = persistent_fits(spec, B, dt.itemsize)
    if persistent is None:
        persistent = fits
    elif persistent and not fits:
        raise _checks.InputError(f"persistent: the persistent kernel needs {persistent_smem_bytes(spec, B, dt.itemsize)} "
                         f"bytes of shared memory per block for {spec} at batch {B}, "
                         f"more than PERSISTENT_SMEM_BYTES = {PERSISTENT_SMEM_BYTES}")
    on_device = _is_device(x)
    w = weights.packed(("astype", dt.name), lambda ws: ws.astype(dt))   # as edgelstm.run caches it
    pk_layers = _packed(w)
    k = _kernels(dt.name)
    stream = cu.stream()
    lens = chk.lengths if chk.lengths is not None else np.full(B, T)
    d_len = cu.to_device(np.ascontiguousarray(lens, dtype=np.int32), stream=stream)
    n_steps = int(lens.max())                      # steps past every row's end only write y = 0
    layer_in = _to_device(cu, x, dt, stream)
    in_bf = bool(batch_first)
    h_n = cu.device_array((L * D, B, P), dt, stream=stream)
    c_n = cu.device_array((L * D, B, H), dt, stream=stream)
    gx = cu.device_array((D, T, B, 4 * H), dt, stream=stream)
    hfull = cu.device_array((D, B, H), dt, stream=stream)
    for l in range(L):
        pk = pk_layers[l]
        top = l == L - 1
        y_bf = in_bf if top else False
        y_shape = (B, T, D * P) if y_bf else (T, B, D * P)
        # Steps >= max(lengths) are never launched, so y starts zeroed when there are some.
        y = (cu.device_array(y_shape, dt, stream=stream) if n_steps == T
             else cu.to_device(np.zeros(y_shape, dt), stream=stream))
        _launch_input_proj(k, layer_in, in_bf if l == 0 else False, pk, gx, stream)
        h = _initial_state(cu, h0, l, D, (D, B, P), dt, stream)
        c = _initial_state(cu, c0, l, D, (D, B, H), dt, stream)
        if persistent:
            _launch_persistent(k, spec, pk, gx, h, c, y, y_bf, d_len, n_steps, stream)
        else:
            h_other = cu.device_array((D, B, P), dt, stream=stream)
            for s in range(n_steps):
                _launch_step(k, spec, pk, gx, h, h_other, c, hfull, y, y_bf, d_len, s, stream)
                h, h_other = h_other, h
        h_n[l * D:(l + 1) * D].copy_to_device(h, stream=stream)
        c_n[l * D:(l + 1) * D].copy_to_device(c, stream=stream)
        layer_in = y
    if on_device:
        return layer_in, (h_n, c_n)
    out = (layer_in.copy_to_host(stream=stream),
           (h_n.copy_to_host(stream=stream), c_n.copy_to_host(stream=stream)))
    stream.synchronize()
    return out


class CudaStream:
    """One step at a time on the GPU, state kept on the device between calls.

    step(x_t) takes (B, E) (or (E,) when B == 1) and returns the top layer's h_t (B, P) (or
    (P,)); NumPy in -> a new NumPy array out, device array in -> a device buffer that the next
    step overwrites. `.h` (L, B, P) and `.c`
    (L, B, H) are NumPy copies of the state; their setters accept NumPy or device arrays.
    Forward only: a bidirectional stack needs the whole sequence (use lstm_cuda).
    """

    def __init__(self, weights, batch: int = 1):
        self._cu = _cuda()
        _checks.check_weights(weights)
        spec = weights.spec
        if spec.bidirectional:
            raise _checks.InputError("weights: a stream runs forward in time; a bidirectional stack "
                                     "needs the whole sequence (use lstm_cuda / edgelstm.lstm)")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise _checks.InputError(f"batch: expected an integer >= 1, got {batch!r}")
        self.weights, self.spec, self.batch = weights, spec, int(batch)
        self._dtype = weights.dtype
        self._k = _kernels(self._dtype.name)
        self._pk = _packed(weights)
        self._stream = self._cu.stream()
        self._lengths = self._cu.to_device(np.ones(self.batch, np.int32))   # s = 0 < 1: all active
        L, B, H, P = spec.num_layers, self.batch, spec.hidden_size, spec.out_size
        self._gx = self._cu.device_array((1, 1, B, 4 * H), self._dtype)
        self._hfull = self._cu.device_array((1, B, H), self._dtype)
        self._ys = [self._cu.device_array((1, B, P), self._dtype) for _ in range(L)]
        self._hs = [[self._cu.device_array((1, B, P), self._dtype) for _ in range(2)] for _ in range(L)]
        self._cs = [self._cu.device_array((1, B, H), self._dtype) for _ in range(L)]
        self.reset()

    def reset(self) -> None:
        """Zero h and c."""
        L, B, H, P = self.spec.num_layers, self.batch, self.spec.hidden_size, self.spec.out_size
        self.h = np.zeros((L, B, P), self._dtype)
        self.c = np.zeros((L, B, H), self._dtype)

    def step(self, x_t, out=None):
        dt = _checks.check_step_input(x_t, self.spec.input_size, self.batch)
        if dt != self._dtype:
            raise _checks.InputTypeError(f"x_t: expected dtype {self._dtype} (the weights' dtype), got {dt}")
        cu, st, B = self._cu, self._stream, self.batch
        on_device = _is_device(x_t)
        shape = (1, B, self.spec.input_size)
        x = (_as_device(cu, x_t).reshape(shape) if on_device
             else cu.to_device(np.ascontiguousarray(x_t, dtype=self._dtype).reshape(shape), stream=st))
        for l in range(self.spec.num_layers):
            pk = self._pk[l]
            _launch_input_proj(self._k, x, False, pk, self._gx, st)
            h_prev, h_next = self._hs[l]
            _launch_step(self._k, self.spec, pk, self._gx, h_prev, h_next, self._cs[l], self._hfull,
                         self._ys[l], False, self._lengths, 0, st)
            self._hs[l] = [h_next, h_prev]
            x = self._ys[l]
        # (E,) in at batch 1 -> (P,) out, as the CPU stream does
        h = self._ys[-1].reshape((self.spec.out_size,) if len(x_t.shape) == 1 else (B, self.spec.out_size))
        if on_device:      # a new device array (or the caller's), never the buffer the next step overwrites
            dst = cu.device_array(h.shape, h.dtype, stream=st) if out is None else _as_device(cu, out)
            dst.copy_to_device(h, stream=st)
            st.synchronize()
            return dst if out is None else out
        if out is not None:
            _checks.check_step_out(out, h.shape, np.dtype(self._dtype))
            h.copy_to_host(out, stream=st)
            st.synchronize()
            return out
        host = h.copy_to_host(stream=st)
        st.synchronize()
        return host

    def _set_state(self, name, value, per_layer, expected, what):
        _checks.check_state(name, value, expected, self._dtype, what)
        dev = _is_device(value)
        for l in range(self.spec.num_layers):
            part = (_as_device(self._cu, value)[l:l + 1] if dev
                    else np.ascontiguousarray(value[l:l + 1], dtype=self._dtype))
            per_layer(l).copy_to_device(part, stream=self._stream)
        self._stream.synchronize()

    @property
    def h(self):
        return np.concatenate([hs[0].copy_to_host() for hs in self._hs])

    @h.setter
    def h(self, value):
        L, B, P = self.spec.num_layers, self.batch, self.spec.out_size
        self._set_state("h", value, lambda l: self._hs[l][0], (L, B, P), "num_layers, B, P")

    @property
    def c(self):
        return np.concatenate([c.copy_to_host() for c in self._cs])

    @c.setter
    def c(self, value):
        L, B, H = self.spec.num_layers, self.batch, self.spec.hidden_size
        self._set_state("c", value, lambda l: self._cs[l], (L, B, H), "num_layers, B, H")
