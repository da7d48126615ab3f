"""Converters for shape ops: views, expand, slicing, concatenation and splitting.

Target shapes are taken from torch's own result metadata, not from the (possibly -1 or SymInt)
arguments, so an ember reshape always states the shape torch computed; a single symbolic dim
becomes -1 so the op still works for any batch size.
"""

from __future__ import annotations

import numpy as np

from ...ir import DType, Value
from ...ir.types import normalize_axis
from .context import Unsupported
from .importer import GraphImporter
from .table import converts

_BIG = 2**62  # torch uses INT64_MAX for "to the end" in slices


@converts("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default")
def _view(cx: GraphImporter, x, size):
    out = cx.out_type()
    if out.shape == x.shape:
        return x
    symbolic = [i for i, d in enumerate(out.shape) if not isinstance(d, int)]
    shape = list(out.shape)
    if len(symbolic) == 1:
        shape[symbolic[0]] = -1
    return cx.emit("reshape", x, shape=tuple(shape))


@converts("aten.expand.default")
def _expand(cx: GraphImporter, x, size, implicit=False):
    return broadcast_to(cx, x, cx.out_type().shape)


def broadcast_to(cx: GraphImporter, x: Value, shape: tuple) -> Value:
    """Broadcast `x` to `shape`, which may hold symbolic dims that `x` does not have.

    ember's `expand` takes only static sizes (a symbolic size is known only at run time), so a
    new symbolic dim comes from `where(carrier, x, x)`: `carrier` is a bool vector read off a
    tensor that has that dim, and `where` broadcasts without touching x's values.
    """
    if x.shape == tuple(shape):
        return x
    for _ in range(len(shape) - x.type.rank):
        x = cx.emit("unsqueeze", x, dim=0)
    static = tuple(t if isinstance(t, int) and have != t else -1 for have, t in zip(x.shape, shape))
    if any(t != -1 for t in static):
        x = cx.emit("expand", x, shape=static)
    for i, (have, t) in enumerate(zip(x.shape, shape)):
        if have != t:
            carrier = cx.emit("reshape", _carrier(cx, t),
                              shape=tuple(-1 if j == i else 1 for j in range(len(shape))))
            x = cx.emit("where", carrier, x, x)
    return x


def _carrier(cx: GraphImporter, dim: str) -> Value:
    """A bool vector of length `dim` (a symbol), derived from some tensor that has that dim."""
    key = ("carrier", dim)
    if key in cx.cache:
        return cx.cache[key]
    candidates = list(cx.g.inputs) + [r for op in reversed(cx.g.ops) for r in op.results]
    source = next((v for v in candidates if dim in v.shape), None)
    if source is None:
        raise Unsupported(f"no tensor in the graph has the symbolic dim {dim!r} to broadcast to")
    axis = source.shape.index(dim)
    v = source
    for j in reversed(range(source.type.rank)):
        if j != axis:
            v = cx.emit("select", v, dim=j, index=0)
    cx.cache[key] = v = cx.cast(v, DType.bool)
    return v


@converts("aten.t.default")
def _t(cx: GraphImporter, x):
    return x if x.type.rank < 2 else cx.emit("transpose", x, dim0=0, dim1=1)


@converts("aten.numpy_T.default")
def _numpy_t(cx: GraphImporter, x):
    rank = x.type.rank
    return x if rank < 2 else cx.emit("permute", x, dims=tuple(reversed(range(rank))))


@converts("aten.pad.default")
def _pad(cx: GraphImporter, x, pad, mode="constant", value=None):
    if mode != "constant":
        raise Unsupported(f"pad mode={mode!r} (only constant padding)")
    return cx.emit("pad", x, pads=tuple(pad), value=float(value or 0.0))


@converts("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _squeeze(cx: GraphImporter, x, dims=None):
    if dims is None:
        dims = range(x.type.rank)
    elif isinstance(dims, int):
        dims = (dims,)
    keep = tuple(sorted({normalize_axis(d, x.type.rank) for d in dims
                         if x.shape[normalize_axis(d, x.type.rank)] == 1}))
    return cx.emit("squeeze", x, dims=keep) if keep else x


@converts("aten.slice.Tensor")
def _slice(cx: GraphImporter, x, dim=0, start=None, end=None, step=1):
    dim = normalize_axis(dim, x.type.rank)
    size = x.shape[dim]
    start = 0 if start is None else start
    end = _BIG if end is None else end
    if isinstance(start, str) or isinstance(end, str) or isinstance(step, str):
        raise Unsupported("slice with symbolic bounds")
    if isinstance(size, int):
        start, end, step = slice(start, end, step).indices(size)
        if (start, end, step) == (0, size, 1):
            return x
        return cx.emit("slice", x, dim=dim, start=start, end=end, step=step)
    if start == 0 and end >= _BIG and step == 1:
        return x
    count = cx.out_type().shape[dim]
    if isinstance(count, int) and start >= 0:
        # A fixed number of rows of a symbolic dim (x[:2] of a batch): gather them, since a
        # slice of a symbolic dim has a symbolic size in ember's types.
        rows = cx.g.const(np.arange(start, start + count * step, step, dtype=np.int64))
        return cx.emit("index_select", x, rows, dim=dim)
    return cx.emit("slice", x, dim=dim, start=start, end=min(end, _BIG), step=step)


@converts("aten.cat.default")
def _cat(cx: GraphImporter, tensors, dim=0):
    out = cx.out_type()
    parts = [cx.cast(t, out.dtype) for t in tensors if not (t.type.rank == 1 and t.shape[0] == 0)]
    if len(parts) == 1:
        return parts[0]
    return cx.emit("concat", *parts, dim=normalize_axis(dim, out.rank))


@converts("aten.split_with_sizes.default")
def _split_with_sizes(cx: GraphImporter, x, sizes, dim=0):
    return _split(cx, x, tuple(sizes), dim)


@converts("aten.split.Tensor")
def _split_tensor(cx: GraphImporter, x, split_size, dim=0):
    dim = normalize_axis(dim, x.type.rank)
    size = x.shape[dim]
    if not isinstance(size, int) or isinstance(split_size, str):
        raise Unsupported("split along a symbolic dim")
    sizes = tuple(min(split_size, size - s) for s in range(0, size, split_size))
    return _split(cx, x, sizes, dim)


def _split(cx: GraphImporter, x, sizes: tuple, dim: int):
    dim = normalize_axis(dim, x.type.rank)
    if len(sizes) == 1:
        return (x,)
    out = cx.emit("split", x, dim=dim, sizes=sizes)
    return out if isinstance(out, tuple) else (out,)


@converts("aten.unbind.int")
def _unbind(cx: GraphImporter, x, dim=0):
    dim = normalize_axis(dim, x.type.rank)
    n = x.shape[dim]
    if not isinstance(n, int):
        raise Unsupported("unbind along a symbolic dim")
    return tuple(cx.emit("select", x, dim=dim, index=i) for i in range(n))


@converts("aten.stack.default")
def _stack(cx: GraphImporter, tensors, dim=0):
    out = cx.out_type()
    d = normalize_axis(dim, out.rank)
    parts = [cx.emit("unsqueeze", cx.cast(t, out.dtype), dim=d) for t in tensors]
    return parts[0] if len(parts) == 1 else cx.emit("concat", *parts, dim=d)


@converts("aten.select.int")
def _select(cx: GraphImporter, x, dim, index):
    dim = normalize_axis(dim, x.type.rank)
    size = x.shape[dim]
    if isinstance(index, str):
        raise Unsupported("select with a symbolic index")
    if index < 0:
        if not isinstance(size, int):
            raise Unsupported(f"select index {index} from the end of symbolic dim {size}")
        index += size
    return cx.emit("select", x, dim=dim, index=index)


@converts("aten.index.Tensor")
def _index(cx: GraphImporter, x, indices):
    """x[..., idx] with one integer index tensor: index_select (plus a reshape for N-d idx)."""
    given = [(d, i) for d, i in enumerate(indices) if i is not None]
    if len(given) != 1:
        raise Unsupported(f"advanced indexing with {len(given)} index tensors (only one)")
    dim, idx = given[0]
    if idx.dtype.is_float or idx.dtype is DType.bool:
        raise Unsupported(f"indexing with a {idx.dtype} tensor (boolean masks give "
                          "data-dependent shapes)")
    flat = idx if idx.type.rank == 1 else cx.emit("reshape", idx, shape=(-1,))
    out = cx.emit("index_select", x, flat, dim=dim)
    if idx.type.rank != 1:
        shape = x.shape[:dim] + idx.shape + x.shape[dim + 1:]
        symbolic = [k for k, d in enumerate(shape) if not isinstance(d, int)]
        shape = tuple(-1 if k in symbolic[:1] and len(symbolic) == 1 else d
                      for k, d in enumerate(shape))
        out = cx.emit("reshape", out, shape=shape)
    return out
