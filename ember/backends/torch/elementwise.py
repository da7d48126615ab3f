"""Torch implementations: elementwise ops (differentiable where torch is)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import torch_op

_BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
           "pow": torch.pow, "maximum": torch.maximum, "minimum": torch.minimum, "eq": torch.eq,
           "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
           "logical_and": torch.logical_and, "logical_or": torch.logical_or,
           "remainder": torch.remainder}
_UNARY = {"neg": torch.neg, "abs": torch.abs, "relu": torch.relu, "sigmoid": torch.sigmoid,
          "tanh": torch.tanh, "silu": F.silu, "exp": torch.exp, "log": torch.log,
          "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "erf": torch.erf, "sin": torch.sin,
          "cos": torch.cos, "reciprocal": torch.reciprocal, "logical_not": torch.logical_not,
          "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,
          "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid}

for _kind, _fn in _BINARY.items():
    torch_op(_kind)(lambda a, b, _fn=_fn: _fn(a, b))
for _kind, _fn in _UNARY.items():
    torch_op(_kind)(lambda x, _fn=_fn: _fn(x))


@torch_op("gelu")
def _(x, approximate):
    return F.gelu(x, approximate=approximate)


@torch_op("clamp")
def _(x, min, max):
    if not x.dtype.is_floating_point:  # integral bounds keep an int tensor int (infer checks)
        min = None if min is None else int(min)
        max = None if max is None else int(max)
    return torch.clamp(x, min=min, max=max)


@torch_op("leaky_relu")
def _(x, negative_slope):
    return F.leaky_relu(x, negative_slope)


@torch_op("softplus")
def _(x, beta, threshold):
    return F.softplus(x, beta=beta, threshold=threshold)


@torch_op("elu")
def _(x, alpha):
    return F.elu(x, alpha=alpha)


@torch_op("where")
def _(cond, a, b):
    return torch.where(cond, a, b)
