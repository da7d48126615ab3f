"""Which evaluation strategy a loop gets, and the reason the report shows.

An analytic model in seconds, constants calibrated with benchmarks/recurrence.py on the
development machine (2 cores, AVX2, under load; see `Machine`):

- diagonal linear recurrence: always ctrl.linear_scan (exact; its kernel keeps the state in
  registers and picks state-parallel or time-chunked work itself), unless T < 2.
- dense linear: sequential (a parallel combine costs d^3 per step against d^2).
- nonlinear (parallel_newton): sequential costs T * (step_overhead + w * flop_seq), w = the
  step's multiply-adds (batch * 3 * d^2 for a gated cell); one Newton iteration evaluates the
  body for all T at once plus its Jacobian (forward mode: d tangent columns, so (1 + d) * w per
  step), then a log2(T)-round scan (d^3 per step for the dense Jacobian, d for the diagonal),
  all spread over `cores` at flop_par, plus a per-iteration overhead. Newton wins only when K
  iterations of that beat T serial steps: long T, tiny state, many cores (a GPU) and a compiled
  Newton loop; on a 2-core CPU against the compiled TIR loop it never does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    strategy: str  # "sequential" | "parallel_scan" | "parallel_newton"
    reason: str


@dataclass(frozen=True)
class Machine:
    """Calibrated on the dev machine (benchmarks/recurrence.py --newton, digits_gru cell B=4,
    H=32, under load): TIR loop 0.29 ms for T=64 (~4.6 us/step); Newton (numpy/torch reference,
    the only implementation so far) ~10 ms per iteration at T=8..64, overhead-dominated;
    iterations 6 (T=8) and 22 (T=64) with the full Jacobian, T with the diagonal one."""

    cores: int = 2
    step_overhead_s: float = 2e-7   # per step of the sequential TIR loop (tiny bodies)
    flop_seq_s: float = 4e-10       # per multiply-add inside the sequential loop
    flop_par_s: float = 2.5e-10     # per multiply-add in batched all-steps kernels, per core
    iter_overhead_s: float = 8e-3   # per Newton iteration (op dispatch, convergence test)
    full_iters_per_sqrt_t: float = 2.75  # K ~ 2.75 sqrt(T) measured (6 at T=8, 22 at T=64)


def newton_iters(steps: int, jacobian: str, m: Machine) -> int:
    """Expected Newton updates: never more than T (after k updates k steps are exact)."""
    if jacobian == "diag":
        return steps  # quasi-DEER on gated cells: measured ~T (no parallel gain)
    return min(steps, math.ceil(m.full_iters_per_sqrt_t * math.sqrt(steps)))


def newton_cost(steps: int, state: int, batch: int, jacobian: str, m: Machine) -> float:
    w = batch * 3 * state * state
    scan = batch * (state ** 3 if jacobian == "full" else state)
    k = newton_iters(steps, jacobian, m)
    per_iter = (steps * (1 + state) * w + steps * max(1, math.ceil(math.log2(steps))) * scan)
    return k * (per_iter * m.flop_par_s / m.cores + m.iter_overhead_s)


def sequential_cost(steps: int, state: int, batch: int, m: Machine) -> float:
    return steps * (m.step_overhead_s + batch * 3 * state * state * m.flop_seq_s)


def choose(kind: str, steps: int | str, state: int, cores: int | None = None, batch: int = 1,
           jacobian: str = "full", machine: Machine | None = None) -> Choice:
    cores = cores or (machine.cores if machine else None) or os.cpu_count() or 1
    m = machine or Machine(cores=cores)
    if not isinstance(steps, int):
        return Choice("sequential", f"symbolic length {steps!r}: the scan kernel needs static T")
    if kind == "diag":
        if steps < 2:
            return Choice("sequential", f"T={steps}: nothing to parallelize")
        how = (f"time split across {cores} cores (each later thread warms up from the decay "
               f"window of a, then a bitwise fix-up)" if cores > 1
               else "one core: streaming-store scan")
        return Choice("parallel_scan", f"diagonal affine, T={steps}, state {state}: {how}")
    if kind == "dense":
        return Choice("sequential", f"dense affine state map (d={state}): a parallel combine "
                      f"costs d^3 per step vs d^2 sequentially")
    if kind == "nonlinear":
        seq = sequential_cost(steps, state, batch, m)
        new = newton_cost(steps, state, batch, jacobian, m)
        pick = "parallel_newton" if new < seq else "sequential"
        return Choice(pick, f"nonlinear, T={steps}, state {state}, batch {batch}, {m.cores} "
                      f"cores: sequential ~{seq * 1e3:.3g} ms vs Newton ({jacobian} Jacobian) "
                      f"~{new * 1e3:.3g} ms")
    return Choice("sequential", f"state-free carry ({kind})")
