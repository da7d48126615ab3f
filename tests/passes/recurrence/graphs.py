"""Recurrence graphs shared by the pass tests and the TVM lowering tests."""

from __future__ import annotations

import numpy as np

from ember.ir import DType, Graph, TensorType

F32 = DType.f32


def tanh_rnn(steps: int, batch: int, d: int, seed: int) -> tuple[Graph, list[np.ndarray]]:
    """ctrl.scan of h' = tanh(h W^T + x_t), ||W||_2 = 0.6 (contractive, so Newton converges),
    y_t = h'; returns the graph and its inputs (xs, h0)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, d))
    w = (0.6 * w / np.linalg.norm(w, 2)).astype(np.float32)
    body = Graph("tanh_cell")
    h = body.add_input("h", TensorType((batch, d), F32))
    x = body.add_input("x", TensorType((batch, d), F32))
    wv = body.add_input("w", TensorType((d, d), F32))
    new = body.add("tanh", body.add("add", body.add("linear", h, wv), x))
    body.set_outputs(new, new)
    g = Graph("rnn")
    xs = g.add_input("xs", TensorType((steps, batch, d), F32))
    h0 = g.add_input("h0", TensorType((batch, d), F32))
    final, ys = g.add("ctrl.scan", h0, xs, g.const(w), regions=[body], num_carry=1, num_xs=1)
    g.set_outputs(final, ys)
    return g, [rng.standard_normal((steps, batch, d)).astype(np.float32),
               rng.standard_normal((batch, d)).astype(np.float32) * 0.5]
