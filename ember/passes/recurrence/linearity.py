"""Linearity of a scan body in its carried state, decided on the IR dataflow (not by name).

Each body value is state-free, affine-diagonal in the state (h' = a ⊙ h + b, elementwise),
dense-affine (a matmul/linear touches the state: h' = A @ h + b) or nonlinear. `affine_parts`
then builds a(x) and b(x) as IR: a coefficient/offset pair is propagated through
add/sub/neg/mul/div (mul and div only by state-free factors), so a and b are exact
expressions, not finite differences.
"""

from __future__ import annotations

from typing import Any

from ...ir.graph import Graph, Value

FREE, DIAG, DENSE, NONLINEAR = "free", "diag", "dense", "nonlinear"
_RANK = {FREE: 0, DIAG: 1, DENSE: 2, NONLINEAR: 3}
_SHAPE_KEEP = {"reshape", "unsqueeze", "squeeze", "permute", "select", "slice", "expand",
               "concat", "split", "flatten"}


def classify(body: Graph, num_carry: int) -> tuple[list[str], list[set[int]]]:
    """Class of each new carry, and which carries each new carry depends on."""
    cls: dict[int, str] = {}
    deps: dict[int, set[int]] = {}
    for k, v in enumerate(body.inputs):
        cls[id(v)] = DIAG if k < num_carry else FREE
        deps[id(v)] = {k} if k < num_carry else set()
    for op in body.ops:
        ins = [cls[id(v)] for v in op.inputs]
        dep = set().union(*[deps[id(v)] for v in op.inputs]) if op.inputs else set()
        out = _rule(op.kind, ins, op)
        for r in op.results:
            cls[id(r)], deps[id(r)] = out, dep
    news = body.outputs[:num_carry]
    return [cls[id(v)] for v in news], [deps[id(v)] for v in news]


def _rule(kind: str, ins: list[str], op: Any) -> str:
    worst = max(ins, key=_RANK.get, default=FREE)
    if worst == FREE:
        return FREE
    if kind in ("add", "sub"):
        return worst
    if kind == "neg":
        return worst
    if kind == "mul":
        return worst if sum(c != FREE for c in ins) == 1 else NONLINEAR
    if kind == "div":
        return worst if ins[1] == FREE else NONLINEAR
    if kind in ("linear", "matmul"):
        state_free_rest = all(c == FREE for c in ins[1:]) if kind == "linear" else \
            sum(c != FREE for c in ins) == 1
        return DENSE if state_free_rest and worst in (DIAG, DENSE) else NONLINEAR
    if kind in _SHAPE_KEEP:  # moves state elements around: no longer provably diagonal
        return DENSE if worst != NONLINEAR else NONLINEAR
    return NONLINEAR


def affine_parts(body: Graph, num_carry: int) -> Graph:
    """Graph(xs..., invariants...) -> (a, b) with new carry 0 == a * h + b (one carry, DIAG).

    Raises ValueError when the body is not diagonal-affine (callers classify first).
    """
    h = body.inputs[0]
    out = Graph("affine")
    env: dict[int, Value] = {}
    for v in body.inputs[num_carry:]:
        env[id(v)] = out.add_input(v.name or "in", v.type)
    pair: dict[int, tuple[Value | None, Value | None]] = {id(h): (None, None)}  # (coef, off)

    def free(v: Value) -> Value:
        if id(v) in env:
            return env[id(v)]
        op = v.producer
        if op is None or id(v) in pair:
            raise ValueError(f"{v} is not state-free")
        args = [free(a) for a in op.inputs]
        res = out.add(op.kind, *args, **op.attrs)
        for r, nr in zip(op.results, res if isinstance(res, tuple) else (res,)):
            env[id(r)] = nr
        return env[id(v)]

    def comb(kind: str, p: Value | None, q: Value | None) -> Value | None:
        if p is None:
            return q if kind == "add" else (None if q is None else out.add("neg", q))
        return p if q is None else out.add(kind, p, q)

    ones = None
    cone = _cone(body.outputs[0])
    for op in body.ops:
        if id(op) not in cone or not any(id(v) in pair for v in op.inputs):
            continue
        a_in = [pair.get(id(v)) for v in op.inputs]
        k = op.kind
        if k in ("add", "sub") and all(a_in):
            (c1, o1), (c2, o2) = a_in
            c1 = c1 if c1 is not None else _one(out, h, ones)
            c2 = c2 if c2 is not None else _one(out, h, ones)
            res = (out.add(k, c1, c2), comb(k, o1, o2))
        elif k in ("add", "sub"):
            if a_in[0]:
                c, o = a_in[0]
                s = free(op.inputs[1])
                res = (c, comb(k, o, s))
            else:
                c, o = a_in[1]
                s = free(op.inputs[0])
                c = c if c is not None else _one(out, h, ones)
                sign = (lambda v: v) if k == "add" else (lambda v: out.add("neg", v))
                res = (sign(c), out.add(k, s, o) if o is not None else s)
        elif k == "neg":
            c, o = a_in[0]
            res = (out.add("neg", c if c is not None else _one(out, h, ones)),
                   None if o is None else out.add("neg", o))
        elif k in ("mul", "div") and (a_in[0] is None or a_in[1] is None):
            j = 0 if a_in[0] else 1
            if k == "div" and j == 1:
                raise ValueError("division by the state is not affine")
            c, o = a_in[j]
            s = free(op.inputs[1 - j])
            res = (out.add(k, c, s) if c is not None else
                   (s if k == "mul" else out.add("div", _one(out, h, ones), s)),
                   None if o is None else out.add(k, o, s))
        else:
            raise ValueError(f"{k} is not diagonal-affine in the state")
        pair[id(op.result)] = res
    new = body.outputs[0]
    if id(new) not in pair:
        raise ValueError("the new carry does not depend on the state")
    c, o = pair[id(new)]
    c = c if c is not None else _one(out, h, ones)
    o = o if o is not None else out.const(_zeros(h), name=None)
    shape = tuple(h.type.shape)
    if c.type.shape != shape:
        c = out.add("expand", c, shape=shape)
    if o.type.shape != shape:
        o = out.add("expand", o, shape=shape)
    out.set_outputs(c, o)
    return out


def _one(out: Graph, h: Value, cache) -> Value:
    import numpy as np

    return out.const(np.ones((), h.type.dtype.to_numpy()))


def _zeros(h: Value):
    import numpy as np

    return np.zeros((), h.type.dtype.to_numpy())


def _cone(v: Value) -> set[int]:
    """Ids of the ops `v` depends on (inside its graph)."""
    seen: set[int] = set()
    stack = [v.producer] if v.producer is not None else []
    while stack:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        stack.extend(a.producer for a in op.inputs if a.producer is not None)
    return seen
