"""Elementwise ONNX ops: arithmetic, comparisons, logic, activations, casts.

ONNX and ember both broadcast like numpy and require one dtype for both operands, so most
binary ops map 1:1. Where ONNX's definition differs from the ember op of the same spirit
(HardSigmoid's alpha/beta, integer Div's truncation, Mod's fmod flag) the converter spells out
the ONNX formula with several ember ops rather than borrowing a near miss.
"""

from __future__ import annotations

import numpy as np

from ...ir import DType
from .context import Context, converts, onnx_dtype

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Equal": "eq", "Greater": "gt",
           "Less": "lt", "GreaterOrEqual": "ge", "LessOrEqual": "le", "And": "logical_and",
           "Or": "logical_or", "Xor": "ne"}
_UNARY = {"Abs": "abs", "Neg": "neg", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
          "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Erf": "erf", "Sin": "sin", "Cos": "cos",
          "Reciprocal": "reciprocal", "Floor": "floor", "Ceil": "ceil", "Round": "round",
          "Not": "logical_not"}


def _binary(kind: str):
    def convert(cx: Context, node, inputs, attrs):
        a, b = inputs
        if kind in ("add", "sub", "mul") and a.dtype is DType.bool:
            raise cx.fail(f"{node.op_type} of bool tensors")
        return cx.add(kind, a, b)
    return convert


def _unary(kind: str):
    def convert(cx: Context, node, inputs, attrs):
        return cx.add(kind, inputs[0])
    return convert


for _onnx, _kind in _BINARY.items():
    converts(_onnx)(_binary(_kind))
for _onnx, _kind in _UNARY.items():
    converts(_onnx)(_unary(_kind))


@converts("Div")
def _(cx: Context, node, inputs, attrs):
    a, b = inputs
    if a.dtype.is_float:
        return cx.add("div", a, b)
    # integer Div truncates toward zero (C semantics): exact through f64 for |x| < 2**53
    q = cx.add("div", cx.cast(a, DType.f64), cx.cast(b, DType.f64))
    return cx.cast(_trunc(cx, q), a.dtype)


def _trunc(cx: Context, x):
    zero = cx.scalar(0, x)
    return cx.add("where", cx.add("ge", x, zero), cx.add("floor", x), cx.add("ceil", x))


@converts("Mod")
def _(cx: Context, node, inputs, attrs):
    a, b = inputs
    if not attrs.get("fmod", 0):
        return cx.add("remainder", a, b)  # Python-style (sign of the divisor), as ONNX's
        # reference computes it for floats too (the spec asks fmod=1 there; tests use both)
    if a.dtype.is_float:  # C fmod: the result takes the sign of the dividend
        q = _trunc(cx, cx.add("div", a, b))
        return cx.add("sub", a, cx.add("mul", q, b))
    a64, b64 = cx.cast(a, DType.f64), cx.cast(b, DType.f64)
    q = _trunc(cx, cx.add("div", a64, b64))
    return cx.cast(cx.add("sub", a64, cx.add("mul", q, b64)), a.dtype)


@converts("Pow")
def _(cx: Context, node, inputs, attrs):
    a, b = inputs
    return cx.add("pow", a, cx.cast(b, a.dtype))


def _variadic(kind: str, mean: bool = False):
    def convert(cx: Context, node, inputs, attrs):
        out = inputs[0]
        for x in inputs[1:]:
            out = cx.add(kind, out, x)
        if mean:
            out = cx.add("div", out, cx.scalar(len(inputs), out))
        return out
    return convert


converts("Max")(_variadic("maximum"))
converts("Min")(_variadic("minimum"))
converts("Sum")(_variadic("add"))
converts("Mean")(_variadic("add", mean=True))


@converts("Identity")
def _(cx: Context, node, inputs, attrs):
    return inputs[0]


@converts("Cast")
def _(cx: Context, node, inputs, attrs):
    return _onnx_cast(cx, inputs[0], onnx_dtype(attrs["to"], f"Cast node {node.name!r}"), attrs)


@converts("CastLike")
def _(cx: Context, node, inputs, attrs):
    return _onnx_cast(cx, inputs[0], inputs[1].dtype, attrs)


_SATURATING = {DType.f8e4m3fn: 448.0, DType.f8e4m3fnuz: 240.0, DType.f8e5m2: 57344.0,
               DType.f8e5m2fnuz: 57344.0}
_SUB_BYTE = {DType.i4: (4, True), DType.u4: (4, False), DType.i2: (2, True), DType.u2: (2, False)}


def _onnx_cast(cx: Context, x, to: DType, attrs: dict):
    """ONNX Cast semantics on top of ember's plain `cast`.

    8-bit float targets saturate by default (saturate=1 clamps to the largest finite value,
    infinities included); sub-byte integer targets wrap like a two's-complement register
    (ONNX's reference casts through ml_dtypes, which keeps the low bits), while ember's
    widened i4/u4/i2/u2 storage would keep out-of-range values, so the wrap is explicit.
    """
    if x.dtype is to:
        return x
    if to is DType.f8e8m0:
        raise cx.fail("casting to FLOAT8E8M0 (exponent-only, round_mode) is not modelled")
    if to in _SATURATING and int(attrs.get("saturate", 1)):
        bound = _SATURATING[to]
        x = cx.add("clamp", x, min=-bound, max=bound) if x.dtype.is_float else \
            cx.add("clamp", cx.cast(x, DType.f32), min=-bound, max=bound)
    if to in _SUB_BYTE:
        bits, signed = _SUB_BYTE[to]
        span, half = 1 << bits, 1 << (bits - 1)
        wide = cx.cast(x, DType.i64)
        if signed:
            wide = cx.add("add", wide, cx.scalar(half, wide))
        wide = cx.add("remainder", wide, cx.scalar(span, wide))
        if signed:
            wide = cx.add("sub", wide, cx.scalar(half, wide))
        x = wide
    return cx.cast(x, to)


@converts("Where")
def _(cx: Context, node, inputs, attrs):
    return cx.add("where", *inputs)


@converts("Dropout", static=(1, 2))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    training = inputs[2] if len(inputs) > 2 else None
    if training is not None and bool(cx.need_static(training, "training_mode")):
        raise cx.fail("training_mode=True (random masks) is not modelled; ember imports "
                      "inference graphs")
    if len(node.output) > 1 and node.output[1]:
        return x, cx.const(np.ones(x.shape, dtype=bool)) if x.type.is_static else None
    return x


@converts("IsNaN")
def _(cx: Context, node, inputs, attrs):
    return cx.add("ne", inputs[0], inputs[0])


@converts("IsInf")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    parts = []
    if pos:
        parts.append(cx.add("eq", x, cx.scalar(np.inf, x)))
    if neg:
        parts.append(cx.add("eq", x, cx.scalar(-np.inf, x)))
    if not parts:
        return cx.add("lt", x, cx.scalar(np.nan, x))  # detects nothing: all False
    return parts[0] if len(parts) == 1 else cx.add("logical_or", *parts)


@converts("Sign")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    zero, one = cx.scalar(0, x), cx.scalar(1, x)
    neg = cx.add("where", cx.add("lt", x, zero), cx.add("neg", one), zero)
    return cx.add("where", cx.add("gt", x, zero), one, neg)


@converts("Tan")
def _(cx: Context, node, inputs, attrs):
    return cx.add("div", cx.add("sin", inputs[0]), cx.add("cos", inputs[0]))


# ---- activations --------------------------------------------------------------------------
@converts("LeakyRelu")
def _(cx: Context, node, inputs, attrs):
    return cx.add("leaky_relu", inputs[0], negative_slope=float(attrs.get("alpha", 0.01)))


@converts("Elu")
def _(cx: Context, node, inputs, attrs):
    return cx.add("elu", inputs[0], alpha=float(attrs.get("alpha", 1.0)))


@converts("Selu")
def _(cx: Context, node, inputs, attrs):
    alpha = float(attrs.get("alpha", 1.67326319217681884765625))
    gamma = float(attrs.get("gamma", 1.05070102214813232421875))
    x = inputs[0]
    return cx.add("mul", cx.add("elu", x, alpha=alpha), cx.scalar(gamma, x))


@converts("Celu")
def _(cx: Context, node, inputs, attrs):
    x, alpha = inputs[0], float(attrs.get("alpha", 1.0))
    scaled = cx.add("div", x, cx.scalar(alpha, x))
    return cx.add("mul", cx.add("elu", scaled, alpha=1.0), cx.scalar(alpha, x))


@converts("HardSigmoid")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    y = cx.add("add", cx.add("mul", x, cx.scalar(alpha, x)), cx.scalar(beta, x))
    return cx.add("clamp", y, min=0.0, max=1.0)


@converts("HardSwish")
def _(cx: Context, node, inputs, attrs):
    return cx.add("hardswish", inputs[0])


@converts("Softplus")
def _(cx: Context, node, inputs, attrs):
    return cx.add("softplus", inputs[0])


@converts("Softsign")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    return cx.add("div", x, cx.add("add", cx.add("abs", x), cx.scalar(1, x)))


@converts("Gelu")
def _(cx: Context, node, inputs, attrs):
    approximate = attrs.get("approximate", b"none")
    return cx.add("gelu", inputs[0], approximate=_text(approximate))


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@converts("ThresholdedRelu")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    return cx.add("where", cx.add("gt", x, cx.scalar(attrs.get("alpha", 1.0), x)), x,
                  cx.scalar(0, x))


@converts("Swish")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    return cx.add("mul", x, cx.add("sigmoid", cx.add("mul", x, cx.scalar(attrs.get("alpha", 1.0),
                                                                          x))))


@converts("Mish")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    return cx.add("mul", x, cx.add("tanh", cx.add("softplus", x)))


@converts("Shrink")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    lambd, bias = attrs.get("lambd", 0.5), attrs.get("bias", 0.0)
    lo = cx.add("add", x, cx.scalar(bias, x))
    hi = cx.add("sub", x, cx.scalar(bias, x))
    inner = cx.add("where", cx.add("lt", x, cx.scalar(-lambd, x)), lo, cx.scalar(0, x))
    return cx.add("where", cx.add("gt", x, cx.scalar(lambd, x)), hi, inner)


@converts("PRelu")
def _(cx: Context, node, inputs, attrs):
    x, slope = inputs
    return cx.add("where", cx.add("lt", x, cx.scalar(0, x)), cx.add("mul", x, slope), x)


@converts("Clip", static=(1, 2))
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    lo = attrs.get("min") if cx.opset < 11 else None
    hi = attrs.get("max") if cx.opset < 11 else None
    if len(inputs) > 1 and inputs[1] is not None:
        lo = cx.need_static(inputs[1], "min").item()
    if len(inputs) > 2 and inputs[2] is not None:
        hi = cx.need_static(inputs[2], "max").item()
    if lo is None and hi is None:
        return x
    return cx.add("clamp", x, min=None if lo is None else float(lo),
                  max=None if hi is None else float(hi))
