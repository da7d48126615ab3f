"""Find the sampler loop in a graph: an `ember.Sampler` scan, or an unrolled Euler chain rerolled.

The canonical form (what `ember.Sampler` traces to and what rerolling builds) is one `ctrl.scan`
with carries (x, d), one scanned input - the solver table const f32[K, 7] (see sampler.py) - and
the network weights as invariants. Everything the step passes do is then a table edit.

The unrolled form is what `torch.export` makes of a Python `for` loop (the zoo's
`digits_flow.EulerSampler`): x_{i+1} = x_i + h_i * v_i, each v_i a copy of the velocity network
with the time as a per-step constant. Rerolling matches every copy op-by-op against the second
one (the template) and requires that the copies differ in exactly one constant - the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import EmberError
from ...ir.graph import Graph, Op, Value
from ...ir.types import DType, TensorType
from ..cleanup.dce import eliminate_dead_code
from .sampler import (COL_A, COL_B, COL_C, COL_S0, T0, TABLE_WIDTH, nfe, solver_table,
                      table_solvers, table_times)


class SamplerNotFoundError(EmberError):
    """The graph has no sampler loop the distill passes understand."""


@dataclass
class SamplerLoop:
    """The recognized loop: its scan op, the table const feeding it, and what the table says."""

    graph: Graph
    scan: Op
    table: np.ndarray
    times: np.ndarray
    solvers: list[str]

    @property
    def steps(self) -> int:
        return int(self.table.shape[0])

    @property
    def nfe(self) -> int:
        return nfe(self.solvers)

    @property
    def table_index(self) -> int:
        return int(self.scan.attrs["num_carry"])

    @property
    def table_op(self) -> Op:
        return self.scan.inputs[self.table_index].producer  # type: ignore[return-value]

    def facts(self) -> dict:
        """JSON-friendly summary kept in graph.meta["sampler"] and the pass report."""
        return {"steps": self.steps, "nfe": self.nfe, "solvers": _compact(self.solvers),
                "times": [round(float(t), 6) for t in self.times]}


def _compact(solvers: list[str]) -> str | list[str]:
    return solvers[0] if len(set(solvers)) == 1 else list(solvers)


def find_sampler(graph: Graph) -> SamplerLoop | None:
    """The canonical sampler scan of `graph`, or None."""
    found = []
    for op in graph.ops:
        if op.kind != "ctrl.scan" or op.attrs["num_carry"] != 2 or op.attrs["num_xs"] != 1:
            continue
        src = op.inputs[2].producer
        if src is None or src.kind != "const":
            continue
        table = np.asarray(src.attrs["value"])
        if table.ndim != 2 or table.shape[1] != TABLE_WIDTH or table.dtype != np.float32:
            continue
        try:
            times, solvers = table_times(table), table_solvers(table)
            expected = solver_table(times, solvers)
        except EmberError:
            continue
        if np.allclose(expected, table, rtol=1e-4, atol=1e-5):
            found.append(SamplerLoop(graph, op, table, times, solvers))
    if len(found) > 1:
        raise SamplerNotFoundError(f"graph @{graph.name} has {len(found)} sampler loops; the "
                                   "distill passes rewrite exactly one")
    return found[0] if found else None


def recognize(graph: Graph) -> SamplerLoop:
    """The sampler loop of `graph`, rerolling an unrolled Euler chain first if needed."""
    loop = find_sampler(graph)
    if loop is None:
        loop = reroll_euler_chain(graph)
    graph.meta["sampler"] = loop.facts()
    return loop


def set_table(loop: SamplerLoop, table: np.ndarray) -> SamplerLoop:
    """Replace the loop's scanned table (new step count / schedule / solvers) in place."""
    graph, old = loop.graph, loop.table_op
    with graph.at(before=loop.scan):
        new = graph.const(np.asarray(table, np.float32), name=old.attrs.get("name",
                                                                            "sampler_table"))
    loop.scan.set_input(loop.table_index, new)
    if not old.results[0].uses:
        graph.erase(old)
    out = find_sampler(graph)
    assert out is not None and out.scan is loop.scan
    graph.meta["sampler"] = out.facts()
    return out


# ---- rerolling the unrolled Euler chain ------------------------------------------------------
def _scalar_const(v: Value) -> float | None:
    op = v.producer
    if op is None or op.kind != "const":
        return None
    arr = np.asarray(op.attrs["value"])
    return float(arr.reshape(-1)[0]) if arr.size == 1 else None


def _euler_chain(out: Value) -> list[tuple[Value, Value, float, Op]]:
    """[(x_i, v_i, h_i, add op)] walking x_{i+1} = add(x_i, mul(v_i, h_i)) back to an input."""
    steps = []
    cur = out
    while cur.producer is not None and cur.producer.kind == "add":
        add = cur.producer
        hit = None
        for k in (1, 0):
            m = add.inputs[k].producer
            if m is not None and m.kind == "mul":
                for j in (1, 0):
                    h = _scalar_const(m.inputs[j])
                    if h is not None:
                        hit = (add.inputs[1 - k], m.inputs[1 - j], h)
                        break
            if hit:
                break
        if hit is None:
            break
        steps.append((hit[0], hit[1], hit[2], add))
        cur = hit[0]
    if cur.producer is not None:
        return []
    return steps[::-1]


def _closure(v: Value, stop: Value | None) -> set[int]:
    seen: set[int] = set()
    stack = [v]
    while stack:
        x = stack.pop()
        if x is stop or x.producer is None or id(x.producer) in seen:
            continue
        seen.add(id(x.producer))
        stack.extend(x.producer.inputs)
    return seen


class _Matcher:
    """Matches one unrolled step against the template step; records the differing consts."""

    def __init__(self, template: set[int], carry: Value):
        self.template, self.carry = template, carry

    def run(self, t_out: Value, s_out: Value, s_carry: Value) -> dict[int, np.ndarray] | None:
        self.memo: dict[int, Value] = {}
        self.varying: dict[int, np.ndarray] = {}
        self.s_carry = s_carry
        return self.varying if self._match(t_out, s_out) else None

    def _match(self, t: Value, s: Value) -> bool:
        if id(t) in self.memo:
            return self.memo[id(t)] is s
        self.memo[id(t)] = s
        if t is self.carry:
            return s is self.s_carry
        a, b = t.producer, s.producer
        if a is None or id(a) not in self.template:
            return s is t  # an invariant: every step reads the same value
        if b is None or a.kind != b.kind or t.index != s.index or a.regions or b.regions:
            return False
        if a.kind == "const":
            va, vb = np.asarray(a.attrs["value"]), np.asarray(b.attrs["value"])
            if va.shape != vb.shape or va.dtype != vb.dtype:
                return False
            if not np.array_equal(va, vb):
                self.varying[id(a)] = vb
            return True
        if a.attrs != b.attrs or len(a.inputs) != len(b.inputs):
            return False
        return all(self._match(x, y) for x, y in zip(a.inputs, b.inputs))


def reroll_euler_chain(graph: Graph) -> SamplerLoop:
    """Fold an unrolled Euler loop (N >= 2 isomorphic velocity calls) into the canonical scan."""
    if len(graph.outputs) != 1:
        raise SamplerNotFoundError(f"graph @{graph.name} has {len(graph.outputs)} outputs and no "
                                   "ember.Sampler scan; a sampler graph maps noise to one output")
    chain = _euler_chain(graph.outputs[0])
    if len(chain) < 2:
        raise SamplerNotFoundError(
            f"graph @{graph.name} has neither an ember.Sampler loop (a ctrl.scan over a "
            "sampler table) nor an unrolled Euler chain x = x + h * v(x, t) of >= 2 steps; "
            "wrap the denoiser in ember.Sampler(model, steps, schedule, solver) before tracing")
    x1, v1, _, _ = chain[1]
    template = _closure(v1, x1) - _closure(x1, None)
    matcher = _Matcher(template, x1)
    per_step: list[dict[int, np.ndarray]] = []
    for i, (x, v, _, _) in enumerate(chain):
        varying = matcher.run(v1, v, x)
        if varying is None:
            raise SamplerNotFoundError(f"unrolled step {i} of @{graph.name} is not a copy of "
                                       "step 1's velocity computation; cannot reroll it")
        per_step.append(varying)
    positions = {k for d in per_step for k in d}
    if len(positions) != 1:
        raise NotImplementedError(
            f"the unrolled steps of @{graph.name} differ in {len(positions)} constants; rerolling "
            "needs exactly one (the time). Run the distill passes before constant folding")
    (pos,) = positions
    t_op = next(op for op in graph.ops if id(op) == pos)
    t_vals = np.asarray(t_op.attrs["value"])
    times = []
    for d in per_step:
        arr = d.get(pos, t_vals)
        if not np.all(arr == arr.reshape(-1)[0]):
            raise NotImplementedError("the per-step constant is not a filled time value")
        times.append(float(arr.reshape(-1)[0]))
    hs = [h for _, _, h, _ in chain]
    times.append(times[-1] + hs[-1])
    if not np.allclose(np.diff(times), hs, atol=1e-5):
        raise SamplerNotFoundError(f"unrolled Euler chain of @{graph.name}: steps h={hs[:4]}... "
                                   f"do not match the time increments of t={times[:5]}...")
    times = [min(max(t, 0.0), 1.0) for t in times]
    return _build_scan(graph, chain, template, x1, v1, t_op, np.asarray(times))


def _build_scan(graph: Graph, chain, template: set[int], x1: Value, v1: Value, t_op: Op,
                times: np.ndarray) -> SamplerLoop:
    table = solver_table(times, "euler")
    ops = [op for op in graph.ops if id(op) in template]
    invariants: list[Value] = []
    for op in ops:
        for v in op.inputs:
            if v is not x1 and (v.producer is None or id(v.producer) not in template) \
                    and v not in invariants:
                invariants.append(v)
    body = Graph("sampler_body")
    bx, bd = body.add_input("x", x1.type), body.add_input("d", x1.type)
    row = body.add_input("row", TensorType((TABLE_WIDTH,), DType.f32))
    env: dict[int, Value] = {id(x1): bx}
    for k, v in enumerate(invariants):
        env[id(v)] = body.add_input(v.name or f"inv{k}", v.type)
    col = lambda i: body.add("select", row, dim=0, index=i)  # noqa: E731
    for op in ops:
        if op is t_op:
            t = body.add("reshape", col(T0), shape=tuple(op.results[0].type.shape))
            if op.results[0].type.dtype != DType.f32:
                t = body.add("cast", t, dtype=op.results[0].type.dtype)
            env[id(op.results[0])] = t
            continue
        new = Op(op.kind, [env[id(v)] for v in op.inputs], op.attrs,
                 [r.type for r in op.results], (), op.loc)
        body.insert(new)
        for a, b in zip(op.results, new.results):
            b.name = a.name
            env[id(a)] = b
    v = env[id(v1)]
    x_next = body.add("add", body.add("add", body.add("mul", col(COL_A), bx),
                                      body.add("mul", col(COL_B), v)),
                      body.add("mul", col(COL_C), bd))
    body.set_outputs(x_next, body.add("add", bx, body.add("mul", col(COL_S0), v)))
    noise, last_add = chain[0][0], chain[-1][3]
    with graph.at(before=last_add):
        zero = graph.add("mul", noise, graph.const(np.zeros((), np.float32)))
        tab = graph.const(table, name="sampler_table")
        x_out, _ = graph.add("ctrl.scan", noise, zero, tab, *invariants, regions=[body],
                             num_carry=2, num_xs=1)
    graph.replace_all_uses(last_add.results[0], x_out)
    graph.outputs = [x_out if o is last_add.results[0] else o for o in graph.outputs]
    eliminate_dead_code(graph)
    loop = find_sampler(graph)
    if loop is None:
        raise SamplerNotFoundError("internal: the rerolled scan was not recognized")
    return loop
