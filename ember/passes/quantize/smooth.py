"""SmoothQuant scale migration: y = x W^T = (x / s) (W * s)^T, exact before rounding.

Activation outlier channels make per-tensor activation scales coarse; dividing channel j of
the activation by s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha) and multiplying the weight column
by s_j moves that difficulty into the (per-channel quantized) weight. The division is folded
into the producer when it is a `linear` (its weight rows and bias scale by 1/s), otherwise a
`mul` by a const 1/s is inserted, which int8 then quantizes after. Tolerance 1e-5: float
rounding only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...ir.graph import Graph
from ..pipeline import Pass, PassContext, register_pass
from .calibrate import collect
from .int8 import find_layers

__all__ = ["SmoothQuant", "smooth_factors"]


def smooth_factors(act_absmax: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    wmax = np.abs(w).max(axis=0)
    s = np.power(np.maximum(act_absmax, 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5),
                                                                  1 - alpha)
    return np.clip(s, 1e-3, 1e3).astype(np.float32)


@register_pass("smooth_quant")
@dataclass(frozen=True)
class SmoothQuant(Pass):
    """Migrate activation outliers into linear weights (SmoothQuant), an exact transform."""

    alpha: float = 0.5
    calib: int = 128
    skip: tuple[str, ...] = ()
    tolerance: ClassVar[float | None] = 1e-5
    requires: ClassVar[tuple[str, ...]] = ("calibration",)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        layers = [L for L in find_layers(graph, self.skip)[0] if L.kind == "linear"]
        if not layers:
            ctx.note(smoothed=0)
            return graph
        batches = collect(graph, [L.x for L in layers], ctx.calibration or [], self.calib,
                          ctx.progress, show=False)
        smoothed = []
        for i, layer in enumerate(layers):
            k = layer.weight.shape[1]
            amax = np.max([np.abs(b[i].reshape(-1, k)).max(axis=0) for b in batches], axis=0)
            s = smooth_factors(amax, layer.weight, self.alpha)
            op = layer.op
            with graph.at(before=op):
                wname = op.inputs[1].producer.attrs.get("name", f"{layer.name}.weight")
                w_new = graph.const((layer.weight * s[None, :]).astype(np.float32), name=wname)
                inv = graph.const((1.0 / s).astype(np.float32), name=f"{layer.name}.smooth")
                x_new = graph.add("mul", layer.x, inv, loc=op.loc)
            op.set_input(0, x_new)
            op.set_input(1, w_new)
            smoothed.append(layer.name)
        from ..rewrite import erase_dead  # drop the replaced weights

        for op in graph.ops:
            if op.kind == "const" and not any(r.uses for r in op.results) and \
                    not any(o is op.results[0] for o in graph.outputs):
                erase_dead(graph, op)
        ctx.note(smoothed=len(smoothed), layers=smoothed, alpha=self.alpha)
        return graph
