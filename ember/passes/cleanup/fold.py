"""Constant folding: run the op's numpy `reference` when every input is a const.

The folded value is exactly what the interpreter would compute (same reference, same dtype
cast), so the pass is exact. Ops are visited in order, so chains of consts fold in one sweep.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Op
from ...ir.ops import HAS_REGIONS, NO_FOLD, PURE
from ..pipeline import Pass, PassContext, register_pass
from ..rewrite import erase_dead


@register_pass("fold")
@dataclass(frozen=True)
class FoldConstants(Pass):
    """Replace pure ops on const inputs by the const they compute (outputs capped in size)."""

    max_elements: int = 1 << 20  # larger results stay computed at run time: weights stay small

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        folded: Counter[str] = Counter()
        blocks = [graph] + [r for op in graph.walk() for r in op.regions]
        for block in blocks:
            for op in block.ops:
                if op.block is block and self._foldable(op):
                    _fold(block, op)
                    folded[op.kind] += 1
        ctx.record_rewrites({f"fold:{k}": n for k, n in sorted(folded.items())})
        ctx.note(folded=sum(folded.values()))
        return graph

    def _foldable(self, op: Op) -> bool:
        schema = op.schema
        if op.kind == "const" or not op.inputs or op.regions or not schema.has(PURE):
            return False
        if schema.has(NO_FOLD) or schema.has(HAS_REGIONS):
            return False
        for v in op.inputs:
            if v.producer is None or v.producer.kind != "const":
                return False
            if not isinstance(v.producer.attrs.get("value"), np.ndarray):
                return False  # data elided from the text form: nothing to compute with
        for r in op.results:
            if not r.type.is_static or r.type.numel() > self.max_elements:
                return False
        return True


def _fold(block: Graph, op: Op) -> None:
    arrays = [v.producer.attrs["value"] for v in op.inputs]  # type: ignore[union-attr]
    with np.errstate(all="ignore"):  # same semantics as at run time: inf/nan are values
        outs = op.schema.run_reference(arrays, op.attrs, op.regions)
    name = _inherited_name(op)
    inputs = list(op.inputs)
    with block.at(before=op):
        values = []
        for r, out in zip(op.results, outs, strict=True):
            arr = np.asarray(out).astype(r.type.dtype.to_numpy(), copy=False)
            values.append(block.const(arr, name=name, loc=op.loc))
    block.replace_op(op, values)
    for v in inputs:  # inputs that only fed this op are now dead weights
        if v.producer is not None:
            erase_dead(block, v.producer)


def _inherited_name(op: Op) -> str | None:
    """A one-input, one-result fold (cast/transpose of a weight) keeps the weight's name."""
    if len(op.inputs) == 1 and len(op.results) == 1:
        return op.inputs[0].producer.attrs.get("name")  # type: ignore[union-attr]
    return None
