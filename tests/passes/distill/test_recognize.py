from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.passes.distill import recognize
from ember.passes.distill.recognize import SamplerNotFoundError

from tests.passes.distill.helpers import DIM, TinyVelocity, noise


class UnrolledEuler(torch.nn.Module):
    """The zoo EulerSampler's shape: a Python loop export unrolls, t constant per step."""

    def __init__(self, steps):
        super().__init__()
        self.v, self.steps = TinyVelocity(), steps

    def forward(self, x):
        dt = 1.0 / self.steps
        for i in range(self.steps):
            t = torch.full((1, 1), i * dt).expand(x.shape[0], 1)
            x = x + dt * self.v(x, t)
        return x


def test_unrolled_euler_chain_is_rerolled_into_one_scan():
    m = UnrolledEuler(5).eval()
    g = ember.trace(m, (torch.randn(3, DIM),), dynamic_dims={0: {0: "batch"}})
    x = noise()
    before = ember.interpret(g, x)
    linears_before = g.op_counts().get("linear", 0)
    loop = recognize(g)
    g.verify()
    assert linears_before == 10 and loop.steps == 5 and loop.solvers == ["euler"] * 5
    assert sum(1 for op in g.walk() if op.kind == "linear") == 2  # one body copy
    np.testing.assert_allclose(loop.times, np.linspace(0, 1, 6), atol=1e-6)
    np.testing.assert_allclose(ember.interpret(g, x), before, atol=1e-5)
    assert g.meta["sampler"]["steps"] == 5


def test_zoo_digits_flow_sampler_is_rerolled():
    from ember.zoo.digits_flow import EulerSampler, VelocityNet

    m = EulerSampler(VelocityNet(), steps=3).eval()
    g = ember.trace(m, (torch.randn(2, 64),), dynamic_dims={"noise": {0: "batch"}})
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    before = ember.interpret(g, x)
    loop = recognize(g)
    assert loop.steps == 3
    np.testing.assert_allclose(ember.interpret(g, x), before, atol=1e-5)


def test_a_graph_without_a_sampler_is_refused():
    g = ember.trace(torch.nn.Linear(4, 4), (torch.randn(2, 4),))
    with pytest.raises(SamplerNotFoundError, match="ember.Sampler"):
        recognize(g)
