"""Reductions and scans: sum/mean/amax/amin/prod/var over a set of dims, argmax/argmin, cumsum.

Dtype rules are torch's: sum, prod and cumsum of ints or bools give i64; mean and var need
floats; argmax/argmin give i64. Float references accumulate in float64 and cast back.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..types import DType, TensorType, normalize_axis
from .registry import PURE, REQUIRED, define_op


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _axes(rank: int, dims) -> tuple[int, ...]:
    """Normalized, duplicate-free reduction axes; an empty tuple means every dim."""
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        dims = (int(dims),)
    if not isinstance(dims, tuple):
        raise ShapeError(f"dims must be a tuple of ints, got {dims!r}")
    if rank == 0:  # torch accepts dim 0 or -1 on a 0-d tensor and reduces nothing
        for d in dims:
            normalize_axis(d, 1, "dim")
        return ()
    axes = tuple(normalize_axis(d, rank, "dim") for d in dims) or tuple(range(rank))
    if len(set(axes)) != len(axes):
        raise ShapeError(f"dims {dims} name the same dim twice (rank {rank})")
    return axes


def _reduced_shape(x: TensorType, axes, keepdim: bool) -> tuple:
    if keepdim:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _widened(dtype: DType) -> DType:
    """torch promotes integral (and bool) sums, products and cumsums to i64."""
    return dtype if dtype.is_float else DType.i64


def _np_acc(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) if x.dtype.kind == "f" else x.astype(np.int64)


_FLOAT_ONLY = {"mean"}
_NONEMPTY = {"amax", "amin"}


def _reduction(kind: str, fn, doc: str):
    schema = define_op(kind, inputs=("x",), attrs={"dims": (tuple, ()), "keepdim": (bool, False)},
                       traits=(PURE,), doc=doc)

    @schema.infer
    def _(x, dims, keepdim):
        if kind in _FLOAT_ONLY and not x.dtype.is_float:
            raise ShapeError(f"{kind} needs a float tensor, got {x}; cast it first")
        axes = _axes(x.rank, dims)
        if kind in _NONEMPTY and any(x.shape[a] == 0 for a in axes):
            raise ShapeError(f"{kind} over an empty dim has no identity")
        out = _reduced_shape(x, axes, bool(keepdim))
        dtype = _widened(x.dtype) if kind in ("sum", "prod") else x.dtype
        return TensorType(out, dtype)

    @schema.reference
    def _(x, dims, keepdim):
        axes = _axes(x.ndim, dims)
        res = fn(_np_acc(x) if kind in ("sum", "prod", "mean") else x, axis=axes,
                 keepdims=bool(keepdim))
        want = x.dtype if x.dtype.kind == "f" or kind in ("amax", "amin") else np.int64
        return np.asarray(res).astype(want)

    @schema.examples
    def _(rng):
        yield [_rand(rng, 2, 3, 4)], {"dims": (1,)}
        yield [_rand(rng, 2, 3, 4)], {"dims": (0, -1), "keepdim": True}
        yield [_rand(rng, 3, 5)], {}
        yield [_rand(rng, 2, 3, 4, 5)], {"dims": (-3, 3)}
        if kind not in _FLOAT_ONLY:
            yield [rng.integers(-3, 4, (4, 5)).astype(np.int32)], {"dims": (1,)}
            yield [rng.random((3, 4)) > 0.5], {"dims": (0,), "keepdim": True}

    return schema


sum_ = _reduction("sum", np.sum, "Sum over dims; ints and bools sum to i64.")
mean = _reduction("mean", np.mean, "Arithmetic mean over dims (floats only).")
amax = _reduction("amax", np.max, "Maximum over dims (NaN propagates).")
amin = _reduction("amin", np.min, "Minimum over dims (NaN propagates).")
prod = _reduction("prod", np.prod, "Product over dims; ints and bools multiply to i64.")


var = define_op("var", inputs=("x",),
                attrs={"dims": (tuple, ()), "keepdim": (bool, False), "correction": (int, 1)},
                doc="Variance over dims with torch's `correction` (1 = unbiased).")


@var.infer
def _(x, dims, keepdim, correction):
    if not x.dtype.is_float:
        raise ShapeError(f"var needs a float tensor, got {x}; cast it first")
    if isinstance(correction, bool) or not isinstance(correction, (int, float)) or correction < 0:
        raise ShapeError(f"correction must be a non-negative number, got {correction!r}")
    return x.with_shape(_reduced_shape(x, _axes(x.rank, dims), bool(keepdim)))


@var.reference
def _(x, dims, keepdim, correction):
    x64 = x.astype(np.float64)
    axes = _axes(x.ndim, dims)
    mu = x64.mean(axis=axes, keepdims=True)
    count = np.prod([x.shape[a] for a in axes]) if axes else 1
    with np.errstate(divide="ignore", invalid="ignore"):  # count <= correction: inf/nan as torch
        out = ((x64 - mu) ** 2).sum(axis=axes, keepdims=bool(keepdim)) / max(count - correction, 0)
    return np.asarray(out).astype(x.dtype)


@var.examples
def _(rng):
    yield [_rand(rng, 3, 6)], {"dims": (1,)}
    yield [_rand(rng, 2, 3, 4)], {"dims": (0, 2), "keepdim": True, "correction": 0}
    yield [_rand(rng, 4, 5)], {}


def _arg_reduction(kind: str, fn):
    schema = define_op(kind, inputs=("x",),
                       attrs={"dim": (int, REQUIRED), "keepdim": (bool, False)},
                       doc=f"Index (i64) of the first {kind[3:]}imum along `dim`.")

    @schema.infer
    def _(x, dim, keepdim):
        if x.dtype is DType.bool:
            raise ShapeError(f"{kind} of a bool tensor is not supported (as torch); cast it first")
        axes = _axes(x.rank, (dim,))
        if any(x.shape[a] == 0 for a in axes):
            raise ShapeError(f"{kind} along an empty dim {dim}")
        return TensorType(_reduced_shape(x, axes, bool(keepdim)), DType.i64)

    @schema.reference
    def _(x, dim, keepdim):
        if x.ndim == 0:
            return np.zeros((), np.int64)
        return np.asarray(fn(x, axis=dim, keepdims=bool(keepdim))).astype(np.int64)

    @schema.examples
    def _(rng):
        yield [_rand(rng, 3, 5)], {"dim": 1}
        yield [_rand(rng, 2, 3, 4)], {"dim": -3, "keepdim": True}
        yield [rng.integers(0, 3, (4, 6)).astype(np.int64)], {"dim": 0}  # ties: first index

    return schema


argmax = _arg_reduction("argmax", np.argmax)
argmin = _arg_reduction("argmin", np.argmin)


cumsum = define_op("cumsum", inputs=("x",), attrs={"dim": (int, REQUIRED)},
                   doc="Inclusive prefix sum along `dim`; ints and bools accumulate in i64.")


@cumsum.infer
def _(x, dim):
    _axes(x.rank, (dim,))
    return x.with_dtype(_widened(x.dtype))


@cumsum.reference
def _(x, dim):
    if x.ndim == 0:
        return _np_acc(x).astype(_widened(DType.from_numpy(x.dtype)).to_numpy())
    out = np.cumsum(_np_acc(x), axis=dim)
    return out.astype(x.dtype if x.dtype.kind == "f" else np.int64)


@cumsum.examples
def _(rng):
    yield [_rand(rng, 3, 6)], {"dim": 1}
    yield [_rand(rng, 4, 2, 3)], {"dim": -3}
    yield [rng.integers(-5, 5, (2, 7)).astype(np.int32)], {"dim": -1}
    yield [rng.random((5,)) > 0.5], {"dim": 0}
