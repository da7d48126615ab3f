"""Lowerings for nn ops: Relax nn ops where their semantics match torch, TE where they do not.

Weights arrive as Relax constants, so compositions over them (batch-norm scale/shift, the
transposed linear weight) are folded once by FoldConstant at build time.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from ....errors import LoweringError
from ....ir import DType
from . import fastmath, lowers, static_shape, tvm_dtype

R = relax.op


_HALF = (DType.f16, DType.bf16)


def _widened(cx, op, fn, *xs):
    """`fn` over f16/bf16 operands computed in f32 and rounded once at the end (numpy and
    torch accumulate half-precision dot products and softmax sums in f32; TVM would
    accumulate in the narrow type and drift by several ulps)."""
    dt = op.result.type.dtype
    if dt not in _HALF:
        return fn(*xs)
    wide = [None if x is None else cx.emit(R.astype(x, "float32")) for x in xs]
    return R.astype(cx.emit(fn(*wide)), tvm_dtype(dt))


@lowers("linear")
def _(cx, op, x, weight, bias):
    return _widened(cx, op, R.linear, x, weight, bias)


@lowers("matmul")
def _(cx, op, a, b):
    return _widened(cx, op, R.matmul, a, b)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


@lowers("conv2d")
def _(cx, op, x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    if isinstance(padding, str):
        raise LoweringError(f"conv2d padding={padding!r}: the frontend should resolve string "
                            "padding to explicit sizes")
    def conv(x, weight, bias):
        y = _packed_conv2d(cx, op, x, weight, stride, padding, dilation, groups)
        if y is None:
            y = R.nn.conv2d(x, weight, strides=_pair(stride), padding=_pair(padding),
                            dilation=_pair(dilation), groups=int(groups))
        if bias is None:
            return y
        return R.add(cx.emit(y), R.reshape(bias, (1, -1, 1, 1)))

    return _widened(cx, op, conv, x, weight, bias)


def _packed_conv2d(cx, op, x, weight, stride, padding, dilation, groups):
    """A CPU conv2d with a constant f32 weight: the packed-weight kernel
    (schedules/conv_packed.py), or None where it does not apply (a GPU target, a weight computed
    at run time, a symbolic spatial dim, a non-float32 dtype)."""
    target = tvm.target.Target.current(allow_none=True)
    if target is not None and target.kind.name != "llvm":
        return None
    if not isinstance(weight, tvm.ir.expr.Constant) or op.inputs[0].type.rank != 4:
        return None
    xtype = op.inputs[0].type
    if xtype.dtype != DType.f32 or op.inputs[1].type.dtype != DType.f32:
        return None
    if not all(isinstance(d, int) for d in xtype.shape[1:]):
        return None
    xshape = [cx.dim(xtype.shape[0]), *xtype.shape[1:]]
    try:
        from ..schedules import conv_packed as CP
        from ..schedules.common import cpu_params
    except ModuleNotFoundError:  # the schedules package is optional (see build.py)
        return None
    w = weight.value.numpy()
    (kh, kw), (ph, pw) = w.shape[2:], _pair(padding)
    shape = CP.ConvShape(int(xshape[1]), int(w.shape[0]), int(xshape[2]), int(xshape[3]),
                         (int(kh), int(kw)), _pair(stride), (ph, pw, ph, pw), _pair(dilation),
                         int(groups))
    if min(shape.out_hw) < 1 or w.shape[1] != shape.group_in:
        return None
    tile = CP.choose_tile(shape, cpu_params(target or tvm.target.Target("llvm")))
    if tile is None:
        return None
    func = CP.packed_conv2d_func(xtype.shape[0] if isinstance(xtype.shape[0], int) else None,
                                 shape, tile, "float32")
    gv = cx.bb.add_func(func, "packed_conv2d")
    packed = relax.const(CP.pack_conv_weight(w, shape, tile))
    oh, ow = shape.out_hw
    out = relax.TensorType([xshape[0], shape.out_channels, oh, ow], "float32")
    return relax.call_tir(gv, [x, packed], out)


def _ceil_extra(size, k: int, s: int, p: int, d: int) -> int:
    """Extra bottom/right padding that makes floor-mode pooling produce torch's ceil_mode size."""
    if not isinstance(size, int):
        raise LoweringError("pooling with ceil_mode=True needs static spatial dims")
    eff = d * (k - 1) + 1
    out = -(-(size + 2 * p - eff) // s) + 1
    if (out - 1) * s >= size + p:  # torch: the last window must start inside the input/left pad
        out -= 1
    return max(0, (out - 1) * s + eff - (size + 2 * p))


def _nchw(cx, op, x, fn):
    """Run a NCHW op on a batched or unbatched (C, H, W) input, as torch accepts both."""
    if op.inputs[0].type.rank == 4:
        return fn(x)
    y = cx.emit(fn(cx.emit(R.expand_dims(x, [0]))))
    return R.squeeze(y, [0])


@lowers("max_pool2d")
def _(cx, op, x, kernel_size, stride=None, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    k, s, p, d = _pair(kernel_size), _pair(stride or kernel_size), _pair(padding), _pair(dilation)
    extra = (0, 0)
    if ceil_mode:
        h, w = op.inputs[0].type.shape[-2:]
        extra = (_ceil_extra(h, k[0], s[0], p[0], d[0]), _ceil_extra(w, k[1], s[1], p[1], d[1]))
    # Max pooling pads with the dtype's lowest value, so extra right padding is exact.
    pad = (p[0], p[1], p[0] + extra[0], p[1] + extra[1])
    return _nchw(cx, op, x, lambda v: R.nn.max_pool2d(v, k, s, pad, d))


@lowers("avg_pool2d")
def _(cx, op, x, kernel_size, stride=None, padding=(0, 0), ceil_mode=False,
      count_include_pad=True, divisor_override=None):
    k, s, p = _pair(kernel_size), _pair(stride or kernel_size), _pair(padding)
    if not ceil_mode and divisor_override is None:
        return _nchw(cx, op, x, lambda v: R.nn.avg_pool2d(
            v, k, s, p, count_include_pad=bool(count_include_pad)))
    # torch's ceil_mode windows are clipped at the padded border for the divisor; write it out.
    h, w = static_shape(op.inputs[0].type, "avg_pool2d with ceil_mode")[-2:]
    oh, ow = static_shape(op.result.type, "avg_pool2d")[-2:]
    return _nchw(cx, op, x, lambda v: cx.bb.emit_te(
        _torch_avg_pool, v, k, s, p, (h, w), (oh, ow), bool(count_include_pad), divisor_override,
        primfunc_name_hint="avg_pool2d"))


def _torch_avg_pool(x, k, s, p, hw, ohw, include_pad, divisor_override):
    n, c = x.shape[0], x.shape[1]
    (h, w), (kh, kw), (sh, sw), (ph, pw) = hw, k, s, p
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    zero = tirx.const(0, x.dtype)

    def value(b, ch, i, j):
        hi, wi = i * sh - ph + rh, j * sw - pw + rw
        inside = tirx.all(hi >= 0, hi < h, wi >= 0, wi < w)
        return tirx.if_then_else(inside, x[b, ch, tirx.max(tirx.min(hi, h - 1), 0),
                                           tirx.max(tirx.min(wi, w - 1), 0)], zero)

    total = te.compute((n, c, *ohw), lambda b, ch, i, j: te.sum(value(b, ch, i, j), axis=[rh, rw]),
                       name="pool_sum")

    def count(i, size, kk, ss, pp):
        start = i * ss - pp
        end = tirx.min(start + kk, size + pp)
        if not include_pad:
            return tirx.min(end, size) - tirx.max(start, 0)
        return end - start

    def div(b, ch, i, j):
        if divisor_override is not None:
            d = tirx.const(divisor_override, "int32")
        else:
            d = count(i, h, kh, sh, ph) * count(j, w, kw, sw, pw)
        return total[b, ch, i, j] / d.astype(x.dtype)

    return te.compute((n, c, *ohw), div, name="avg_pool")


@lowers("adaptive_avg_pool2d")
def _(cx, op, x, output_size):
    out = tuple(cx.dim(d) for d in op.result.type.shape[-2:])  # None sizes already resolved
    return _nchw(cx, op, x, lambda v: R.nn.adaptive_avg_pool2d(v, out))


@lowers("batch_norm")
def _(cx, op, x, mean, var, weight, bias, eps=1e-5):
    dt = op.inputs[0].type.dtype
    scale = cx.emit(R.rsqrt(R.add(var, cx.const(eps, dt))))
    if weight is not None:
        scale = cx.emit(R.multiply(scale, weight))
    shift = cx.emit(R.negative(R.multiply(mean, scale)))
    if bias is not None:
        shift = cx.emit(R.add(shift, bias))
    bshape = [1, -1] + [1] * (op.inputs[0].type.rank - 2)
    y = cx.emit(R.multiply(x, R.reshape(scale, bshape)))
    return R.add(y, R.reshape(shift, bshape))


@lowers("layer_norm")
def _(cx, op, x, weight, bias, normalized_ndim=1, eps=1e-5):
    t = op.inputs[0].type
    n = int(normalized_ndim)
    axes = list(range(t.rank - n, t.rank))
    norm_shape = static_shape(t.with_shape(t.shape[t.rank - n:]), "layer_norm's normalized dims")
    if weight is None:
        weight = cx.const(np.ones(norm_shape), t.dtype)
    if bias is None:
        bias = cx.const(np.zeros(norm_shape), t.dtype)
    return R.nn.layer_norm(x, weight, bias, axes, float(eps))


@lowers("softmax")
def _(cx, op, x, dim=-1):
    if fastmath.applies(op.inputs[0].type.with_dtype(DType.f32)):  # f16/bf16 run in f32
        return _widened(cx, op, lambda v: cx.emit_te(
            _softmax_te, v, int(dim), False, primfunc_name_hint="softmax"), x)
    return _widened(cx, op, lambda v: R.nn.softmax(v, axis=int(dim)), x)


@lowers("log_softmax")
def _(cx, op, x, dim=-1):
    if fastmath.applies(op.inputs[0].type.with_dtype(DType.f32)):  # f16/bf16 run in f32
        return _widened(cx, op, lambda v: cx.emit_te(
            _softmax_te, v, int(dim), True, primfunc_name_hint="log_softmax"), x)
    return _widened(cx, op, lambda v: R.nn.log_softmax(v, axis=int(dim)), x)


def _softmax_te(x, axis: int, log: bool):
    """topi's softmax / log_softmax (max, exp, sum, normalize) with the vectorizable exp of
    fastmath.py: TVM's exp is one libm call per element on CPU. exp is its own elementwise
    stage in both (topi's log_softmax sums exp inside the reduction, which stays scalar), so
    the row-reduction schedule vectorizes it. x is float32 here (f16/bf16 are widened)."""
    shape = x.shape
    axis = axis % len(shape)
    k1 = te.reduce_axis((0, shape[axis]), name="k")
    k2 = te.reduce_axis((0, shape[axis]), name="k")

    def with_k(idx, k):
        return idx[:axis] + (k,) + idx[axis:]

    def row(idx):
        return idx[:axis] + idx[axis + 1:]

    reduced = row(tuple(shape))
    top = te.compute(reduced, lambda *i: te.max(x[with_k(i, k1)], axis=k1),
                     name="T_softmax_maxelem")
    exp = te.compute(shape, lambda *i: fastmath.fast_exp(x[i] - top[row(i)]),
                     name="T_softmax_exp", attrs=fastmath.STAGE_ATTRS)
    total = te.compute(reduced, lambda *i: te.sum(exp[with_k(i, k2)], axis=k2),
                       name="T_softmax_expsum")
    if log:
        return te.compute(shape, lambda *i: x[i] - top[row(i)] - tirx.log(total[row(i)]),
                          name="T_log_softmax_norm")
    return te.compute(shape, lambda *i: exp[i] / total[row(i)], name="T_softmax_norm",
                      attrs={"axis": axis})


@lowers("embedding")
def _(cx, op, weight, indices):
    return R.take(weight, indices, axis=0)
