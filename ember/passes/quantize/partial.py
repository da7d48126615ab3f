"""Partial binarization (PB-LLM style): salient weights keep int8 precision, the rest binary.

Per output row the `salient` fraction of weights with the largest |w| is salient. The binary
part uses the mean |w| of the non-salient weights as its scale (so outliers do not inflate it);
the salient side tensor stores, in int8 with a per-row scale, the correction w - binary(w) at
those positions, in ELL form (cols/vals [N, S]). The layer is then exactly
binary(w) + corrections, with salient weights accurate to int8.
"""

from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Value
from ...ir.ops.quant_lowbit import pack_signs
from .int8 import Layer

__all__ = ["partial_binary", "partial_parts"]


def partial_parts(w: np.ndarray, salient: float):
    w = np.asarray(w, np.float32)
    n, k = w.shape
    s = max(1, int(round(salient * k)))
    cols = np.argsort(-np.abs(w), axis=1)[:, :s].astype(np.int32)
    mask = np.zeros_like(w, bool)
    np.put_along_axis(mask, cols, True, axis=1)
    rest = np.where(mask, 0.0, np.abs(w))
    alpha = (rest.sum(axis=1) / np.maximum((~mask).sum(axis=1), 1)).astype(np.float32)
    signs = np.where(w >= 0, 1.0, -1.0).astype(np.float32)
    corr = np.take_along_axis(w - alpha[:, None] * signs, cols, axis=1)
    amax = np.abs(corr).max(axis=1)
    vscale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    vals = np.clip(np.round(corr / vscale[:, None]), -127, 127).astype(np.int8)
    return signs[None], alpha[None], cols, vals, vscale


def partial_binary(graph: Graph, layer: Layer, salient: float) -> Value | None:
    if layer.kind != "linear":
        return None
    signs, alpha, cols, vals, vscale = partial_parts(layer.weight, salient)
    with graph.at(before=layer.op):
        c = [graph.const(pack_signs(signs), name=f"{layer.name}.weight.bin"),
             graph.const(alpha, name=f"{layer.name}.weight.scale"),
             graph.const(cols, name=f"{layer.name}.salient.cols"),
             graph.const(vals, name=f"{layer.name}.salient.q8"),
             graph.const(vscale, name=f"{layer.name}.salient.scale")]
        bias = [layer.op.inputs[2]] if layer.bias is not None else []
        return graph.add("quant.linear_partial_binary", layer.x, *c, *bias,
                         k=layer.weight.shape[1], loc=layer.op.loc)
