"""Common-subexpression elimination: merge pure ops that compute the same thing.

Two ops are the same when kind, inputs (in any order for COMMUTATIVE ops) and attributes are
equal. Consts compare by dtype, shape and bytes (names ignored), so tied or duplicated weights
are stored once. Ops with regions are left alone. Each region is its own scope (regions are
isolated from above), so nothing merges across a region boundary.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...ir.graph import Graph, Op
from ...ir.ops import COMMUTATIVE, PURE
from ..pipeline import Pass, PassContext, register_pass


@register_pass("cse")
@dataclass(frozen=True)
class EliminateCommonSubexpressions(Pass):
    """Merge identical pure ops and identical consts; the first one in program order stays."""

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        merged: Counter[str] = Counter()
        blocks = [graph] + [r for op in graph.walk() for r in op.regions]
        for block in blocks:
            merged += _cse_block(block)
        ctx.record_rewrites({f"cse:{k}": n for k, n in sorted(merged.items())})
        ctx.note(merged=sum(merged.values()))
        return graph


def _cse_block(block: Graph) -> Counter[str]:
    merged: Counter[str] = Counter()
    seen: dict[Any, Op] = {}
    for op in block.ops:
        if op.regions or not op.schema.has(PURE):
            continue
        key = _key(op)
        if key is None:
            continue
        first = seen.setdefault(key, op)
        if first is op:
            continue
        if any(r.type != s.type for r, s in zip(op.results, first.results)):
            continue  # same key, different types: cannot happen for a correct infer; be safe
        block.replace_op(op, first.results)
        merged[op.kind] += 1
    return merged


def _key(op: Op) -> Any:
    if op.kind == "const":
        value = op.attrs["value"]
        if isinstance(value, np.ndarray):
            data = np.ascontiguousarray(value).tobytes()
            return ("const", value.dtype.str, value.shape, hashlib.sha256(data).digest())
        return ("const", str(value.type), value.key)  # elided data: its content hash
    inputs = [id(v) for v in op.inputs]
    if len(inputs) == 2 and op.schema.has(COMMUTATIVE):
        inputs.sort()
    try:
        attrs = tuple(sorted((k, _attr_key(v)) for k, v in op.attrs.items()))
        hash(attrs)
    except TypeError:
        return None  # an unhashable attribute: do not guess
    return (op.kind, tuple(inputs), attrs)


def _attr_key(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, hashlib.sha256(v.tobytes()).digest())
    if isinstance(v, float):
        return ("float", v.hex())  # keeps -0.0 apart from 0.0 and makes nan equal to itself
    if isinstance(v, tuple):
        return tuple(_attr_key(x) for x in v)
    return (type(v).__name__, v)
