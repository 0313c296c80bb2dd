"""Fixed-width vectors for @njit code: an LLVM vector type and a few intrinsics
(numba.core.extending.intrinsic; Numba's own API has none), so that a GEMM microkernel can keep
its accumulators in registers. Written with Numba's scalar loops, the accumulators of a
register-blocked product live in memory: LLVM cannot prove that they do not alias the weights,
and reloads and stores them on every step of the reduction (kernels/gemm.py's panel kernels
measured 1.5-1.8x faster than the scalar-loop forms on the same products).

- `vlanes(arr)`: lanes of one vector of arr's dtype (a compile-time constant);
- `vload(arr, i)` / `vstore(arr, i, v)`: the vector at flat element offset i of a C-contiguous
  1-d array, or of a pointer from `data_ptr` (unaligned; no bounds check: callers validate
  shapes before any kernel runs);
- `data_ptr(arr)`: the pointer to arr's first element (a types.CPointer, which @njit code
  indexes as p[i]). Microkernels work on pointers: every array a Numba function passes to an
  inlined function, or every view it makes, is reference-counted (NRT_incref/NRT_decref
  calls), and in a GEMM with one row those calls cost more than the multiply-adds (kernels/gemm.py);
- `vfma(acc, w, s)`: acc + w * s for a scalar s (llvm.fmuladd: one FMA where the ISA has it,
  the same contraction that fastmath={"contract"} allows in the scalar kernels).

One vector is the host's widest register: 64 bytes where LLVM targets AVX-512, 32 bytes
otherwise (AVX2; on narrower ISAs LLVM splits each vector in two). `REGISTERS` is the number of
vector registers (32 with AVX-512, else 16); the microkernels size their tiles by it. Both are
read from the features Numba compiles for (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES when set, else
the host's), never assumed.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic, models, register_model

from .atomics import _elem_ptr


def _target_features() -> set:
    """The CPU features Numba compiles for: NUMBA_CPU_FEATURES when set, the host's when Numba
    targets the host, none known for a named CPU without features (the narrow default)."""
    from numba.core import config as nconfig
    if nconfig.CPU_FEATURES:
        return {f[1:] for f in str(nconfig.CPU_FEATURES).split(",") if f.startswith("+")}
    if nconfig.CPU_NAME and nconfig.CPU_NAME != "host":
        return set()
    try:
        import llvmlite.binding as llvm
        return {k for k, v in llvm.get_host_cpu_features().items() if v}
    except Exception:           # no host features readable: the narrow default
        return set()


_FEATURES = _target_features()
VECTOR_BYTES = 64 if "avx512f" in _FEATURES else 32
REGISTERS = 32 if "avx512f" in _FEATURES else 16


class VecType(types.Type):
    """An LLVM vector of `n` elements of `dtype`, held in a register."""
    def __init__(self, dtype, n):
        self.dtype = dtype
        self.n = n
        super().__init__(name=f"Vec{n}x{dtype}")


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.n))


def _check(arr, what):
    if isinstance(arr, types.CPointer) and arr.dtype in (types.float32, types.float64):
        return
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype in (types.float32, types.float64)):
        raise TypeError(f"simd.{what}: expected a 1-d float32 or float64 array or a pointer to one, got {arr}")


def _vec_of(arr):
    return VecType(arr.dtype, VECTOR_BYTES * 8 // arr.dtype.bitwidth)


def _vec_ptr(context, builder, aryty, ary_val, idx, vty):
    if isinstance(aryty, types.CPointer):
        return builder.bitcast(builder.gep(ary_val, [idx], inbounds=True), vty.as_pointer())
    return builder.bitcast(_elem_ptr(context, builder, aryty, ary_val, idx), vty.as_pointer())


@intrinsic
def data_ptr(typingctx, arr):
    if not (isinstance(arr, types.Array) and arr.dtype in (types.float32, types.float64)):
        raise TypeError(f"simd.data_ptr: expected a float32 or float64 array, got {arr}")

    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data
    return types.CPointer(arr.dtype)(arr), codegen


@intrinsic
def vlanes(typingctx, arr):
    _check(arr, "vlanes")
    n = _vec_of(arr).n

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)
    return types.intp(arr), codegen


@intrinsic
def vload(typingctx, arr, idx):
    _check(arr, "vload")
    vt = _vec_of(arr)

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], i, context.get_value_type(vt))
        return builder.load(ptr, align=arr.dtype.bitwidth // 8)
    return vt(arr, types.intp), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    _check(arr, "vstore")
    if v != _vec_of(arr):
        raise TypeError(f"simd.vstore: expected a {_vec_of(arr)}, got {v}")

    def codegen(context, builder, sig, args):
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], i, args[2].type)
        builder.store(args[2], ptr, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.void(arr, types.intp, v), codegen


@intrinsic
def vfma(typingctx, acc, w, s):
    if not (isinstance(acc, VecType) and acc == w):
        raise TypeError(f"simd.vfma: expected two vectors of one type, got {acc} and {w}")

    def codegen(context, builder, sig, args):
        a, x, sc = args
        vt = a.type
        sv = context.cast(builder, sc, sig.args[2], acc.dtype)
        splat = builder.insert_element(ir.Constant(vt, ir.Undefined), sv, ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, ir.Constant(vt, ir.Undefined),
                                       ir.Constant(ir.VectorType(ir.IntType(32), vt.count), None))
        suffix = "f32" if acc.dtype == types.float32 else "f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                            f"llvm.fmuladd.v{vt.count}{suffix}")
        return builder.call(fn, [x, splat, a])
    return acc(acc, w, s), codegen

