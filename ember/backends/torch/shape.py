"""Torch implementations: shape ops (the shape and indexing modules of the registry)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir.ops.shape import resolve_shape
from ...ir.types import normalize_axis
from . import torch_op


@torch_op("reshape")
def _(x, shape):
    return x.reshape(resolve_shape(shape, x.numel()))


@torch_op("permute")
def _(x, dims):
    return x.permute(*dims)


@torch_op("transpose")
def _(x, dim0, dim1):
    return x.transpose(dim0, dim1)


@torch_op("flatten")
def _(x, start_dim, end_dim):
    return torch.flatten(x, start_dim, end_dim)


@torch_op("squeeze")
def _(x, dims):
    return x.squeeze(dims) if dims else x


@torch_op("unsqueeze")
def _(x, dim):
    return x.unsqueeze(dim)


@torch_op("expand")
def _(x, shape):
    lead = len(shape) - x.dim()  # a symbol always names the input's own dim (infer checks)
    return x.expand(*[x.shape[i - lead] if isinstance(t, str) else t for i, t in enumerate(shape)])


@torch_op("tile")
def _(x, repeats):
    return x.repeat(*repeats)


@torch_op("concat")
def _(xs, dim):
    return torch.cat(xs, dim)


@torch_op("split")
def _(x, dim, sizes):
    return tuple(torch.split(x, list(sizes), dim))


@torch_op("slice")
def _(x, dim, start, end, step):
    index = [slice(None)] * x.dim()
    index[normalize_axis(dim, x.dim(), "slice dim")] = slice(start, end, step)
    return x[tuple(index)]


@torch_op("select")
def _(x, dim, index):
    return x.select(dim, index)


@torch_op("index_select")
def _(x, index, dim):
    return torch.index_select(x, dim, index)


@torch_op("pad")
def _(x, pads, value):
    if not x.dtype.is_floating_point:
        value = int(value)
    return F.pad(x, list(pads), mode="constant", value=value)
