"""The state of one ONNX import: the graph being built, ONNX names -> ember values, helpers.

Converters (`@converts("Add")` in the family modules) receive a `Context` and one node. They
build ember ops through `cx.add`, which stamps the node's name as the op's `loc`, and ask
`cx.static(value)` for operands that ember needs at compile time (shapes, axes, pads):
ember's IR keeps such operands as attributes, so a runtime-computed one is reported as
unsupported instead of being guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import ShapeError, UnsupportedOpError
from ...ir import DType, Graph, TensorType, Value
from ...ir.ops import get_schema
from ...ir.ops.registry import PURE

Converter = Callable[["Context", Any, list, dict], Any]
CONVERTERS: dict[str, Converter] = {}
# ONNX op -> input slots that must be compile-time constants (shape operands); the conformance
# harness binds graph inputs that feed these slots (ember graphs have static shape operands).
STATIC_INPUTS: dict[str, tuple[int, ...]] = {}

_ONNX_TO_DTYPE = {1: DType.f32, 2: DType.u8, 3: DType.i8, 4: DType.u16, 5: DType.i16,
                  6: DType.i32, 7: DType.i64, 9: DType.bool, 10: DType.f16, 11: DType.f64,
                  12: DType.u32, 13: DType.u64, 16: DType.bf16, 17: DType.f8e4m3fn,
                  18: DType.f8e4m3fnuz, 19: DType.f8e5m2, 20: DType.f8e5m2fnuz, 21: DType.u4,
                  22: DType.i4, 23: DType.f4e2m1, 24: DType.f8e8m0, 25: DType.u2, 26: DType.i2}
DTYPE_TO_ONNX = {v: k for k, v in _ONNX_TO_DTYPE.items()}


def converts(*op_types: str, static: tuple[int, ...] = ()) -> Callable[[Converter], Converter]:
    """Register a converter for one or more ONNX op types (default domain)."""
    def deco(fn: Converter) -> Converter:
        for t in op_types:
            if t in CONVERTERS:
                raise ValueError(f"ONNX op {t} has two converters")
            CONVERTERS[t] = fn
            if static:
                STATIC_INPUTS[t] = static
        return fn
    return deco


def onnx_dtype(elem_type: int, where: str) -> DType:
    if elem_type not in _ONNX_TO_DTYPE:
        import onnx

        name = onnx.TensorProto.DataType.Name(elem_type)
        raise UnsupportedOpError(f"{where}: ONNX element type {name} has no ember dtype "
                                 f"(supported: {', '.join(str(d) for d in DTYPE_TO_ONNX)})")
    return _ONNX_TO_DTYPE[elem_type]


class Context:
    """Builds one ember graph (the main graph or a control-flow body) from ONNX nodes."""

    def __init__(self, graph: Graph, opsets: dict[str, int], parent: Context | None = None):
        self.g = graph
        self.opsets = opsets
        self.env: dict[str, Value] = {}
        self.parent = parent
        self.captures: list[tuple[Value, Value]] = []  # (outer value, body input) for regions
        self.node: Any = None
        self._static: dict[int, np.ndarray | None] = {}

    @property
    def opset(self) -> int:
        return self.opsets.get("", self.opsets.get("ai.onnx", 1))

    # ---- names --------------------------------------------------------------------------
    def lookup(self, name: str) -> Value | None:
        """The value for an ONNX name; '' is an absent optional input.

        In a body, a name from the enclosing graph becomes a new body input (ember regions
        are isolated from above) and the outer value is recorded as a capture.
        """
        if name == "":
            return None
        if name in self.env:
            return self.env[name]
        if self.parent is not None:
            outer = self.parent.lookup(name)
            if outer is not None:
                static = self.parent.static(outer)
                if static is not None:  # constants are copied into the body
                    v = self.g.const(static)
                else:
                    v = self.g.add_input(name, outer.type)
                    self.captures.append((outer, v))
                self.env[name] = v
                return v
        raise ShapeError(f"ONNX value {name!r} is used before it is defined")

    def bind(self, name: str, value: Value) -> None:
        if name:
            value.name = value.name or name
            self.env[name] = value

    # ---- building -----------------------------------------------------------------------
    def add(self, kind: str, *inputs: Value, **attrs: Any):
        """Build an ember op located at the current node."""
        loc = (self.node.name or (self.node.output[0] if self.node.output else None)) \
            if self.node is not None else None
        return self.g.add(kind, *inputs, loc=loc, **attrs)

    def const(self, array: Any, dtype: Any = None, name: str | None = None) -> Value:
        arr = np.asarray(array, dtype=dtype)
        return self.g.const(arr, name=name)

    def scalar(self, value: float, like: Value) -> Value:
        return self.const(np.asarray(value, dtype=like.dtype.to_numpy()))

    def cast(self, v: Value, dtype: DType) -> Value:
        return v if v.dtype is dtype else self.add("cast", v, dtype=dtype)

    # ---- compile-time values ------------------------------------------------------------
    def static(self, v: Value | None) -> np.ndarray | None:
        """The value of `v` if it is computable now (consts and pure ops on consts), else None."""
        if v is None or v.producer is None:
            return None
        key = id(v)
        if key not in self._static:
            op = v.producer
            result = None
            if op.kind == "const":
                result = np.asarray(op.attrs["value"])
            elif op.schema.has(PURE) and not op.regions:
                args = [self.static(i) for i in op.inputs]
                if all(a is not None for a in args) and sum(a.size for a in args) < 1 << 16:
                    outs = get_schema(op.kind).run_reference(args, op.attrs)
                    result = outs[v.index].astype(v.dtype.to_numpy())
            self._static[key] = result
        return self._static[key]

    def need_static(self, v: Value, what: str) -> np.ndarray:
        arr = self.static(v)
        if arr is None:
            node = self.node
            raise UnsupportedOpError(
                f"{node.op_type} node {node.name or node.output[0]!r}: input {what} is computed "
                "at run time, but ember needs it at compile time (it sets a shape or an axis); "
                "make it an initializer or a Constant, or bind it with load(..., bind={name: "
                "array})", {node.op_type: 1})
        return arr

    def ints(self, v: Value | None, what: str) -> list[int] | None:
        return None if v is None else [int(i) for i in self.need_static(v, what).reshape(-1)]

    def fail(self, message: str) -> UnsupportedOpError:
        """An UnsupportedOpError naming the current node (a variant ember does not model)."""
        node = self.node
        return UnsupportedOpError(f"{node.op_type} node {node.name or node.output[0]!r}: "
                                  f"{message}", {node.op_type: 1})


def attr_dict(node: Any) -> dict[str, Any]:
    """Node attributes as plain Python values (graphs stay GraphProtos)."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def static_dims(t: TensorType, what: str) -> list[int]:
    if not t.is_static:
        raise UnsupportedOpError(f"{what}: needs a static shape, got {t}")
    return list(t.shape)  # type: ignore[arg-type]


def tensor_type(x: Value) -> TensorType:
    return x.type
