"""Dead-code elimination: drop every op whose results nobody reads.

Runs backwards so a whole dead chain goes in one sweep; regions are cleaned independently (a
region's `return` is what keeps its ops alive). Ops with the SIDE_EFFECT trait always stay.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ...ir.graph import Graph
from ...ir.ops import SIDE_EFFECT
from ..pipeline import Pass, PassContext, register_pass


@register_pass("dce")
@dataclass(frozen=True)
class EliminateDeadCode(Pass):
    """Remove ops (consts included) whose results are unused; SIDE_EFFECT ops are kept."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        removed = eliminate_dead_code(graph)
        ctx.record_rewrites({f"dce:{k}": n for k, n in sorted(removed.items())})
        ctx.note(removed=sum(removed.values()))
        return graph


def eliminate_dead_code(graph: Graph) -> Counter[str]:
    """Erase dead ops in `graph` and all its regions; returns counts by kind."""
    removed: Counter[str] = Counter()
    outputs = {id(v) for v in graph.outputs}
    for op in reversed(graph.ops):
        if op.schema.has(SIDE_EFFECT) or any(r.uses or id(r) in outputs for r in op.results):
            for region in op.regions:
                removed += eliminate_dead_code(region)
            continue
        graph.erase(op)
        removed[op.kind] += 1
    return removed
