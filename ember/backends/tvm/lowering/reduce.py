"""Lowerings for reductions. `var` with a Bessel correction is written in TE so the divisor
(N - correction) works for symbolic N; the others are Relax reductions."""

from __future__ import annotations

import numpy as np
from tvm import relax, te, topi

from ....ir import DType
from ....ir.types import normalize_axis
from . import LowerContext, isnan, lowers, tvm_dtype

R = relax.op
_REDUCE = {"sum": R.sum, "mean": R.mean, "amax": R.max, "amin": R.min, "prod": R.prod}


def _axes(op, dims) -> list[int] | None:
    rank = op.inputs[0].type.rank
    if not dims:
        return None
    return sorted(normalize_axis(int(d), rank) for d in dims)


def _reduce(cx: LowerContext, op, x, dims=(), keepdim=False):
    src, dst = op.inputs[0].type.dtype, op.result.type.dtype
    fn = _REDUCE[op.kind]
    if src is DType.bool and src is dst:  # any/all: TVM has no bool max/min identity
        y = cx.emit(fn(R.astype(x, "int8"), _axes(op, dims), bool(keepdim)))
        return R.astype(y, "bool")
    if src is not dst:  # ints and bools accumulate in i64, as numpy/torch do
        x = cx.emit(R.astype(x, tvm_dtype(dst)))
    if op.kind in ("amax", "amin") and src.is_float:
        return _float_extreme(cx, op, x, _axes(op, dims), bool(keepdim))
    return fn(x, _axes(op, dims), bool(keepdim))


def _float_extreme(cx: LowerContext, op, x, axes, keep):
    """max/min as numpy computes them: TVM's reduction starts from the lowest (highest)
    finite value, so an all -inf (+inf) slice would give that instead of -inf, and a NaN
    is skipped rather than propagated. Both are put back with two cheap int8 reductions."""
    dt = op.inputs[0].type.dtype
    edge = cx.const(-np.inf if op.kind == "amax" else np.inf, dt)
    r = cx.emit(_REDUCE[op.kind](x, axes, keep))
    live = cx.emit(R.max(R.astype(R.not_equal(x, edge), "int8"), axes, keep))
    nan = cx.emit(R.max(R.astype(isnan(x, dt), "int8"), axes, keep))
    zero = cx.const(0, DType.i8)
    r = cx.emit(R.where(R.equal(live, zero), edge, r))
    return R.where(R.greater(nan, zero), cx.const(np.nan, dt), r)


lowers(*_REDUCE)(_reduce)


@lowers("var")
def _(cx: LowerContext, op, x, dims=(), keepdim=False, correction=1):
    rank = op.inputs[0].type.rank
    axes = _axes(op, dims) or list(range(rank))
    return cx.emit_te(_variance, x, axes, bool(keepdim), float(correction),
                      primfunc_name_hint="variance")


def _variance(x, axes, keepdim, correction):
    n = 1
    for a in axes:
        n = n * x.shape[a]
    n = n.astype(x.dtype) if hasattr(n, "astype") else float(n)
    mean = topi.divide(topi.sum(x, axis=axes, keepdims=True), n)
    d = topi.subtract(x, mean)
    sq = topi.sum(topi.multiply(d, d), axis=axes, keepdims=keepdim)
    return te.compute(sq.shape, lambda *i: sq(*i) / (n - correction), name="var")


@lowers("argmax", "argmin")
def _(cx, op, x, dim=None, keepdim=False):
    fn = R.argmax if op.kind == "argmax" else R.argmin
    out = cx.emit(fn(x, None if dim is None else int(dim), bool(keepdim)))
    want = tvm_dtype(op.result.type.dtype)
    return out if out.ty.dtype == want else R.astype(out, want)


@lowers("cumsum")
def _(cx, op, x, dim):
    return R.cumsum(x, axis=int(dim), dtype=tvm_dtype(op.result.type.dtype))
