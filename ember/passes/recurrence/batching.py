"""Batching rules: re-emit an op whose operands carry an extra LEADING dim (a vmap on the IR).

Two users: `vectorize` runs a scan body for all T steps at once (the lead dim is time: DEER
evaluates f(h_{t-1}, x_t) for every t in parallel), and autodiff.py pushes tangents through
shape ops (the lead dim indexes the seed directions). Dim attributes >= 0 shift by one, negative
ones already count from the end and stay; an un-led operand of an elementwise op broadcasts
against the led one once the led one is lifted to the result rank ([L, 1.., *s]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import UnsupportedOpError
from ...ir.graph import Graph, Value
from ...ir.ops import ELEMENTWISE, get_schema
from ...ir.types import TensorType

_DIM = {"split", "slice", "select", "softmax", "log_softmax", "concat", "cumsum", "index_select"}
_REDUCE = {"sum", "mean", "amax", "amin", "prod"}


def lifted(g: Graph, v: Value, rank: int) -> Value:
    """A led value [L, *s] as [L, 1, ..., *s] with `rank` dims after L (for broadcasting)."""
    for _ in range(rank - (v.type.rank - 1)):
        v = g.add("unsqueeze", v, dim=1)
    return v


def led(g: Graph, v: Value, lead: Any) -> Value:
    """An un-led value broadcast to [lead, *shape] (lead: int or symbol)."""
    return g.add("expand", g.add("unsqueeze", v, dim=0), shape=(lead, *v.type.shape))


def _shift(d: int) -> int:
    return d + 1 if d >= 0 else d


def emit_lead(g: Graph, kind: str, attrs: dict, args: Sequence[Value], lead: Sequence[bool],
              out_types: Sequence[TensorType]) -> tuple[Value, ...]:
    """Emit `kind` on `args` (args[k] has a leading extra dim iff lead[k]); every result is led.

    `out_types` are the un-led result types. Raises UnsupportedOpError for an op without a rule.
    """
    args, at = list(args), dict(attrs)
    n = next(a.type.shape[0] for a, f in zip(args, lead) if f)
    rank = out_types[0].rank
    if kind in ("linear", "matmul"):
        res = _matmul(g, kind, args, lead, n)
    elif ELEMENTWISE in get_schema(kind).traits:
        args = [lifted(g, a, rank) if f else a for a, f in zip(args, lead)]
        res = g.add(kind, *args, **at)
    else:
        if not all(lead):
            if kind != "concat":
                raise UnsupportedOpError(f"batching {kind}: only concat may mix led and un-led "
                                         "operands")
            args = [a if f else led(g, a, n) for a, f in zip(args, lead)]
        if kind in _DIM or kind == "unsqueeze":
            at["dim"] = _shift(at["dim"])
        elif kind == "squeeze":
            at["dims"] = tuple(_shift(d) for d in at["dims"])
        elif kind == "permute":
            r = len(at["dims"])
            at["dims"] = (0, *[d % r + 1 for d in at["dims"]])
        elif kind == "transpose":
            at["dim0"], at["dim1"] = _shift(at["dim0"]), _shift(at["dim1"])
        elif kind in ("reshape", "expand"):
            if kind == "expand":
                args = [lifted(g, args[0], rank)]
            at["shape"] = (n, *out_types[0].shape)
        elif kind == "flatten":
            r = args[0].type.rank - 1
            at["start_dim"], at["end_dim"] = (at["start_dim"] % r + 1, at["end_dim"] % r + 1)
        elif kind in _REDUCE:
            r = args[0].type.rank - 1
            at["dims"] = tuple(d % r + 1 for d in (at["dims"] or range(r)))
        else:
            raise UnsupportedOpError(f"batching: no rule for {kind} (the loop body cannot be "
                                     "evaluated for all steps at once)")
        res = g.add(kind, *args, **at)
    return res if isinstance(res, tuple) else (res,)


def _matmul(g: Graph, kind: str, args: list[Value], lead: Sequence[bool], n) -> Value:
    if kind == "linear":
        if any(lead[1:]):
            raise UnsupportedOpError("batching linear with a per-step weight or bias; only x "
                                     "may vary")
        return g.add("linear", *args)
    a, b = args
    ra, rb = a.type.rank - lead[0], b.type.rank - lead[1]
    if (lead[0] and ra < 2) or (lead[1] and rb < 2):
        raise UnsupportedOpError("batching matmul with a 1-D varying operand")
    r = max(ra, rb)
    a = lifted(g, a, r) if lead[0] else a
    b = lifted(g, b, r) if lead[1] else b
    return g.add("matmul", a, b)


def vectorize(body: Graph, lead: Sequence[bool], n: Any, name: str = "") -> Graph:
    """`body` evaluated for n independent steps: inputs with lead[k] get a leading [n] dim.

    Every output is led (an output independent of the led inputs is broadcast).
    """
    g = Graph(name or f"{body.name}_all")
    env: dict[int, tuple[Value, bool]] = {}
    for v, f in zip(body.inputs, lead):
        t = v.type.with_shape((n, *v.type.shape)) if f else v.type
        env[id(v)] = (g.add_input(v.name or "in", t), bool(f))
    for op in body.ops:
        args = [env[id(v)][0] for v in op.inputs]
        flags = [env[id(v)][1] for v in op.inputs]
        if any(flags):
            res = emit_lead(g, op.kind, op.attrs, args, flags, [r.type for r in op.results])
        else:
            out = g.add(op.kind, *args, regions=op.regions, **op.attrs)
            res = out if isinstance(out, tuple) else (out,)
        for r, nr in zip(op.results, res):
            env[id(r)] = (nr, any(flags))
    g.set_outputs(*[env[id(v)][0] if env[id(v)][1] else led(g, env[id(v)][0], n)
                    for v in body.outputs])
    return g
