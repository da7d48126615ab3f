"""Recurrences stay whole: nn.GRU/nn.LSTM -> one ctrl.gru/ctrl.lstm, torch scan -> one ctrl.scan
whose body is the converted combine function (isolated: closed-over weights are inputs)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch._higher_order_ops.scan import scan

import ember
from ember.ir.serialize import graph_weights


def _run(g, module, inputs):
    g.verify()
    got = ember.interpret(g, *[x.numpy() for x in inputs])
    with torch.no_grad():
        want = module(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got, want, strict=True):
        assert a.shape == tuple(b.shape)
        assert np.abs(a - b.numpy()).max() <= 1e-4


class Elman(nn.Module):
    """h_t = tanh(x_t W + proj(h_{t-1})); emits (h_T, stacked 2*h_t, stacked cumulative sums)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(4, 4) * 0.4)
        self.proj = nn.Linear(4, 4)

    def forward(self, xs, h0):
        def step(carry, x):
            h, total = carry
            h = torch.tanh(x @ self.w + self.proj(h))
            return (h, total + h), (h * 2, total.clone())

        (h, _), (ys, totals) = scan(step, (h0, torch.zeros_like(h0)), xs)
        return h, ys, totals


def test_scan_is_one_ctrl_scan():
    module = Elman()
    inputs = (torch.randn(6, 3, 4), torch.randn(3, 4))
    g = ember.trace(module, inputs)
    counts = g.op_counts()
    assert counts["ctrl.scan"] == 1
    assert counts.get("tanh") == 1  # the body is converted once, never unrolled
    op = next(op for op in g.ops if op.kind == "ctrl.scan")
    assert op.attrs["num_carry"] == 2 and op.attrs["num_xs"] == 1
    body = op.regions[0]
    # carries (h, total), one x slice, then the closed-over weights as invariant inputs
    assert [str(v.type) for v in body.inputs] == ["f32[3,4]", "f32[3,4]", "f32[3,4]", "f32[4,4]",
                                                  "f32[4,4]", "f32[4]"]
    assert {v.producer.attrs.get("name") for v in op.inputs[3:]} == {"w", "proj.weight",
                                                                     "proj.bias"}
    assert "linear" in {o.kind for o in body.ops}
    _run(g, module, inputs)
    text = str(g)
    assert str(ember.ir.parse(text, weights=graph_weights(g))) == text


def test_scan_dynamic_batch():
    module = Elman()
    g = ember.trace(module, (torch.randn(6, 3, 4), torch.randn(3, 4)),
                    {"xs": {1: "batch"}, "h0": {0: "batch"}})
    assert str(g.inputs[0].type) == "f32[6,batch,4]"
    _run(g, module, (torch.randn(6, 5, 4), torch.randn(5, 4)))


class Seq(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        torch.manual_seed(1)
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 3)

    def forward(self, x):
        y, state = self.rnn(x)
        return self.head(y), state[0] if isinstance(state, tuple) else state


def test_lstm_stacked_bidirectional_is_one_op():
    module = Seq(nn.LSTM(5, 6, num_layers=2, bidirectional=True)).eval()
    x = torch.randn(7, 3, 5)  # time-major
    g = ember.trace(module, (x,), {"x": {1: "batch"}})
    counts = g.op_counts()
    assert counts["ctrl.lstm"] == 1
    op = next(op for op in g.ops if op.kind == "ctrl.lstm")
    assert op.attrs["num_layers"] == 2 and op.attrs["bidirectional"] is True
    assert len(op.inputs) == 3 + 2 * 2 * 4
    assert op.inputs[3].producer.attrs["name"] == "rnn.weight_ih_l0"
    assert op.inputs[-1].producer.attrs["name"] == "rnn.bias_hh_l1_reverse"
    _run(g, module, (torch.randn(7, 2, 5),))


def test_gru_with_given_state_and_no_bias():
    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.gru = nn.GRU(4, 5, num_layers=2, batch_first=True, bias=False)

        def forward(self, x, h0):
            return self.gru(x, h0)

    module = WithState().eval()
    inputs = (torch.randn(3, 6, 4), torch.randn(2, 3, 5))
    g = ember.trace(module, inputs)
    op = next(op for op in g.ops if op.kind == "ctrl.gru")
    assert op.attrs["has_biases"] is False and op.inputs[1] is g.inputs[1]
    assert g.op_counts()["ctrl.gru"] == 1
    _run(g, module, inputs)
