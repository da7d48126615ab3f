"""Rerolling hand-written unrolled loops (torch.export unrolls Python `for`) into ctrl.scan."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import ember
from ember.passes.recurrence.reroll import reroll_once


class StateOnly(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.w = steps, nn.Parameter(torch.randn(6) * 0.3)

    def forward(self, x):  # x [B, T, 6] -> final state [B, 6]
        h = torch.zeros_like(x[:, 0])
        for t in range(self.steps):
            h = torch.tanh(self.w * h + x[:, t])
        return h


class Stacked(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.lin = steps, nn.Linear(5, 5)

    def forward(self, x):  # x [T, B, 5] -> ys [B, T, 5]
        h, ys = x[0] * 0, []
        for t in range(self.steps):
            h = torch.sigmoid(self.lin(h)) + x[t]
            ys.append(torch.relu(h))
        return torch.stack(ys, dim=1)


class TwoStates(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def forward(self, x):  # h' = 0.5 h + c, c' = 0.9 c + x_t  (c feeds h, not back)
        h, c = x[0] * 0, x[0] * 0
        for t in range(self.steps):
            h = 0.5 * h + c
            c = 0.9 * c + x[t]
        return h + c


def _check(module, x, min_steps=4):
    g = ember.trace(module, (x,))
    want = ember.interpret(g, x.numpy())
    g2 = ember.Pipeline.parse(f"reroll{{min_steps={min_steps}}},dce").run(g.clone())
    g2.verify()
    scans = [op for op in g2.ops if op.kind == "ctrl.scan"]
    got = ember.interpret(g2, x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return g, g2, scans


def test_state_update_only():
    torch.manual_seed(0)
    g, g2, scans = _check(StateOnly(8), torch.randn(3, 8, 6))
    assert len(scans) == 1 and scans[0].results[0].type.shape == (3, 6)
    assert len(g2.ops) < len(g.ops) / 2


def test_stacked_outputs_become_ys():
    torch.manual_seed(1)
    g, g2, scans = _check(Stacked(10), torch.randn(10, 2, 5))
    assert len(scans) == 1
    assert scans[0].inputs[1].type.shape[0] >= 8  # scanned x: the steps (1-2 stay unrolled)
    assert not any(op.kind == "unsqueeze" for op in g2.ops if op.block is g2) or \
        sum(op.kind == "unsqueeze" for op in g2.ops) <= 2


def test_two_carried_states():
    torch.manual_seed(2)
    g, g2, scans = _check(TwoStates(12), torch.randn(12, 4))
    assert len(scans) == 1 and scans[0].attrs["num_carry"] == 2


def test_sixty_four_step_loop():
    torch.manual_seed(3)
    g, g2, scans = _check(StateOnly(64), torch.randn(2, 64, 6))
    assert len(scans) == 1 and scans[0].inputs[1].type.shape[0] >= 63
    assert len(g2.ops) < 30


def test_too_short_loop_is_left_alone():
    torch.manual_seed(4)
    g = ember.trace(StateOnly(3), (torch.randn(2, 3, 6),))
    assert reroll_once(g.clone(), min_steps=4) == 0


def test_zoo_seq_linear_rnn_reroll_and_parallel_scan():
    z = ember.zoo.load("seq_linear_rnn")
    g = ember.trace(z.module, z.example_inputs)
    x = [np.asarray(a) for a in z.example_inputs]
    want = ember.interpret(g, *x)
    g2 = ember.Pipeline.parse("reroll,parallel_scan,dce").run(g, check=True, sample_inputs=[x])
    assert any(op.kind == "ctrl.linear_scan" for op in g2.ops)
    np.testing.assert_allclose(ember.interpret(g2, *x), want, rtol=1e-5, atol=1e-5)
