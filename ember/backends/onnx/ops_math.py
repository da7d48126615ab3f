"""ONNX export of elementwise kinds (arithmetic, comparisons, activations, cast, where)."""

from __future__ import annotations

import numpy as np

from .exporter import Emitter, exports, onnx_type

_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow",
           "maximum": "Max", "minimum": "Min", "eq": "Equal", "lt": "Less", "le": "LessOrEqual",
           "gt": "Greater", "ge": "GreaterOrEqual", "logical_and": "And", "logical_or": "Or"}
_UNARY = {"neg": "Neg", "abs": "Abs", "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
          "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "erf": "Erf", "sin": "Sin", "cos": "Cos",
          "reciprocal": "Reciprocal", "floor": "Floor", "ceil": "Ceil", "round": "Round",
          "logical_not": "Not", "hardswish": "HardSwish"}


def _same(op_type: str):
    def emit(em: Emitter, op, names):
        return em.node(op_type, names)
    return emit


for _k, _t in {**_BINARY, **_UNARY}.items():
    exports(_k)(_same(_t))


def scalar(em: Emitter, value, like) -> str:
    return em.const(np.asarray(value, dtype=like.dtype.to_numpy()), "scalar")


@exports("ne")
def _(em: Emitter, op, names):
    return em.node("Not", [em.node("Equal", names)])


@exports("remainder")
def _(em: Emitter, op, names):
    a = op.inputs[0]
    if not a.dtype.is_float:
        return em.node("Mod", names, fmod=0)
    a_n, b_n = names  # python-style: a - floor(a / b) * b
    q = em.node("Floor", [em.node("Div", names)])
    return em.node("Sub", [a_n, em.node("Mul", [q, b_n])])


@exports("rsqrt")
def _(em: Emitter, op, names):
    return em.node("Reciprocal", [em.node("Sqrt", names)])


@exports("silu")
def _(em: Emitter, op, names):
    return em.node("Mul", [names[0], em.node("Sigmoid", names)])


@exports("gelu")
def _(em: Emitter, op, names):
    return em.node("Gelu", names, approximate=op.attrs["approximate"])


@exports("clamp")
def _(em: Emitter, op, names):
    x = op.inputs[0]
    lo = "" if op.attrs["min"] is None else scalar(em, op.attrs["min"], x)
    hi = "" if op.attrs["max"] is None else scalar(em, op.attrs["max"], x)
    if lo and hi and op.attrs["min"] > op.attrs["max"]:  # torch: everything becomes max
        return em.node("Max", [em.node("Min", [names[0], hi]), hi])
    return em.node("Clip", [names[0], lo, hi])


@exports("leaky_relu")
def _(em: Emitter, op, names):
    return em.node("LeakyRelu", names, alpha=float(op.attrs["negative_slope"]))


@exports("elu")
def _(em: Emitter, op, names):
    return em.node("Elu", names, alpha=float(op.attrs["alpha"]))


@exports("hardsigmoid")
def _(em: Emitter, op, names):
    return em.node("HardSigmoid", names, alpha=1.0 / 6.0, beta=0.5)


@exports("softplus")
def _(em: Emitter, op, names):
    x = op.inputs[0]
    beta, threshold = op.attrs["beta"], op.attrs["threshold"]
    bx = em.node("Mul", [names[0], scalar(em, beta, x)]) if beta != 1.0 else names[0]
    soft = em.node("Softplus", [bx])
    if beta != 1.0:
        soft = em.node("Div", [soft, scalar(em, beta, x)])
    above = em.node("Greater", [bx, scalar(em, threshold, x)])
    return em.node("Where", [above, names[0], soft])


@exports("where")
def _(em: Emitter, op, names):
    return em.node("Where", names)


@exports("cast")
def _(em: Emitter, op, names):
    return em.node("Cast", names, to=onnx_type(op.attrs["dtype"]))


@exports("const")
def _(em: Emitter, op, names):
    value = op.attrs["value"]
    if hasattr(value, "materialize"):
        value = value.materialize()
    return em.const(np.asarray(value), op.attrs.get("name") or op.loc or "const")
