"""Converters for arithmetic with scalars, casts, identities, tensor factories and reductions."""

from __future__ import annotations

import numpy as np

from ...ir import DType, Value
from .context import Unsupported, torch_dtype
from .convert_shape import broadcast_to
from .importer import GraphImporter
from .table import converts

# ---- arithmetic -------------------------------------------------------------------------------


@converts("aten.add.Tensor", "aten.add.Scalar")
def _add(cx: GraphImporter, x, other, alpha=1):
    return cx.emit_elementwise("add", [x, _scaled(cx, other, alpha)])


@converts("aten.sub.Tensor", "aten.sub.Scalar")
def _sub(cx: GraphImporter, x, other, alpha=1):
    return cx.emit_elementwise("sub", [x, _scaled(cx, other, alpha)])


@converts("aten.rsub.Tensor", "aten.rsub.Scalar")
def _rsub(cx: GraphImporter, x, other, alpha=1):
    return cx.emit_elementwise("sub", [other, _scaled(cx, x, alpha)])


def _scaled(cx: GraphImporter, value, alpha):
    if alpha == 1:
        return value
    if not isinstance(value, Value):
        return value * alpha
    dtype = cx.out_type().dtype
    return cx.emit("mul", cx.cast(value, dtype), cx.scalar(alpha, dtype))


@converts("aten.div.Tensor", "aten.div.Scalar")
def _div(cx: GraphImporter, x, other):
    return cx.emit_elementwise("div", [x, other])


@converts("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div_mode(cx: GraphImporter, x, other, rounding_mode=None):
    out = cx.out_type().dtype
    if rounding_mode is None:
        return cx.emit_elementwise("div", [x, other])
    compute = out if out.is_float else DType.f64  # exact for ints up to 2**53
    a = x if not isinstance(x, Value) else cx.cast(x, compute)
    b = other if not isinstance(other, Value) else cx.cast(other, compute)
    a = cx.scalar(a, compute) if not isinstance(a, Value) else a
    b = cx.scalar(b, compute) if not isinstance(b, Value) else b
    q = cx.emit("div", a, b)
    if rounding_mode == "floor":
        q = cx.emit("floor", q)
    elif rounding_mode == "trunc":
        q = cx.emit("where", cx.emit("lt", q, cx.scalar(0, compute)), cx.emit("ceil", q),
                    cx.emit("floor", q))
    else:
        raise Unsupported(f"div rounding_mode={rounding_mode!r}")
    return cx.cast(q, out)


@converts("aten.floor_divide.default")
def _floor_divide(cx: GraphImporter, x, other):
    return _div_mode(cx, x, other, "floor")


@converts("aten.clamp_min.default")
def _clamp_min(cx: GraphImporter, x, lo):
    return cx.emit("clamp", x, min=float(lo))


@converts("aten.clamp_max.default")
def _clamp_max(cx: GraphImporter, x, hi):
    return cx.emit("clamp", x, max=float(hi))


@converts("aten.clamp.Tensor")
def _clamp_tensor(cx: GraphImporter, x, lo=None, hi=None):
    dtype = cx.out_type().dtype
    y = cx.cast(x, dtype)
    if lo is not None:
        y = cx.emit("maximum", y, cx.scalar(lo, dtype))
    if hi is not None:
        y = cx.emit("minimum", y, cx.scalar(hi, dtype))
    return y


@converts("aten.relu6.default")
def _relu6(cx: GraphImporter, x):
    return cx.emit("clamp", x, min=0.0, max=6.0)


@converts("aten.elu.default")
def _elu(cx: GraphImporter, x, alpha=1.0, scale=1, input_scale=1):
    if scale != 1 or input_scale != 1:
        raise Unsupported(f"elu with scale={scale}, input_scale={input_scale} (selu)")
    return cx.emit("elu", x, alpha=float(alpha))


@converts("aten.bitwise_not.default")
def _bitwise_not(cx: GraphImporter, x):
    if x.dtype is not DType.bool:
        raise Unsupported(f"bitwise_not on {x.dtype} (only bool tensors are supported)")
    return cx.emit("logical_not", x)


@converts("aten.bitwise_and.Tensor", "aten.bitwise_or.Tensor", "aten.__and__.Tensor",
          "aten.__or__.Tensor")
def _bitwise_binary(cx: GraphImporter, x, other):
    if cx.out_type().dtype is not DType.bool:
        raise Unsupported("bitwise and/or on integers (only bool tensors are supported)")
    kind = "logical_and" if "and" in str(cx.node.target) else "logical_or"
    return cx.emit_elementwise(kind, [x, other])


@converts("aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def _where_scalar(cx: GraphImporter, cond, a, b):
    return cx.emit_elementwise("where", [cond, a, b])


@converts("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(cx: GraphImporter, x, mask, value):
    return cx.emit_elementwise("where", [mask, value, x])


# ---- casts and identities ---------------------------------------------------------------------


@converts("aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten.type_as.default")
def _to(cx: GraphImporter, x, *rest):
    return cx.cast(x, cx.out_type().dtype)


@converts("aten.clone.default", "aten.alias.default", "aten.contiguous.default",
          "aten.detach.default", "aten.detach_.default", "aten.lift_fresh_copy.default", "aten.dropout.default",
          "aten.feature_dropout.default", "aten.alpha_dropout.default")
def _identity(cx: GraphImporter, x, *rest):
    return x


# ---- tensor factories: constant-folded to const (or broadcast from one when dims are symbolic)


def _fill(cx: GraphImporter, value, dtype: DType):
    out = cx.out_type().with_dtype(dtype)
    if isinstance(value, Value):
        raise Unsupported("a tensor fill value (use a python number)")
    if out.is_static:
        return cx.g.const(np.full(out.shape, value, dtype=dtype.to_numpy()))
    # Symbolic shape: a const with size 1 in every symbolic dim, broadcast at run time.
    small = tuple(d if isinstance(d, int) else 1 for d in out.shape)
    base = cx.g.const(np.full(small, value, dtype=dtype.to_numpy()))
    return broadcast_to(cx, base, out.shape)


@converts("aten.full.default")
def _full(cx: GraphImporter, size, fill_value, dtype=None, *rest):
    return _fill(cx, fill_value, cx.out_type().dtype)


@converts("aten.zeros.default", "aten.ones.default")
def _zeros_ones(cx: GraphImporter, size, dtype=None, *rest):
    return _fill(cx, 1 if "ones" in str(cx.node.target) else 0, cx.out_type().dtype)


@converts("aten.full_like.default")
def _full_like(cx: GraphImporter, x, fill_value, *rest):
    return _fill(cx, fill_value, cx.out_type().dtype)


@converts("aten.zeros_like.default", "aten.ones_like.default")
def _zeros_ones_like(cx: GraphImporter, x, *rest):
    return _fill(cx, 1 if "ones" in str(cx.node.target) else 0, cx.out_type().dtype)


@converts("aten.scalar_tensor.default")
def _scalar_tensor(cx: GraphImporter, value, *rest):
    return _fill(cx, value, cx.out_type().dtype)


@converts("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def _arange(cx: GraphImporter, *args):
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if any(isinstance(a, str) for a in args):
        raise Unsupported("arange with a symbolic bound")
    bounds = numbers[:3] if "start" in str(cx.node.target) else numbers[:1]
    out = cx.out_type()
    array = np.arange(*bounds).astype(out.dtype.to_numpy())
    if array.shape != out.shape:
        raise Unsupported(f"arange{tuple(bounds)} gives {array.shape}, torch says {out}")
    return cx.g.const(array)


# ---- reductions -------------------------------------------------------------------------------


def _dims(dim) -> tuple:
    if dim is None:
        return ()
    return tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)


def _reduce(cx: GraphImporter, kind: str, x, dims, keepdim, dtype=None):
    if dtype is not None:
        x = cx.cast(x, torch_dtype(dtype))
    elif kind == "sum" and not x.dtype.is_float and cx.out_type().dtype != x.dtype:
        x = cx.cast(x, cx.out_type().dtype)
    return cx.emit(kind, x, dims=_dims(dims), keepdim=bool(keepdim))


@converts("aten.mean.dim")
def _mean(cx: GraphImporter, x, dim, keepdim=False, dtype=None):
    return _reduce(cx, "mean", x, dim, keepdim, dtype)


@converts("aten.mean.default")
def _mean_all(cx: GraphImporter, x, dtype=None):
    return _reduce(cx, "mean", x, None, False, dtype)


@converts("aten.sum.dim_IntList")
def _sum(cx: GraphImporter, x, dim, keepdim=False, dtype=None):
    return _reduce(cx, "sum", x, dim, keepdim, dtype)


@converts("aten.sum.default")
def _sum_all(cx: GraphImporter, x, dtype=None):
    return _reduce(cx, "sum", x, None, False, dtype)


@converts("aten.prod.dim_int")
def _prod(cx: GraphImporter, x, dim, keepdim=False, dtype=None):
    return _reduce(cx, "prod", x, dim, keepdim, dtype)


@converts("aten.amax.default", "aten.amin.default")
def _amax_amin(cx: GraphImporter, x, dim=(), keepdim=False):
    return _reduce(cx, "amax" if "amax" in str(cx.node.target) else "amin", x, dim, keepdim)


@converts("aten.var.dim")
def _var_dim(cx: GraphImporter, x, dim=None, unbiased=True, keepdim=False):
    return _var(cx, x, dim, 1 if unbiased else 0, keepdim)


@converts("aten.var.correction")
def _var(cx: GraphImporter, x, dim=None, correction=None, keepdim=False):
    corr = 1 if correction is None else correction
    if corr != int(corr):
        raise Unsupported(f"var with a fractional correction {corr}")
    return cx.emit("var", x, dims=_dims(dim), keepdim=bool(keepdim), correction=int(corr))


@converts("aten.argmax.default", "aten.argmin.default")
def _argmax(cx: GraphImporter, x, dim=None, keepdim=False):
    kind = "argmax" if "argmax" in str(cx.node.target) else "argmin"
    if dim is None:
        if keepdim:
            raise Unsupported(f"{kind} over all dims with keepdim=True")
        x, dim = cx.emit("reshape", x, shape=(-1,)), 0
    return cx.emit(kind, x, dim=dim, keepdim=bool(keepdim))


@converts("aten.max.dim", "aten.min.dim")
def _max_dim(cx: GraphImporter, x, dim, keepdim=False):
    is_max = "max" in str(cx.node.target)
    values = cx.emit("amax" if is_max else "amin", x, dims=(dim,), keepdim=bool(keepdim))
    indices = cx.emit("argmax" if is_max else "argmin", x, dim=dim, keepdim=bool(keepdim))
    return values, indices


@converts("aten.max.default", "aten.min.default")
def _max_all(cx: GraphImporter, x):
    return cx.emit("amax" if "max" in str(cx.node.target) else "amin", x, dims=(), keepdim=False)




@converts("aten.linalg_vector_norm.default")
def _vector_norm(cx: GraphImporter, x, ord=2, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        x = cx.cast(x, torch_dtype(dtype))
    dims, keep = _dims(dim), bool(keepdim)
    if ord == 2:
        squared = cx.emit("mul", x, x)
        return cx.emit("sqrt", cx.emit("sum", squared, dims=dims, keepdim=keep))
    if ord == 1:
        return cx.emit("sum", cx.emit("abs", x), dims=dims, keepdim=keep)
    if ord == float("inf"):
        return cx.emit("amax", cx.emit("abs", x), dims=dims, keepdim=keep)
    raise Unsupported(f"vector norm of order {ord} (only 1, 2 and inf)")
