"""`parallel_newton`: nonlinear one-carry ctrl.scan loops -> ctrl.newton_scan (DEER / ParaRNN).

The loop h_t = f(h_{t-1}, x_t) is solved as one system over the whole trajectory: guess H,
evaluate f for all steps at once (the body vectorized over T by batching.vectorize), linearize
with J_t = df/dh (derived on the IR by autodiff.jacobian_graph, "full" = DEER, "diag" =
quasi-DEER), solve the linear recurrence with the parallel (Hillis-Steele) scan, repeat until
max|f(H_prev) - H| <= tol; if max_iters pass without that, the op falls back to the sequential
body, so the result is always the loop's (exact at convergence, within tol otherwise) and the
op's last result says how many Newton updates it took (-1: fell back).

Which loops: those the IR analysis calls nonlinear (linear ones belong to parallel_scan, which
is exact), with one forward carry, static T, and a body that autodiff and batching have rules
for. The cost model (cost.py) decides whether Newton pays off; `force=true` skips it (tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from ...errors import UnsupportedOpError
from ...ir.graph import Graph, Op
from ..pipeline import Pass, PassContext, register_pass
from .autodiff import independent_rows, jacobian_graph
from .batching import vectorize
from .cost import choose
from .linearity import NONLINEAR, classify


@register_pass("parallel_newton")
@dataclass(frozen=True)
class ParallelNewton(Pass):
    """Solve nonlinear recurrences by Newton iteration over the whole sequence (DEER)."""

    max_iters: int = 20
    tol: float = 1e-5
    jacobian: Literal["diag", "full"] = "full"
    force: bool = False  # rewrite even when the cost model prefers the sequential loop
    tolerance: ClassVar[float | None] = 1e-4

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        loops = [self._one(graph, op) for op in graph.ops if op.kind == "ctrl.scan"]
        ctx.note(loops=loops)
        return graph

    def _one(self, graph: Graph, op: Op) -> dict:
        nc, nx_ = op.attrs["num_carry"], op.attrs["num_xs"]
        info: dict = {"loop": op.loc or "scan", "strategy": "sequential"}
        if nc != 1 or op.attrs["reverse"]:
            info["reason"] = (f"{nc} carries, reverse={op.attrs['reverse']}: Newton handles one "
                              "forward carry (concatenate LSTM's (h, c) first)")
            return info
        body = op.regions[0]
        steps = op.inputs[1].type.shape[0]
        cls = classify(body, 1)[0][0]
        h = op.inputs[0].type
        if not isinstance(steps, int) or not h.is_static:
            info["reason"] = f"symbolic length {steps!r} or state {h}: needs static shapes"
            return info
        rows = independent_rows(body)
        batch = math.prod(h.shape[:rows])
        state = math.prod(h.shape[rows:])
        pick = choose(cls, steps, state, batch=batch, jacobian=self.jacobian)
        info.update(steps=steps, state=state, batch=batch, rows=rows, **{"class": cls})
        if cls != NONLINEAR:
            info["reason"] = f"{cls} in the state: left to parallel_scan (exact)"
            return info
        if pick.strategy != "parallel_newton" and not self.force:
            info["reason"] = pick.reason
            return info
        lead = [True] * (1 + nx_) + [False] * (len(op.inputs) - 1 - nx_)
        try:
            jac = jacobian_graph(body, self.jacobian, rows)
            f_all = vectorize(body, lead, steps, name=f"{body.name}_all")
            j_all = vectorize(jac, lead, steps, name=f"{body.name}_jac_all")
        except UnsupportedOpError as e:
            info["reason"] = f"not differentiable/batchable on the IR: {e}"
            return info
        with graph.at(before=op):
            res = graph.add("ctrl.newton_scan", *op.inputs, regions=[body.clone(), f_all, j_all],
                            num_xs=nx_, max_iters=self.max_iters, tol=self.tol,
                            jacobian=self.jacobian, loc=op.loc)
        graph.replace_op(op, list(res[:-1]))
        info.update(strategy="parallel_newton", jacobian=self.jacobian,
                    reason=pick.reason + (" (forced)" if pick.strategy != "parallel_newton"
                                          else ""))
        return info
