"""int4 weight-only, group-wise: each run of `group_size` inputs of a row gets its own scale.

Why group-wise: one scale per row lets a single large weight flatten the whole row to a few
levels; a scale per 32 inputs bounds that damage to its group (MLC-LLM's q4 scheme). Symmetric
levels -8..7 with scale = max|w_group| / 7, packed two per byte.
"""

from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Value
from ...ir.ops.quant_lowbit import pack_int4
from .int8 import Layer

__all__ = ["int4_weight", "quantize_int4"]


def quantize_int4(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, K] f32 -> (q int8 in [-8, 7] [N, K], scales f32 [N, ceil(K/g)])."""
    n, k = w.shape
    g = -(-k // group_size)
    pad = np.zeros((n, g * group_size), np.float32)
    pad[:, :k] = w
    groups = pad.reshape(n, g, group_size)
    amax = np.abs(groups).max(axis=2)
    scales = np.where(amax > 0, amax / 7.0, 1.0).astype(np.float32)
    q = np.clip(np.round(groups / scales[:, :, None]), -8, 7).astype(np.int8)
    return q.reshape(n, -1)[:, :k], scales


def int4_weight(graph: Graph, layer: Layer, group_size: int) -> Value | None:
    if layer.kind != "linear":
        return None
    q, scales = quantize_int4(layer.weight, group_size)
    k = layer.weight.shape[1]
    with graph.at(before=layer.op):
        p = graph.const(pack_int4(q), name=f"{layer.name}.weight.q4")
        s = graph.const(scales, name=f"{layer.name}.weight.scale")
        bias = [layer.op.inputs[2]] if layer.bias is not None else []
        return graph.add("quant.linear_int4", layer.x, p, s, *bias, k=k, group_size=group_size,
                         loc=layer.op.loc)
