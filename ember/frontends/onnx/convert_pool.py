"""N-d MaxPool/AveragePool as strided slices of a padded input (the general ONNX pooling).

ember's `max_pool2d`/`avg_pool2d` are torch's 2-D ops with symmetric padding at most half the
kernel; ONNX pooling is N-d, allows any pads, dilated averages, `count_include_pad=0` with
asymmetric pads, and MaxPool's Indices output. `convert_nn` uses the 2-D ops when they fit and
this module otherwise: the input is padded once, each kernel offset is one strided slice, the
slices are combined with `maximum` (tracking the argmax for Indices) or summed and divided by
a divisor counted at import time (shapes are static). The padding and divisor rules follow
ONNX's reference implementation (onnx.reference.ops.op_pool_common / op_max_pool), which is
what the conformance data is generated from: AveragePool with explicit pads and ceil_mode
spreads the extra padding over both ends; windows never count pixels past the declared pads.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ...ir import Value
from .context import Context


def _decode(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _geometry(cx: Context, x: Value, attrs: dict, is_max: bool):
    """(out sizes, padding lo, padding hi, limit, strides, dilations, kernel) per spatial dim."""
    spatial = x.type.rank - 2
    sizes = x.shape[2:]
    if not all(isinstance(s, int) for s in sizes):
        raise cx.fail("pooling over symbolic spatial dims (the general path needs static ones)")
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * spatial)]
    dil = [int(d) for d in attrs.get("dilations", [1] * spatial)]
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * spatial)]
    auto = _decode(attrs.get("auto_pad", b"NOTSET"))
    ceil = bool(attrs.get("ceil_mode", 0))
    keff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    out, lo, hi, limit = [], [], [], []
    for i, n in enumerate(sizes):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // strides[i])
            total = max(0, (o - 1) * strides[i] + keff[i] - n)
            a = total // 2 if auto == "SAME_UPPER" else total - total // 2
            b = total - a
        elif auto == "VALID":
            o, a, b = -(-(n - keff[i] + 1) // strides[i]), 0, 0
        elif auto == "NOTSET":
            a, b = pads[i], pads[i + spatial]
            size = (n + a + b - keff[i]) / strides[i] + 1
            o = int(math.ceil(size) if ceil else math.floor(size))
        else:
            raise cx.fail(f"auto_pad={auto!r}")
        if o <= 0:
            raise cx.fail(f"pooling window {keff[i]} larger than the padded input {n + a + b}")
        lim = n + a + b
        need = (o - 1) * strides[i] + keff[i] - (n + a + b)
        if need > 0:
            if is_max or auto != "NOTSET":
                b += need
            else:  # the reference's AveragePool spreads the ceil_mode excess over both ends
                a, b = a + need // 2, b + need - need // 2
        out.append(o)
        lo.append(a)
        hi.append(b)
        limit.append(lim)
    return out, lo, hi, limit, strides, dil, kernel


def _window_slice(cx: Context, p: Value, offset, strides, dil, out) -> Value:
    for i, j in enumerate(offset):
        start = j * dil[i]
        end = start + (out[i] - 1) * strides[i] + 1
        if start != 0 or end != p.shape[2 + i] or strides[i] != 1:
            p = cx.add("slice", p, dim=2 + i, start=start, end=end, step=strides[i])
    return p


def _padded(cx: Context, x: Value, lo, hi, fill: float) -> Value:
    if not any(lo) and not any(hi):
        return x
    torch_order = []
    for a, b in zip(reversed(lo), reversed(hi)):
        torch_order += [a, b]
    return cx.add("pad", x, pads=tuple(torch_order), value=fill)


def general_pool(cx: Context, node, x: Value, attrs: dict, is_max: bool, want_indices: bool):
    """ONNX MaxPool (with optional Indices) or AveragePool, N-d, any padding."""
    out, lo, hi, limit, strides, dil, kernel = _geometry(cx, x, attrs, is_max)
    sizes = list(x.shape[2:])
    offsets = list(itertools.product(*[range(k) for k in kernel]))
    if is_max and want_indices and len(offsets) > 4096:
        raise cx.fail(f"MaxPool with Indices: kernel {kernel} has {len(offsets)} positions "
                      "(the Indices path unrolls them; at most 4096)")
    if is_max:
        dt = x.dtype
        fill = -math.inf if dt.is_float else float(np.iinfo(dt.to_numpy()).min)
        p = _padded(cx, x, lo, hi, fill)
        if not want_indices:
            return _separable(cx, p, "maximum", kernel, strides, dil, out)
        slices = [_window_slice(cx, p, off, strides, dil, out) for off in offsets]
        y, idx = slices[0], None
        if want_indices:
            idx = cx.const(_indices(x.shape, offsets[0], lo, strides, dil, out, attrs))
        for off, s in zip(offsets[1:], slices[1:]):
            if want_indices:
                better = cx.add("gt", s, y)
                cand = cx.const(_indices(x.shape, off, lo, strides, dil, out, attrs))
                idx = cx.add("where", better, cand, idx)
            y = cx.add("maximum", y, s)
        return (y, idx) if want_indices else y
    if not x.dtype.is_float:
        raise cx.fail(f"AveragePool of {x.dtype} (ember averages floats)")
    include = bool(attrs.get("count_include_pad", 0))
    p = _padded(cx, x, lo, hi, 0.0)
    total = _separable(cx, p, "add", kernel, strides, dil, out)
    count = _divisor(sizes, lo, hi, limit, strides, dil, out, offsets, include)
    shape = (1, 1, *out)
    return cx.add("div", total, cx.const(count.reshape(shape).astype(x.dtype.to_numpy())))


def _separable(cx: Context, p: Value, kind: str, kernel, strides, dil, out) -> Value:
    """A box window's max or sum as a 1-D window along each spatial dim in turn: sum(kernel)
    slices instead of prod(kernel) (a 5x5x5 kernel is 15 slices, not 125)."""
    rank = len(kernel)
    for i, k in enumerate(kernel):
        # along dim i: window offsets j * dil, output stride; other dims pass through whole
        steps = [strides[d] if d == i else 1 for d in range(rank)]
        dils = [dil[d] if d == i else 1 for d in range(rank)]
        sizes = [out[d] if d == i else p.shape[2 + d] for d in range(rank)]
        acc = None
        for j in range(k):
            offset = [j if d == i else 0 for d in range(rank)]
            s = _window_slice(cx, p, offset, steps, dils, sizes)
            acc = s if acc is None else cx.add(kind, acc, s)
        p = acc
    return p


def _divisor(sizes, lo, hi, limit, strides, dil, out, offsets, include) -> np.ndarray:
    """How many pixels each window averages: inside the declared pads (and the data, unless
    count_include_pad), as ONNX's reference counts them."""
    mask = np.ones([n + a + b for n, a, b in zip(sizes, lo, hi)], dtype=np.float64)
    for i, (n, a, lim) in enumerate(zip(sizes, lo, limit)):
        coord = np.arange(mask.shape[i])
        keep = coord < lim
        if not include:
            keep &= (coord >= a) & (coord < a + n)
        view = [1] * mask.ndim
        view[i] = -1
        mask = mask * keep.reshape(view)
    count = np.zeros(out)
    for off in offsets:
        idx = tuple(slice(j * d, j * d + (o - 1) * s + 1, s)
                    for j, d, o, s in zip(off, dil, out, strides))
        count += mask[idx]
    return count


def _indices(shape, offset, lo, strides, dil, out, attrs) -> np.ndarray:
    """Flat input index (row-major, or column-major over the spatial dims for
    storage_order=1) of the pixel kernel `offset` reads at every output position."""
    n, c, *sizes = shape
    coords = [np.arange(o) * s + j * d - a
              for o, s, j, d, a in zip(out, strides, offset, dil, lo)]
    grids = np.meshgrid(*coords, indexing="ij")
    flat = np.zeros(out, dtype=np.int64)
    order = range(len(sizes)) if not attrs.get("storage_order", 0) else \
        reversed(range(len(sizes)))
    for i in order:
        flat = flat * sizes[i] + np.clip(grids[i], 0, sizes[i] - 1)
    plane = math.prod(sizes)
    base = (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, *([1] * len(sizes)))
    return base + flat.reshape(1, 1, *out)

