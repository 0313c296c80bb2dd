"""The timing harness of calibration: best of repetitions, repetitions sized to a time budget,
tables measured in passes. On a shared machine the best run is the one least disturbed by
others; a disturbance lasting seconds spoils one pass of a table, not the point (the
median of passes drops it)."""
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
        self.repeats = 3 if quick else 7
        self.budget_s = 0.004 if quick else 0.05   # per timed run
        self.python_calls = 1000 if quick else 20000
        # Kernel-routine and elementwise tables: passes over the whole table, each point the
        # best of round_repeats runs per pass (in_rounds).
        self.rounds, self.round_repeats = (1, 3) if quick else (3, 3)

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
        """Seconds per call of a cheap fn() from a Python loop of self.python_calls calls."""
        n = self.python_calls

        def loop():
            for _ in range(n):
                fn()
        return best(loop, self.repeats) / n
