"""A helper thread that waits for the B=1 team's work in JIT code, without the GIL.

guard.py's helper is a Python thread asleep on a threading.Event: posting to it wakes a
sleeping thread that then needs the GIL before it can call any kernel, 45-60 µs on the test VM
(the host profile's `helper_wake_s`). That start decided where the two-thread team (team.py)
pays: from 8M recurrent MACs per layer, H >= 145 at T = 100.

The resident helper does not go back to Python between calls. Its thread runs `_serve`, an
@njit(nogil=True) loop that spins on a mailbox (an int64 array) for `config.resident_spin`
pauses after its last job (about 0.5 ms here), then dozes in usleep(`resident_doze_us`) between
looks for `resident_doze_s`, and only then returns to Python and sleeps on an Event. A caller
that finds it dozing asks it to spin (a word in the mailbox: no GIL) and runs serially. The caller's side of the team (`team_lead`, one JIT call) writes the helper's arguments
into the mailbox as addresses and shapes, posts the job with a release store, runs its own
half, and before returning either retracts the job (the helper never took it) or waits until
the helper has marked it done: no array of the call is freed while the helper may read it.
The helper rebuilds the arrays with numba.carray and runs team.team_layer as thread 1, so
the team's own claim, spin, yield and abort protocol (team.py) is unchanged: a helper that is
not scheduled costs the caller a bounded spin, then the layer runs serially.

The loop gives the second core back at once when guard.py's helper is posted work (run_two,
the pipelined projection): two helpers spinning and running on one core had made the team
wait a time slice at its barriers. `stop()` (at exit) makes the loop return; a forked child
starts a helper of its own on first use.
"""
from __future__ import annotations

import atexit
import os
import threading

import numpy as np
from numba import carray, types
from numba.core.extending import intrinsic

from . import guard
from .atomics import cas, cpu_relax, load_acquire, sched_yield, store_release, usleep
from .guard import njit_cached
from .team import team_layer

# mailbox slots (int64); the words each side writes sit on their own 64-byte lines
STATE, AWAKE, STOP, RESULT, NAP, WANT = 0, 8, 16, 24, 32, 40
EMPTY, POSTED, TAKEN, DONE = 0, 1, 2, 3
ASLEEP, SPINNING, DOZING = 0, 1, 2
A = 48          # the job's description from here on
# arrays, each (address, dim0, dim1, dim2)
X2, WIH, BIAS, XP, WPART, PEEP, HBUF, C, Y, SYNC = (A + 4 * i for i in range(10))
# scalars
S = A + 40
DTYPE, G_OFF, HAS_PEEP, K0, K1, NSTEPS, REVERSE, Y_OFF, CLAIM_SPINS, SPIN_LIMIT, MAX_YIELDS = range(S, S + 11)
MAILBOX_LEN = S + 16


@intrinsic
def _addr(typingctx, arr):
    """The address of arr's data, as an int64."""
    if not isinstance(arr, types.Array):
        raise TypeError(f"resident._addr: expected an array, got {arr}")

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, context.get_value_type(types.int64))
    return types.int64(arr), codegen


@intrinsic
def _ptr(typingctx, addr, like):
    """The int64 address `addr` as a pointer to elements of the scalar type of `like`."""
    if not isinstance(like, (types.Float, types.Integer)):
        raise TypeError(f"resident._ptr: expected a scalar to take the element type from, got {like}")

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(like)))
    return types.CPointer(like)(types.int64, like), codegen


@njit_cached(nogil=True)
def _put(m, slot, arr):
    """An array's address and shape (up to 3 dims) into the mailbox."""
    m[slot] = _addr(arr)
    for d in range(3):
        m[slot + 1 + d] = arr.shape[d] if d < arr.ndim else 1


@njit_cached(nogil=True)
def _run(m, zero):
    """Thread 1's team_layer on the arrays the mailbox describes, of zero's dtype (compiled once
    for float32 and once for float64)."""
    def a(slot, shape):
        return carray(_ptr(m[slot], zero), shape)
    return team_layer(
        a(X2, (m[X2 + 1], m[X2 + 2])), a(WIH, m[WIH + 1]), a(BIAS, m[BIAS + 1]),
        a(XP, (m[XP + 1], m[XP + 2], m[XP + 3])), m[G_OFF], a(WPART, m[WPART + 1]),
        a(PEEP, (m[PEEP + 1], m[PEEP + 2])), m[HAS_PEEP] != 0, m[K0], m[K1], m[NSTEPS], m[REVERSE] != 0,
        a(HBUF, (m[HBUF + 1], m[HBUF + 2])), a(C, m[C + 1]),
        a(Y, (m[Y + 1], m[Y + 2], m[Y + 3])), m[Y_OFF], carray(_ptr(m[SYNC], m[0]), m[SYNC + 1]),
        1, m[CLAIM_SPINS], m[SPIN_LIMIT], m[MAX_YIELDS])


@njit_cached(nogil=True)
def _serve(m, spin, doze_us, dozes):
    """The helper's loop, all in JIT code: take every posted job (CAS POSTED -> TAKEN), run it,
    mark it DONE. Between jobs it spins (AWAKE = SPINNING) for `spin` pauses, then dozes
    (AWAKE = DOZING: usleep(doze_us) between looks, a few µs of CPU per look) until a caller
    asks it to spin again (WANT), for at most `dozes` looks; then it returns (AWAKE = ASLEEP) and
    its thread sleeps on an Event. STOP makes it return at once; NAP makes it doze at once
    (guard.py's helper needs the second core)."""
    store_release(m, AWAKE, SPINNING)
    idle = 0
    looks = 0
    while True:
        if load_acquire(m, STOP) != 0:
            break
        if load_acquire(m, STATE) == POSTED and cas(m, STATE, POSTED, TAKEN) == POSTED:
            store_release(m, AWAKE, SPINNING)
            r = _run(m, np.float32(0.0)) if m[DTYPE] == 4 else _run(m, 0.0)
            store_release(m, RESULT, r)
            store_release(m, STATE, DONE)
            idle = 0
            continue
        if load_acquire(m, NAP) != 0:
            store_release(m, NAP, 0)
            idle = spin
        if idle < spin:
            cpu_relax()
            idle += 1
            continue
        if load_acquire(m, AWAKE) == SPINNING:
            store_release(m, AWAKE, DOZING)
            looks = 0
        if load_acquire(m, WANT) != 0:
            store_release(m, WANT, 0)
            store_release(m, AWAKE, SPINNING)
            idle = 0
        elif looks < dozes:
            usleep(doze_us)
            looks += 1
        else:
            break
    store_release(m, AWAKE, ASLEEP)
    # a job posted while this thread was deciding to sleep: its poster saw it awake and did not
    # set the Event; the thread's Python loop looks at STATE once more before it waits
    return 0


@njit_cached(fastmath={"contract"}, error_model="numpy", nogil=True)
def team_lead(m, x2, xp, has_peep, n_steps, reverse, hbuf, c, y, y_off, sync, claim_spins, spin_limit,
              max_yields, wih0, bias0, wpart0, pp0, k0, k1, wih1, bias1, wpart1, pp1, k2, k3):
    """The caller's side of a team whose helper is the resident thread: post thread 1's half
    (units k2:k3) in the mailbox, run thread 0's (units k0:k1, team.team_layer), then retract the
    job if the helper never took it, or wait until it is done. Returns team_layer's result."""
    _put(m, X2, x2)
    _put(m, WIH, wih1)
    _put(m, BIAS, bias1)
    _put(m, XP, xp)
    _put(m, WPART, wpart1)
    _put(m, PEEP, pp1)
    _put(m, HBUF, hbuf)
    _put(m, C, c)
    _put(m, Y, y)
    _put(m, SYNC, sync)
    m[DTYPE] = x2.itemsize
    m[G_OFF] = 0
    m[HAS_PEEP] = 1 if has_peep else 0
    m[K0] = k2
    m[K1] = k3
    m[NSTEPS] = n_steps
    m[REVERSE] = 1 if reverse else 0
    m[Y_OFF] = y_off
    m[CLAIM_SPINS] = claim_spins
    m[SPIN_LIMIT] = spin_limit
    m[MAX_YIELDS] = max_yields
    store_release(m, STATE, POSTED)
    r = team_layer(x2, wih0, bias0, xp, 0, wpart0, pp0, has_peep, k0, k1, n_steps, reverse, hbuf, c, y,
                   y_off, sync, 0, claim_spins, spin_limit, max_yields)
    if cas(m, STATE, POSTED, EMPTY) != POSTED:     # taken: wait until the helper is done with it
        spins = 0
        while load_acquire(m, STATE) != DONE:
            if spins < spin_limit:
                spins += 1
                cpu_relax()
            else:
                sched_yield()
        store_release(m, STATE, EMPTY)
    return r


class _Resident:
    def __init__(self, spin: int, doze_us: int, dozes: int):
        self.mail = np.zeros(MAILBOX_LEN, np.int64)
        self.args = (spin, doze_us, dozes)
        self.wake = threading.Event()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._loop, name="edgelstm-resident", daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            if self.mail[STATE] != POSTED:
                self.wake.wait()
                self.wake.clear()
            if self.mail[STOP]:
                return
            _serve(self.mail, *self.args)

    def awake(self) -> bool:
        return self.mail[AWAKE] == SPINNING

    def nudge(self) -> None:
        """Make the loop spin for the next calls: a word it reads while dozing, or the Event
        when it sleeps in Python (that wake-up needs the GIL: tens of µs to milliseconds)."""
        state = self.mail[AWAKE]
        if state == DOZING:
            self.mail[WANT] = 1
        elif state == ASLEEP:
            self.wake.set()

    def nap(self) -> None:
        """Stop spinning now (guard.py's helper needs the second core); a later nudge wakes it."""
        if self.mail[AWAKE] == SPINNING:
            self.mail[NAP] = 1

    def stop(self) -> None:
        self.mail[STOP] = 1
        self.wake.set()


_resident = None
_lock = threading.Lock()


def get(cfg):
    """The process's resident helper (started on first use, with cfg's resident_spin,
    resident_doze_us and resident_doze_s), or None when cfg.resident_spin is 0, with fewer than
    two threads, or in a forked child whose parent's helper did not come along."""
    global _resident
    if cfg.resident_spin <= 0 or not guard.parallel_allowed():
        return None
    r = _resident
    if r is None or r.pid != os.getpid():
        with _lock:
            if _resident is None or _resident.pid != os.getpid():
                doze_us = max(1, int(cfg.resident_doze_us))
                _resident = _Resident(int(cfg.resident_spin), doze_us, int(cfg.resident_doze_s * 1e6 / doze_us))
            r = _resident
    return r


def awake() -> bool:
    """Whether the resident helper is spinning now (a team posted to it starts within µs)."""
    r = _resident
    return r is not None and r.pid == os.getpid() and r.awake()


def stop() -> None:
    """Make the helper's JIT loop return (at exit: it must not spin while the interpreter
    tears down the mailbox)."""
    r = _resident
    if r is not None and r.pid == os.getpid():
        r.stop()
        r.thread.join(timeout=1.0)


def _nap() -> None:
    r = _resident
    if r is not None and r.pid == os.getpid():
        r.nap()


atexit.register(stop)
guard.before_helper_post.append(_nap)
