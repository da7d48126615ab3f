"""ember Graph -> ONNX ModelProto: one `@exports("kind")` function per op kind.

Export functions get an `Emitter` (node list, initializers, unique names) plus the op and the
ONNX names of its inputs, and return the ONNX names of its results. Consts become initializers
named after the const's name (the torch parameter path), so an exported model stays readable.
Symbolic dims become `dim_param`s of the graph inputs and outputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import DType, Graph, Op, TensorType, Value

OPSET = 20
Exporter = Callable[["Emitter", Op, list], Any]
EXPORTERS: dict[str, Exporter] = {}
UNSUPPORTED: dict[str, str] = {}
_TO_ONNX = {DType.f32: 1, DType.u8: 2, DType.i8: 3, DType.i16: 5, DType.i32: 6, DType.i64: 7,
            DType.bool: 9, DType.f16: 10, DType.f64: 11, DType.u32: 12, DType.bf16: 16,
            DType.u16: 4, DType.u64: 13, DType.f8e4m3fn: 17, DType.f8e4m3fnuz: 18,
            DType.f8e5m2: 19, DType.f8e5m2fnuz: 20, DType.f4e2m1: 23, DType.f8e8m0: 24}


def exports(*kinds: str) -> Callable[[Exporter], Exporter]:
    def deco(fn: Exporter) -> Exporter:
        for k in kinds:
            EXPORTERS[k] = fn
        return fn
    return deco


def onnx_type(dtype: DType) -> int:
    if dtype not in _TO_ONNX:
        raise UnsupportedOpError(f"dtype {dtype} has no ONNX element type")
    return _TO_ONNX[dtype]


class Emitter:
    """Collects ONNX nodes and initializers for one graph (or one Scan body)."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.names: dict[int, str] = {}
        self._used: set[str] = set()
        self.op: Op | None = None

    def fresh(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c in "._/" else "_" for c in (hint or "v")) or "v"
        name, k = base, 0
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def name_of(self, v: Value) -> str:
        return self.names[id(v)]

    def node(self, op_type: str, inputs: list[str], n_out: int = 1, hint: str | None = None,
             **attrs: Any) -> Any:
        """Add one ONNX node; returns its output name (or a list for n_out > 1)."""
        from onnx import helper

        hint = hint or (self.op.loc if self.op is not None and self.op.loc else op_type.lower())
        outs = [self.fresh(hint) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(
            f"{hint}/{op_type}"), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, array: Any, hint: str = "const", dtype: Any = None) -> str:
        from onnx import numpy_helper

        arr = np.asarray(array, dtype=dtype)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(arr, order="C", copy=True), name))
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint)

    def fail(self, message: str) -> UnsupportedOpError:
        op = self.op
        where = f" at {op.loc}" if op is not None and op.loc else ""
        kind = op.kind if op is not None else "?"
        return UnsupportedOpError(f"ONNX export of {kind}{where}: {message}", {kind: 1})


def value_info(name: str, t: TensorType):
    from onnx import helper

    return helper.make_tensor_value_info(name, onnx_type(t.dtype), list(t.shape))


def check_exportable(graph: Graph) -> None:
    """One UnsupportedOpError listing every op kind the ONNX exporter lacks."""
    bad: dict[str, int] = {}
    for op in graph.walk():
        if op.kind not in EXPORTERS:
            bad[op.kind] = bad.get(op.kind, 0) + 1
    if bad:
        lines = [f"  {k} x{n}: {UNSUPPORTED.get(k, 'no ONNX exporter yet')}"
                 for k, n in sorted(bad.items())]
        raise UnsupportedOpError(f"cannot export @{graph.name} to ONNX; {len(bad)} op kind(s) "
                                 "have no ONNX mapping:\n" + "\n".join(lines), bad)


def emit_graph(em: Emitter, graph: Graph, input_names: list[str] | None = None):
    """Emit `graph`'s ops into `em`; returns (input names, output names) in ONNX."""
    names = input_names or [em.fresh(v.name or f"input{i}") for i, v in enumerate(graph.inputs)]
    for v, n in zip(graph.inputs, names):
        em.names[id(v)] = n
    for op in graph.ops:
        em.op = op
        outs = EXPORTERS[op.kind](em, op, [em.name_of(v) if v is not None else "" for v in
                                           op.inputs])
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        for r, n in zip(op.results, outs):
            em.names[id(r)] = n
    em.op = None
    return names, [em.name_of(v) for v in graph.outputs]


def to_model(graph: Graph, opset: int = OPSET):
    """The ONNX ModelProto for `graph` (checked by onnx.checker)."""
    import onnx
    from onnx import helper

    check_exportable(graph)
    em = Emitter()
    ins, outs = emit_graph(em, graph)
    out_names = []
    for v, n in zip(graph.outputs, outs):  # graph outputs need their own, unique names
        want = em.fresh(v.name or "output") if (n in ins or n in out_names or
                                                 n in {i.name for i in em.initializers}) else n
        if want != n:
            em.nodes.append(helper.make_node("Identity", [n], [want]))
        out_names.append(want)
    g = helper.make_graph(em.nodes, graph.name or "ember",
                          [value_info(n, v.type) for n, v in zip(ins, graph.inputs)],
                          [value_info(n, v.type) for n, v in zip(out_names, graph.outputs)],
                          initializer=em.initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="ember")
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def export(graph: Graph, path: str | os.PathLike | None = None):
    """Write `graph` as an ONNX model to `path` (and return the ModelProto)."""
    import onnx

    model = to_model(graph)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
