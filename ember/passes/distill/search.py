"""`steps{k=4,method=search}`: a training-free K-step rewrite of an N-step sampler loop.

AutoDiffusion/S^3 style: the teacher's own N-step outputs on calibration noises are the target,
and a coordinate descent over (a) the K-1 interior timesteps on a grid and (b) the per-step
solver (Euler or DPM-Solver++(2M), both one network call per step) minimizes the mean squared
distance to them. The search starts from the uniform K-step schedule and only accepts strict
improvements, so it never returns something worse than uniform on the calibration set.
`method=uniform` is the naive rewrite (the baseline). k equal to the loop's steps is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ...errors import InputError
from ...ir.graph import Graph
from ..pipeline import Pass, PassContext, register_pass
from ._common import calibration_noise, run_loop
from .recognize import SamplerLoop, recognize, set_table
from .sampler import LINEAR_SOLVERS, solver_table, uniform_times


@dataclass
class SearchResult:
    times: np.ndarray
    solvers: list[str]
    error: float
    uniform_error: float
    evaluations: int


def schedule_error(loop: SamplerLoop, noise: np.ndarray, target: np.ndarray,
                   table: np.ndarray) -> float:
    out = run_loop(loop, noise, table)
    err = float(np.mean((out - target) ** 2))
    return err if np.isfinite(err) else float("inf")


def search_schedule(loop: SamplerLoop, k: int, noise: np.ndarray, target: np.ndarray,
                    solvers: tuple[str, ...] = ("euler", "dpmpp_2m"), grid: int = 64,
                    rounds: int = 2, progress=None) -> SearchResult:
    """Coordinate descent from uniform over interior times (grid 1/grid) and per-step solvers."""
    heun = loop.solvers[0] == "heun"
    base = ["heun"] * k if heun else [loop.solvers[0] if loop.solvers[0] in solvers
                                       else solvers[0]] * k
    options = ("heun",) if heun else tuple(solvers)
    times, names = uniform_times(k), list(base)
    evals = 0

    def cost(t, s) -> float:
        nonlocal evals
        evals += 1
        return schedule_error(loop, noise, target, solver_table(t, s))

    uniform_error = best = cost(times, names)
    grid_pts = np.arange(1, grid) / grid
    total = rounds * (max(k - 1, 0) + k)
    done = 0
    for _ in range(rounds):
        improved = False
        for j in range(1, k):  # move one interior time within its neighbours
            lo, hi = times[j - 1], times[j + 1]
            for g in grid_pts[(grid_pts > lo) & (grid_pts < hi)]:
                cand = times.copy()
                cand[j] = g
                c = cost(cand, names)
                if c < best:
                    best, times, improved = c, cand, True
            done += 1
            if progress:
                progress(done, total)
        for i in range(k):  # per-step solver choice
            for s in options:
                if s == names[i]:
                    continue
                cand_names = names[:i] + [s] + names[i + 1:]
                c = cost(times, cand_names)
                if c < best:
                    best, names, improved = c, cand_names, True
            done += 1
            if progress:
                progress(done, total)
        if not improved:
            break
    return SearchResult(times, names, best, uniform_error, evals)


@register_pass("steps")
@dataclass(frozen=True)
class ReduceSteps(Pass):
    """Rewrite an N-step sampler loop to k steps without training (searched or uniform schedule)."""

    k: int = 4
    method: Literal["search", "uniform"] = "search"
    solvers: tuple[str, ...] = ("euler", "dpmpp_2m")
    calib: int = 256
    grid: int = 64
    rounds: int = 2
    # Fewer steps change the samples by design; bound: max|K-step - N-step| <= 1 (data in [-1, 1]).
    tolerance: ClassVar[float | None] = 1.0

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        loop = recognize(graph)
        n = loop.steps
        if self.k < 1 or self.k > n:
            raise InputError(f"steps{{k={self.k}}}: k must be in [1, {n}] for this {n}-step "
                             "sampler")
        bad = [s for s in self.solvers if s not in LINEAR_SOLVERS]
        if bad:
            raise InputError(f"steps: solvers {bad} are not one-call solvers "
                             f"{list(LINEAR_SOLVERS)}")
        if self.k == n:  # identity: the teacher's own schedule is the best k=N schedule
            ctx.note(teacher_steps=n, k=n, identity=True, **loop.facts())
            return graph
        if self.method == "uniform":
            loop = set_table(loop, solver_table(uniform_times(self.k), loop.solvers[0]))
            ctx.note(teacher_steps=n, **loop.facts())
            return graph
        noise = calibration_noise(graph, ctx.calibration, self.calib, ctx.seed)
        target = run_loop(loop, noise)
        res = search_schedule(loop, self.k, noise, target, tuple(self.solvers), self.grid,
                              self.rounds, ctx.progress)
        loop = set_table(loop, solver_table(res.times, res.solvers))
        ctx.note(teacher_steps=n, calib=len(noise), mse_uniform=res.uniform_error,
                 mse_search=res.error, evaluations=res.evaluations, **loop.facts())
        return graph
