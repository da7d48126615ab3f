"""`parallel_scan`: rewrite diagonal-affine ctrl.scan loops into ctrl.linear_scan (exact).

h' = a(x, inv) ⊙ h + b(x, inv) (found by linearity.affine_parts on the IR) becomes
`linear_scan(a, b, h0)` with a/b computed for all steps at once: hoisted out of the loop when
they do not depend on x, taken straight from the scanned input when b is one, and otherwise by
a carry-free ctrl.scan (a map). Per-step outputs other than the new state are recomputed by a
map over (h_{t-1}, x_t). The backend evaluates linear_scan with its chunked parallel kernel,
combining (a1, b1)∘(a2, b2) = (a1·a2, a2·b1 + b2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...ir.graph import Graph, Op, Value
from ..pipeline import Pass, PassContext, register_pass
from .cost import choose
from .linearity import DIAG, affine_parts, classify


@register_pass("parallel_scan")
@dataclass(frozen=True)
class ParallelScan(Pass):
    """Turn linear recurrences (h' = a*h + b, decided on the IR) into a parallel linear scan."""

    chunk: str = "auto"  # steps per chunk for the kernel, or "auto" (the backend's plan)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        chunk = 0 if self.chunk == "auto" else int(self.chunk)
        loops = []
        for op in graph.ops:
            if op.kind != "ctrl.scan":
                continue
            loops.append(_one(graph, op, chunk))
        ctx.note(loops=loops)
        return graph


def _one(graph: Graph, op: Op, chunk: int) -> dict:
    body = op.regions[0]
    nc, nx_ = op.attrs["num_carry"], op.attrs["num_xs"]
    steps = op.inputs[nc].type.shape[0]
    if nc != 1 or op.attrs["reverse"]:
        return {"loop": op.loc or "scan", "strategy": "sequential",
                "reason": f"{nc} carries / reverse={op.attrs['reverse']}: only one forward "
                          "carry is rewritten"}
    classes, _ = classify(body, nc)
    h0 = op.inputs[0]
    state = math.prod(d for d in h0.type.shape if isinstance(d, int))
    pick = choose(classes[0], steps, state)
    info = {"loop": op.loc or "scan", "steps": steps, "state": state, "class": classes[0],
            "strategy": pick.strategy, "reason": pick.reason}
    if pick.strategy != "parallel_scan" or classes[0] != DIAG:
        return info
    parts = affine_parts(body, nc)
    xs, invs = list(op.inputs[nc:nc + nx_]), list(op.inputs[nc + nx_:])
    with graph.at(before=op):
        a, b = _all_steps(graph, parts, xs, invs, nx_)
        h_all = graph.add("ctrl.linear_scan", a, b, h0, chunk=chunk, loc=op.loc)
        final = graph.add("select", h_all, dim=0, index=steps - 1)
        new_state = body.outputs[0]
        ys_out = []
        need_map = [k for k, y in enumerate(body.outputs[1:]) if y is not new_state]
        mapped: list[Value] = []
        if need_map:
            prev = graph.add("concat", graph.add("unsqueeze", h0, dim=0),
                             graph.add("slice", h_all, dim=0, start=0, end=steps - 1), dim=0) \
                if steps > 1 else graph.add("unsqueeze", h0, dim=0)
            mbody = body.clone()
            mbody.set_outputs(*[mbody.outputs[1 + k] for k in need_map])
            res = graph.add("ctrl.scan", prev, *xs, *invs, regions=[mbody], num_carry=0,
                            num_xs=1 + nx_, loc=op.loc)
            mapped = list(res) if isinstance(res, tuple) else [res]
        it = iter(mapped)
        for y in body.outputs[1:]:
            ys_out.append(h_all if y is new_state else next(it))
    graph.replace_op(op, [final, *ys_out])
    return info


def _all_steps(graph: Graph, parts: Graph, xs: list[Value], invs: list[Value],
               nx_: int) -> tuple[Value, Value]:
    """a and b for every step: hoisted, passed through, or mapped over the steps."""
    x_inputs = {id(v) for v in parts.inputs[:nx_]}
    out: list[Value] = []
    for k, v in enumerate(parts.outputs):
        if id(v) in x_inputs and k == 1:
            out.append(xs[[id(i) for i in parts.inputs].index(id(v))])
        elif not _depends(v, x_inputs):
            out.append(_inline(graph, parts, v, xs, invs, nx_))
        else:
            sub = parts.clone()
            sub.set_outputs(sub.outputs[k])
            out.append(graph.add("ctrl.scan", *xs, *invs, regions=[sub], num_carry=0,
                                 num_xs=nx_))
    return out[0], out[1]


def _depends(v: Value, ids: set[int]) -> bool:
    if id(v) in ids:
        return True
    return v.producer is not None and any(_depends(a, ids) for a in v.producer.inputs)


def _inline(graph: Graph, parts: Graph, v: Value, xs, invs, nx_) -> Value:
    env = {id(p): a for p, a in zip(parts.inputs[nx_:], invs)}

    def get(w: Value) -> Value:
        if id(w) not in env:
            p = w.producer
            res = graph.add(p.kind, *[get(a) for a in p.inputs], **p.attrs)
            for r, nr in zip(p.results, res if isinstance(res, tuple) else (res,)):
                env[id(r)] = nr
        return env[id(w)]

    return get(v)
