"""Atomic operations on int64 array elements for @njit code, emitted as LLVM atomics
(numba.core.extending.intrinsic; Numba's own API has none). Used by the two-thread team of
kernels/team.py for its per-step flags.

- `load_acquire(a, i)`: a[i], later loads not moved above it;
- `store_release(a, i, v)`: a[i] = v, earlier stores not moved below it;
- `cas(a, i, expected, new)`: a[i] = new if a[i] == expected; returns the old value (seq_cst);
- `cpu_relax()`: the spin-wait hint (x86 `pause`; nothing elsewhere);
- `sched_yield()`: libc's (0 on success), so a waiting thread gives its core
  away when it has spun long enough;
- `usleep(us)`: libc's, so a thread can doze in JIT code without the GIL (kernels/resident.py).
"""
from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic


def _elem_ptr(context, builder, aryty, ary_val, idx):
    ary = context.make_array(aryty)(context, builder, ary_val)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)


def _check(arr):
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1):
        raise TypeError(f"atomics: expected a 1-d int64 array, got {arr}")


@intrinsic
def load_acquire(typingctx, arr, idx):
    _check(arr)
    sig = types.int64(arr, types.intp)

    def codegen(context, builder, sig, args):
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], idx)
        return builder.load_atomic(ptr, "acquire", 8)
    return sig, codegen


@intrinsic
def store_release(typingctx, arr, idx, val):
    _check(arr)
    sig = types.void(arr, types.intp, types.int64)

    def codegen(context, builder, sig, args):
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], idx)
        builder.store_atomic(v, ptr, "release", 8)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def cas(typingctx, arr, idx, expected, new):
    _check(arr)
    sig = types.int64(arr, types.intp, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], idx)
        res = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(res, 0)
    return sig, codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def cpu_relax(typingctx):
    sig = types.void()

    def codegen(context, builder, sig, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def sched_yield(typingctx):
    """libc's sched_yield, declared as an external symbol (resolved in this process when the
    code is loaded, so functions calling it can be cached, unlike a ctypes pointer)."""
    sig = types.int32()

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "sched_yield")
        return builder.call(fn, [])
    return sig, codegen



@intrinsic
def usleep(typingctx, us):
    """libc's usleep (declared as sched_yield is): the calling thread sleeps `us` microseconds,
    or longer (the kernel's timer slack); no GIL is involved."""
    sig = types.int32(types.int64)

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "usleep")
        return builder.call(fn, [builder.trunc(args[0], ir.IntType(32))])
    return sig, codegen
