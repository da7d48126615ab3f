"""parallel_newton (DEER): convergence to the sequential loop, fallback, the cost model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.backends.torch import GraphModule
from ember.ir import DType, Graph
from ember.passes.recurrence.cost import Machine, choose
from tests.passes.recurrence.graphs import tanh_rnn

F32 = DType.f32


def _with_iters(g: Graph) -> Graph:
    g = g.clone()
    op = next(o for o in g.ops if o.kind == "ctrl.newton_scan")
    g.set_outputs(*g.outputs, op.results[-1])
    return g


@pytest.mark.parametrize("jacobian", ["full", "diag"])
def test_contractive_tanh_rnn_converges(jacobian):
    steps = 48
    g, ins = tanh_rnn(steps, 2, 6, seed=1)
    want = ember.interpret(g, *ins)
    out = ember.Pipeline.parse(f"parallel_newton{{force=true,jacobian={jacobian},tol=1e-6,"
                               f"max_iters=40}}").run(g.clone())
    assert "ctrl.scan" not in out.op_counts()
    *got, iters = ember.interpret(_with_iters(out), *ins)
    assert 1 <= int(iters) < (12 if jacobian == "full" else 40)  # far fewer than T=48
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # the torch backend runs the same iteration
    tg = GraphModule(out)
    with torch.no_grad():
        t_out = tg(*[torch.from_numpy(a) for a in ins])
    for a, b in zip(t_out, want):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-5)


def test_digits_gru_newton_matches_sequential():
    z = ember.zoo.load("digits_gru")
    g = ember.trace(z.module, z.example_inputs)
    x = z.example_inputs[0].numpy()
    want = ember.interpret(g, x)
    pipe = ember.Pipeline.parse("recognize_rnn,dce,parallel_newton{force=true,tol=1e-6}")
    out = pipe.run(g.clone(), check=True, sample_inputs=[(x,)])
    note = pipe.report.passes[-1].notes["loops"][0]
    assert note["strategy"] == "parallel_newton" and note["rows"] == 1 and note["state"] == 32
    got, iters = ember.interpret(_with_iters(out), x)
    assert 1 <= int(iters) <= 8  # exact Newton: at most T=8 updates
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_not_converged_falls_back_to_sequential():
    g, ins = tanh_rnn(16, 2, 4, seed=2)
    want = ember.interpret(g, *ins)
    out = ember.Pipeline.parse("parallel_newton{force=true,max_iters=1,tol=1e-12}").run(g.clone())
    *got, iters = ember.interpret(_with_iters(out), *ins)
    assert int(iters) == -1
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)  # the sequential body itself


def test_cost_model_keeps_short_loops_sequential_and_notes_why():
    z = ember.zoo.load("digits_gru")
    g = ember.trace(z.module, z.example_inputs)
    pipe = ember.Pipeline.parse("recognize_rnn,dce,parallel_newton")
    out = pipe.run(g)
    note = pipe.report.passes[-1].notes["loops"][0]
    assert note["strategy"] == "sequential" and "T=8" in note["reason"]
    assert out.op_counts()["ctrl.scan"] == 1
    assert choose("nonlinear", 8, 32, cores=2, batch=4).strategy == "sequential"
    # many cores, a long sequence and a tiny state: Newton's T-parallel work pays off
    assert choose("nonlinear", 1 << 20, 2, batch=1, machine=Machine(cores=4096, iter_overhead_s=1e-5)).strategy == "parallel_newton"
    assert choose("diag", 4096, 64, cores=2).strategy == "parallel_scan"
