"""The verifier: structure (defs before uses, use lists, regions) and types (re-run every infer).

Re-inferring every op's type is the cheapest guard against a broken pass. Errors show the IR
around the bad op with a marker, so the reader sees the problem in context.
"""

from __future__ import annotations

from ..errors import EmberError, VerificationError
from .graph import Graph, Op, Value
from .ops import HAS_REGIONS, get_schema, has_schema
from .printer import print_graph


def verify(graph: Graph) -> None:
    """Raise VerificationError describing the first problem found, or return None."""
    _verify_block(graph, graph)


def _verify_block(block: Graph, top: Graph) -> None:
    defined: set[int] = {id(v) for v in block.inputs}
    for i, v in enumerate(block.inputs):
        if v.producer is not None or v.index != i:
            _fail(top, None, f"input {i} of @{block.name} has a bad back-pointer")
    for op in block.ops:
        if op.block is not block:
            _fail(top, op, "op's block pointer does not point at the graph that holds it")
        for i, v in enumerate(op.inputs):
            if id(v) not in defined:
                _fail(top, op, f"operand {i} ({v.type}) is not defined before this op in the "
                               f"same graph (regions are isolated: pass outer values as inputs)")
            if not any(u.op is op and u.index == i for u in v.uses):
                _fail(top, op, f"operand {i} is missing from its value's use list")
        _verify_op(op, top)
        for r in op.results:
            if r.producer is not op:
                _fail(top, op, "result's producer pointer is wrong")
            for u in r.uses:
                if u.op.block is None or u.index >= len(u.op.inputs) or u.op.inputs[u.index] is not r:
                    _fail(top, op, f"result {r.index} has a stale use by {u.op.kind}")
            defined.add(id(r))
    for k, v in enumerate(block.outputs):
        if id(v) not in defined:
            _fail(top, None, f"output {k} of @{block.name} is not defined in that graph")


def _verify_op(op: Op, top: Graph) -> None:
    if not has_schema(op.kind):
        _fail(top, op, f"unknown op kind {op.kind!r}")
    schema = get_schema(op.kind)
    if bool(op.regions) and not schema.has(HAS_REGIONS):
        _fail(top, op, f"{op.kind} does not take regions")
    for region in op.regions:
        if region.parent is not op:
            _fail(top, op, "region's parent pointer is wrong")
        _verify_block(region, top)
    try:
        attrs = schema.complete_attrs(op.attrs)
        if set(attrs) != set(op.attrs):
            raise EmberError(f"attributes {sorted(op.attrs)} differ from the schema's "
                             f"{sorted(attrs)}")
        types = schema.infer_types([v.type for v in op.inputs], op.attrs, op.regions)
    except EmberError as e:
        _fail(top, op, str(e))
    stored = [r.type for r in op.results]
    if types != stored:
        _fail(top, op, f"stored result types {', '.join(map(str, stored))} disagree with "
                       f"inferred {', '.join(map(str, types))}")


def _fail(top: Graph, op: Op | None, msg: str) -> None:
    where = f"{op.kind}" + (f" ({op.loc})" if op and op.loc else "") if op else f"@{top.name}"
    raise VerificationError(f"verify: {where}: {msg}\n{context(top, op)}")


def context(top: Graph, op: Op | None, radius: int = 5) -> str:
    """The printed IR around `op`, with a marker on its line (the whole head when op is None)."""
    try:
        text = print_graph(top)
    except Exception as e:  # the graph may be too broken to print
        return f"  (IR not printable: {e})"
    lines = text.splitlines()
    target = _line_of(top, op, lines) if op is not None else 0
    lo, hi = max(0, target - radius), min(len(lines), target + radius + 1)
    out = []
    for i in range(lo, hi):
        mark = ">>" if i == target and op is not None else "  "
        out.append(f"{mark} {lines[i]}")
    return "\n".join(out)


def _line_of(top: Graph, op: Op, lines: list[str]) -> int:
    index = 0
    for i, o in enumerate(_print_order(top)):
        if o is op:
            index = i
            break
    seen = -1
    for n, line in enumerate(lines):
        if " = " in line:
            seen += 1
            if seen == index:
                return n
    return 0


def _print_order(g: Graph):
    for op in g.ops:
        yield op
        for r in op.regions:
            yield from _print_order(r)


__all__ = ["verify", "context", "Value"]
