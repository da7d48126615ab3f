"""`reroll`: fold an unrolled loop (torch.export unrolls Python `for`) back into one ctrl.scan.

How a loop is found: ops with equal labels (kind + attributes; consts by content) that form a
dependence chain o_1 -> o_2 -> ... are candidate step anchors. Step k is everything needed for
o_{k+1} that was not needed for o_k (plus per-step output ops such as the `unsqueeze` of a
`torch.stack`). Steps are compared with networkx isomorphism on the IR (node labels: op
labels; boundary inputs labelled carry / scanned x / invariant / const). A run of at least
`min_steps` isomorphic steps becomes one scan: inputs produced by the previous step are carries,
`select(U, dim, t)` inputs with consecutive t are scanned xs (U with `dim` moved to the front),
values shared by all steps are invariants, consts are cloned into the body, and values read
outside the loop are per-step outputs (a concat of them, as `torch.stack` makes, becomes a
permute + reshape of the stacked ys).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
from networkx.algorithms.isomorphism import DiGraphMatcher

from ...ir.graph import Graph, Op, Value
from ...ir.ops import HAS_REGIONS, SIDE_EFFECT
from ..pipeline import Pass, PassContext, register_pass


@register_pass("reroll")
@dataclass(frozen=True)
class Reroll(Pass):
    """Find chains of isomorphic step subgraphs in unrolled loops and fold them into ctrl.scan."""

    min_steps: int = 4
    max_loops: int = 16

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        found = []
        for _ in range(self.max_loops):
            steps = reroll_once(graph, self.min_steps)
            if not steps:
                break
            found.append(steps)
        ctx.note(loops=len(found), steps=found)
        return graph


def _attr_key(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ("arr", v.dtype.str, v.shape, hashlib.sha1(np.ascontiguousarray(v).tobytes())
                .hexdigest())
    if isinstance(v, (list, tuple)):
        return tuple(_attr_key(x) for x in v)
    return repr(v)


def label(op: Op) -> tuple:
    return (op.kind, tuple((k, _attr_key(v)) for k, v in sorted(op.attrs.items())))


def _is_xsource(op: Op, body: set[int]) -> bool:
    return op.kind == "select" and id(op.inputs[0].producer) not in body


class _Loop:
    """Analysis of one graph: op positions and ancestor bitsets."""

    def __init__(self, graph: Graph):
        self.ops = graph.ops
        self.pos = {id(op): i for i, op in enumerate(self.ops)}
        self.anc: list[int] = []
        for i, op in enumerate(self.ops):
            bits = 1 << i
            for v in op.inputs:
                if v.producer is not None and id(v.producer) in self.pos:
                    bits |= self.anc[self.pos[id(v.producer)]]
            self.anc.append(bits)

    def chains(self, min_len: int) -> list[list[int]]:
        groups: dict[tuple, list[int]] = {}
        for i, op in enumerate(self.ops):
            if op.kind != "const" and not op.regions:
                groups.setdefault(label(op), []).append(i)
        out = []
        for idxs in groups.values():
            if len(idxs) < min_len + 1:
                continue
            nxt, has_prev = {}, set()
            for a_pos, a in enumerate(idxs):
                for b in idxs[a_pos + 1:]:
                    if self.anc[b] >> a & 1:
                        nxt[a] = b
                        has_prev.add(b)
                        break
            for a in idxs:
                if a in has_prev:
                    continue
                chain = [a]
                while chain[-1] in nxt:
                    chain.append(nxt[chain[-1]])
                if len(chain) >= min_len + 1:
                    out.append(chain)
        return sorted(out, key=len, reverse=True)

    def members(self, bits: int) -> set[int]:
        return {id(self.ops[i]) for i in range(bits.bit_length()) if bits >> i & 1}


def _steps(lp: _Loop, chain: list[int]) -> list[set[int]]:
    bodies = [lp.members(lp.anc[b] & ~lp.anc[a]) for a, b in zip(chain, chain[1:])]
    taken = set().union(*bodies)
    byid = {id(op): op for op in lp.ops}
    for body in bodies:  # per-step outputs: ops reading only this step (and consts)
        for op in lp.ops[lp.pos[min(body, key=lambda i: lp.pos[i])]:]:
            if id(op) in taken or op.regions or not op.inputs:
                continue
            srcs = [v.producer for v in op.inputs]
            if all(p is not None and (id(p) in body or p.kind == "const") for p in srcs) and \
                    any(id(p) in body for p in srcs):
                body.add(id(op))
                taken.add(id(op))
    for body in bodies:
        for i in list(body):
            if byid[i].schema.has(SIDE_EFFECT) or byid[i].schema.has(HAS_REGIONS):
                return []
    return bodies


def _nx(body: set[int], byid: dict, prev: set[int] | None, nxt_boundary: set[int]
        ) -> tuple[nx.DiGraph, dict]:
    """The step as a labelled DiGraph; returns it and node -> Value for boundary nodes."""
    g = nx.DiGraph()
    bvals: dict = {}
    core = {i for i in body if not _is_xsource(byid[i], body)}
    for i in core:
        g.add_node(("op", i), label=label(byid[i]))
    for i in core:
        op = byid[i]
        for j, v in enumerate(op.inputs):
            p = v.producer
            if p is not None and id(p) in core:
                src = ("op", id(p))
            else:
                src = ("b", id(v))
                bvals[src] = v
                g.add_node(src, label=_boundary_label(v, body, prev, nxt_boundary))
            slots = g.edges[src, ("op", i)]["slots"] if g.has_edge(src, ("op", i)) else ()
            g.add_edge(src, ("op", i), slots=tuple(sorted((*slots, (v.index, j)))))
    return g, bvals


def _boundary_label(v: Value, body: set[int], prev: set[int] | None, nxt: set[int]) -> tuple:
    p = v.producer
    if p is not None and id(p) in body and p.kind == "select":
        return ("xs", id(p.inputs[0]), p.attrs["dim"])
    if p is not None and p.kind == "const":
        return ("const", label(p))
    if prev is not None:
        if p is not None and id(p) in prev:
            return ("carry",)
        return ("inv", id(v)) if id(v) in nxt else ("xvar",)
    return ("inv", id(v)) if id(v) in nxt else ("carry",)


def _match(a: nx.DiGraph, b: nx.DiGraph) -> dict | None:
    m = DiGraphMatcher(a, b, node_match=lambda x, y: x["label"] == y["label"],
                       edge_match=lambda x, y: x["slots"] == y["slots"])
    return dict(m.mapping) if m.is_isomorphic() else None


def reroll_once(graph: Graph, min_steps: int) -> int:
    """Rewrite the longest rerollable loop in `graph`; returns its step count (0: none)."""
    from .build_scan import build_scan

    lp = _Loop(graph)
    byid = {id(op): op for op in lp.ops}
    for chain in lp.chains(min_steps):
        bodies = _steps(lp, chain)
        if len(bodies) < min_steps:
            continue
        boundary_sets = []
        for body in bodies:
            ids = set()
            for i in body:
                ids.update(id(v) for v in byid[i].inputs)
            boundary_sets.append(ids)
        graphs, bvals = [], []
        for k, body in enumerate(bodies):
            prev = bodies[k - 1] if k else None
            nxt = boundary_sets[k + 1] if k + 1 < len(bodies) else boundary_sets[k - 1]
            g, bv = _nx(body, byid, prev, nxt)
            graphs.append(g)
            bvals.append(bv)
        maps = [{n: n for n in graphs[0]}]
        for g in graphs[1:]:
            m = _match(g, graphs[0])
            if m is None:
                break
            maps.append({t: s for s, t in m.items()})  # template node -> step node
        if len(maps) < min_steps:
            continue
        n = len(maps)
        if build_scan(graph, lp, byid, bodies[:n], graphs[:n], bvals[:n], maps):
            return n
    return 0
