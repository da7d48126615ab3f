"""Torch implementations: elementwise ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import torch_op

_BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
           "pow": torch.pow, "maximum": torch.maximum, "minimum": torch.minimum, "eq": torch.eq,
           "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}
_UNARY = {"neg": torch.neg, "abs": torch.abs, "relu": torch.relu, "sigmoid": torch.sigmoid,
          "tanh": torch.tanh, "silu": F.silu, "exp": torch.exp, "log": torch.log,
          "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "gelu": F.gelu}

for _kind, _fn in _BINARY.items():
    torch_op(_kind)(lambda a, b, _fn=_fn: _fn(a, b))
for _kind, _fn in _UNARY.items():
    torch_op(_kind)(lambda x, _fn=_fn: _fn(x))
