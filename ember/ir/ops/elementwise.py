"""Elementwise arithmetic, comparisons, logic and activations (numpy broadcasting).

Each line is one op: `unary(kind, numpy_fn)` / `binary(kind, numpy_fn)`. Numerics follow torch:
results keep the operand dtype (comparisons and logic give bool), and parameterized
activations take torch's argument names and defaults as attributes.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ..types import DType, TensorType, broadcast_shapes
from .registry import COMMUTATIVE, ELEMENTWISE, PURE, define_op

# Operand classes an op accepts: "float" (f16/bf16/f32/f64), "bool", "numeric" (not bool), "any".
_UNARY_SHAPES = ((2, 3, 4), (7,), ())


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _check_operand(kind: str, t: TensorType, operands: str) -> None:
    ok = {"float": t.dtype.is_float, "bool": t.dtype is DType.bool,
          "numeric": t.dtype is not DType.bool, "any": True}[operands]
    if not ok:
        what = {"float": "a float tensor", "bool": "a bool tensor", "numeric": "a numeric tensor"}
        raise ShapeError(f"{kind} needs {what[operands]}, got {t}; insert a cast")


def _sample(rng, shape, domain: str | None) -> np.ndarray:
    """A random operand in `domain` (so that examples never produce NaN or inf)."""
    x = _rand(rng, shape)
    if domain == "positive":
        return np.abs(x) + np.float32(0.1)
    if domain == "nonzero":
        return np.where(x < 0, x - 0.1, x + 0.1).astype(np.float32)
    if domain == "bool":
        return x > 0
    if domain == "wide":  # crosses thresholds (softplus) and saturates (tanh, sigmoid)
        return (x * 15).astype(np.float32)
    if domain == "halves":  # exact .5 ties: round-half-to-even must agree with torch
        return (np.round(x * 4) / 2).astype(np.float32)
    return x


def unary(kind: str, fn, *, operands: str = "float", domain: str | None = None,
          attrs: dict | None = None, attr_examples=({},), int_example: dict | None = None,
          check=None, doc: str = "", tolerance: float = 1e-5):
    """One-input elementwise op; `fn(x, **attrs)` computes it, `check(x, **attrs)` adds rules."""
    schema = define_op(kind, inputs=("x",), attrs=attrs, traits=(PURE, ELEMENTWISE), doc=doc,
                       tolerance=tolerance)

    @schema.infer
    def _(x, **kw):
        _check_operand(kind, x, operands)
        if check is not None:
            check(x, **kw)
        return x

    @schema.reference
    def _(x, **kw):
        return np.asarray(fn(x, **kw)).astype(x.dtype)

    @schema.examples
    def _(rng):
        for shape in _UNARY_SHAPES:
            for a in attr_examples:
                yield [_sample(rng, shape, domain)], dict(a)
        if int_example is not None:
            yield [rng.integers(-9, 9, (3, 4))], dict(int_example)

    return schema


def binary(kind: str, fn, *, commutative: bool = False, result_dtype: DType | None = None,
           operands: str = "any", domain: tuple = (None, None), int_examples: bool = False,
           doc: str = "", tolerance: float = 1e-5):
    traits = (PURE, ELEMENTWISE) + ((COMMUTATIVE,) if commutative else ())
    schema = define_op(kind, inputs=("a", "b"), traits=traits, doc=doc, tolerance=tolerance)

    @schema.infer
    def _(a, b):
        if a.dtype != b.dtype:
            raise ShapeError(f"{kind} operands have different dtypes {a.dtype} and {b.dtype}; "
                             "insert a cast")
        _check_operand(kind, a, operands)
        return TensorType(broadcast_shapes(a.shape, b.shape), result_dtype or a.dtype)

    @schema.reference
    def _(a, b):
        out = fn(a, b)
        return np.asarray(out).astype(result_dtype.to_numpy() if result_dtype else a.dtype)

    @schema.examples
    def _(rng):
        for sa, sb in (((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((), (3,))):
            yield [_sample(rng, sa, domain[0]), _sample(rng, sb, domain[1])], {}
        if int_examples:
            a = rng.integers(-20, 20, (3, 4))
            b = rng.integers(1, 7, (3, 4)) * rng.choice([-1, 1], (3, 4))
            yield [a.astype(np.int64), b.astype(np.int64)], {}

    return schema


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_erf64 = np.vectorize(math.erf, otypes=[np.float64])


def _erf(x):
    return _erf64(np.asarray(x, dtype=np.float64))


def _gelu(x, approximate):
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
        return 0.5 * x64 * (1.0 + np.tanh(inner))
    return 0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))


def _check_gelu(x, approximate):
    if approximate not in ("none", "tanh"):
        raise ShapeError(f"gelu approximate={approximate!r}; use 'none' or 'tanh'")


def _clamp(x, min, max):
    if min is not None:
        x = np.maximum(x, np.asarray(min).astype(x.dtype))
    if max is not None:  # applied last: with min > max every element becomes max, as in torch
        x = np.minimum(x, np.asarray(max).astype(x.dtype))
    return x


def _check_clamp(x, min, max):
    if min is None and max is None:
        raise ShapeError("clamp needs at least one of min= and max=")
    if not x.dtype.is_float:
        for bound in (min, max):
            if bound is not None and float(bound) != int(bound):
                raise ShapeError(f"clamp of {x} with non-integral bound {bound}: torch would "
                                 "promote to float; cast the input first")


def _softplus(x, beta, threshold):
    """Linear above the threshold, as torch does (and no overflow in exp)."""
    bx = x.astype(np.float64) * beta
    return np.where(bx > threshold, x, np.log1p(np.exp(np.minimum(bx, threshold))) / beta)


def _hardsigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


add = binary("add", np.add, commutative=True)
sub = binary("sub", np.subtract, operands="numeric")
mul = binary("mul", np.multiply, commutative=True)
div = binary("div", np.divide, operands="float", domain=(None, "nonzero"),
             doc="True division; int operands need a cast first (torch would return floats).")
pow_ = binary("pow", np.power, operands="numeric", domain=("positive", None), tolerance=1e-4)
remainder = binary("remainder", np.remainder, operands="numeric", domain=(None, "nonzero"),
                   int_examples=True, tolerance=1e-4,
                   doc="Python-style %: the result has the sign of the divisor (torch.remainder).")
maximum = binary("maximum", np.maximum, commutative=True)
minimum = binary("minimum", np.minimum, commutative=True)
eq = binary("eq", np.equal, commutative=True, result_dtype=DType.bool)
ne = binary("ne", np.not_equal, commutative=True, result_dtype=DType.bool)
lt = binary("lt", np.less, result_dtype=DType.bool)
le = binary("le", np.less_equal, result_dtype=DType.bool)
gt = binary("gt", np.greater, result_dtype=DType.bool)
ge = binary("ge", np.greater_equal, result_dtype=DType.bool)
logical_and = binary("logical_and", np.logical_and, commutative=True, operands="bool",
                     domain=("bool", "bool"))
logical_or = binary("logical_or", np.logical_or, commutative=True, operands="bool",
                    domain=("bool", "bool"))

neg = unary("neg", np.negative, operands="numeric", int_example={})
abs_ = unary("abs", np.abs, operands="numeric", int_example={})
logical_not = unary("logical_not", np.logical_not, operands="bool", domain="bool")
relu = unary("relu", lambda x: np.maximum(x, 0))
sigmoid = unary("sigmoid", _sigmoid, domain="wide")
tanh = unary("tanh", np.tanh, domain="wide")
silu = unary("silu", lambda x: x * _sigmoid(x))
exp = unary("exp", np.exp)
log = unary("log", np.log, domain="positive")
sqrt = unary("sqrt", np.sqrt, domain="positive")
rsqrt = unary("rsqrt", lambda x: 1.0 / np.sqrt(x), domain="positive")
reciprocal = unary("reciprocal", lambda x: 1.0 / x, domain="nonzero")
erf = unary("erf", _erf)
sin = unary("sin", np.sin)
cos = unary("cos", np.cos)
floor = unary("floor", np.floor, domain="halves")
ceil = unary("ceil", np.ceil, domain="halves")
round_ = unary("round", np.round, domain="halves", doc="Round half to even, like torch.round.")

gelu = unary("gelu", _gelu, attrs={"approximate": (str, "none")}, check=_check_gelu,
             attr_examples=({}, {"approximate": "tanh"}), doc="torch GELU (erf or tanh form).")
clamp = unary("clamp", _clamp, operands="numeric", check=_check_clamp,
              attrs={"min": (float, None), "max": (float, None)},
              attr_examples=({"min": -0.5, "max": 0.5}, {"min": 0.0}, {"max": 0.25},
                             {"min": 1.0, "max": -1.0}), int_example={"min": -3, "max": 4})
leaky_relu = unary("leaky_relu", lambda x, negative_slope: np.where(x > 0, x, x * negative_slope),
                   attrs={"negative_slope": (float, 0.01)},
                   attr_examples=({}, {"negative_slope": 0.2}))
hardswish = unary("hardswish", lambda x: x * _hardsigmoid(x), domain="wide")
hardsigmoid = unary("hardsigmoid", _hardsigmoid, domain="wide")
softplus = unary("softplus", _softplus, domain="wide",
                 attrs={"beta": (float, 1.0), "threshold": (float, 20.0)},
                 attr_examples=({}, {"beta": 2.0, "threshold": 10.0}))
elu = unary("elu", lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(x)),
            attrs={"alpha": (float, 1.0)}, attr_examples=({}, {"alpha": 0.5}))

where = define_op("where", inputs=("cond", "a", "b"), traits=(PURE, ELEMENTWISE),
                  doc="Broadcasting select: a where cond else b.")


@where.infer
def _(cond, a, b):
    if cond.dtype is not DType.bool:
        raise ShapeError(f"where condition must be bool, got {cond}; compare or cast it first")
    if a.dtype != b.dtype:
        raise ShapeError(f"where branches have different dtypes {a.dtype} and {b.dtype}; "
                         "insert a cast")
    return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), a.dtype)


@where.reference
def _(cond, a, b):
    return np.where(cond, a, b).astype(a.dtype)


@where.examples
def _(rng):
    yield [_sample(rng, (2, 3), "bool"), _rand(rng, (2, 3)), _rand(rng, (2, 3))], {}
    yield [_sample(rng, (4, 1), "bool"), _rand(rng, (5,)), _rand(rng, ())], {}
    yield [_sample(rng, (3,), "bool"), rng.integers(0, 9, (2, 3)), rng.integers(0, 9, (3,))], {}

