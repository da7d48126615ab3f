"""Shape ops that pick, join or pad data: concat, split, slice, select, index_select, pad.

Part of the shape family (trait SHAPE_ONLY); split from shape.py to keep modules small. Sizes
that would need sums or minima of unrelated symbols are refused with a ShapeError.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..types import Dim, DType, normalize_axis
from .registry import REQUIRED, define_op
from .shape import TRAITS, add_dims, fresh, rand, static_dim

_TO_END = 2**31 - 1  # slice ends at or beyond this mean "to the end" (torch/ONNX use INT_MAX)

# ---- concat / split ----------------------------------------------------------------------
concat = define_op("concat", inputs=("*xs",), attrs={"dim": (int, 0)}, traits=TRAITS)


@concat.infer
def _(xs, dim):
    if not xs:
        raise ShapeError("concat needs at least one input")
    first = xs[0]
    if first.rank == 0:
        raise ShapeError(f"concat of rank-0 tensors ({first}); unsqueeze them first")
    d = normalize_axis(dim, first.rank, "concat dim")
    for k, t in enumerate(xs[1:], 1):
        if t.dtype != first.dtype or t.rank != first.rank:
            raise ShapeError(f"concat input {k} is {t}, but input 0 is {first}; dtypes and ranks "
                             "must match")
        for i, (a, b) in enumerate(zip(first.shape, t.shape)):
            if i != d and a != b:
                raise ShapeError(f"concat input {k} ({t}) differs from input 0 ({first}) in dim "
                                 f"{i}; only the concat dim {d} may differ")
    size = add_dims(t.shape[d] for t in xs)
    if size is None:
        raise ShapeError(f"concat along dim {d} of symbolic sizes "
                         f"{[t.shape[d] for t in xs]} has no single-symbol size; make them static")
    return first.with_shape(first.shape[:d] + (size,) + first.shape[d + 1:])


@concat.reference
def _(xs, dim):
    return np.concatenate(xs, axis=dim)


@concat.examples
def _(rng):
    yield [rand(rng, (2, 3)), rand(rng, (4, 3))], {}
    yield [rand(rng, (2, 3)), rand(rng, (2, 1)), rand(rng, (2, 2))], {"dim": -1}
    yield [rand(rng, (2, 3, 4))], {"dim": 1}
    yield [rng.integers(0, 5, (3,)), rng.integers(0, 5, (0,))], {}


split = define_op("split", inputs=("x",),
                  attrs={"dim": (int, REQUIRED), "sizes": (tuple, REQUIRED)},
                  traits=TRAITS, num_results=None, doc="One result per entry of sizes.")


@split.infer
def _(x, dim, sizes):
    d = normalize_axis(dim, x.rank, "split dim")
    if not sizes or any(not isinstance(s, int) or s < 0 for s in sizes):
        raise ShapeError(f"split sizes {sizes} must be a non-empty tuple of ints >= 0")
    n = static_dim(x.shape[d], f"split dim {d} of {x}")
    if sum(sizes) != n:
        raise ShapeError(f"split sizes {sizes} sum to {sum(sizes)}, but dim {d} of {x} is {n}")
    return tuple(x.with_shape(x.shape[:d] + (s,) + x.shape[d + 1:]) for s in sizes)


@split.reference
def _(x, dim, sizes):
    return tuple(fresh(p) for p in np.split(x, np.cumsum(sizes)[:-1], axis=dim))


@split.examples
def _(rng):
    yield [rand(rng, (5, 3))], {"dim": 0, "sizes": (2, 3)}
    yield [rand(rng, (2, 6))], {"dim": -1, "sizes": (1, 2, 3)}
    yield [rand(rng, (4, 2))], {"dim": 0, "sizes": (4,)}


# ---- slice / select / index_select -------------------------------------------------------
slice_ = define_op("slice", inputs=("x",), traits=TRAITS,
                   attrs={"dim": (int, REQUIRED), "start": (int, REQUIRED),
                          "end": (int, REQUIRED), "step": (int, 1)})


@slice_.infer
def _(x, dim, start, end, step):
    d = normalize_axis(dim, x.rank, "slice dim")
    if step < 1:
        raise ShapeError(f"slice step {step} must be >= 1 (torch has no negative steps)")
    n = x.shape[d]
    if isinstance(n, int):
        size = len(range(*slice(start, end, step).indices(n)))
    elif start == 0 and end >= _TO_END and step == 1:
        size = n
    else:
        raise ShapeError(f"slice [{start}:{end}:{step}] of symbolic dim {d} ({n!r}) of {x} has a "
                         "size that depends on the symbol; slice a static dim")
    return x.with_shape(x.shape[:d] + (size,) + x.shape[d + 1:])


@slice_.reference
def _(x, dim, start, end, step):
    index = [slice(None)] * x.ndim
    index[normalize_axis(dim, x.ndim, "slice dim")] = slice(start, end, step)
    return fresh(x[tuple(index)])


@slice_.examples
def _(rng):
    yield [rand(rng, (6, 3))], {"dim": 0, "start": 1, "end": 4}
    yield [rand(rng, (2, 7))], {"dim": -1, "start": 0, "end": 9223372036854775807, "step": 2}
    yield [rand(rng, (5, 3))], {"dim": 0, "start": -3, "end": -1}
    yield [rand(rng, (5,))], {"dim": 0, "start": 4, "end": 2}


select = define_op("select", inputs=("x",),
                   attrs={"dim": (int, REQUIRED), "index": (int, REQUIRED)},
                   traits=TRAITS, doc="x[..., index, ...]: removes `dim`.")


@select.infer
def _(x, dim, index):
    d = normalize_axis(dim, x.rank, "select dim")
    n = x.shape[d]
    if isinstance(n, int) and not -n <= index < n:
        raise ShapeError(f"select index {index} is out of range for dim {d} of {x}")
    return x.with_shape(x.shape[:d] + x.shape[d + 1:])


@select.reference
def _(x, dim, index):
    return fresh(np.take(x, index, axis=normalize_axis(dim, x.ndim, "select dim")))


@select.examples
def _(rng):
    yield [rand(rng, (3, 4))], {"dim": 0, "index": 1}
    yield [rand(rng, (3, 4, 2))], {"dim": -2, "index": -1}
    yield [rand(rng, (5,))], {"dim": 0, "index": 4}


index_select = define_op("index_select", inputs=("x", "index"), attrs={"dim": (int, REQUIRED)},
                         traits=TRAITS)


@index_select.infer
def _(x, index, dim):
    if index.rank != 1 or index.dtype not in (DType.i64, DType.i32):
        raise ShapeError(f"index_select index must be a 1-D i64/i32 tensor, got {index}")
    d = normalize_axis(dim, x.rank, "index_select dim")
    return x.with_shape(x.shape[:d] + (index.shape[0],) + x.shape[d + 1:])


@index_select.reference
def _(x, index, dim):
    n = x.shape[dim]
    if index.size and (index.min() < 0 or index.max() >= n):
        raise ShapeError(f"index_select index out of range [0, {n}) for dim {dim}")
    return np.take(x, index, axis=dim)


@index_select.examples
def _(rng):
    yield [rand(rng, (5, 3)), np.array([4, 0, 0, 2])], {"dim": 0}
    yield [rand(rng, (2, 6)), np.array([5, 1], dtype=np.int32)], {"dim": -1}
    yield [rand(rng, (3,)), np.zeros(0, dtype=np.int64)], {"dim": 0}


# ---- pad ---------------------------------------------------------------------------------
pad = define_op("pad", inputs=("x",), traits=TRAITS,
                attrs={"pads": (tuple, REQUIRED), "value": (float, 0.0)},
                doc="Constant padding, torch F.pad order (last dim first); negative crops.")


def _pad_widths(rank: int, pads) -> list[tuple[int, int]]:
    if len(pads) % 2 or len(pads) > 2 * rank:
        raise ShapeError(f"pads {pads} must have an even length of at most 2*rank ({2 * rank})")
    widths = [(0, 0)] * rank
    for k in range(len(pads) // 2):
        widths[rank - 1 - k] = (pads[2 * k], pads[2 * k + 1])
    return widths


@pad.infer
def _(x, pads, value):
    out: list[Dim] = []
    for i, (d, (lo, hi)) in enumerate(zip(x.shape, _pad_widths(x.rank, pads))):
        if lo == hi == 0:
            out.append(d)
        elif not isinstance(d, int):
            raise ShapeError(f"pad of symbolic dim {i} ({d!r}) of {x} by ({lo}, {hi}) has no "
                             "expressible size; pad only static dims")
        elif d + lo + hi < 0:
            raise ShapeError(f"pads {pads} crop dim {i} of {x} below zero")
        else:
            out.append(d + lo + hi)
    if not x.dtype.is_float and float(value) != int(value):
        raise ShapeError(f"pad value {value} does not fit integer tensor {x}")
    return x.with_shape(out)


@pad.reference
def _(x, pads, value):
    widths = _pad_widths(x.ndim, pads)
    crop = tuple(slice(max(-lo, 0), x.shape[i] - max(-hi, 0)) for i, (lo, hi) in enumerate(widths))
    grow = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    return np.pad(x[crop], grow, mode="constant", constant_values=np.asarray(value).astype(x.dtype))


@pad.examples
def _(rng):
    yield [rand(rng, (2, 3))], {"pads": (1, 2)}
    yield [rand(rng, (1, 2, 3, 3))], {"pads": (1, 1, 2, 0), "value": -1.5}
    yield [rand(rng, (4, 5))], {"pads": (-1, 2, 0, -2)}
    yield [rng.integers(0, 9, (3,))], {"pads": (2, 0), "value": 7.0}
