"""Lowerings for shape ops. Target shapes come from the op's inferred result type, so `-1`,
symbolic dims and squeeze/unsqueeze all reduce to one Relax reshape with a known shape."""

from __future__ import annotations

from tvm import relax, te

from ....errors import LoweringError
from ....ir.types import normalize_axis
from . import LowerContext, lowers, tvm_dtype

R = relax.op
_INT64_MAX = 2**63 - 1


def _to_result_shape(cx: LowerContext, op, x):
    t = op.result.type
    if 0 in t.shape or 0 in op.inputs[0].type.shape:
        # Relax's reshape reads a 0 in the new shape as "keep this dim" (ONNX's allowzero=0)
        # and an empty constant does not survive serialization: an empty kernel over x.
        rank = op.inputs[0].type.rank
        return cx.emit_te(lambda v: te.compute(cx.shape(t), lambda *i: v(*([0] * rank)),
                                               name="empty"), x, primfunc_name_hint="empty")
    return R.reshape(x, cx.shape(t))


lowers("reshape", "flatten", "squeeze", "unsqueeze")(
    lambda cx, op, x, **_: _to_result_shape(cx, op, x))


@lowers("permute")
def _(cx, op, x, dims):
    return R.permute_dims(x, [int(d) for d in dims])


@lowers("transpose")
def _(cx, op, x, dim0, dim1):
    rank = op.inputs[0].type.rank
    axes = list(range(rank))
    a, b = normalize_axis(dim0, rank), normalize_axis(dim1, rank)
    axes[a], axes[b] = axes[b], axes[a]
    return R.permute_dims(x, axes)


@lowers("expand")
def _(cx, op, x, shape):
    return R.broadcast_to(x, cx.shape(op.result.type))


@lowers("concat")
def _(cx, op, xs, dim=0):
    return R.concat(xs, axis=int(dim))


@lowers("split")
def _(cx, op, x, dim, sizes):
    if len(sizes) == 1:
        return [x]
    indices, acc = [], 0
    for s in sizes[:-1]:
        if not isinstance(s, int):
            raise LoweringError(f"split sizes {sizes} must be ints")
        acc += s
        indices.append(acc)
    if 0 in sizes:  # Relax's split wants strictly increasing indices: empty parts apart
        d = normalize_axis(int(dim), op.inputs[0].type.rank)
        outs, start = [], 0
        for s, r in zip(sizes, op.results):
            if s == 0:
                outs.append(R.zeros(cx.shape(r.type), tvm_dtype(r.type.dtype)))
            else:
                outs.append(R.strided_slice(x, axes=[d], begin=[start], end=[start + s]))
            start += s
        return outs
    parts = cx.emit(R.split(x, indices, axis=int(dim)))
    return [relax.TupleGetItem(parts, i) for i in range(len(sizes))]


def _clamp(i: int, size) -> int:
    """Python slice bound normalization for a static size."""
    if i < 0:
        i += size
    return min(max(i, 0), size)


@lowers("slice")
def _(cx, op, x, dim, start, end, step=1):
    t = op.inputs[0].type
    d = normalize_axis(dim, t.rank)
    size = t.shape[d]
    if step <= 0:
        raise LoweringError(f"slice step {step} must be positive (as in torch)")
    if isinstance(size, int):
        start, end = _clamp(int(start), size), _clamp(int(end), size)
        end = max(start, end)
    else:  # strided_slice clamps symbolic bounds itself, python-style
        start, end = int(start), min(int(end), _INT64_MAX)
    return R.strided_slice(x, axes=[d], begin=[start], end=[end], strides=[int(step)])


@lowers("select")
def _(cx, op, x, dim, index):
    t = op.inputs[0].type
    d = normalize_axis(dim, t.rank)
    size = t.shape[d]
    index = int(index)
    if isinstance(size, int):
        if not -size <= index < size:
            raise LoweringError(f"select index {index} is out of range for dim {d} of {t}")
        index %= size
        end = index + 1
    else:
        end = _INT64_MAX if index == -1 else index + 1
    part = cx.emit(R.strided_slice(x, axes=[d], begin=[index], end=[end]))
    return _to_result_shape(cx, op, part)


@lowers("index_select")
def _(cx, op, x, index, dim):
    return R.take(x, index, axis=int(dim))


@lowers("pad")
def _(cx, op, x, pads, value=0.0):
    t = op.inputs[0].type
    if len(pads) % 2 or len(pads) // 2 > t.rank:
        raise LoweringError(f"pad: pads {pads} must be (left, right) pairs for at most {t.rank} dims")
    width = [0] * (2 * t.rank)
    for i in range(len(pads) // 2):  # torch order: last dim first
        axis = t.rank - 1 - i
        width[2 * axis], width[2 * axis + 1] = int(pads[2 * i]), int(pads[2 * i + 1])
    orig = list(width)
    axes = sorted({i // 2 for i, w in enumerate(orig) if w < 0})
    # Negative pads crop (torch allows it): pad with the positive part, then slice.
    y = R.nn.pad(x, [max(w, 0) for w in orig], "constant", float(value))
    if not axes:
        return y
    y = cx.emit(y)
    shape = cx.shape(op.result.type)
    begin = [max(0, -orig[2 * a]) for a in axes]
    ends = [b + shape[a] for b, a in zip(begin, axes)]
    return R.strided_slice(y, axes=axes, begin=begin, end=ends)


@lowers("tile")
def _(cx, op, x, repeats):
    return R.tile(x, [int(r) for r in repeats])
