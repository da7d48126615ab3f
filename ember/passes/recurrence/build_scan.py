"""Turn matched unrolled steps (from reroll.py) into one ctrl.scan and splice it in.

Template values are (node, result index) in step 0's networkx graph; `maps[k]` sends template
nodes to step k's nodes, so `_val(k, ...)` is the same value in step k.
"""

from __future__ import annotations

from typing import Any

from ...ir.graph import Graph, Op, Value


def _val(k: int, node: Any, ridx: int, maps, bvals, byid) -> Value:
    n = maps[k][node]
    return byid[n[1]].results[ridx] if n[0] == "op" else bvals[k][n]


def build_scan(graph: Graph, lp, byid: dict, bodies: list[set[int]], graphs, bvals,
               maps) -> bool:
    steps = len(maps)
    tmpl, tnodes = graphs[0], graphs[0].nodes
    union = set().union(*bodies)
    V = lambda k, node, r=0: _val(k, node, r, maps, bvals, byid)  # noqa: E731
    bnodes = sorted((n for n in tnodes if n[0] == "b"), key=lambda n: lp_pos(lp, bvals[0][n]))
    carries, xs, xvars, invs, consts = [], [], [], [], []
    for b in bnodes:
        kind = tnodes[b]["label"][0]
        {"carry": carries, "xs": xs, "xvar": xvars, "inv": invs, "const": consts}[kind].append(b)
    # carries: step 1 reads, in place of template boundary b, a value made by step 0
    pairs = []
    for b in carries:
        w = bvals[1][maps[1][b]] if maps[1][b][0] == "b" else None
        if w is None or w.producer is None or id(w.producer) not in bodies[0]:
            return False
        out = (("op", id(w.producer)), w.index)
        for k in range(1, steps):
            if V(k, b) is not V(k - 1, *out):
                return False
        pairs.append((b, out))
    if not pairs:
        return False
    # scanned xs: select(U, dim, i0 + k)
    x_specs = []
    for b in xs:
        sels = [V(k, b).producer for k in range(steps)]
        i0 = sels[0].attrs["index"]
        if any(s.attrs["index"] != i0 + k for k, s in enumerate(sels)):
            return False
        x_specs.append((sels[0].inputs[0], sels[0].attrs["dim"], i0))
    # per-step outputs: template values read outside the loop in any step
    core = sorted((n for n in tnodes if n[0] == "op"), key=lambda n: lp.pos[n[1]])
    carry_outs = {out for _, out in pairs}
    outs_set = {id(v) for v in graph.outputs}
    ys = []
    for node in core:
        for r in range(len(byid[node[1]].results)):
            outside = [k for k in range(steps) if _outside(V(k, node, r), union, outs_set)]
            if outside and ((node, r) not in carry_outs or outside != [steps - 1]):
                ys.append((node, r))
    # where to insert: after every operand's producer, before every outside reader
    operands = [V(0, b) for b in carries] + [u for u, _, _ in x_specs] + \
        [V(0, b) for b in invs]
    last = max((lp.pos.get(id(v.producer), -1) if v.producer else -1) for v in operands)
    for node in core:
        for r, res in enumerate(byid[node[1]].results):
            for k in range(steps):
                for u in V(k, node, r).uses:
                    if id(u.op) not in union and lp.pos.get(id(u.op), 1 << 60) <= last:
                        return False
    body = _region(graph, byid, lp, core, carries, xs + xvars, invs, consts, pairs, ys, bvals)
    at = {"after": lp.ops[last]} if last >= 0 else ({"before": graph.first})
    with graph.at(**at):
        ops_in = [V(0, b) for b in carries]
        for u, dim, i0 in x_specs:
            if dim % u.type.rank:
                perm = [dim % u.type.rank] + [d for d in range(u.type.rank)
                                              if d != dim % u.type.rank]
                u = graph.add("permute", u, dims=tuple(perm))
            if i0 != 0 or u.type.shape[0] != steps:
                u = graph.add("slice", u, dim=0, start=i0, end=i0 + steps)
            ops_in.append(u)
        for b in xvars:
            ops_in.append(graph.add("concat", *[graph.add("unsqueeze", V(k, b), dim=0)
                                                for k in range(steps)], dim=0))
        ops_in += [V(0, b) for b in invs]
        res = graph.add("ctrl.scan", *ops_in, regions=[body], num_carry=len(pairs),
                        num_xs=len(xs) + len(xvars))
        res = res if isinstance(res, tuple) else (res,)
        finals, stacked = res[:len(pairs)], res[len(pairs):]
        for (b, out), fin in zip(pairs, finals):
            _redirect(graph, V(steps - 1, *out), fin, union, outs_set)
        for (node, r), y in zip(ys, stacked):
            vals = [V(k, node, r) for k in range(steps)]
            _fold_stacks(graph, vals, y, union)
            for k, v in enumerate(vals):
                if _outside(v, union, {id(o) for o in graph.outputs}):
                    _redirect(graph, v, graph.add("select", y, dim=0, index=k), union,
                              {id(o) for o in graph.outputs})
    for op in reversed(lp.ops):
        if id(op) in union and not any(r.uses for r in op.results) and \
                not any(r is o for r in op.results for o in graph.outputs):
            graph.erase(op)
    return True


def lp_pos(lp, v: Value) -> int:
    return lp.pos.get(id(v.producer), -1) if v.producer is not None else -1 - v.index


def _outside(v: Value, union: set[int], outs: set[int]) -> bool:
    return id(v) in outs or any(id(u.op) not in union for u in v.uses)


def _redirect(graph: Graph, old: Value, new: Value, union: set[int], outs: set[int]) -> None:
    for u in list(old.uses):
        if id(u.op) not in union:
            u.op.set_input(u.index, new)
    graph.outputs = [new if o is old else o for o in graph.outputs]


def _fold_stacks(graph: Graph, vals: list[Value], y: Value, union: set[int]) -> None:
    """concat(..., v_0, ..., v_{n-1}, ...) along a size-1 dim -> permute + reshape of ys."""
    users = {id(u.op): u.op for u in vals[0].uses if u.op.kind == "concat"}
    n = len(vals)
    for c in users.values():
        ins, dim = list(c.inputs), c.attrs["dim"] % vals[0].type.rank
        if vals[0].type.shape[dim] != 1:
            continue
        for p in range(len(ins) - n + 1):
            if all(ins[p + j] is vals[j] for j in range(n)):
                break
        else:
            continue
        with graph.at(before=c):
            rank = y.type.rank
            perm = list(range(1, dim + 1)) + [0] + list(range(dim + 1, rank))
            moved = graph.add("permute", y, dims=tuple(perm)) if dim else y
            shape = list(vals[0].type.shape)
            shape[dim] = n
            folded = graph.add("reshape", moved, shape=tuple(shape))
            rest = ins[:p] + [folded] + ins[p + n:]
            new = folded if len(rest) == 1 else graph.add("concat", *rest, dim=c.attrs["dim"])
        graph.replace_all_uses(c.result, new)
        graph.erase(c)


def _region(graph, byid, lp, core, carries, xs, invs, consts, pairs, ys, bvals) -> Graph:
    body = Graph("body")
    env: dict[Any, Value] = {}
    for k, b in enumerate(carries):
        env[b] = body.add_input(f"h{k}", bvals[0][b].type)
    for k, b in enumerate(xs):
        env[b] = body.add_input(f"x{k}", bvals[0][b].type)
    for k, b in enumerate(invs):
        env[b] = body.add_input(f"inv{k}", bvals[0][b].type)
    for b in consts:
        src = bvals[0][b].producer
        env[b] = body.add("const", **src.attrs)
    vals: dict[tuple, Value] = {}
    for node in core:
        op: Op = byid[node[1]]
        args = []
        for v in op.inputs:
            key = ("op", id(v.producer)) if v.producer is not None else None
            args.append(vals[(key, v.index)] if (key, v.index) in vals else env[("b", id(v))])
        out = body.add(op.kind, *args, loc=op.loc, **op.attrs)
        for r, res in enumerate(out if isinstance(out, tuple) else (out,)):
            vals[(node, r)] = res
    body.set_outputs(*[vals[out] for _, out in pairs], *[vals[y] for y in ys])
    return body
