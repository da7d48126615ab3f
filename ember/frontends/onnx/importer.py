"""ONNX ModelProto -> ember Graph: inputs, initializers, nodes through the converter table.

Before converting anything the importer walks every node (bodies of Loop/Scan/If included) and
reports every op it has no converter for in one `UnsupportedOpError`, so a user sees the whole
gap at once. After converting, the types ONNX shape inference gives each named value are
checked against the types ember inferred: a disagreement means a converter misread the op.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import EmberError, InputError, ShapeError, UnsupportedOpError
from ...ir import Graph, TensorType, Value
from .context import CONVERTERS, Context, attr_dict, onnx_dtype

_DEFAULT_DOMAINS = ("", "ai.onnx")


def load(path_or_model: Any, *, bind: Mapping[str, np.ndarray] | None = None,
         check_types: bool = True, name: str | None = None) -> Graph:
    """Import an ONNX model (a path, bytes or a ModelProto) as an ember Graph.

    `bind` turns graph inputs into constants (ember needs shape operands such as Reshape's
    target at compile time). `check_types` compares ONNX shape inference with ember's types.
    """
    import onnx

    model = _read(path_or_model)
    opsets = {o.domain: o.version for o in model.opset_import}
    check_supported(model.graph, opsets)
    graph = Graph(name or _graph_name(model))
    cx = Context(graph, opsets)
    bind = dict(bind or {})
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        cx.bind(init.name, cx.const(_as_supported(arr, init.name), name=init.name))
    for vi in model.graph.input:
        if vi.name in cx.env and vi.name not in bind:
            continue  # an initializer listed as an input (older exporters): a weight
        if vi.name in bind:
            arr = np.asarray(bind.pop(vi.name))
            cx.bind(vi.name, cx.const(_as_supported(arr, vi.name), name=vi.name))
            continue
        cx.bind(vi.name, graph.add_input(vi.name, value_type(vi, f"graph input {vi.name!r}")))
    if bind:
        raise InputError(f"load(bind=...) names {sorted(bind)}, which are not graph inputs "
                         f"(inputs: {[vi.name for vi in model.graph.input]})")
    convert_nodes(cx, model.graph.node)
    graph.set_outputs(*[_output(cx, o.name) for o in model.graph.output])
    if check_types:
        check_inferred_types(model, cx)
    graph.verify()
    return graph


def _read(path_or_model: Any):
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if isinstance(path_or_model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(path_or_model))
    if isinstance(path_or_model, (str, os.PathLike)):
        if not os.path.isfile(path_or_model):
            raise InputError(f"{path_or_model}: no such ONNX file")
        try:
            return onnx.load(os.fspath(path_or_model))
        except Exception as e:  # a protobuf decode error: not an ONNX file
            raise InputError(f"{path_or_model}: not a readable ONNX model ({e})") from None
    raise InputError(f"load expects a path, bytes or onnx.ModelProto, got "
                     f"{type(path_or_model).__name__}")


def _graph_name(model: Any) -> str:
    name = model.graph.name or "onnx_model"
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _as_supported(arr: np.ndarray, what: str) -> np.ndarray:
    from ...ir import DType

    try:
        DType.from_numpy(arr.dtype)
    except EmberError:
        raise UnsupportedOpError(f"tensor {what!r} has element type {arr.dtype}, which ember "
                                 "does not support") from None
    return arr


def value_type(vi: Any, what: str) -> TensorType:
    """The ember type of an ONNX ValueInfo; dim_param becomes a symbol, unknown dims fail."""
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None:
        kind = vi.type.WhichOneof("value")
        raise UnsupportedOpError(f"{what} is a {kind}, not a tensor; ember imports tensors only")
    dtype = onnx_dtype(tt.elem_type, what)
    if not tt.HasField("shape"):
        raise ShapeError(f"{what} has no shape; give the model input shapes (e.g. with "
                         "onnx.tools.update_model_dims)")
    dims: list[Any] = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.dim_param:
            dims.append(_symbol(d.dim_param))
        else:
            raise ShapeError(f"{what} dim {i} is unknown (neither a size nor a name); give it "
                             "a dim_param name or a size")
    return TensorType(tuple(dims), dtype)


def _symbol(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"d_{out}"


def convert_nodes(cx: Context, nodes: Any) -> None:
    for node in nodes:
        cx.node = node
        inputs = [cx.lookup(n) for n in node.input]
        try:
            out = CONVERTERS[node.op_type](cx, node, inputs, attr_dict(node))
        except ShapeError as e:
            raise ShapeError(f"{node.op_type} node {node.name or node.output[0]!r} "
                             f"(inputs {[str(v.type) if v else None for v in inputs]}): {e}"
                             ) from None
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        for name, v in zip(node.output, outs):
            if v is not None:
                cx.bind(name, v)
        missing = [n for n, v in zip(node.output, outs + [None] * len(node.output)) if n and v is None]
        if missing:
            raise cx.fail(f"optional output(s) {missing} are not supported")
    cx.node = None


def _output(cx: Context, name: str) -> Value:
    if name not in cx.env:
        raise ShapeError(f"graph output {name!r} is never computed")
    return cx.env[name]


def check_supported(graph: Any, opsets: Mapping[str, int]) -> None:
    """Raise one UnsupportedOpError listing every node (in bodies too) without a converter."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node in _all_nodes(graph):
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in CONVERTERS:
            found[(node.domain or "ai.onnx", node.op_type)].append(node.name or node.output[0])
    if not found:
        return
    lines, table = [], {}
    for (domain, op), names in sorted(found.items()):
        shown = ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
        opset = opsets.get("" if domain == "ai.onnx" else domain, opsets.get(domain, "?"))
        lines.append(f"  {op} (domain {domain}, opset {opset}): {len(names)} node(s): {shown}")
        table[op] = {"domain": domain, "opset": opset, "count": len(names), "nodes": names}
    raise UnsupportedOpError(f"the ONNX model uses {len(found)} op type(s) ember cannot import:\n"
                             + "\n".join(lines), table)


def _all_nodes(graph: Any):
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.HasField("g"):
                yield from _all_nodes(a.g)
            for g in a.graphs:
                yield from _all_nodes(g)


def check_inferred_types(model: Any, cx: Context) -> None:
    """Compare ONNX shape inference with ember's inferred types for every named value."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - ONNX inference itself failed; nothing to compare
        return
    infos = list(inferred.graph.value_info) + list(inferred.graph.output)
    for vi in infos:
        v = cx.env.get(vi.name)
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if v is None or tt is None or not tt.elem_type:
            continue
        want = _partial_type(tt)
        if want is None:
            continue
        dtype, dims = want
        got = v.type
        bad = dtype is not None and dtype is not got.dtype
        if dims is not None:
            bad = bad or len(dims) != got.rank or any(
                w is not None and isinstance(g, int) and w != g for w, g in zip(dims, got.shape))
        if bad:
            node = v.producer.loc if v.producer is not None else "graph input"
            shown = "[" + ",".join("?" if d is None else str(d) for d in dims or []) + "]"
            raise ShapeError(f"value {vi.name!r} (from {node}): ONNX shape inference gives "
                             f"{dtype}{shown if dims is not None else '[unranked]'}, ember "
                             f"inferred {got}; the converter for this op disagrees with ONNX; "
                             "please report it (load(..., check_types=False) skips the check)")


def _partial_type(tt: Any):
    from .context import _ONNX_TO_DTYPE

    dtype = _ONNX_TO_DTYPE.get(tt.elem_type)
    if not tt.HasField("shape"):
        return dtype, None
    return dtype, [int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim]
