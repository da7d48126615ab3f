"""`lowrank`: factor linear and conv weights by truncated SVD into two thinner ops.

W [N, K] ~= A [N, r] @ B [r, K] with A = U sqrt(S), B = sqrt(S) Vt. A linear becomes
linear(linear(x, B), A, bias); a conv [O, C, kh, kw] becomes a conv with r filters (same stride,
padding, dilation) followed by a 1x1 conv [O, r] carrying the bias. The rank per layer comes from
`params` when given: a budget, the fraction of the whole graph's parameters to keep; the ranks
are then chosen jointly - one energy threshold for every layer (each layer keeps the same
fraction of its sum(S^2)), the highest whose total fits the budget, found by bisection - so
layers with a fast-decaying spectrum give up more rank than layers that need it. Else from
`energy` (smallest r keeping that fraction of sum(S^2)), else from `rank_ratio` (r such that the
two factors hold that fraction of the layer's parameters). A layer is left alone when its
factors would not hold fewer parameters (hence fewer FLOPs) than the original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...ir.graph import Graph
from ..pipeline import Pass, PassContext, register_pass
from . import _common as C


@register_pass("lowrank")
@dataclass(frozen=True)
class LowRank(Pass):
    """Split linear/conv layers into two thinner ones by truncated SVD (rank by energy or ratio)."""

    rank_ratio: float = 0.5
    energy: float | None = None
    params: float | None = None
    skip: tuple[str, ...] = ()
    tolerance: ClassVar[float | None] = math.inf  # truncation changes outputs; finetune recovers

    def __post_init__(self) -> None:
        C.check_ratio(self.name, "rank_ratio", self.rank_ratio, 0.0, 1.0)
        if self.energy is not None:
            C.check_ratio(self.name, "energy", self.energy, 0.0, 1.0)
        if self.params is not None:
            C.check_ratio(self.name, "params", self.params, 0.0, 1.0)

    def choose_rank(self, s: np.ndarray, n: int, k: int, energy: float | None = None) -> int:
        energy = self.energy if energy is None else energy
        if energy is not None:
            e = np.cumsum(s.astype(np.float64) ** 2)
            return int(np.searchsorted(e / e[-1], energy - 1e-12) + 1)
        return max(1, math.floor(self.rank_ratio * n * k / (n + k)))

    def budget_energy(self, graph: Graph, spectra: list[tuple[np.ndarray, int, int]]) -> float:
        """The highest common energy threshold whose factored layers fit the `params` budget."""
        total = C.params(graph)
        fixed = total - sum(n * k for _, n, k in spectra)  # biases and untouched layers

        def cost(energy: float) -> int:
            out = fixed
            for s, n, k in spectra:
                r = min(self.choose_rank(s, n, k, energy), len(s))
                out += min(r * (n + k), n * k)
            return out

        budget = self.params * total
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid)
        return lo

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        C.stash_teacher(graph)
        before_f, before_p = C.flops(graph), C.params(graph)
        layers, skipped, todo = [], [], []
        for op in C.weighted_ops(graph, ("linear", "conv2d"), self.skip):
            if op.kind == "conv2d" and op.attrs["groups"] != 1:
                skipped.append(f"{C.weight_name(op)} (grouped conv)")
                continue
            w = np.asarray(C.const_array(op.inputs[1]), np.float64)
            n, k = w.shape[0], int(np.prod(w.shape[1:]))
            todo.append((op, n, k, *np.linalg.svd(w.reshape(n, k), full_matrices=False)))
        energy = None
        if self.params is not None:
            energy = self.budget_energy(graph, [(s, n, k) for _, n, k, _, s, _ in todo])
        for op, n, k, u, s, vt in todo:
            r = min(self.choose_rank(s, n, k, energy), len(s))
            name = C.weight_name(op)
            if r * (n + k) >= n * k:
                skipped.append(f"{name} (rank {r} saves nothing)")
                continue
            root = np.sqrt(s[:r])
            a = (u[:, :r] * root).astype(np.float32)
            b = (root[:, None] * vt[:r]).astype(np.float32)
            _factor(graph, op, a, b, name)
            kept = float((s[:r] ** 2).sum() / (s ** 2).sum())
            layers.append({"layer": name, "rank": r, "full_rank": len(s),
                           "energy_kept": round(kept, 4)})
        from ..cleanup.dce import eliminate_dead_code

        eliminate_dead_code(graph)
        ctx.note(layers=layers, skipped=skipped, energy_threshold=energy, flops_before=before_f,
                 flops_after=C.flops(graph), params_before=before_p, params_after=C.params(graph))
        return graph


def _factor(graph: Graph, op, a: np.ndarray, b: np.ndarray, name: str) -> None:
    x, w = op.inputs[0], op.inputs[1]
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    extra = [bias] if bias is not None else []
    with graph.at(before=op):
        if op.kind == "linear":
            bv = graph.const(b, name=f"{name}.lowrank_b")
            av = graph.const(a, name=f"{name}.lowrank_a")
            h = graph.add("linear", x, bv, loc=op.loc)
            y = graph.add("linear", h, av, *extra, loc=op.loc)
        else:
            shape = w.type.shape
            bv = graph.const(b.reshape((b.shape[0],) + tuple(shape[1:])), name=f"{name}.lowrank_b")
            av = graph.const(a.reshape(a.shape + (1, 1)), name=f"{name}.lowrank_a")
            h = graph.add("conv2d", x, bv, loc=op.loc, **op.attrs)
            y = graph.add("conv2d", h, av, *extra, loc=op.loc)
    graph.replace_all_uses(op.result, y)
    graph.erase(op)
