"""Torch implementations: reductions and scans (torch's own dtype promotion matches the IR)."""

from __future__ import annotations

import torch

from . import torch_op


def _dims(x: torch.Tensor, dims) -> tuple[int, ...]:
    """An empty tuple means every dim, as in the IR."""
    if isinstance(dims, int):
        dims = (dims,)
    return tuple(dims) or tuple(range(x.dim()))


def _reduction(fn):
    def run(x, dims, keepdim):
        d = _dims(x, dims)
        return fn(x, dim=d, keepdim=keepdim) if d else fn(x)

    return run


torch_op("sum")(_reduction(torch.sum))
torch_op("mean")(_reduction(torch.mean))
torch_op("amax")(_reduction(torch.amax))
torch_op("amin")(_reduction(torch.amin))


@torch_op("prod")
def _(x, dims, keepdim):
    d = _dims(x, dims)
    if not d:
        return torch.prod(x)
    out = x
    for axis in sorted((a % x.dim() for a in d), reverse=True):  # torch.prod takes one dim
        out = torch.prod(out, dim=axis, keepdim=keepdim)
    return out


@torch_op("var")
def _(x, dims, keepdim, correction):
    d = _dims(x, dims)
    return torch.var(x, dim=d or None, correction=correction, keepdim=keepdim)


@torch_op("argmax")
def _(x, dim, keepdim):
    return torch.argmax(x, dim=dim, keepdim=keepdim)


@torch_op("argmin")
def _(x, dim, keepdim):
    return torch.argmin(x, dim=dim, keepdim=keepdim)


@torch_op("cumsum")
def _(x, dim):
    return torch.cumsum(x, dim)
