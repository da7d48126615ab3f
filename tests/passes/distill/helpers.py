"""A tiny velocity net and traced samplers shared by the distill tests (fast: no zoo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ember
from ember.passes.distill import Sampler

DIM = 8


class TinyVelocity(nn.Module):
    """v(x, t) for t an f32[batch, 1] column; random weights, smooth in t."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(DIM + 2, 32)
        self.fc2 = nn.Linear(32, DIM)

    def forward(self, x, t):
        h = torch.cat([x, torch.sin(3.0 * t), torch.cos(3.0 * t)], dim=-1)
        return self.fc2(torch.tanh(self.fc1(h))) - 0.5 * x


def trace_sampler(steps: int, solver: str = "euler", schedule="uniform"):
    s = Sampler(TinyVelocity(), steps=steps, schedule=schedule, solver=solver).eval()
    g = ember.trace(s, (torch.randn(3, DIM),), dynamic_dims={"noise": {0: "batch"}})
    return s, g


@pytest.fixture(scope="session")
def sampler8():
    return trace_sampler(8)


def noise(n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
