from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.errors import InputError
from ember.passes.distill import find_sampler, solver_table
from ember.passes.distill.sampler import Sampler, table_solvers, table_times

from tests.passes.distill.helpers import TinyVelocity, noise, trace_sampler


def _euler_loop(model, x, times):
    for t0, t1 in zip(times[:-1], times[1:]):
        tcol = torch.full((x.shape[0], 1), float(t0))
        x = x + float(t1 - t0) * model(x, tcol)
    return x


def test_sampler_matches_a_plain_euler_loop():
    model = TinyVelocity()
    times = np.array([0.0, 0.1, 0.5, 0.7, 1.0])
    s = Sampler(model, steps=4, schedule=times).eval()
    x = torch.from_numpy(noise())
    with torch.no_grad():
        np.testing.assert_allclose(s(x).numpy(), _euler_loop(model, x, times).numpy(), atol=1e-5)


def test_ddim_equals_euler_for_the_linear_path():
    # alpha_t = t, sigma_t = 1 - t: DDIM's x0/eps update is algebraically Euler's
    a, b = solver_table(np.linspace(0, 1, 6), "ddim"), solver_table(np.linspace(0, 1, 6), "euler")
    np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-6)


def test_dpmpp_2m_is_second_order():
    # on v(x, t) = -x (exact solution x(1) = x0 e^-1) 2M beats Euler at equal steps
    model = lambda x, t: -x  # noqa: E731
    x = torch.ones(1, 1)
    exact = np.exp(-1.0)
    errs = {}
    for solver in ("euler", "dpmpp_2m"):
        s = Sampler(model, steps=8, solver=solver)
        errs[solver] = abs(float(s(x)) - exact)
    assert errs["dpmpp_2m"] < errs["euler"] / 3


def test_traces_to_one_scan_over_a_table(sampler8):
    s, g = sampler8
    scans = [op for op in g.ops if op.kind == "ctrl.scan"]
    assert len(scans) == 1
    loop = find_sampler(g)
    assert loop is not None and loop.steps == 8 and loop.solvers == ["euler"] * 8
    np.testing.assert_allclose(loop.times, np.linspace(0, 1, 9), atol=1e-6)
    x = noise()
    with torch.no_grad():
        want = s(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ember.interpret(g, x), want, atol=1e-5)


@pytest.mark.parametrize("solver", ["heun"])  # dpmpp_2m shares the Euler body (table only)
def test_other_solvers_trace_and_are_recognized(solver):
    s, g = trace_sampler(4, solver)
    loop = find_sampler(g)
    assert loop.solvers == [solver] * 4 and loop.nfe == (8 if solver == "heun" else 4)
    x = noise()
    with torch.no_grad():
        np.testing.assert_allclose(ember.interpret(g, x), s(torch.from_numpy(x)).numpy(),
                                   atol=1e-5)


def test_table_round_trip_and_bad_schedules():
    t = solver_table([0.0, 0.3, 1.0], ["euler", "dpmpp_2m"])
    assert table_solvers(t) == ["euler", "dpmpp_2m"]
    np.testing.assert_allclose(table_times(t), [0.0, 0.3, 1.0], atol=1e-7)
    with pytest.raises(InputError, match="increase"):
        solver_table([0.0, 0.5, 0.4, 1.0], "euler")
    with pytest.raises(InputError, match="heun"):
        solver_table([0.0, 0.5, 1.0], ["heun", "euler"])
    with pytest.raises(InputError, match="unknown solver"):
        Sampler(TinyVelocity(), steps=2, solver="rk4")
