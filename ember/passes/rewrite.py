"""A small pattern-rewrite engine: rules are data, a worklist applies them.

    rules = Rules([
        (P("mul", P.any("x"), P.const(1.0)), lambda b, x: x),
        (P("relu", P("relu", name="inner")), lambda b, inner: inner),
    ])
    stats = rewrite(graph, rules + more_rules)        # stats.hits["..."], stats.seconds

A pattern matches a Value: `P(kind)` one produced by an op of that kind (or any of a set of kinds,
or any op for None), with input patterns matched positionally (both orders for COMMUTATIVE ops)
and `where` as an extra predicate on the value. A rule's function gets a `Builder` placed before
the matched op (first, positionally: do not name a binding `b`) and the named sub-patterns as
keyword arguments; it returns the replacement value(s), or None when the rule does not apply.
Non-local passes (pruning, distillation) are plain Graph code and do not need this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import EmberError, RewriteLoopError
from ..ir.graph import Graph, Op, Value
from ..ir.ops.registry import COMMUTATIVE, SIDE_EFFECT, get_schema

__all__ = ["P", "Rule", "Rules", "Builder", "RewriteStats", "RewriteLoopError", "rewrite",
           "erase_dead"]

_ANY: Any = object()


class P:
    """A pattern over values: op kind(s), input patterns, a binding name and a predicate."""

    __slots__ = ("kinds", "inputs", "name", "where", "value")

    def __init__(self, kind: str | Iterable[str] | None = None, *inputs: P, name: str | None = None,
                 where: Callable[[Value], bool] | None = None):
        self.kinds = None if kind is None else frozenset([kind] if isinstance(kind, str) else kind)
        self.inputs: tuple[P, ...] | None = inputs or None  # None: any inputs
        self.name, self.where, self.value = name, where, _ANY

    @staticmethod
    def any(name: str | None = None, where: Callable[[Value], bool] | None = None) -> P:
        """Any value at all, graph inputs included."""
        return P(None, name=name, where=where)

    @staticmethod
    def const(value: Any = _ANY, name: str | None = None,
              where: Callable[[Value], bool] | None = None) -> P:
        """A const; with `value`, only one whose every element equals it (e.g. P.const(0))."""
        p = P("const", name=name, where=where)
        p.value = value
        return p

    def __repr__(self) -> str:
        head = ("any" if self.kinds is None else "|".join(sorted(self.kinds))) + (
            "" if self.value is _ANY else f" {self.value!r}")
        args = "(" + ", ".join(map(repr, self.inputs)) + ")" if self.inputs else ""
        return f"{head}{args}" + (f" as {self.name}" if self.name else "")


def _match(p: P, v: Value, bound: dict[str, Value]) -> Iterator[dict[str, Value]]:
    """Every binding under which `p` matches `v` (several only through commutative operands)."""
    if p.name is not None and p.name in bound and bound[p.name] is not v:
        return
    op = v.producer
    if p.kinds is not None and (op is None or op.kind not in p.kinds):
        return
    if p.value is not _ANY:
        arr = op.attrs.get("value") if op is not None else None
        if not isinstance(arr, np.ndarray) or arr.size == 0 or not np.all(arr == p.value):
            return
    if p.where is not None and not p.where(v):
        return
    if p.name is not None:
        bound = {**bound, p.name: v}
    if p.inputs is None:
        yield bound
        return
    if op is None or len(op.inputs) != len(p.inputs):
        return
    orders = [op.inputs]
    if len(op.inputs) == 2 and get_schema(op.kind).has(COMMUTATIVE):
        orders.append(op.inputs[::-1])
    for values in orders:
        yield from _match_all(p.inputs, values, bound)


def _match_all(pats: Sequence[P], values: Sequence[Value],
               bound: dict[str, Value]) -> Iterator[dict[str, Value]]:
    if not pats:
        yield bound
        return
    for b in _match(pats[0], values[0], bound):
        yield from _match_all(pats[1:], values[1:], b)


class Builder:
    """What a rule builds with: ops go before the matched op and inherit its source location."""

    __slots__ = ("graph", "op")

    def __init__(self, graph: Graph, op: Op):
        self.graph, self.op = graph, op

    def add(self, kind: str, *inputs: Value, **attrs: Any) -> Any:
        attrs.setdefault("loc", self.op.loc)
        return self.graph.add(kind, *inputs, **attrs)

    def const(self, array: np.ndarray, name: str | None = None) -> Value:
        return self.graph.const(array, name=name, loc=self.op.loc)


@dataclass(frozen=True)
class Rule:
    """A pattern, the function building its replacement, and a name for the statistics."""

    pattern: P
    fn: Callable[..., Value | Sequence[Value] | None]
    name: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        fn_name = getattr(self.fn, "__name__", "<lambda>")
        return fn_name if fn_name != "<lambda>" else repr(self.pattern)


class Rules:
    """An ordered rule list, indexed by root kind; compose with `+`."""

    def __init__(self, rules: Iterable[Rule | tuple[Any, ...]] = ()):
        self.rules: list[Rule] = [r if isinstance(r, Rule) else Rule(*r) for r in rules]
        self._index: dict[str, list[Rule]] = {}

    def __add__(self, other: Rules) -> Rules:
        return Rules(self.rules + other.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def for_kind(self, kind: str) -> list[Rule]:
        if kind not in self._index:
            self._index[kind] = [r for r in self.rules
                                 if r.pattern.kinds is None or kind in r.pattern.kinds]
        return self._index[kind]


@dataclass
class RewriteStats:
    """Per rule: how often it fired and the time spent trying it (tinygrad's match stats)."""

    hits: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rounds: int = 0

    @property
    def total(self) -> int:
        return sum(self.hits.values())


def rewrite(graph: Graph, rules: Rules, max_rounds: int = 64) -> RewriteStats:
    """Apply `rules` until none fires, in the graph and in every region; returns hit counts.

    A round tries every queued op once; ops touched by a rewrite (new ops, users of the new
    values) are queued for the next round. More than `max_rounds` rounds raise RewriteLoopError.
    """
    stats = RewriteStats()
    for block in [graph] + [r for op in graph.walk() for r in op.regions]:
        _rewrite_block(block, rules, stats, max_rounds)
    return stats


def _rewrite_block(g: Graph, rules: Rules, stats: RewriteStats, max_rounds: int) -> None:
    work, rounds = {id(op): op for op in g.ops}, 0
    while work:
        rounds += 1
        fired: dict[str, int] = {}
        queued: dict[int, Op] = {}
        for op in work.values():
            if op.block is not g or not op.results:
                continue
            for rule in rules.for_kind(op.kind):
                t0, label = time.perf_counter(), rule.label
                done = _try(rule, g, op, queued)
                stats.seconds[label] = stats.seconds.get(label, 0.0) + time.perf_counter() - t0
                if done:
                    stats.hits[label] = stats.hits.get(label, 0) + 1
                    fired[label] = fired.get(label, 0) + 1
                    break
        work = queued
        if rounds >= max_rounds and work and fired:
            names = ", ".join(f"{k} ({n}x in the last round)" for k, n in fired.items())
            raise RewriteLoopError(f"rewriting @{g.name} did not settle after {max_rounds} "
                                   f"rounds; rules still firing: {names}. They probably undo "
                                   "each other or re-match their own output")
    stats.rounds = max(stats.rounds, rounds)


def _try(rule: Rule, g: Graph, op: Op, queue: dict[int, Op]) -> bool:
    for bound in _match(rule.pattern, op.results[0], {}):
        anchor = op.prev
        with g.at(before=op):
            out = rule.fn(Builder(g, op), **bound)
        created, cur = [], anchor.next if anchor is not None else None
        while cur is not None and cur is not op:  # the ops the rule just built
            created.append(cur)
            cur = cur.next
        values = [] if out is None else [out] if isinstance(out, Value) else list(out)
        if not values or any(v is r for v in values for r in op.results):
            for new in reversed(created):  # not applicable after all: leave no garbage
                erase_dead(g, new)
            continue
        if len(values) != len(op.results) or any(
                v.type != r.type for v, r in zip(values, op.results)):
            got = ", ".join(str(v.type) for v in values)
            want = ", ".join(str(r.type) for r in op.results)
            raise EmberError(f"rewrite rule {rule.label!r} replaced {op.kind} ({want}) with "
                             f"values of type ({got}); a rule must keep result types")
        for r, v in zip(op.results, values):
            g.replace_all_uses(r, v)
        for new in created:
            queue[id(new)] = new
        for v in values:
            for user in v.users:
                queue[id(user)] = user
        erase_dead(g, op)
        return True
    return False


def erase_dead(g: Graph, op: Op) -> int:
    """Erase `op` if nothing reads it, then any producers that became dead; returns the count."""
    stack, erased, outputs = [op], 0, {id(v) for v in g.outputs}
    while stack:
        cur = stack.pop()
        if cur.block is not g or get_schema(cur.kind).has(SIDE_EFFECT):
            continue
        if any(r.uses or id(r) in outputs for r in cur.results):
            continue
        producers = [v.producer for v in cur.inputs if v.producer is not None]
        g.erase(cur)
        erased += 1
        stack.extend(producers)
    return erased
