"""Torch implementations: control ops (GRU/LSTM through aten, scan as a Python loop)."""

from __future__ import annotations

import torch

from ...errors import EmberError
from . import run_graph, torch_op
from .core import torch_dtype


@torch_op("ctrl.gru")
def _(x, h0, params, hidden_size, num_layers, bidirectional, batch_first, has_biases):
    y, h_n = torch.ops.aten.gru.input(x, h0, list(params), has_biases, num_layers, 0.0, False,
                                      bidirectional, batch_first)
    return y, h_n


@torch_op("ctrl.lstm")
def _(x, h0, c0, params, hidden_size, num_layers, bidirectional, batch_first, has_biases):
    y, h_n, c_n = torch.ops.aten.lstm.input(x, [h0, c0], list(params), has_biases, num_layers,
                                            0.0, False, bidirectional, batch_first)
    return y, h_n, c_n


@torch_op("ctrl.scan")
def _scan_torch(inputs, num_carry, num_xs, reverse, regions):
    """One body call per step; differentiable, since every step is ordinary torch code."""
    body = regions[0]
    carries = list(inputs[:num_carry])
    xs, invariants = inputs[num_carry:num_carry + num_xs], inputs[num_carry + num_xs:]
    steps = xs[0].shape[0]
    ys: list[list[torch.Tensor]] = [[] for _ in range(steps)]
    for t in reversed(range(steps)) if reverse else range(steps):
        outs = run_graph(body, [*carries, *[x[t] for x in xs], *invariants])
        carries, ys[t] = outs[:num_carry], outs[num_carry:]
    stacked = []
    for j, v in enumerate(body.outputs[num_carry:]):
        if steps:
            stacked.append(torch.stack([ys[t][j] for t in range(steps)]))
        else:
            if not v.type.is_static:
                raise EmberError(f"a zero-step scan cannot stack y of symbolic type {v.type}")
            shape = list(v.type.shape)
            stacked.append(torch.empty((0, *shape), dtype=torch_dtype(v.type.dtype)))
    return (*carries, *stacked)


@torch_op("ctrl.linear_scan")
def _(a, b, h0, chunk):
    """Sequential loop (differentiable); the TVM backend runs the chunked parallel kernel."""
    per_step = a.dim() == b.dim()
    prev, outs = h0, []
    for t in range(b.shape[0]):
        prev = (a[t] if per_step else a) * prev + b[t]
        outs.append(prev)
    return torch.stack(outs) if outs else torch.empty_like(b)


class _TorchOps:
    concat = staticmethod(lambda xs: torch.cat(xs, dim=0))
    absmax = staticmethod(lambda x: float(x.abs().max()) if x.numel() else 0.0)
    broadcast = staticmethod(lambda h0, n: h0.unsqueeze(0).expand(n, *h0.shape).clone())


@torch_op("ctrl.newton_scan")
def _(inputs, num_xs, max_iters, tol, jacobian, regions):
    """DEER Newton iteration in torch (same algorithm as the numpy reference); the sequential
    scan when it does not converge. Gradients flow through the final all-steps evaluation."""
    from ...ir.ops.parallel_scan import newton_solve

    body, fall, jall = regions
    rest = list(inputs[1:])
    steps = inputs[1].shape[0]
    got = None
    if steps:
        got = newton_solve(inputs[0], steps, lambda p: run_graph(fall, [p, *rest]),
                           lambda p: run_graph(jall, [p, *rest])[0], jacobian, max_iters, tol,
                           _TorchOps)
    if got is None:
        scan = _scan_torch(inputs, 1, num_xs, False, [body])
        return (*scan, torch.tensor(-1 if steps else 0, dtype=torch.int32))
    h, ys, it = got
    return (h[-1], *ys, torch.tensor(it, dtype=torch.int32))
