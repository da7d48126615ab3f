"""What the prune passes share: FLOP and parameter counts, weight lookup, the teacher stash.

FLOPs count the multiply-adds of the dense compute ops (linear, matmul, conv2d, attention and
the sparse kernels) as 2 per MAC; elementwise and shape ops are left out because they are
noise next to the GEMMs in every zoo model. Symbolic dims (the batch) count as 1, so the numbers
are per sample.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import PipelineSpecError
from ...ir.graph import Graph, Op, Value

TEACHER_KEY = "prune.teacher"
"""graph.meta key: the graph as it was before the first prune pass of a pipeline (a Graph).

`finetune{distill=true}` distils from its outputs. It lives in memory only (meta is not
serialized) and is set once, so a later prune pass in the same pipeline keeps the original.
"""


def stash_teacher(graph: Graph) -> None:
    if TEACHER_KEY not in graph.meta:
        teacher = graph.clone()
        teacher.meta = {}
        graph.meta[TEACHER_KEY] = teacher


def _n(d: Any) -> int:
    return d if isinstance(d, int) else 1


def _numel(shape) -> int:
    return int(np.prod([_n(d) for d in shape], dtype=np.int64))


def op_flops(op: Op) -> int:
    """2 * multiply-adds of one op (0 for ops that are not dense compute)."""
    k = op.kind
    out = op.results[0].type.shape if op.results else ()
    if k == "linear":
        return 2 * _numel(out) * _n(op.inputs[1].type.shape[1])
    if k == "matmul":
        a = op.inputs[0].type.shape
        return 2 * _numel(out) * _n(a[-1])
    if k == "conv2d":
        w = op.inputs[1].type.shape
        return 2 * _numel(out) * _numel(w[1:])
    if k == "scaled_dot_product_attention":
        q, kk, v = (x.type.shape for x in op.inputs[:3])
        batch = _numel(out[:-2])
        return 2 * batch * _n(q[-2]) * _n(kk[-2]) * (_n(q[-1]) + _n(v[-1]))
    if k == "sparse.linear_nm":
        return 2 * _numel(out) * _n(op.inputs[1].type.shape[1])  # stored values per row
    return 0


def flops(graph: Graph) -> int:
    return sum(op_flops(op) for op in graph.walk())


def params(graph: Graph) -> int:
    """Elements in float consts of more than one element (the trainable weights)."""
    total = 0
    for op in graph.consts():
        arr = op.attrs["value"]
        if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and arr.size > 1:
            total += int(arr.size)
    return total


def const_array(v: Value) -> np.ndarray | None:
    op = v.producer
    if op is None or op.kind != "const" or not isinstance(op.attrs.get("value"), np.ndarray):
        return None
    return op.attrs["value"]


def weight_name(op: Op) -> str:
    """A readable name for a linear/conv op: its weight's parameter path, else its loc."""
    w = op.inputs[1].producer
    name = w.attrs.get("name") if w is not None and w.kind == "const" else None
    if name:
        return str(name).removesuffix(".weight")
    return op.loc or f"{op.kind}#{id(op) % 10000}"


def weighted_ops(graph: Graph, kinds=("linear",), skip: tuple[str, ...] = ()) -> list[Op]:
    """linear/conv ops whose weight is a float const, minus those whose name contains a skip."""
    out = []
    for op in graph.ops:
        if op.kind not in kinds or len(op.inputs) < 2:
            continue
        arr = const_array(op.inputs[1])
        if arr is None or arr.dtype.kind != "f":
            continue
        name = weight_name(op)
        if any(s and s in name for s in skip):
            continue
        out.append(op)
    return out


def replace_const(graph: Graph, v: Value, array: np.ndarray) -> Value:
    """A new const beside `v`'s const op holding `array` (same name), for one reader or all."""
    op = v.producer
    assert op is not None and op.kind == "const"
    with graph.at(before=op):
        return graph.const(np.ascontiguousarray(array), name=op.attrs.get("name"), loc=op.loc)


def check_ratio(pass_name: str, what: str, value: float, lo: float = 0.0, hi: float = 1.0) -> None:
    if not (lo <= value <= hi) or math.isnan(value):
        raise PipelineSpecError(f"{pass_name}: {what}={value} must lie in [{lo}, {hi}]")
