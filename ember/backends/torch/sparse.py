"""Torch implementations: sparse ops. Differentiable in the stored values (indices are ints),
so `finetune` trains an N:M layer without ever un-sparsifying it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import torch_op


@torch_op("sparse.linear_nm")
def _(x, values, indices, bias, n, m, k):
    rows = values.shape[0]
    dense = torch.zeros(rows, k // m, m, dtype=values.dtype, device=values.device)
    idx = indices.reshape(rows, k // m, n).long()
    dense = dense.scatter(-1, idx, values.reshape(rows, k // m, n))
    return F.linear(x, dense.reshape(rows, k), bias)
