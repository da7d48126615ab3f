"""Channel dependency groups: which channels of which tensors must be pruned together.

Every op states how the axes of its operands and results are coupled (`_couplings`): an
elementwise add ties the channel axis of both operands to its result, a linear ties the output
features to the rows of its weight and its input features to the weight's columns, a reshape
into heads ties feature `i` to head `i // head_dim`, a concat offsets each operand's channels.
Axes an op mixes (a layer norm's normalized axis, a softmax axis, a reduction, graph inputs and
outputs, any op without a rule) are *blocked*.

Two networkx graphs come out of this. The axis graph (nodes `(value, axis)`) gives the
*groups*: connected axes whose sizes must shrink together. The element graph (nodes
`(value, axis, index)`) splits a group into *units*: the smallest sets of channel slices that can
be removed consistently (a conv channel with its batch-norm entries and the consumer's input
slice; a whole attention head across q/k/v/out projections). A group is prunable when it holds
a *source* (the output rows of a linear/conv weight const), no blocked axis and only static sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ...ir.graph import Graph, Op, Value
from ...ir.ops import ELEMENTWISE
from ...ir.types import normalize_axis

Mapping = str | list[tuple[int, int]]  # "id" or explicit (index_a, index_b) pairs


@dataclass
class Coupling:
    a: Value
    axis_a: int
    b: Value
    axis_b: int
    pairs: Mapping = "id"


@dataclass
class Unit:
    """One removable slice set: `members[(value id, axis)]` lists the indices it removes."""

    members: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    sources: list[tuple[int, int]] = field(default_factory=list)  # (weight value id, row)


@dataclass
class Group:
    axes: list[tuple[int, int]]  # (value id, axis)
    units: list[Unit]
    names: list[str]  # weight names of the sources, for reports

    @property
    def size(self) -> int:
        return len(self.units)


@dataclass
class Analysis:
    groups: list[Group]
    blocked: set[tuple[int, int]]
    values: dict[int, Value]


_NORM_LIKE_POOLS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")
_REDUCE = ("sum", "mean", "amax", "amin", "prod", "var")


def analyze(graph: Graph) -> Analysis:
    """Dependency groups of `graph`'s top level (ops with regions block their operands)."""
    values: dict[int, Value] = {}
    couplings: list[Coupling] = []
    blocked: set[tuple[int, int]] = set()
    sources: set[tuple[int, int]] = set()
    axes = nx.Graph()

    def note(v: Value) -> None:
        values[id(v)] = v
        for ax in range(v.type.rank):
            axes.add_node((id(v), ax))

    def block_all(vs) -> None:
        for v in vs:
            blocked.update((id(v), ax) for ax in range(v.type.rank))

    for v in graph.inputs:
        note(v)
    block_all(graph.inputs)
    for op in graph.ops:
        for v in (*op.inputs, *op.results):
            note(v)
        rule = _couplings(op)
        if rule is None:
            block_all((*op.inputs, *op.results))
            continue
        cs, blk = rule
        couplings.extend(cs)
        blocked.update((id(v), ax) for v, ax in blk)
        if op.kind in ("linear", "conv2d") and op.inputs[1].producer is not None \
                and op.inputs[1].producer.kind == "const" \
                and (op.kind == "linear" or op.attrs["groups"] == 1):
            sources.add((id(op.inputs[1]), 0))
    block_all(graph.outputs)
    for c in couplings:
        axes.add_edge((id(c.a), c.axis_a), (id(c.b), c.axis_b))

    groups = []
    for comp in nx.connected_components(axes):
        if not comp & sources or comp & blocked:
            continue
        if not all(isinstance(values[vid].type.shape[ax], int) for vid, ax in comp):
            continue
        groups.append(_units(sorted(comp), couplings, sources, values))
    groups.sort(key=lambda gr: (gr.names, gr.axes))
    return Analysis(groups, blocked, values)


def _units(comp: list[tuple[int, int]], couplings: list[Coupling], sources: set,
           values: dict[int, Value]) -> Group:
    inside = set(comp)
    elems = nx.Graph()
    for vid, ax in comp:
        elems.add_nodes_from((vid, ax, i) for i in range(values[vid].type.shape[ax]))
    for c in couplings:
        ka, kb = (id(c.a), c.axis_a), (id(c.b), c.axis_b)
        if ka not in inside:
            continue
        pairs = [(i, i) for i in range(c.a.type.shape[c.axis_a])] if c.pairs == "id" else c.pairs
        elems.add_edges_from(((*ka, i), (*kb, j)) for i, j in pairs)
    units = []
    for comp_e in nx.connected_components(elems):
        u = Unit()
        for vid, ax, i in sorted(comp_e):
            u.members.setdefault((vid, ax), []).append(i)
            if (vid, ax) in sources:
                u.sources.append((vid, i))
        units.append(u)
    units.sort(key=lambda u: min(u.members.items()))
    names = sorted({_name(values[vid]) for vid, ax in comp if (vid, ax) in sources})
    return Group(comp, units, names)


def _name(v: Value) -> str:
    op = v.producer
    return str(op.attrs.get("name") or op.loc or "?") if op is not None else str(v.name)


# ---- per-op rules ---------------------------------------------------------------------------
def _couplings(op: Op):
    """(couplings, blocked axes) for `op`, or None when its operands must be left alone."""
    k, ins, outs = op.kind, op.inputs, op.results
    if k == "const":
        return [], []
    if op.regions or k.startswith(("ctrl.", "quant.", "sparse.")):
        return None
    out = outs[0] if len(outs) == 1 else None
    if op.schema.has(ELEMENTWISE) and out is not None:
        return [c for x in ins for c in _broadcast(x, out)], []
    if k in ("batch_norm",) and out is not None:
        cs = _broadcast(ins[0], out)
        cs += [Coupling(p, 0, out, 1) for p in ins[1:] if p is not None]
        return cs, []
    if k == "layer_norm":
        n = op.attrs["normalized_ndim"]
        cs = _broadcast(ins[0], out)
        cs += [c for p in ins[1:] if p is not None for c in _broadcast(p, out)]
        return cs, [(out, ax) for ax in range(out.type.rank - n, out.type.rank)]
    if k in ("softmax", "log_softmax", "cumsum"):
        d = normalize_axis(op.attrs["dim"], out.type.rank)
        return _broadcast(ins[0], out), [(out, d)]
    if k == "linear":
        x, w, b = (*ins, None)[:3]
        cs = [Coupling(x, ax, out, ax) for ax in range(x.type.rank - 1)]
        cs += [Coupling(x, x.type.rank - 1, w, 1), Coupling(out, out.type.rank - 1, w, 0)]
        if b is not None:
            cs.append(Coupling(b, 0, w, 0))
        return cs, []
    if k == "conv2d":
        x, w, b = (*ins, None)[:3]
        cs = [Coupling(x, 0, out, 0), Coupling(out, 1, w, 0)]
        if b is not None:
            cs.append(Coupling(b, 0, w, 0))
        g = op.attrs["groups"]
        if g == 1:
            cs.append(Coupling(x, 1, w, 1))
        elif g == x.type.shape[1] == w.type.shape[0] and w.type.shape[1] == 1:
            cs.append(Coupling(x, 1, out, 1))  # depthwise: channel i in -> channel i out
        else:
            return cs, [(x, 1), (out, 1)]
        return cs, []
    if k in _NORM_LIKE_POOLS:
        return [Coupling(ins[0], 0, out, 0), Coupling(ins[0], 1, out, 1)], []
    if k == "matmul" and ins[0].type.rank >= 2 and ins[1].type.rank >= 2:
        a, b = ins
        cs = _batch(a, out, 2) + _batch(b, out, 2)
        cs += [Coupling(a, a.type.rank - 1, b, b.type.rank - 2),
               Coupling(a, a.type.rank - 2, out, out.type.rank - 2),
               Coupling(b, b.type.rank - 1, out, out.type.rank - 1)]
        return cs, []
    if k == "scaled_dot_product_attention":
        q, kk, v = ins[:3]
        r = out.type.rank
        cs = [c for x in (q, kk, v) for c in _batch(x, out, 2)]
        cs += [Coupling(q, r - 1, kk, kk.type.rank - 1), Coupling(v, v.type.rank - 1, out, r - 1),
               Coupling(q, q.type.rank - 2, out, r - 2),
               Coupling(kk, kk.type.rank - 2, v, v.type.rank - 2)]
        m = ins[3] if len(ins) > 3 else None
        if m is not None:  # mask [..., L, S]: batch axes, L with q's, S with k's
            cs += _batch(m, out, 2)
            for ax, (other, oax) in ((m.type.rank - 2, (q, q.type.rank - 2)),
                                     (m.type.rank - 1, (kk, kk.type.rank - 2))):
                if m.type.rank >= 2 and m.type.shape[ax] != 1:
                    cs.append(Coupling(m, ax, other, oax))
        return cs, []
    if k in ("reshape", "flatten", "squeeze", "unsqueeze"):
        return _reshape(ins[0], out)
    if k in ("permute", "transpose"):
        r = out.type.rank
        if k == "transpose":
            perm = list(range(r))
            d0, d1 = (normalize_axis(op.attrs[n], r) for n in ("dim0", "dim1"))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        else:
            perm = [normalize_axis(d, r) for d in op.attrs["dims"]]
        return [Coupling(ins[0], perm[j], out, j) for j in range(r)], []
    if k == "expand":
        return _broadcast(ins[0], out), []
    if k in ("concat", "split"):
        return _concat(op)
    if k in ("select", "slice", "index_select"):
        x = ins[0]
        d = normalize_axis(op.attrs["dim"], x.type.rank)
        keep = [ax for ax in range(x.type.rank) if ax != d]
        if k == "select":
            return [Coupling(x, ax, out, j) for j, ax in enumerate(keep)], [(x, d)]
        return [Coupling(x, ax, out, ax) for ax in keep], [(x, d), (out, d)]
    if k == "pad":
        x, pads = ins[0], op.attrs["pads"]
        r = x.type.rank
        padded = {r - 1 - i // 2 for i, p in enumerate(pads) if p}
        cs = [Coupling(x, ax, out, ax) for ax in range(r) if ax not in padded]
        return cs, [(v, ax) for ax in padded for v in (x, out)]
    if k in _REDUCE:
        x = ins[0]
        dims = {normalize_axis(d, x.type.rank) for d in op.attrs["dims"]} or set(range(x.type.rank))
        kept = [ax for ax in range(x.type.rank) if ax not in dims]
        cs = [Coupling(x, ax, out, ax if op.attrs["keepdim"] else j) for j, ax in enumerate(kept)]
        return cs, [(x, d) for d in dims]
    return None


def _broadcast(x: Value, out: Value) -> list[Coupling]:
    """Right-aligned broadcasting: equal dims couple, a size-1 operand dim does not."""
    lead = out.type.rank - x.type.rank
    return [Coupling(x, ax, out, ax + lead) for ax in range(x.type.rank)
            if x.type.shape[ax] == out.type.shape[ax + lead] and x.type.shape[ax] != 1]


def _batch(x: Value, out: Value, core: int) -> list[Coupling]:
    """Broadcast batch axes of a matmul-like operand (all but its last `core` axes)."""
    lead = out.type.rank - x.type.rank
    return [Coupling(x, ax, out, ax + lead) for ax in range(x.type.rank - core)
            if x.type.shape[ax] == out.type.shape[ax + lead] and x.type.shape[ax] != 1]


def _strides(shape) -> list[int | None]:
    """Element stride of each axis counted from the right; None once a symbolic dim intervenes."""
    out: list[int | None] = [None] * len(shape)
    s: int | None = 1
    for ax in range(len(shape) - 1, -1, -1):
        out[ax] = s
        s = s * shape[ax] if s is not None and isinstance(shape[ax], int) else None
    return out


def _reshape(x: Value, out: Value):
    """Couple axes whose outer boundary survives the reshape; block the rest.

    Same stride and size: identity. An input axis that becomes the outer part of a merged axis
    (heads*dim -> features): index i couples with i*f .. i*f+f-1. An input axis whose outer part
    becomes its own axis (features -> heads, dim): index i couples with head i // f. The inner
    parts of a split or merge are blocked: removing element d of every head is not a
    rectangular slice of the merged axis.
    """
    ish, osh = x.type.shape, out.type.shape
    ist, ost = _strides(ish), _strides(osh)
    cs: list[Coupling] = []
    matched_in, matched_out = set(), set()
    for a, (n, s) in enumerate(zip(ish, ist)):
        if not isinstance(n, int) or s is None or n == 1:
            continue
        for j, (m, t) in enumerate(zip(osh, ost)):
            if not isinstance(m, int) or t is None or m == 1 or s * n != t * m:
                continue
            if s == t:
                cs.append(Coupling(x, a, out, j))
            elif s % t == 0:
                f = s // t
                cs.append(Coupling(x, a, out, j, [(i, i * f + r) for i in range(n)
                                                  for r in range(f)]))
            elif t % s == 0:
                f = t // s
                cs.append(Coupling(x, a, out, j, [(i, i // f) for i in range(n)]))
            else:
                continue
            matched_in.add(a)
            matched_out.add(j)
    blk = [(x, a) for a, n in enumerate(ish) if n != 1 and a not in matched_in]
    blk += [(out, j) for j, m in enumerate(osh) if m != 1 and j not in matched_out]
    return cs, blk


def _concat(op: Op):
    k = op.kind
    parts, whole = (op.inputs, op.results[0]) if k == "concat" else (op.results, op.inputs[0])
    d = normalize_axis(op.attrs["dim"], whole.type.rank)
    cs: list[Coupling] = []
    offset = 0
    for p in parts:
        for ax in range(whole.type.rank):
            if ax != d:
                cs.append(Coupling(p, ax, whole, ax))
        n = p.type.shape[d]
        if not isinstance(n, int) or not isinstance(offset, int):
            return cs, [(whole, d)] + [(q, d) for q in parts]
        cs.append(Coupling(p, d, whole, d, [(i, offset + i) for i in range(n)]))
        offset += n
    return cs, []
