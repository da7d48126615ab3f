"""Binary weights: w ~ alpha[n] * sign(w), alpha = mean |w[n, :]| (the L2-optimal scale for a
fixed sign pattern, BiViT/XNOR-Net), packed 32 signs per uint32 word.

`act=sign` also binarizes activations (mean-|x| row scale), which is what makes the
XNOR-popcount kernel apply; it costs much more accuracy, so weight-only is the default.
"""

from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Value
from ...ir.ops.quant_lowbit import pack_signs
from .int8 import Layer

__all__ = ["binary_bases", "emit_binary"]


def binary_bases(w: np.ndarray, bases: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Greedy residual fit: (signs f32 [B, N, K] of +-1, scales f32 [B, N]).

    Base i binarizes what bases < i left over (residual/recurrent binarization, BEBR/DB-LLM);
    with bases=1 this is plain sign + mean-|w| scale."""
    r = np.asarray(w, np.float32).copy()
    signs, scales = [], []
    for _ in range(bases):
        s = np.where(r >= 0, 1.0, -1.0).astype(np.float32)
        a = np.abs(r).mean(axis=1).astype(np.float32)
        signs.append(s)
        scales.append(a)
        r = r - a[:, None] * s
    return np.stack(signs), np.stack(scales)


def emit_binary(graph: Graph, layer: Layer, signs: np.ndarray, scales: np.ndarray,
                act: str = "float", tag: str = "bin") -> Value | None:
    if layer.kind != "linear":
        return None
    k = layer.weight.shape[1]
    with graph.at(before=layer.op):
        bits = graph.const(pack_signs(signs), name=f"{layer.name}.weight.{tag}")
        sc = graph.const(scales.astype(np.float32), name=f"{layer.name}.weight.scale")
        bias = [layer.op.inputs[2]] if layer.bias is not None else []
        return graph.add("quant.linear_binary", layer.x, bits, sc, *bias, k=k, act=act,
                         loc=layer.op.loc)
