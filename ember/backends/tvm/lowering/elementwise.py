"""Lowerings for elementwise ops: each maps to a Relax op (or a short composition of them).

Relax elementwise ops broadcast like numpy, which is the ember contract, so binary ops map 1:1.
Compositions (hardswish, elu, ...) stay as Relax ops so FuseOps can merge them into one kernel.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, te, tirx

from ....ir import DType
from . import LowerContext, fastmath, isnan, lowers, tvm_dtype

R = relax.op

_BINARY = {
    "add": R.add, "sub": R.subtract, "mul": R.multiply, "div": R.divide,

    "logical_and": R.logical_and, "logical_or": R.logical_or,
}
_UNARY = {
    "neg": R.negative, "abs": R.abs, "relu": R.nn.relu, "log": R.log, "sqrt": R.sqrt,
    "rsqrt": R.rsqrt, "sin": R.sin, "cos": R.cos, "logical_not": R.logical_not,
    "floor": R.floor, "ceil": R.ceil, "round": R.round,
}

for _kind, _fn in _BINARY.items():
    lowers(_kind)(lambda cx, op, a, b, _fn=_fn: _fn(a, b))
for _kind, _fn in _UNARY.items():
    lowers(_kind)(lambda cx, op, x, _fn=_fn: _fn(x))


def _scalar(cx: LowerContext, op, value: float) -> tvm.ir.GenericConst:
    return cx.const(value, op.inputs[0].type.dtype)


@lowers("reciprocal")
def _(cx, op, x):
    return R.divide(_scalar(cx, op, 1.0), x)


def _fast_unary(cx, op, x, fn, name: str, fallback):
    """`fn` (built on fastmath.py) applied elementwise to a float32 tensor on CPU; `fallback`
    (the Relax op) elsewhere (see fastmath.applies). TVM's own exp / tanh / erf are libm calls
    per element on CPU (sigmoid, tanh and silu are exp calls), which keep the loop from
    vectorizing."""
    if not fastmath.applies(op.inputs[0].type):
        return fallback(x)
    return cx.emit_te(lambda t: te.compute(t.shape, lambda *i: fn(t(*i)), name=name,
                                           attrs=fastmath.STAGE_ATTRS), x,
                      primfunc_name_hint=name)


def _f32(v: float):
    return tirx.const(v, "float32")


def _silu(v):
    return v * fastmath.fast_sigmoid(v)


def _gelu(v):  # Relax's legalization: x * (0.5 + erf(x / sqrt 2) * 0.5)
    return v * (_f32(0.5) + fastmath.fast_erf(v * _f32(0.5 ** 0.5)) * _f32(0.5))


def _gelu_tanh(v):  # Relax's: 0.5 x (1 + tanh(sqrt(2 / pi) x (1 + 0.044715 x^2)))
    inner = _f32(math.sqrt(2.0 / math.pi)) * v * (_f32(1.0) + _f32(0.044715) * v * v)
    return _f32(0.5) * v * (_f32(1.0) + fastmath.fast_tanh(inner))


_FAST_UNARY = {"exp": (fastmath.fast_exp, R.exp), "sigmoid": (fastmath.fast_sigmoid, R.sigmoid),
               "tanh": (fastmath.fast_tanh, R.tanh), "erf": (fastmath.fast_erf, R.erf),
               "silu": (_silu, R.nn.silu)}
for _kind, (_fn, _fallback) in _FAST_UNARY.items():
    lowers(_kind)(lambda cx, op, x, _kind=_kind, _fn=_fn, _fallback=_fallback:
                  _fast_unary(cx, op, x, _fn, _kind, _fallback))


@lowers("gelu")
def _(cx, op, x, approximate: str = "none"):
    if approximate == "tanh":
        return _fast_unary(cx, op, x, _gelu_tanh, "gelu_tanh", R.nn.gelu_tanh)
    return _fast_unary(cx, op, x, _gelu, "gelu", R.nn.gelu)


def _keep_nan(cx, op, out, *xs):
    """numpy's maximum/minimum/clip return NaN where an operand is NaN; TVM's max/min
    (a compare and select) return the other operand, so floats put the NaN back."""
    if not op.inputs[0].type.dtype.is_float:
        return out
    dt = op.inputs[0].type.dtype
    nan = isnan(xs[0], dt)
    for x in xs[1:]:
        nan = R.logical_or(nan, isnan(x, dt))
    total = xs[0] if len(xs) == 1 else R.add(xs[0], xs[1])  # NaN wherever one is NaN
    return R.where(cx.emit(nan), total, cx.emit(out))


_COMPARE = {"eq": R.equal, "ne": R.not_equal, "lt": R.less, "le": R.less_equal,
            "gt": R.greater, "ge": R.greater_equal}


@lowers(*_COMPARE)
def _(cx, op, a, b):
    """`x != x` is ember's (and ONNX IsNaN's) NaN test; TVM's simplifier folds a compare of
    a value with itself to a constant, so it becomes an explicit isnan. Bools compare as
    int8 (TVM emits a float compare of i1 vectors, which LLVM rejects)."""
    dt = op.inputs[0].type.dtype
    if op.inputs[0] is op.inputs[1] and dt.is_float and op.kind in ("eq", "ne"):
        nan = isnan(a, dt)
        return nan if op.kind == "ne" else R.logical_not(cx.emit(nan))
    if dt is DType.bool:
        a, b = cx.emit(R.astype(a, "int8")), cx.emit(R.astype(b, "int8"))
    return _COMPARE[op.kind](a, b)


@lowers("pow")
def _(cx, op, a, b):
    """Relax's power is float-only: integer powers go through f64 (exact below 2**53)."""
    dt = op.result.type.dtype
    if dt.is_float:
        return R.power(a, b)
    y = cx.emit(R.power(R.astype(a, "float64"), R.astype(b, "float64")))
    return R.astype(cx.emit(R.round(y)), tvm_dtype(dt))


@lowers("maximum", "minimum")
def _(cx, op, a, b):
    dt = op.inputs[0].type.dtype
    if not dt.is_float:
        return (R.maximum if op.kind == "maximum" else R.minimum)(a, b)
    if dt is DType.bf16:  # TVM binds no bf16 Let; the select form (no chains seen in bf16)
        return _keep_nan(cx, op, (R.maximum if op.kind == "maximum" else R.minimum)(a, b), a, b)
    return cx.emit_te(_nan_keeping_extremum(op.kind, dt), a, b, primfunc_name_hint=op.kind,
                      primfunc_attrs=_OPAQUE)


def _nan_keeping_extremum(kind: str, dt):
    """max/min that return NaN where an operand is NaN (numpy), in ONE compute whose operands
    are bound by `Let`. Keeping NaN needs each operand three times (isnan, select, max); a
    where/isnan composition, fused and inlined along a max-pool chain (the ONNX importer's
    slices and maxima), grew exponentially and test_maxpool_2d_pads never finished building.
    The kernel is marked opaque (see `_OPAQUE`) so it is not inlined into its consumers."""
    pick = tirx.max if kind == "maximum" else tirx.min

    def f(a, b):
        n = max(len(a.shape), len(b.shape))
        shape = []
        for i in range(n):
            da = a.shape[i - n + len(a.shape)] if i - n + len(a.shape) >= 0 else 1
            db = b.shape[i - n + len(b.shape)] if i - n + len(b.shape) >= 0 else 1
            shape.append(db if isinstance(da, (int, tirx.IntImm)) and int(da) == 1 else da)

        def at(t, ix):
            off = n - len(t.shape)
            return t[tuple(0 if isinstance(d, tirx.IntImm) and d.value == 1 else ix[off + k]
                           for k, d in enumerate(t.shape))]

        def body(*ix):
            va, vb = tirx.Var("va", a.dtype), tirx.Var("vb", b.dtype)
            keep = tirx.Select(tirx.Or(tirx.isnan(va), tirx.isnan(vb)), va + vb, pick(va, vb))
            return tirx.Let(va, at(a, ix), tirx.Let(vb, at(b, ix), keep))

        return te.compute(shape, body, name=kind)

    return f


_OPAQUE = {"op_pattern": 8}  # relay/relax OpPatternKind kOpaque: FuseOps leaves it alone


@lowers("clamp")
def _(cx, op, x, min=None, max=None):
    out = x
    if min is not None:
        out = cx.emit(R.maximum(out, _scalar(cx, op, min)))
    if max is not None:
        out = R.minimum(out, _scalar(cx, op, max))
    return out if out is x else _keep_nan(cx, op, out, x)


@lowers("leaky_relu")
def _(cx, op, x, negative_slope: float = 0.01):
    return R.nn.leakyrelu(x, negative_slope)


def _relu6_shift3_div6(cx, op, x):
    """relu6(x + 3) / 6, shared by hardsigmoid and hardswish (torch definitions)."""
    t = cx.emit(R.add(x, _scalar(cx, op, 3.0)))
    t = cx.emit(R.minimum(R.maximum(t, _scalar(cx, op, 0.0)), _scalar(cx, op, 6.0)))
    return R.divide(t, _scalar(cx, op, 6.0))


@lowers("hardsigmoid")
def _(cx, op, x):
    return _relu6_shift3_div6(cx, op, x)


@lowers("hardswish")
def _(cx, op, x):
    return R.multiply(x, cx.emit(_relu6_shift3_div6(cx, op, x)))


@lowers("softplus")
def _(cx, op, x, beta: float = 1.0, threshold: float = 20.0):
    """log1p(exp(beta x)) / beta, x itself above the threshold. Relax's softplus takes
    log(1 + exp(.)), which loses the small values of very negative x (Mish's tail)."""
    def one(t):
        def f(*i):
            v = t(*i)
            bx = v * tirx.const(beta, t.dtype)
            soft = tirx.log1p(tirx.exp(tirx.min(bx, tirx.const(threshold, t.dtype))))
            return tirx.Select(bx > tirx.const(threshold, t.dtype), v,
                               soft / tirx.const(beta, t.dtype))
        return te.compute(t.shape, f, name="softplus")
    return cx.emit_te(one, x, primfunc_name_hint="softplus")


@lowers("remainder")
def _(cx, op, a, b):
    """Python-style %: the result takes the divisor's sign. Floats follow numpy's
    npy_divmod (fmod, then shift by the divisor when the signs differ), which also gets
    x % inf = x (or inf) and signed zeros right, where a - floor(a / b) * b gives NaN."""
    if not op.result.type.dtype.is_float:
        return R.floor_mod(a, b)
    m = cx.emit(R.mod(a, b))  # truncated (C fmod)
    zero = _scalar(cx, op, 0.0)
    shift = cx.emit(R.logical_and(R.not_equal(m, zero),
                                  R.logical_xor(R.less(b, zero), R.less(m, zero))))
    m = cx.emit(R.where(shift, R.add(m, b), m))
    signed_zero = cx.emit(R.where(R.less(b, zero), _scalar(cx, op, -0.0), zero))
    return R.where(R.equal(m, zero), signed_zero, m)


@lowers("elu")
def _(cx, op, x, alpha: float = 1.0):
    def elu(v):
        neg = _f32(alpha) * (fastmath.fast_exp(v) - _f32(1.0))
        return tirx.Select(v > _f32(0.0), v, neg)

    def composite(v):
        neg = cx.emit(R.multiply(_scalar(cx, op, alpha),
                                 R.subtract(R.exp(v), _scalar(cx, op, 1.0))))
        return R.where(R.greater(v, _scalar(cx, op, 0.0)), v, neg)

    return _fast_unary(cx, op, x, elu, "elu", composite)


@lowers("where")
def _(cx, op, cond, a, b):
    return R.where(cond, a, b)
