"""`seq_linear_rnn`: a diagonal linear recurrence (the core of S4/Mamba-style SSM layers).

h_t = a * h_{t-1} + u_t with a = sigmoid(param) per channel and h_{-1} = 0, written as a plain
Python loop. `torch.export` unrolls it into T identical mul/add steps, which is intended: it is
the pattern a scan-recognition pass must find and rewrite into a parallel scan (or a loop), and
`make_seq_linear_rnn` builds bare recurrence layers of any T and d to benchmark that pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ember.zoo.base import ZooModel, classifier_zoo_model

NAME = "seq_linear_rnn"
INPUT_NAMES = ("x",)
DYNAMIC_DIMS = {"x": {0: "batch"}}
TRAIN_CONFIG = {"epochs": 200, "batch_size": 64, "lr": 3e-2, "weight_decay": 0.0, "shift": False}

STEPS = 16
STEP_FEATURES = 4


class DiagonalLinearRecurrence(nn.Module):
    """u f32[batch, T, d] -> h f32[batch, T, d], h_t = sigmoid(a_logit) * h_{t-1} + u_t.

    The loop runs over `u.shape[1]`, so T must be static when exported (the loop is unrolled).
    `steps` records the T the layer was built for; it is informational only.
    """

    def __init__(self, d: int, steps: int | None = None) -> None:
        super().__init__()
        self.d = d
        self.steps = steps
        # Decays spread over (0.5, 0.95): a mix of short and long memories.
        a0 = torch.rand(d) * 0.45 + 0.5
        self.a_logit = nn.Parameter(torch.log(a0) - torch.log1p(-a0))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.a_logit)
        h = torch.zeros_like(u[:, 0])
        states = []
        for t in range(u.shape[1]):
            h = a * h + u[:, t]
            states.append(h)
        return torch.stack(states, dim=1)


class SeqLinearRNN(nn.Module):
    """x f32[batch, 16, 4] (the image as 16 steps of 4 pixels) -> logits f32[batch, 10].

    u = in_proj(x); h = recurrence(u); logits = fc(mean_t relu(h_t)).

    The ReLU is applied per step before the mean: relu(mean_t h_t) would leave the whole model
    one ReLU layer over 32 rank-1 (time x pixel) templates, which tops out near 80% accuracy.
    """

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.in_proj = nn.Linear(STEP_FEATURES, d)
        self.recurrence = DiagonalLinearRecurrence(d, STEPS)
        self.fc = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.recurrence(self.in_proj(x))
        return self.fc(torch.relu(h).mean(dim=1))


def make_seq_linear_rnn(T: int, d: int, seed: int = 0) -> DiagonalLinearRecurrence:
    """An untrained recurrence layer (u f32[batch, T, d] -> h) with seeded random weights.

    For benchmarks of the unrolled-loop pattern at sizes other than the zoo model's; the caller
    builds inputs as `torch.randn(batch, T, d)`. The global torch RNG is left untouched.
    """
    if T < 1 or d < 1:
        raise ValueError(f"make_seq_linear_rnn needs T >= 1 and d >= 1, got T={T}, d={d}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = DiagonalLinearRecurrence(d, T)
    return layer.eval()


def build() -> SeqLinearRNN:
    return SeqLinearRNN()


def preprocess(pixels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat [n, 64] pixels -> [n, 16 steps, 4 pixels] (each image row is two steps)."""
    return (np.ascontiguousarray(pixels, dtype=np.float32).reshape(-1, STEPS, STEP_FEATURES),)


def load() -> ZooModel:
    return classifier_zoo_model(
        name=NAME,
        module=build(),
        preprocess=preprocess,
        input_names=INPUT_NAMES,
        dynamic_dims=DYNAMIC_DIMS,
    )


def scan_graph(layer: DiagonalLinearRecurrence, T: int, d: int, permutes: bool = True):
    """`layer` as the ember graph `reroll` makes of its unrolled loop: a ctrl.scan whose body is
    h' = a*h + u_t over u's time dim, built directly (torch.export of a 65536-step loop would
    take minutes). With `permutes`, u is [1, T, d] and time moves to dim 0 and back around the
    scan (what the traced model does); without, u and the result are [T, 1, d] (the scan alone).
    Shared by benchmarks/recurrence.py and the backend tests."""
    from ember.ir import DType, Graph, TensorType

    f32 = DType.f32
    body = Graph("body")
    h = body.add_input("h", TensorType((1, d), f32))
    x = body.add_input("u_t", TensorType((1, d), f32))
    a = body.add_input("a", TensorType((d,), f32))
    new = body.add("add", body.add("mul", a, h), x)
    body.set_outputs(new, new)
    g = Graph("seq_linear_rnn")
    u = g.add_input("u", TensorType((1, T, d) if permutes else (T, 1, d), f32))
    av = g.add("sigmoid", g.const(layer.a_logit.detach().numpy(), name="a_logit"))
    xs = g.add("permute", u, dims=(1, 0, 2)) if permutes else u
    _, ys = g.add("ctrl.scan", g.const(np.zeros((1, d), np.float32)), xs, av, regions=[body],
                  num_carry=1, num_xs=1)
    g.set_outputs(g.add("permute", ys, dims=(1, 0, 2)) if permutes else ys)
    return g
