"""Forward-mode differentiation of a scan body on the IR: the Jacobian of h' w.r.t. h.

Why forward mode: the state is small (a cell's hidden vector) and its Jacobian is needed whole
(DEER's dense variant) or on its diagonal (quasi-DEER). Every body value v gets a tangent of
shape [m, *shape(v)]: column j of that stack is dv/dh · e_j, seeded with the identity, so one
pass through the body yields all m directional derivatives at once. Tangent rules exist per
registered op kind (add/sub/mul/div/neg, sigmoid/tanh/exp/log/relu/sqrt, where, cast, linear,
matmul, and every shape op via batching.emit_lead); an op without one raises
UnsupportedOpError naming it. Nothing is written per cell type.

Batch rows: when dim 0 of the state is a batch that the body never mixes (checked on the IR by
`independent_rows`), the Jacobian is block-diagonal over it, so the seed covers one row
(m = prod(shape[1:])) broadcast across rows: B times less work than seeding all B*m elements.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.graph import Graph, Value
from ...ir.ops import ELEMENTWISE, get_schema
from .batching import _DIM, _REDUCE, emit_lead, lifted

_LINEAR_IN_TANGENT = {"split", "slice", "select", "concat", "permute", "transpose", "reshape",
                      "expand", "unsqueeze", "squeeze", "flatten", "sum", "mean"}


def jacobian_graph(body: Graph, mode: str = "full", rows: int | None = None) -> Graph:
    """Graph(body inputs) -> J for new carry 0 w.r.t. carry 0 (body.inputs[0]).

    With r = rows (0 or 1: leading state dims that are independent, default: analysed) and the
    state shape S: "full" gives [*S[:r], m, m] (J[.., i, j] = dh'_i / dh_j over one row, m =
    prod(S[r:])); "diag" gives the diagonal of that, shaped like S.
    """
    h = body.inputs[0]
    shape = tuple(h.type.shape)
    r = independent_rows(body) if rows is None else rows
    if not all(isinstance(d, int) for d in shape[r:]):
        raise UnsupportedOpError(f"autodiff needs static state dims past the batch rows, got "
                                 f"{h.type}")
    m = math.prod(shape[r:])
    dt = h.type.dtype.to_numpy()
    g = Graph(f"{body.name}_jac")
    prim: dict[int, Value] = {id(v): g.add_input(v.name or "in", v.type) for v in body.inputs}
    seed = np.eye(m, dtype=dt).reshape(m, *([1] * r), *shape[r:])
    tan: dict[int, Value] = {id(h): g.add("expand", g.const(seed), shape=(m, *shape))}
    for op in body.ops:
        args = [prim[id(v)] for v in op.inputs]
        out = g.add(op.kind, *args, regions=op.regions, **op.attrs)
        outs = out if isinstance(out, tuple) else (out,)
        for res, nres in zip(op.results, outs):
            prim[id(res)] = nres
        if any(id(v) in tan for v in op.inputs):
            ts = _tangent(g, op, args, [tan.get(id(v)) for v in op.inputs], outs, m)
            for res, t in zip(op.results, ts):
                tan[id(res)] = t
    new = body.outputs[0]
    if id(new) not in tan:
        raise UnsupportedOpError("the new carry does not depend on the state; nothing to solve")
    t = tan[id(new)]  # [m_in, *S]
    t = g.add("reshape", t, shape=(m, *shape[:r], m))
    if mode == "full":
        g.set_outputs(g.add("permute", t, dims=(*range(1, r + 1), r + 1, 0)))
    elif mode == "diag":
        eye = g.const(np.eye(m, dtype=dt).reshape(m, *([1] * r), m))
        d = g.add("sum", g.add("mul", t, eye), dims=(0,))
        g.set_outputs(g.add("reshape", d, shape=shape))
    else:
        raise ValueError(f"jacobian mode {mode!r}: use full or diag")
    return g


def _zeros(g: Graph, like: Value, m: int) -> Value:
    z = g.const(np.zeros((), like.type.dtype.to_numpy()))
    return g.add("expand", z, shape=(m, *like.type.shape))


def _fit(g: Graph, t: Value, out: Value, m: int) -> Value:
    """A tangent brought to exactly [m, *shape(out)] (after broadcasting in the primal op)."""
    if tuple(t.type.shape[1:]) == tuple(out.type.shape):
        return t
    return g.add("expand", lifted(g, t, out.type.rank), shape=(m, *out.type.shape))


def _tangent(g: Graph, op, args: list[Value], ts: list[Value | None], outs, m: int):
    kind, y = op.kind, outs[0]
    lead = [t is not None for t in ts]

    def mul(t: Value, p: Value) -> Value:
        return emit_lead(g, "mul", {}, [t, p], [True, False], [y.type])[0]

    if kind in ("add", "sub"):
        a, b = (_fit(g, t, y, m) if t is not None else None for t in ts)
        if a is None:
            return [b if kind == "add" else g.add("neg", b)]
        return [a if b is None else g.add(kind, a, b)]
    if kind == "neg":
        return [g.add("neg", ts[0])]
    if kind == "mul":
        parts = [mul(ts[k], args[1 - k]) for k in (0, 1) if ts[k] is not None]
        return [_fit(g, parts[0] if len(parts) == 1 else g.add("add", *parts), y, m)]
    if kind == "div":
        parts = []
        if ts[0] is not None:
            parts.append(mul(ts[0], g.add("reciprocal", args[1])))
        if ts[1] is not None:
            parts.append(g.add("neg", mul(ts[1], g.add("div", y, args[1]))))
        return [_fit(g, parts[0] if len(parts) == 1 else g.add("add", *parts), y, m)]
    if kind in _UNARY:
        return [mul(ts[0], _UNARY[kind](g, args[0], y))]
    if kind == "cast":
        if not y.type.dtype.is_float:
            raise UnsupportedOpError(f"autodiff through cast to {y.type.dtype}")
        return [g.add("cast", ts[0], dtype=y.type.dtype)]
    if kind == "where":
        if ts[0] is not None:
            raise UnsupportedOpError("autodiff: the condition of where depends on the state")
        a, b = (_fit(g, t, y, m) if t is not None else _zeros(g, y, m) for t in ts[1:])
        return [emit_lead(g, "where", {}, [args[0], a, b], [False, True, True], [y.type])[0]]
    if kind == "linear":
        if any(lead[1:]):
            raise UnsupportedOpError("autodiff: linear whose weight depends on the state")
        return [emit_lead(g, "linear", {}, [ts[0], args[1]], [True, False], [y.type])[0]]
    if kind == "matmul":
        parts = [emit_lead(g, "matmul", {}, [ts[0], args[1]], [True, False], [y.type])[0]
                 if k == 0 else
                 emit_lead(g, "matmul", {}, [args[0], ts[1]], [False, True], [y.type])[0]
                 for k in (0, 1) if ts[k] is not None]
        return [_fit(g, parts[0] if len(parts) == 1 else g.add("add", *parts), y, m)]
    if kind in _LINEAR_IN_TANGENT:
        full = [t if t is not None else _zeros(g, a, m) for t, a in zip(ts, args)]
        return list(emit_lead(g, kind, op.attrs, full, [True] * len(full),
                              [r.type for r in outs]))
    raise UnsupportedOpError(f"autodiff: no derivative rule for {kind} (in the scan body); "
                             "parallel_newton cannot linearize this loop")


def _one(g: Graph, v: Value) -> Value:
    return g.const(np.ones((), v.type.dtype.to_numpy()))


_UNARY = {  # d y / d x as IR, given x and y = f(x)
    "sigmoid": lambda g, x, y: g.add("mul", y, g.add("sub", _one(g, y), y)),
    "tanh": lambda g, x, y: g.add("sub", _one(g, y), g.add("mul", y, y)),
    "exp": lambda g, x, y: y,
    "log": lambda g, x, y: g.add("reciprocal", x),
    "sqrt": lambda g, x, y: g.add("div", g.const(np.full((), 0.5, y.type.dtype.to_numpy())), y),
    "relu": lambda g, x, y: g.add("cast", g.add("gt", x, g.const(
        np.zeros((), x.type.dtype.to_numpy()))), dtype=x.type.dtype),
}


def independent_rows(body: Graph) -> int:
    """1 if dim 0 of carry 0 is a batch the body never mixes (J block-diagonal), else 0.

    Tracks, for every value that depends on the state, where that batch dim sits; an op that
    would contract, reshape or move it (or one without a rule) answers 0.
    """
    h = body.inputs[0]
    if h.type.rank < 2:
        return 0
    pos: dict[int, int] = {id(h): 0}
    for op in body.ops:
        ps = [pos.get(id(v)) for v in op.inputs]
        if all(p is None for p in ps):
            continue
        out = _row_rule(op, ps)
        if out is None:
            return 0
        for r in op.results:
            pos[id(r)] = out
    return int(pos.get(id(body.outputs[0])) == 0)


def _row_rule(op, ps: list[int | None]) -> int | None:
    kind, ins = op.kind, op.inputs
    ro = op.results[0].type.rank
    if ELEMENTWISE in get_schema(kind).traits:
        got = {p + ro - v.type.rank for p, v in zip(ps, ins) if p is not None}
        if len(got) != 1:
            return None
        p = got.pop()
        # an un-tracked operand with a real (non-1) size on that dim would be per-row data: fine
        return p
    p = ps[0]
    if kind == "linear":
        return p if p is not None and all(q is None for q in ps[1:]) and \
            p != ins[0].type.rank - 1 else None
    if kind == "matmul":
        return p if p is not None and ps[1] is None and p <= ins[0].type.rank - 2 and \
            ins[0].type.rank >= 2 else None
    if kind in _DIM or kind == "unsqueeze":
        rank = ins[0].type.rank + (kind == "unsqueeze")
        d = op.attrs["dim"] % rank
        if kind == "concat":
            return p if len({q for q in ps}) == 1 and d != p else None
        if kind == "unsqueeze":
            return p + (d <= p)
        if d == p:
            return None
        return p - (d < p) if kind == "select" else p
    if kind == "permute":
        return list(op.attrs["dims"]).index(p) if p in op.attrs["dims"] else \
            [d % len(op.attrs["dims"]) for d in op.attrs["dims"]].index(p)
    if kind in ("reshape", "expand"):
        a, b = ins[0].type.shape, op.results[0].type.shape
        return p if tuple(a[:p + 1]) == tuple(b[:p + 1]) and kind == "reshape" or \
            (kind == "expand" and len(a) == len(b) and a[p] == b[p]) else None
    if kind in _REDUCE:
        r = ins[0].type.rank
        dims = [d % r for d in (op.attrs["dims"] or range(r))]
        if p in dims:
            return None
        return p if op.attrs.get("keepdim") else p - sum(d < p for d in dims)
    return None
