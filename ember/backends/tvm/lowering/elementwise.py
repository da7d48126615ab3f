"""Lowerings for elementwise ops: each maps to a Relax op (or a short composition of them).

Relax elementwise ops broadcast like numpy, which is the ember contract, so binary ops map 1:1.
Compositions (hardswish, elu, ...) stay as Relax ops so FuseOps can merge them into one kernel.
"""

from __future__ import annotations

import tvm
from tvm import relax

from . import LowerContext, lowers

R = relax.op

_BINARY = {
    "add": R.add, "sub": R.subtract, "mul": R.multiply, "div": R.divide, "pow": R.power,
    "maximum": R.maximum, "minimum": R.minimum, "eq": R.equal, "ne": R.not_equal,
    "lt": R.less, "le": R.less_equal, "gt": R.greater, "ge": R.greater_equal,
    "logical_and": R.logical_and, "logical_or": R.logical_or,
    "remainder": R.floor_mod,  # python-style %: the result takes the divisor's sign
}
_UNARY = {
    "neg": R.negative, "abs": R.abs, "relu": R.nn.relu, "sigmoid": R.sigmoid, "tanh": R.tanh,
    "silu": R.nn.silu, "exp": R.exp, "log": R.log, "sqrt": R.sqrt, "rsqrt": R.rsqrt,
    "erf": R.erf, "sin": R.sin, "cos": R.cos, "logical_not": R.logical_not, "floor": R.floor,
    "ceil": R.ceil, "round": R.round,
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


@lowers("gelu")
def _(cx, op, x, approximate: str = "none"):
    if approximate == "tanh":
        return R.nn.gelu_tanh(x)
    return R.nn.gelu(x)


@lowers("clamp")
def _(cx, op, x, min=None, max=None):
    out = x
    if min is not None:
        out = cx.emit(R.maximum(out, _scalar(cx, op, min)))
    if max is not None:
        out = R.minimum(out, _scalar(cx, op, max))
    return out


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
    return R.nn.softplus(x, beta, threshold)


@lowers("elu")
def _(cx, op, x, alpha: float = 1.0):
    neg = cx.emit(R.multiply(_scalar(cx, op, alpha),
                             R.subtract(R.exp(x), _scalar(cx, op, 1.0))))
    return R.where(R.greater(x, _scalar(cx, op, 0.0)), x, neg)


@lowers("where")
def _(cx, op, cond, a, b):
    return R.where(cond, a, b)
