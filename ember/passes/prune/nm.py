"""`prune_nm`: N:M structured sparsity stored compressed, run by a kernel that skips the zeros.

Every linear whose weight is a float const and whose K is a multiple of m keeps the n
largest-magnitude weights of each aligned group of m along K and becomes
`sparse.linear_nm(x, values, indices, bias){n, m, k}` (see ir/ops/sparse.py for the format).
The TVM backend runs it with the gather-free kernel in backends/tvm/kernels/sparse_nm.py; the
torch backend trains its values (so `finetune` keeps the pattern by construction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...errors import PipelineSpecError
from ...ir.graph import Graph
from ...ir.ops.sparse import compress_nm
from ..pipeline import Pass, PassContext, register_pass
from . import _common as C


@register_pass("prune_nm")
@dataclass(frozen=True)
class PruneNM(Pass):
    """Keep n of every m weights along K in each linear; store values + indices (N:M sparse)."""

    n: int = 2
    m: int = 4
    skip: tuple[str, ...] = ()  # weight names (substrings) to leave dense, e.g. "head"
    min_k: int = 16  # smaller layers stay dense: the kernel's per-row overhead wins there
    tolerance: ClassVar[float | None] = math.inf  # changes outputs by design; finetune recovers

    def __post_init__(self) -> None:
        if not (0 < self.n < self.m <= 255):
            raise PipelineSpecError(f"prune_nm: needs 0 < n < m <= 255, got n={self.n} m={self.m}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        C.stash_teacher(graph)
        layers, skipped = [], []
        dense_bytes = sparse_bytes = 0
        for op in C.weighted_ops(graph, ("linear",), self.skip):
            w = C.const_array(op.inputs[1])
            name = C.weight_name(op)
            k = w.shape[1]
            if k % self.m or k < self.min_k:
                skipped.append(f"{name} (K={k})")
                continue
            vals, idx = compress_nm(np.asarray(w), self.n, self.m)
            bias = op.inputs[2] if len(op.inputs) > 2 else None
            with graph.at(before=op):
                v = graph.const(vals, name=f"{name}.nm_values")
                i = graph.const(idx, name=f"{name}.nm_indices")
                args = [op.inputs[0], v, i] + ([bias] if bias is not None else [])
                y = graph.add("sparse.linear_nm", *args, loc=op.loc, n=self.n, m=self.m, k=k)
            graph.replace_all_uses(op.result, y)
            graph.erase(op)
            dense_bytes += w.nbytes
            sparse_bytes += vals.nbytes + idx.nbytes
            layers.append({"layer": name, "shape": list(w.shape),
                           "sparsity": round(1 - self.n / self.m, 4)})
        from ..cleanup.dce import eliminate_dead_code

        eliminate_dead_code(graph)
        ctx.note(pattern=f"{self.n}:{self.m}", layers=layers, skipped=skipped,
                 weight_bytes_dense=dense_bytes, weight_bytes_compressed=sparse_bytes,
                 flops_after=C.flops(graph))
        return graph
