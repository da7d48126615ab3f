"""ONNX shape and indexing ops: Reshape, Transpose, Squeeze, Slice, Gather, Pad, Shape, ...

ONNX passes shapes, axes and pads as tensors; ember keeps them as attributes, so these
converters read them with `cx.ints(...)` (constants, or pure ops on constants such as
Shape -> Gather -> Concat chains, which fold here) and say clearly when one is a run-time value.
"""

from __future__ import annotations

import numpy as np

from ...ir import Value
from ...ir.types import broadcast_shapes, mul_dims
from .context import Context, converts

_INT_MAX = 2**62


def _axes(cx: Context, node, inputs, attrs, index: int = 1) -> list[int] | None:
    """Axes from the attribute (old opsets) or the optional input (new ones)."""
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(inputs) > index and inputs[index] is not None:
        return cx.ints(inputs[index], "axes")
    return None


@converts("Reshape", static=(1,))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    shape = cx.ints(inputs[1], "shape") if len(inputs) > 1 else list(attrs["shape"])
    if not attrs.get("allowzero", 0):  # 0 copies the input dim
        shape = [x.shape[i] if d == 0 and i < x.type.rank else d for i, d in enumerate(shape)]
    return cx.add("reshape", x, shape=tuple(shape))


@converts("Flatten")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + x.type.rank if axis < 0 else axis
    shape = (mul_dims(x.shape[:axis]), mul_dims(x.shape[axis:]))
    return cx.add("reshape", x, shape=shape)


@converts("Transpose")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    perm = attrs.get("perm", list(reversed(range(x.type.rank))))
    return cx.add("permute", x, dims=tuple(int(p) for p in perm))


@converts("Squeeze", static=(1,))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    axes = _axes(cx, node, inputs, attrs)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    return cx.add("squeeze", x, dims=tuple(axes))


@converts("Unsqueeze", static=(1,))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    axes = _axes(cx, node, inputs, attrs)
    rank = x.type.rank + len(axes)
    for a in sorted(a % rank for a in axes):
        x = cx.add("unsqueeze", x, dim=a)
    return x


@converts("Concat")
def _(cx: Context, node, inputs, attrs):
    xs = [v for v in inputs if v is not None]
    return cx.add("concat", *xs, dim=int(attrs["axis"]))


@converts("Split", static=(1,))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    axis = int(attrs.get("axis", 0)) % x.type.rank
    n = x.shape[axis]
    if not isinstance(n, int):
        raise cx.fail(f"split of symbolic dim {n!r}")
    sizes = list(attrs["split"]) if "split" in attrs else (
        cx.ints(inputs[1], "split") if len(inputs) > 1 and inputs[1] is not None else None)
    if sizes is None:
        parts = int(attrs.get("num_outputs", len(node.output)))
        step = -(-n // parts)
        sizes = [min(step, n - i * step) for i in range(parts)]
    out = cx.add("split", x, dim=axis, sizes=tuple(sizes))
    return out if isinstance(out, tuple) else (out,)


def flip(cx: Context, x: Value, axis: int) -> Value:
    n = x.shape[axis]
    if not isinstance(n, int):
        raise cx.fail(f"reversing symbolic dim {n!r}")
    return cx.add("index_select", x, cx.const(np.arange(n - 1, -1, -1, dtype=np.int64)), dim=axis)


@converts("Slice", static=(1, 2, 3, 4))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    if cx.opset < 10:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = list(attrs.get("axes", range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = cx.ints(inputs[1], "starts"), cx.ints(inputs[2], "ends")
        get = (lambda i: inputs[i] if len(inputs) > i else None)
        axes = cx.ints(get(3), "axes") if get(3) is not None else list(range(len(starts)))
        steps = cx.ints(get(4), "steps") if get(4) is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.type.rank
        n = x.shape[axis]
        start, end = max(min(start, _INT_MAX), -_INT_MAX), max(min(end, _INT_MAX), -_INT_MAX)
        if step > 0:
            x = cx.add("slice", x, dim=axis, start=start, end=end, step=step)
            continue
        if not isinstance(n, int):
            raise cx.fail(f"negative-step slice of symbolic dim {n!r}")
        index = np.arange(n)[slice(start, end, step)]
        x = cx.add("index_select", x, cx.const(index.astype(np.int64)), dim=axis)
    return x


@converts("Gather")
def _(cx: Context, node, inputs, attrs):
    x, idx = inputs
    axis = int(attrs.get("axis", 0)) % x.type.rank
    n = x.shape[axis]
    known = cx.static(idx)
    if known is not None:
        if isinstance(n, int):
            known = np.where(known < 0, known + n, known)
        if known.ndim == 0:
            return cx.add("select", x, dim=axis, index=int(known))
        idx = cx.const(known.astype(np.int64))
    elif isinstance(n, int):  # negative indices count from the end
        idx = cx.add("where", cx.add("lt", idx, cx.scalar(0, idx)),
                     cx.add("add", idx, cx.scalar(n, idx)), idx)
    else:
        raise cx.fail(f"run-time indices into symbolic dim {n!r}")
    if idx.type.rank == 1:
        return cx.add("index_select", x, idx, dim=axis)
    flat = cx.add("reshape", idx, shape=(-1,))
    out = cx.add("index_select", x, flat, dim=axis)
    shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    return cx.add("reshape", out, shape=shape)


@converts("Expand", static=(1,))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    shape = tuple(cx.ints(inputs[1], "shape"))
    return cx.add("expand", x, shape=broadcast_shapes(x.shape, shape))


@converts("Tile", static=(1,))
def _(cx: Context, node, inputs, attrs):
    return cx.add("tile", inputs[0], repeats=tuple(cx.ints(inputs[1], "repeats")))


@converts("Pad", static=(1, 2, 3))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise cx.fail(f"mode={mode!r} (ember pads with a constant only)")
    if cx.opset < 11:
        pads, value = list(attrs["pads"]), float(attrs.get("value", 0.0))
        axes = list(range(x.type.rank))
    else:
        pads = cx.ints(inputs[1], "pads")
        value = 0.0
        if len(inputs) > 2 and inputs[2] is not None:
            value = float(cx.need_static(inputs[2], "constant_value").item())
        axes = cx.ints(inputs[3], "axes") if len(inputs) > 3 and inputs[3] is not None \
            else list(range(x.type.rank))
    rank = x.type.rank
    widths = [(0, 0)] * rank
    k = len(axes)
    for i, a in enumerate(axes):
        widths[a % rank] = (pads[i], pads[i + k])
    torch_order = tuple(p for lo, hi in reversed(widths) for p in (lo, hi))
    return cx.add("pad", x, pads=torch_order, value=value)


@converts("Shape")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    dims = x.shape[slice(attrs.get("start", 0), attrs.get("end", None))]
    if not all(isinstance(d, int) for d in dims):
        raise cx.fail(f"Shape of symbolic dims {list(dims)} (ember folds shapes at compile time)")
    return cx.const(np.array(dims, dtype=np.int64))


@converts("Size")
def _(cx: Context, node, inputs, attrs):
    if not inputs[0].type.is_static:
        raise cx.fail("Size of a tensor with symbolic dims")
    return cx.const(np.array(inputs[0].type.numel(), dtype=np.int64))


@converts("Constant")
def _(cx: Context, node, inputs, attrs):
    import onnx

    if "value" in attrs:
        return cx.const(onnx.numpy_helper.to_array(attrs["value"]), name=node.output[0])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return cx.const(np.asarray(attrs[key], dtype=dtype), name=node.output[0])
    raise cx.fail(f"Constant with attribute(s) {sorted(attrs)} (sparse or string)")


@converts("ConstantOfShape", static=(0,))
def _(cx: Context, node, inputs, attrs):
    import onnx

    shape = cx.ints(inputs[0], "shape")
    fill = onnx.numpy_helper.to_array(attrs["value"]) if "value" in attrs else \
        np.zeros(1, np.float32)
    return cx.const(np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype))


@converts("Range", static=(0, 1, 2))
def _(cx: Context, node, inputs, attrs):
    start, limit, delta = (cx.need_static(v, n) for v, n in zip(inputs, ("start", "limit",
                                                                          "delta")))
    return cx.const(np.arange(start, limit, delta, dtype=start.dtype))


@converts("EyeLike")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    if not x.type.is_static:
        raise cx.fail("EyeLike of a symbolic shape")
    from .context import onnx_dtype

    dtype = onnx_dtype(attrs["dtype"], "EyeLike dtype") if "dtype" in attrs else x.dtype
    return cx.const(np.eye(*x.shape, k=int(attrs.get("k", 0)), dtype=dtype.to_numpy()))


@converts("Trilu", static=(1,))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    k = int(cx.need_static(inputs[1], "k")) if len(inputs) > 1 and inputs[1] is not None else 0
    n, m = x.shape[-2:]
    if not (isinstance(n, int) and isinstance(m, int)):
        raise cx.fail("Trilu of symbolic matrix dims")
    keep = np.triu(np.ones((n, m), bool), k) if attrs.get("upper", 1) else \
        np.tril(np.ones((n, m), bool), k)
    return cx.add("where", cx.const(keep), x, cx.scalar(0, x))


def _space_depth(to_depth: bool):
    def convert(cx: Context, node, inputs, attrs):
        x, b = inputs[0], int(attrs["blocksize"])
        n, c, h, w = x.shape
        mode = attrs.get("mode", b"DCR")
        dcr = (mode.decode() if isinstance(mode, bytes) else mode) == "DCR"
        if to_depth:
            y = cx.add("reshape", x, shape=(n, c, h // b, b, w // b, b))
            y = cx.add("permute", y, dims=(0, 3, 5, 1, 2, 4) if dcr else (0, 1, 3, 5, 2, 4))
            return cx.add("reshape", y, shape=(n, c * b * b, h // b, w // b))
        if dcr:
            y = cx.add("reshape", x, shape=(n, b, b, c // (b * b), h, w))
            y = cx.add("permute", y, dims=(0, 3, 4, 1, 5, 2))
        else:
            y = cx.add("reshape", x, shape=(n, c // (b * b), b, b, h, w))
            y = cx.add("permute", y, dims=(0, 1, 4, 2, 5, 3))
        return cx.add("reshape", y, shape=(n, c // (b * b), h * b, w * b))
    return convert


converts("SpaceToDepth")(_space_depth(True))
converts("DepthToSpace")(_space_depth(False))
