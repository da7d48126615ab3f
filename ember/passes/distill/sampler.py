"""`ember.Sampler`: a flow sampler loop that traces to ONE `ctrl.scan` whose schedule is data.

Why a table: every 1-NFE solver this family knows (Euler, DDIM, DPM-Solver++(2M)) is, per step,
a linear update of the state `x`, the velocity `v = model(x, t0)` and the previous data
prediction `d`:

    x' = A*x + B*v + C*d          d' = x + s0*v   (s0 = 1 - t0: the data prediction x0_hat)

so the solver lives entirely in a per-step coefficient table, scanned as the loop's `xs`. A
K-step rewrite (and a per-step solver choice, S^3-style) only replaces that table; the body - the
velocity network - stays as traced. Heun (2 NFE per step) has its own body:
`x' = A*x + B*(v(x, t0) + v(x + h v0, t1)) + C*d`.

Table row layout (TABLE_WIDTH columns): [t0, t1, A, B, C, s0, solver code]. The code column is
bookkeeping the body never reads; it lets `recognize` read the per-step solver back from the IR.

Conventions (rectified flow, as in `ember.zoo.digits_flow`): t = 0 is noise, t = 1 is data,
x_t = (1 - t) x0 + t x1, and `model(x, t)` predicts v = x1 - x0 with t an f32[batch, 1] column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ...errors import InputError

SOLVERS = ("euler", "ddim", "dpmpp_2m", "heun")
SOLVER_CODES = {name: float(i) for i, name in enumerate(SOLVERS)}
LINEAR_SOLVERS = ("euler", "ddim", "dpmpp_2m")  # one network call per step, shared body
TABLE_WIDTH = 7
T0, T1, COL_A, COL_B, COL_C, COL_S0, COL_CODE = range(TABLE_WIDTH)


def uniform_times(steps: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, steps + 1, dtype=np.float64)


def check_times(times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Validate a schedule: K+1 strictly increasing times from 0 (noise) to 1 (data)."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.size < 2:
        raise InputError(f"a schedule needs at least 2 times (1 step), got {t.size}")
    if not np.all(np.diff(t) > 0):
        raise InputError(f"schedule times must increase strictly, got {np.round(t, 4).tolist()}")
    if t[0] < 0.0 or t[-1] > 1.0:
        raise InputError(f"schedule times must lie in [0, 1] (0 = noise, 1 = data), got "
                         f"[{t[0]:.4g}, {t[-1]:.4g}]")
    return t


def _step_coefficients(solver: str, t_prev: float | None, t0: float, t1: float):
    """(A, B, C) of x' = A x + B v + C d for one step of `solver` from t0 to t1."""
    h = t1 - t0
    if solver in ("euler",):
        return 1.0, h, 0.0
    if solver == "heun":
        return 1.0, h / 2.0, 0.0
    s0, s1 = 1.0 - t0, 1.0 - t1
    if solver == "ddim":  # x' = t1 x0_hat + s1 eps_hat with x0_hat = x + s0 v, eps_hat = x - t0 v
        return t1 + s1, t1 * s0 - s1 * t0, 0.0
    if solver != "dpmpp_2m":
        raise InputError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    # DPM-Solver++ in data prediction for alpha_t = t, sigma_t = 1 - t, lambda = log(t / (1-t)).
    e = (s1 * t0) / (t1 * s0)  # exp(-h_lambda); 0 when leaving t0 = 0 or landing on t1 = 1
    a_lin, b_lin = s1 / s0, t1 * (1.0 - e)
    if t_prev is None or t_prev <= 0.0 or s1 <= 0.0:  # first order (no finite previous step)
        return a_lin + b_lin, b_lin * s0, 0.0
    lam = lambda t: np.log(t / (1.0 - t))  # noqa: E731
    k = (lam(t1) - lam(t0)) / (2.0 * (lam(t0) - lam(t_prev)))  # 1 / (2 r)
    return a_lin + b_lin * (1.0 + k), b_lin * (1.0 + k) * s0, -b_lin * k


def solver_table(times: Sequence[float] | np.ndarray, solvers: str | Sequence[str]) -> np.ndarray:
    """The f32[K, TABLE_WIDTH] scanned table for schedule `times` (K+1) and per-step solvers."""
    t = check_times(times)
    k = t.size - 1
    names = [solvers] * k if isinstance(solvers, str) else list(solvers)
    if len(names) != k:
        raise InputError(f"{len(names)} per-step solvers for a {k}-step schedule")
    if "heun" in names and set(names) != {"heun"}:
        raise InputError("heun (2 calls per step) cannot be mixed with 1-call solvers "
                         f"{sorted(set(names) - {'heun'})} in one loop")
    rows = []
    for i, name in enumerate(names):
        if name not in SOLVER_CODES:
            raise InputError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
        t_prev = t[i - 1] if i > 0 else None
        a, b, c = _step_coefficients(name, t_prev, t[i], t[i + 1])
        rows.append([t[i], t[i + 1], a, b, c, 1.0 - t[i], SOLVER_CODES[name]])
    return np.asarray(rows, dtype=np.float32)


def table_times(table: np.ndarray) -> np.ndarray:
    table = np.asarray(table, dtype=np.float64)
    return np.concatenate([table[:, T0], table[-1:, T1]])


def table_solvers(table: np.ndarray) -> list[str]:
    codes = np.asarray(table)[:, COL_CODE]
    out = []
    for c in codes:
        i = int(round(float(c)))
        if abs(float(c) - i) > 1e-6 or not 0 <= i < len(SOLVERS):
            raise InputError(f"sampler table has solver code {float(c)}, not one of "
                             f"{list(SOLVER_CODES.values())}")
        out.append(SOLVERS[i])
    return out


def probe_row(t: float) -> np.ndarray:
    """A table row whose step returns v(x, t) itself (A=0, B=1, C=0): a velocity probe."""
    return np.array([[t, t, 0.0, 1.0, 0.0, 1.0 - t, SOLVER_CODES["euler"]]], np.float32)


def nfe(solvers: Sequence[str]) -> int:
    return sum(2 if s == "heun" else 1 for s in solvers)


class Sampler(nn.Module):
    """noise f32[batch, ...] -> samples: `steps` solver steps of `model` from t=0 to t=1.

    `steps` defaults to 64 (or the schedule's length); `schedule` is "uniform" or K+1 increasing times in [0, 1]; `solver` is one of SOLVERS (or a
    per-step list of 1-call solvers). Traces (`ember.trace`) to a single `ctrl.scan` whose
    scanned input is the solver table (a const), so step passes rewrite data, not code.
    """

    def __init__(self, model: nn.Module, steps: int | None = None,
                 schedule: str | Sequence[float] | np.ndarray | torch.Tensor = "uniform",
                 solver: str | Sequence[str] = "euler") -> None:
        super().__init__()
        self.model = model
        if isinstance(schedule, str):
            if schedule != "uniform":
                raise InputError(f"schedule {schedule!r}: give 'uniform' or a list of times")
            steps = 64 if steps is None else int(steps)
            if steps < 1:
                raise InputError(f"steps must be >= 1, got {steps}")
            times = uniform_times(steps)
        else:
            sched = schedule.detach().cpu().numpy() if isinstance(schedule, torch.Tensor) \
                else schedule
            times = check_times(sched)
            if steps is not None and times.size - 1 != steps:
                raise InputError(f"steps={steps} but the schedule has {times.size - 1} steps; "
                                 "give steps=len(schedule)-1")
        table = solver_table(times, solver)
        self.solvers = table_solvers(table)
        self.register_buffer("sampler_table", torch.from_numpy(table))

    @property
    def steps(self) -> int:
        return int(self.sampler_table.shape[0])

    def _velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tcol = t.reshape(1, 1).expand(x.shape[0], 1)
        return self.model(x, tcol)

    def _linear_step(self, carry, row):
        x, d = carry
        v = self._velocity(x, row[T0])
        x_next = row[COL_A] * x + row[COL_B] * v + row[COL_C] * d
        return (x_next, x + row[COL_S0] * v), []

    def _heun_step(self, carry, row):
        x, d = carry
        v0 = self._velocity(x, row[T0])
        v1 = self._velocity(x + (row[T1] - row[T0]) * v0, row[T1])
        x_next = row[COL_A] * x + row[COL_B] * (v0 + v1) + row[COL_C] * d
        return (x_next, x + row[COL_S0] * v0), []

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        from torch._higher_order_ops.scan import scan

        step = self._heun_step if self.solvers[0] == "heun" else self._linear_step
        (x, _), _ = scan(step, (noise, torch.zeros_like(noise)), self.sampler_table)
        return x
