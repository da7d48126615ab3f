"""Hypothesis strategies: small random well-typed graphs built from the op registry.

Every op's `examples` give valid input arrays and attributes. A graph is grown op by op: each
operand is a graph input or a const holding the example array, or an earlier value of the same
float type (that is what chains ops together). Identities the canonicalizer knows (x+0, x*1,
double transposes, reshape chains, same-dtype casts) and exact duplicates (for CSE) are mixed
in, and only some values become outputs (for DCE). New ops are picked up automatically.

    @given(graph_and_inputs())
    def test_x(case):
        graph, inputs = case
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ember.ir import Graph, TensorType, Value
from ember.ir.ops import ELEMENTWISE, HAS_REGIONS, SIDE_EFFECT, all_schemas, has_schema


def _examples() -> list[tuple[str, list[np.ndarray], dict]]:
    out = []
    for schema in all_schemas():
        if schema.kind == "const" or schema.has(HAS_REGIONS) or schema.has(SIDE_EFFECT):
            continue
        for inputs, attrs in schema.iter_examples(np.random.default_rng(0)):
            if any(x is None for x in inputs):
                continue
            out.append((schema.kind, [np.asarray(x) for x in inputs], dict(attrs)))
    return out


EXAMPLES = _examples()
"""(kind, input arrays, attrs) for every example of every region-free op in the registry."""


class _Builder:
    def __init__(self, draw):
        self.draw = draw
        self.graph = Graph("fuzz")
        self.inputs: list[np.ndarray] = []
        self.values: list[Value] = []
        self.last: tuple | None = None

    def operand(self, arr: np.ndarray, elementwise: bool) -> Value:
        t = TensorType.of(arr)
        same = [v for v in self.values if v.type == t] if arr.dtype.kind == "f" else []
        if elementwise and arr.dtype.kind == "f":  # one-input elementwise ops take any float
            same = [v for v in self.values if v.dtype == t.dtype] or same
        how = self.draw(st.sampled_from(["input", "const"] + ["reuse"] * 2 * bool(same)))
        if how == "reuse":
            return self.draw(st.sampled_from(same))
        if how == "input":
            self.inputs.append(arr)
            return self.graph.add_input(f"in{len(self.inputs) - 1}", t)
        return self.graph.const(arr)

    def add(self, kind: str, operands: list[Value], attrs: dict) -> None:
        out = self.graph.add(kind, *operands, **attrs)
        self.values.extend(out if isinstance(out, tuple) else [out])
        self.last = (kind, operands, attrs)

    def example_op(self) -> None:
        kind, arrays, attrs = self.draw(st.sampled_from(EXAMPLES))
        from ember.ir.ops import get_schema

        unary_elementwise = get_schema(kind).has(ELEMENTWISE) and len(arrays) == 1 and not attrs
        operands = [self.operand(a, unary_elementwise) for a in arrays]
        self.add(kind, operands, attrs)

    def identity(self) -> None:
        """Wrap a float value in something canonicalize should remove."""
        floats = [v for v in self.values if v.dtype.is_float and v.type.is_static and v.type.rank]
        if not floats:
            return
        v = self.draw(st.sampled_from(floats))
        g, np_dtype = self.graph, v.dtype.to_numpy()
        options = ["add0", "mul1", "cast"]
        if v.type.rank >= 2 and has_schema("transpose"):
            options.append("transpose2")
        if has_schema("reshape"):
            options.append("reshape2")
        how = self.draw(st.sampled_from(options))
        if how == "add0":
            self.values.append(g.add("add", v, g.const(np.zeros(v.shape[-1:], np_dtype))))
        elif how == "mul1":
            self.values.append(g.add("mul", g.const(np.ones((1,), np_dtype)), v))
        elif how == "cast":
            self.values.append(g.add("cast", v, dtype=v.dtype))
        elif how == "transpose2":
            t = g.add("transpose", v, dim0=0, dim1=-1)
            self.values.append(g.add("transpose", t, dim0=-1, dim1=0))
        else:
            flat = g.add("reshape", v, shape=(-1,))
            self.values.append(g.add("reshape", flat, shape=tuple(v.shape)))

    def duplicate(self) -> None:
        if self.last is not None:
            self.add(*self.last)


@st.composite
def graph_and_inputs(draw, max_ops: int = 6) -> tuple[Graph, list[np.ndarray]]:
    """A verified random graph and one array per graph input."""
    b = _Builder(draw)
    b.example_op()
    for _ in range(draw(st.integers(0, max_ops - 1))):
        step = draw(st.sampled_from(["op", "op", "op", "identity", "duplicate"]))
        {"op": b.example_op, "identity": b.identity, "duplicate": b.duplicate}[step]()
    outputs = [b.values[-1]] + [v for v in b.values[:-1] if draw(st.booleans())]
    b.graph.set_outputs(*outputs)
    b.graph.verify()
    return b.graph, b.inputs
