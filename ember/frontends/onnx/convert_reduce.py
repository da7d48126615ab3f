"""ONNX reductions (Reduce*, ArgMax/ArgMin, CumSum).

ONNX keeps the input dtype (ReduceSum of int32 is int32) where ember follows torch and widens
integer sums to i64, so results are cast back. Axes come from the attribute (old opsets) or the
input (ReduceSum 13+, the others 18+); an empty axes list means all dims unless
noop_with_empty_axes is set.
"""

from __future__ import annotations

import numpy as np

from ...ir import DType, Value
from .context import Context, converts
from .convert_shape import flip

_SIMPLE = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "amax", "ReduceMin": "amin",
           "ReduceProd": "prod"}


def _reduce_axes(cx: Context, inputs, attrs, x: Value) -> tuple[int, ...] | None:
    """Normalized axes, or None for 'no reduction' (noop_with_empty_axes)."""
    if "axes" in attrs:
        axes = [int(a) for a in attrs["axes"]]
    elif len(inputs) > 1 and inputs[1] is not None:
        axes = cx.ints(inputs[1], "axes")
    else:
        axes = []
    if not axes:
        return None if attrs.get("noop_with_empty_axes", 0) else tuple(range(x.type.rank))
    return tuple(sorted(a % max(x.type.rank, 1) for a in axes))


def _reduce(cx: Context, kind: str, x: Value, axes, keep: bool) -> Value:
    if kind == "mean" and not x.dtype.is_float:
        return cx.cast(_reduce(cx, kind, cx.cast(x, DType.f64), axes, keep), x.dtype)
    if kind in ("amax", "amin") and any(x.shape[a] == 0 for a in axes):
        fill = -np.inf if kind == "amax" else np.inf
        if x.dtype is DType.bool:
            fill = kind == "amin"
        elif not x.dtype.is_float:
            info = np.iinfo(x.dtype.to_numpy())
            fill = info.min if kind == "amax" else info.max
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else \
            tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return cx.const(np.full(shape, fill, dtype=x.dtype.to_numpy()))
    if x.type.rank == 0:
        return x
    return cx.cast(cx.add(kind, x, dims=tuple(axes), keepdim=keep), x.dtype)


def _reduction(onnx_op: str):
    def convert(cx: Context, node, inputs, attrs):
        x = inputs[0]
        axes = _reduce_axes(cx, inputs, attrs, x)
        if axes is None:
            return _prologue(cx, onnx_op, x, identity=True)
        keep = bool(attrs.get("keepdims", 1))
        pre = _prologue(cx, onnx_op, x)
        kind = _SIMPLE.get(onnx_op, "sum")
        y = _reduce(cx, kind, pre, axes, keep)
        if onnx_op == "ReduceL2":
            y = cx.add("sqrt", y)
        elif onnx_op in ("ReduceLogSum", "ReduceLogSumExp"):
            y = cx.add("log", y)
        return y
    return convert


def _prologue(cx: Context, onnx_op: str, x: Value, identity: bool = False) -> Value:
    """The elementwise part before the sum (|x|, x^2, exp x); with identity, the whole op on
    an empty axes list (noop_with_empty_axes)."""
    if onnx_op == "ReduceL1":
        return cx.add("abs", x)
    if onnx_op in ("ReduceL2", "ReduceSumSquare"):
        sq = cx.add("mul", x, x)
        return cx.add("abs", x) if identity and onnx_op == "ReduceL2" else sq
    if onnx_op == "ReduceLogSumExp":
        return x if identity else cx.add("exp", x)
    if onnx_op == "ReduceLogSum" and identity:
        return cx.add("log", x)
    return x


for _op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
            "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"):
    converts(_op, static=(1,))(_reduction(_op))


def _arg(kind: str):
    def convert(cx: Context, node, inputs, attrs):
        x = inputs[0]
        axis = int(attrs.get("axis", 0)) % x.type.rank
        keep = bool(attrs.get("keepdims", 1))
        if not attrs.get("select_last_index", 0):
            return cx.add(kind, x, dim=axis, keepdim=keep)
        idx = cx.add(kind, flip(cx, x, axis), dim=axis, keepdim=keep)
        return cx.add("sub", cx.const(np.array(x.shape[axis] - 1, np.int64)), idx)
    return convert


converts("ArgMax")(_arg("argmax"))
converts("ArgMin")(_arg("argmin"))


@converts("CumSum", static=(1,))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    axis = int(cx.need_static(inputs[1], "axis")) % x.type.rank
    rev = bool(attrs.get("reverse", 0))
    src = flip(cx, x, axis) if rev else x
    y = cx.cast(cx.add("cumsum", src, dim=axis), x.dtype)
    if attrs.get("exclusive", 0):
        y = cx.add("sub", y, src)
    return flip(cx, y, axis) if rev else y
