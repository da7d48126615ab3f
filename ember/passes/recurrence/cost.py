"""Which evaluation strategy a loop gets, and the reason the report shows.

The model is deliberately small: a diagonal linear recurrence always leaves the generic loop,
because ctrl.linear_scan keeps the state in registers and is exact (its kernel chooses
chunking: state-parallel when the state alone feeds the cores, time chunks otherwise). A dense
linear recurrence would need d x d matrix products per combine (d times the sequential work),
so it stays sequential unless the state is tiny. Nonlinear recurrences stay sequential here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    strategy: str  # "sequential" | "parallel_scan"
    reason: str


def choose(kind: str, steps: int | str, state: int, cores: int | None = None) -> Choice:
    cores = cores or os.cpu_count() or 1
    if not isinstance(steps, int):
        return Choice("sequential", f"symbolic length {steps!r}: the scan kernel needs static T")
    if kind == "diag":
        if steps < 2:
            return Choice("sequential", f"T={steps}: nothing to parallelize")
        chunked = state < 64 * cores
        how = (f"time chunks across {cores} cores (state {state} < {64 * cores} lanes)" if chunked
               else f"state blocks across {cores} cores, no extra work")
        return Choice("parallel_scan", f"diagonal affine, T={steps}, state {state}: {how}")
    if kind == "dense":
        return Choice("sequential", f"dense affine state map (d={state}): a parallel combine "
                      f"costs d^3 per step vs d^2 sequentially")
    if kind == "nonlinear":
        return Choice("sequential", "nonlinear in the state (parallel_newton not applied)")
    return Choice("sequential", f"state-free carry ({kind})")
