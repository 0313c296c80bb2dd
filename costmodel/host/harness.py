"""The timing harness of calibration: best of repetitions, repetitions sized to a time budget,
tables measured in passes.

On a shared machine the best run is the one least disturbed by others, and a run has to be
short to be undisturbed at all: with more runnable threads than cores the scheduler hands
each a slice of a few milliseconds, so a 50 ms run always contains the neighbours' slices
(measured here at a load of 6-8 on 2 cores: figures 2-4x too slow), while a run of about a
millisecond often fits between them. So every timed run is about `budget_s` = 1 ms, and
the figure is the best of many. A disturbance lasting seconds spoils one pass of a table,
not the point (the median of passes drops it)."""
from __future__ import annotations

import math
import statistics
import time


def best(fn, repeats: int) -> float:
    """The shortest of `repeats` runs of fn(), in seconds."""
    out = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def reps_for(seconds_each: float, target_s: float) -> int:
    return max(1, int(target_s / max(seconds_each, 1e-9)))


class Harness:
    """Repetitions and budgets for a quick or a full calibration."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.repeats = 7 if quick else 21
        self.budget_s = 0.001            # per timed run: short enough to fit between time slices
        # Kernel-routine and elementwise tables: passes over the whole table, each point the
        # best of round_repeats runs per pass (in_rounds).
        self.rounds, self.round_repeats = (1, 7) if quick else (3, 9)

    def in_rounds(self, table):
        """`table()` (a list of tuples whose last item is the figure) measured in
        self.rounds passes, one after the other, each point's figure the median of its
        passes; each pass takes the best of fewer repetitions, so the whole costs about the same."""
        if self.rounds == 1:
            return table()
        saved, self.repeats = self.repeats, self.round_repeats
        try:
            passes = [table() for _ in range(self.rounds)]
        finally:
            self.repeats = saved
        return [row[:-1] + (statistics.median(p[i][-1] for p in passes),) for i, row in enumerate(passes[0])]

    def per_rep_s(self, f, budget_s=None) -> float:
        """Seconds per repetition of f(reps): reps sized so one run takes about the time
        budget, then the best of self.repeats runs."""
        one = best(lambda: f(1), 2)
        reps = reps_for(one, budget_s or self.budget_s)
        return best(lambda: f(reps), self.repeats) / reps

    def per_call_s(self, fn, min_reps: int = 3) -> float:
        """Seconds per call of fn() from a Python loop, the loop sized to the time budget."""
        one = best(fn, 2)
        if one >= self.budget_s:      # a call longer than the budget: the best of a few calls
            return min(one, best(fn, self.repeats - 1))
        reps = max(min_reps, reps_for(one, self.budget_s))

        def loop():
            for _ in range(reps):
                fn()
        return best(loop, self.repeats) / reps

    def per_python_call_s(self, fn) -> float:
        """Seconds per call of a cheap fn() from a Python loop sized to the time budget."""
        fn()
        t0 = time.perf_counter()
        for _ in range(100):
            fn()
        n = reps_for((time.perf_counter() - t0) / 100, self.budget_s)

        def loop():
            for _ in range(n):
                fn()
        return best(loop, self.repeats) / n
