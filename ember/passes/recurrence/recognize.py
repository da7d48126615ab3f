"""`recognize_rnn`: ctrl.gru / ctrl.lstm become ctrl.scan loops with an explicit cell body.

Why: the layer ops are opaque to the recurrence passes (linearity, parallel_newton, the cost
model) and the TVM backend can only unroll them over a static length. As a ctrl.scan the cell is
plain registry ops (linear, split, add, mul, sub, sigmoid, tanh) that autodiff.py can
differentiate and the sequential TIR loop lowers for any length.

Layout: ctrl.scan scans dim 0, so a batch_first input is permuted to time-major first and the
stacked ys back after. The input projection x @ W_ih^T + b_ih does not depend on the state, so it
is hoisted out of the loop as one linear over all steps; only h @ W_hh^T + b_hh stays in the
body. GRU follows torch exactly: n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),
h' = (1 - z) ⊙ n + z ⊙ h. Every layer and direction becomes one scan (the reverse direction is a
`reverse=True` scan, whose ys stay in time order, as torch's bidirectional output does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Op, Value
from ...ir.types import TensorType
from ..pipeline import Pass, PassContext, register_pass

_GATES = {"ctrl.gru": 3, "ctrl.lstm": 4}


@register_pass("recognize_rnn")
@dataclass(frozen=True)
class RecognizeRNN(Pass):
    """Rewrite ctrl.gru / ctrl.lstm into ctrl.scan loops whose body is the cell in plain ops."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        done = []
        for op in graph.ops:
            if op.kind in _GATES:
                done.append(_rewrite(graph, op))
        ctx.note(recognized=done)
        return graph


def _rewrite(graph: Graph, op: Op) -> dict:
    a = op.attrs
    hid, layers, bidir = a["hidden_size"], a["num_layers"], a["bidirectional"]
    dirs, per = (2 if bidir else 1), (4 if a["has_biases"] else 2)
    nstate = 2 if op.kind == "ctrl.lstm" else 1
    x, states, params = op.inputs[0], op.inputs[1:1 + nstate], op.inputs[1 + nstate:]
    with graph.at(before=op):
        inp = graph.add("permute", x, dims=(1, 0, 2)) if a["batch_first"] else x
        finals: list[list[Value]] = [[] for _ in range(nstate)]
        for layer in range(layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                w_ih, w_hh, *bias = params[k * per:(k + 1) * per]
                b_ih, b_hh = bias if bias else (None, None)
                gi = graph.add("linear", inp, w_ih, *([b_ih] if b_ih is not None else []))
                init = [graph.add("select", s, dim=0, index=k) for s in states]
                body = _cell_body(op.kind, init[0].type, gi.type, w_hh, b_hh, hid)
                invs = [w_hh] + ([b_hh] if b_hh is not None else [])
                res = graph.add("ctrl.scan", *init, gi, *invs, regions=[body],
                                num_carry=nstate, num_xs=1, reverse=bool(d), loc=op.loc)
                for f, v in zip(finals, res[:nstate]):
                    f.append(graph.add("unsqueeze", v, dim=0))
                outs.append(res[nstate])
            inp = outs[0] if dirs == 1 else graph.add("concat", *outs, dim=-1)
        y = graph.add("permute", inp, dims=(1, 0, 2)) if a["batch_first"] else inp
        stacked = [f[0] if len(f) == 1 else graph.add("concat", *f, dim=0) for f in finals]
    graph.replace_op(op, [y, *stacked])
    return {"op": op.kind, "loc": op.loc, "layers": layers, "directions": dirs,
            "hidden": hid, "scans": layers * dirs}


def _cell_body(kind: str, state: TensorType, gi: TensorType, w_hh: Value, b_hh: Value | None,
               hid: int) -> Graph:
    """body(h[, c], gi_t, w_hh[, b_hh]) -> (h'[, c'], y_t = h')."""
    body = Graph("gru_cell" if kind == "ctrl.gru" else "lstm_cell")
    h = body.add_input("h", state)
    c = body.add_input("c", state) if kind == "ctrl.lstm" else None
    g = body.add_input("gi_t", gi.with_shape(gi.shape[1:]))
    w = body.add_input("w_hh", w_hh.type)
    b = [body.add_input("b_hh", b_hh.type)] if b_hh is not None else []
    if kind == "ctrl.gru":
        gh = body.add("linear", h, w, *b)
        i_r, i_z, i_n = body.add("split", g, dim=-1, sizes=(hid,) * 3)
        h_r, h_z, h_n = body.add("split", gh, dim=-1, sizes=(hid,) * 3)
        r = body.add("sigmoid", body.add("add", i_r, h_r))
        z = body.add("sigmoid", body.add("add", i_z, h_z))
        n = body.add("tanh", body.add("add", i_n, body.add("mul", r, h_n)))
        one = body.const(np.ones((), state.dtype.to_numpy()))
        new = body.add("add", body.add("mul", body.add("sub", one, z), n), body.add("mul", z, h))
        body.set_outputs(new, new)
        return body
    gates = body.add("add", g, body.add("linear", h, w))  # torch's summation order: exact
    gates = body.add("add", gates, b[0]) if b else gates
    i, f, gg, o = body.add("split", gates, dim=-1, sizes=(hid,) * 4)
    c_new = body.add("add", body.add("mul", body.add("sigmoid", f), c),
                     body.add("mul", body.add("sigmoid", i), body.add("tanh", gg)))
    h_new = body.add("mul", body.add("sigmoid", o), body.add("tanh", c_new))
    body.set_outputs(h_new, c_new, h_new)
    return body
