"""ONNX GRU with linear_before_reset=0 (ONNX's default cell) as a `ctrl.scan` of the cell.

    z = sigmoid(x Wz' + h Rz' + Wbz + Rbz)      r = sigmoid(x Wr' + h Rr' + Wbr + Rbr)
    n = tanh(x Wh' + (r * h) Rh' + Wbh + Rbh)    h' = (1 - z) * n + z * h = n + z * (h - n)

ember's `ctrl.gru` is torch's cell, which multiplies by the reset gate *after* the recurrent
matmul (ONNX linear_before_reset=1); the two differ, so the default ONNX cell is spelled out as
a scan body. Each direction is one scan (reverse=True walks time backwards and keeps the
stacked outputs in time order); weights of the three gates are split in the outer graph
(folded to constants when they are initializers) and passed as scan invariants.
"""

from __future__ import annotations

import numpy as np

from ...ir import Graph, TensorType, Value
from .context import Context


def _rows(cx: Context, v: Value, d: int, k: int, hidden: int) -> Value:
    """v[d, k*H:(k+1)*H] (gate k of direction d)."""
    known = cx.static(v)
    if known is not None:
        return cx.const(np.ascontiguousarray(known[d][k * hidden:(k + 1) * hidden]))
    return cx.add("slice", cx.add("select", v, dim=0, index=d), dim=0, start=k * hidden,
                  end=(k + 1) * hidden)


def _cell(x_type: TensorType, h_type: TensorType, params: list[Value]) -> Graph:
    """The scan body: (h, x_t, Wz, Wr, Wh, Rz, Rr, Rh, bz, br, bwh, brh) -> (h', h')."""
    g = Graph("gru_cell_lbr0")
    h = g.add_input("h", h_type)
    x = g.add_input("x_t", x_type)
    wz, wr, wh, rz, rr, rh, bz, br, bwh, brh = [
        g.add_input(n, p.type) for n, p in
        zip(("wz", "wr", "wh", "rz", "rr", "rh", "bz", "br", "bwh", "brh"), params)]
    z = g.add("sigmoid", g.add("add", g.add("linear", x, wz, bz), g.add("linear", h, rz)))
    r = g.add("sigmoid", g.add("add", g.add("linear", x, wr, br), g.add("linear", h, rr)))
    n = g.add("tanh", g.add("add", g.add("linear", x, wh, bwh),
                            g.add("linear", g.add("mul", r, h), rh, brh)))
    new = g.add("add", n, g.add("mul", z, g.add("sub", h, n)))
    g.set_outputs(new, new)
    return g


def gru_scan(cx: Context, x: Value, w: Value, r: Value, b: Value | None, h0: Value | None,
             hidden: int, direction: str, layout: int):
    """(Y, Y_h) of an ONNX GRU node (linear_before_reset=0), any direction and layout."""
    if layout:  # [B, T, I] -> [T, B, I]; states [B, D, H]
        x = cx.add("permute", x, dims=(1, 0, 2))
    batch = x.shape[1]
    dirs = 2 if direction == "bidirectional" else 1
    dt = x.dtype.to_numpy()
    ys, finals = [], []
    for d in range(dirs):
        gates_w = [_rows(cx, w, d, k, hidden) for k in range(3)]
        gates_r = [_rows(cx, r, d, k, hidden) for k in range(3)]
        if b is not None:
            wb = [_rows(cx, b, d, k, hidden) for k in range(3)]
            rb = [_rows(cx, b, d, 3 + k, hidden) for k in range(3)]
            biases = [cx.add("add", wb[0], rb[0]), cx.add("add", wb[1], rb[1]), wb[2], rb[2]]
        else:
            biases = [cx.const(np.zeros(hidden, dt)) for _ in range(4)]
        if h0 is None:
            if not isinstance(batch, int):
                raise cx.fail("no initial state and a symbolic batch size")
            h = cx.const(np.zeros((batch, hidden), dt))
        else:
            h = cx.add("select", h0, dim=1 if layout else 0, index=d)
        params = [*gates_w, *gates_r, *biases]
        body = _cell(x.type.with_shape(x.shape[1:]), h.type, params)
        reverse = direction == "reverse" or d == 1
        final, y = cx.add("ctrl.scan", h, x, *params, regions=[body], num_carry=1, num_xs=1,
                          reverse=reverse)
        ys.append(cx.add("unsqueeze", y, dim=1))
        finals.append(cx.add("unsqueeze", final, dim=0))
    y = ys[0] if dirs == 1 else cx.add("concat", *ys, dim=1)           # [T, D, B, H]
    y_h = finals[0] if dirs == 1 else cx.add("concat", *finals, dim=0)  # [D, B, H]
    if layout:
        return cx.add("permute", y, dims=(2, 0, 1, 3)), cx.add("permute", y_h, dims=(1, 0, 2))
    return y, y_h
