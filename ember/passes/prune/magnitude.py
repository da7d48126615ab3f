"""`prune_magnitude`: unstructured magnitude pruning (zeros in place, shapes unchanged).

What it saves, honestly: weight storage if the zeros are stored in a sparse format (the report
gives CSR bytes: f32 values + i32 column indices + i32 row pointers, against dense bytes; CSR
only wins above 50% sparsity at f32). It does not make inference faster: no ember kernel
skips unstructured zeros (at digits-model sizes and <= 90% sparsity a CSR kernel loses to the
dense GEMM), so the compiled model runs the same dense kernels. `finetune` keeps the zeros
(it re-applies the mask after every step). For speed use `prune_nm` or `prune_channels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ...ir.graph import Graph
from ..pipeline import Pass, PassContext, register_pass
from . import _common as C


@register_pass("prune_magnitude")
@dataclass(frozen=True)
class PruneMagnitude(Pass):
    """Zero the smallest-magnitude weights of linear/conv layers (per layer or globally)."""

    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "layer"
    skip: tuple[str, ...] = ()
    tolerance: ClassVar[float | None] = math.inf  # changes outputs by design; finetune recovers

    def __post_init__(self) -> None:
        C.check_ratio(self.name, "sparsity", self.sparsity, 0.0, 0.99)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        C.stash_teacher(graph)
        ops = C.weighted_ops(graph, ("linear", "conv2d"), self.skip)
        arrays = [np.asarray(C.const_array(op.inputs[1])) for op in ops]
        if self.scope == "global" and arrays:
            flat = np.concatenate([np.abs(a).ravel() for a in arrays])
            cut = int(self.sparsity * flat.size)
            thresholds = [np.partition(flat, cut - 1)[cut - 1] if cut else -1.0] * len(arrays)
        else:
            thresholds = []
            for a in arrays:
                cut = int(self.sparsity * a.size)
                thresholds.append(np.partition(np.abs(a).ravel(), cut - 1)[cut - 1] if cut
                                  else -1.0)
        layers, dense, csr = [], 0, 0
        for op, a, t in zip(ops, arrays, thresholds):
            pruned = np.where(np.abs(a) <= t, np.zeros_like(a), a)
            new = C.replace_const(graph, op.inputs[1], pruned)
            op.set_input(1, new)
            nnz = int(np.count_nonzero(pruned))
            rows = a.shape[0]
            dense += a.nbytes
            csr += nnz * (a.itemsize + 4) + (rows + 1) * 4
            layers.append({"layer": C.weight_name(op), "sparsity": round(1 - nnz / a.size, 4)})
        from ..cleanup.dce import eliminate_dead_code

        eliminate_dead_code(graph)
        ctx.note(scope=self.scope, layers=layers, weight_bytes_dense=dense, weight_bytes_csr=csr,
                 faster_kernel=False,
                 kernel_note="no sparse kernel for unstructured zeros: latency is unchanged")
        return graph
