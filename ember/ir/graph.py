"""Values, ops and graphs: a mutable SSA graph whose edits keep use lists right.

Ops live in a doubly linked list (O(1) insert/erase, since passes insert beside every matmul).
Regions of control ops are `Graph`s too, isolated from above: a body sees only its own inputs
and the consts defined inside it, which keeps cloning, DCE and lowering local.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import EmberError, ShapeError
from .types import DType, TensorType


class Use:
    """One operand slot of an op that reads a value."""

    __slots__ = ("op", "index")

    def __init__(self, op: "Op", index: int):
        self.op, self.index = op, index

    def __repr__(self) -> str:
        return f"Use({self.op.kind}, {self.index})"


class Value:
    """An SSA value: a graph/region input or one result of an op."""

    __slots__ = ("type", "producer", "index", "uses", "name", "__weakref__")

    def __init__(self, type: TensorType, producer: "Op | None" = None, index: int = 0,
                 name: str | None = None):
        self.type = type
        self.producer = producer
        self.index = index
        self.uses: list[Use] = []
        self.name = name

    @property
    def users(self) -> list["Op"]:
        seen: dict[int, Op] = {}
        for u in self.uses:
            seen.setdefault(id(u.op), u.op)
        return list(seen.values())

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __repr__(self) -> str:
        where = f"{self.producer.kind}#{self.index}" if self.producer else f"input {self.name}"
        return f"<Value {self.type} from {where}>"


class Op:
    """One operation. Change it only through Graph methods so use lists stay right."""

    __slots__ = ("kind", "inputs", "attrs", "results", "regions", "loc", "block", "prev", "next")

    def __init__(self, kind: str, inputs: Sequence[Value], attrs: dict[str, Any],
                 result_types: Sequence[TensorType], regions: Sequence["Graph"] = (),
                 loc: str | None = None):
        self.kind = kind
        self.inputs: tuple[Value, ...] = tuple(inputs)
        self.attrs: dict[str, Any] = dict(attrs)
        self.results = [Value(t, self, i) for i, t in enumerate(result_types)]
        self.regions: list[Graph] = list(regions)
        self.loc = loc
        self.block: Graph | None = None
        self.prev: Op | None = None
        self.next: Op | None = None

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise EmberError(f"op {self.kind} has {len(self.results)} results, not one")
        return self.results[0]

    @property
    def schema(self):
        from .ops import get_schema

        return get_schema(self.kind)

    def set_input(self, index: int, value: Value) -> None:
        old = self.inputs[index]
        old.uses = [u for u in old.uses if not (u.op is self and u.index == index)]
        self.inputs = self.inputs[:index] + (value,) + self.inputs[index + 1:]
        value.uses.append(Use(self, index))

    def __repr__(self) -> str:
        return f"<Op {self.kind} {[str(r.type) for r in self.results]}>"


class Graph:
    """A block of ops in topological order with inputs and outputs; also the region type."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self._head = Op("<head>", (), {}, ())
        self._head.prev = self._head.next = self._head
        self._insert_before: Op = self._head  # default: append at the end
        self.parent: Op | None = None
        self.meta: dict[str, Any] = {}

    # ---- construction -------------------------------------------------------------------
    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(type, None, len(self.inputs), name)
        self.inputs.append(v)
        return v

    def set_outputs(self, *values: Value) -> None:
        self.outputs = list(values)

    def add(self, kind: str, *inputs: Value, regions: Sequence["Graph"] = (),
            loc: str | None = None, **attrs: Any):
        """Build an op at the insertion point; its result types come from the schema's infer.

        Returns the single result, or a tuple when the op has several.
        """
        from .ops import get_schema

        schema = get_schema(kind)
        attrs = schema.complete_attrs(attrs)
        types = schema.infer_types([v.type for v in inputs], attrs, regions)
        op = Op(kind, inputs, attrs, types, regions, loc)
        self.insert(op)
        return op.results[0] if len(op.results) == 1 else tuple(op.results)

    def const(self, array: np.ndarray, name: str | None = None, loc: str | None = None) -> Value:
        """A const op holding `array` (shared, made read-only, not copied when already so)."""
        arr = np.asarray(array)
        if arr.dtype == np.float64 and name is None:
            pass
        if arr.flags.writeable:
            arr = arr.copy()
            arr.flags.writeable = False
        attrs = {"value": arr}
        if name:
            attrs["name"] = name
        return self.add("const", loc=loc, **attrs)

    def insert(self, op: Op) -> Op:
        if op.block is not None:
            raise EmberError(f"op {op.kind} is already in a graph")
        nxt = self._insert_before
        op.prev, op.next = nxt.prev, nxt
        nxt.prev.next = op  # type: ignore[union-attr]
        nxt.prev = op
        op.block = self
        for i, v in enumerate(op.inputs):
            v.uses.append(Use(op, i))
        for r in op.regions:
            r.parent = op
        return op

    @contextlib.contextmanager
    def at(self, before: Op | None = None, after: Op | None = None) -> Iterator["Graph"]:
        """Temporarily move the insertion point (default: the end of the graph)."""
        saved = self._insert_before
        if before is not None:
            self._insert_before = before
        elif after is not None:
            self._insert_before = after.next  # type: ignore[assignment]
        else:
            self._insert_before = self._head
        try:
            yield self
        finally:
            self._insert_before = saved

    # ---- mutation -----------------------------------------------------------------------
    def erase(self, op: Op) -> None:
        """Remove an op whose results are unused (raises otherwise: a dangling use is a bug)."""
        for r in op.results:
            if r.uses:
                users = ", ".join(u.op.kind for u in r.uses)
                raise EmberError(f"cannot erase {op.kind}: result {r.index} is still used by {users}")
            if any(o is r for o in self.outputs):
                raise EmberError(f"cannot erase {op.kind}: its result is a graph output")
        self.unlink(op)
        for i, v in enumerate(op.inputs):
            v.uses = [u for u in v.uses if not (u.op is op and u.index == i)]
        op.inputs = ()

    def unlink(self, op: Op) -> None:
        """Take an op out of the list without touching use lists (for moving it)."""
        if self._insert_before is op:
            self._insert_before = op.next  # type: ignore[assignment]
        op.prev.next = op.next  # type: ignore[union-attr]
        op.next.prev = op.prev  # type: ignore[union-attr]
        op.prev = op.next = None
        op.block = None

    def move_before(self, op: Op, anchor: Op) -> None:
        self.unlink(op)
        op.prev, op.next = anchor.prev, anchor
        anchor.prev.next = op  # type: ignore[union-attr]
        anchor.prev = op
        op.block = self

    def replace_all_uses(self, old: Value, new: Value, exclude: Sequence[Op] = ()) -> int:
        """Point every reader of `old` (ops and graph outputs) at `new`; returns the count.

        `exclude` keeps some readers on `old`: typically the op that computes `new` from it.
        """
        if old is new:
            return 0
        if old.type != new.type:
            raise ShapeError(f"replace_all_uses: type {new.type} does not match {old.type}")
        n = 0
        for use in list(old.uses):
            if any(use.op is e for e in exclude):
                continue
            use.op.set_input(use.index, new)
            n += 1
        for i, o in enumerate(self.outputs):
            if o is old:
                self.outputs[i] = new
                n += 1
        return n

    def replace_op(self, op: Op, new_values: Sequence[Value]) -> None:
        """Replace every result of `op` by `new_values`, then erase it."""
        for r, v in zip(op.results, new_values, strict=True):
            self.replace_all_uses(r, v)
        self.erase(op)

    # ---- traversal ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    @property
    def ops(self) -> list[Op]:
        """A snapshot list, so a pass may erase the op it is looking at."""
        out = []
        op = self._head.next
        while op is not self._head:
            out.append(op)
            op = op.next  # type: ignore[assignment]
        return out

    @property
    def first(self) -> Op | None:
        return None if self._head.next is self._head else self._head.next

    def __len__(self) -> int:
        return len(self.ops)

    def walk(self) -> Iterator[Op]:
        """Every op, recursing into regions (pre-order)."""
        for op in self.ops:
            yield op
            for r in op.regions:
                yield from r.walk()

    def consts(self) -> list[Op]:
        return [op for op in self.walk() if op.kind == "const"]

    def weight_bytes(self) -> int:
        return sum(int(op.attrs["value"].nbytes) for op in self.consts()
                   if isinstance(op.attrs["value"], np.ndarray))

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.walk():
            counts[op.kind] = counts.get(op.kind, 0) + 1
        return dict(sorted(counts.items()))

    # ---- whole-graph helpers ------------------------------------------------------------
    def verify(self) -> "Graph":
        from .verify import verify

        verify(self)
        return self

    def clone(self) -> "Graph":
        """A deep copy of structure; const payloads are shared (they are read-only)."""
        mapping: dict[int, Value] = {}
        return _clone_into(self, mapping)

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph @{self.name}: {len(self.inputs)} inputs, {len(self)} ops>"


def _clone_into(src: Graph, mapping: dict[int, Value]) -> Graph:
    dst = Graph(src.name)
    dst.meta = dict(src.meta)
    for v in src.inputs:
        mapping[id(v)] = dst.add_input(v.name or f"arg{v.index}", v.type)
    for op in src.ops:
        regions = [_clone_into(r, {}) for r in op.regions]
        new = Op(op.kind, [mapping[id(v)] for v in op.inputs], op.attrs,
                 [r.type for r in op.results], regions, op.loc)
        dst.insert(new)
        for a, b in zip(op.results, new.results):
            b.name = a.name
            mapping[id(a)] = b
    dst.outputs = [mapping[id(v)] for v in src.outputs]
    return dst
