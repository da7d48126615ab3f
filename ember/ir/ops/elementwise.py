"""Elementwise arithmetic, comparisons and activations (numpy broadcasting).

Each line is one op: `unary(kind, numpy_fn)` / `binary(kind, numpy_fn)`.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ..types import DType, TensorType, broadcast_shapes
from .registry import COMMUTATIVE, ELEMENTWISE, PURE, define_op

_F32 = np.float32


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def unary(kind: str, fn, *, float_only: bool = True, domain=None, doc: str = "", tolerance=1e-5):
    schema = define_op(kind, inputs=("x",), traits=(PURE, ELEMENTWISE), doc=doc,
                       tolerance=tolerance)

    @schema.infer
    def _(x):
        if float_only and not x.dtype.is_float:
            raise ShapeError(f"{kind} needs a float tensor, got {x}")
        return x

    @schema.reference
    def _(x):
        return np.asarray(fn(x)).astype(x.dtype)

    @schema.examples
    def _(rng):
        x = _rand(rng, (2, 3, 4))
        yield [np.abs(x) + 0.1 if domain == "positive" else x], {}

    return schema


def binary(kind: str, fn, *, commutative: bool = False, result_dtype: DType | None = None,
           doc: str = "", tolerance=1e-5):
    traits = (PURE, ELEMENTWISE) + ((COMMUTATIVE,) if commutative else ())
    schema = define_op(kind, inputs=("a", "b"), traits=traits, doc=doc, tolerance=tolerance)

    @schema.infer
    def _(a, b):
        if a.dtype != b.dtype:
            raise ShapeError(f"{kind} operands have different dtypes {a.dtype} and {b.dtype}; "
                             "insert a cast")
        return TensorType(broadcast_shapes(a.shape, b.shape), result_dtype or a.dtype)

    @schema.reference
    def _(a, b):
        out = fn(a, b)
        return np.asarray(out).astype(result_dtype.to_numpy() if result_dtype else a.dtype)

    @schema.examples
    def _(rng):
        yield [_rand(rng, (2, 3, 4)), _rand(rng, (2, 3, 4))], {}
        yield [_rand(rng, (2, 3, 4)), _rand(rng, (4,))], {}
        yield [_rand(rng, (3, 1)), _rand(rng, (1, 5))], {}

    return schema


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))


add = binary("add", np.add, commutative=True)
sub = binary("sub", np.subtract)
mul = binary("mul", np.multiply, commutative=True)
div = binary("div", np.divide, doc="True division (floats).")
pow_ = binary("pow", np.power, tolerance=1e-4)
maximum = binary("maximum", np.maximum, commutative=True)
minimum = binary("minimum", np.minimum, commutative=True)
eq = binary("eq", np.equal, commutative=True, result_dtype=DType.bool)
ne = binary("ne", np.not_equal, commutative=True, result_dtype=DType.bool)
lt = binary("lt", np.less, result_dtype=DType.bool)
le = binary("le", np.less_equal, result_dtype=DType.bool)
gt = binary("gt", np.greater, result_dtype=DType.bool)
ge = binary("ge", np.greater_equal, result_dtype=DType.bool)

neg = unary("neg", np.negative, float_only=False)
abs_ = unary("abs", np.abs, float_only=False)
relu = unary("relu", lambda x: np.maximum(x, 0))
sigmoid = unary("sigmoid", _sigmoid)
tanh = unary("tanh", np.tanh)
gelu = unary("gelu", _gelu, doc="Exact (erf) GELU.")
silu = unary("silu", lambda x: x * _sigmoid(x))
exp = unary("exp", np.exp)
log = unary("log", np.log, domain="positive")
sqrt = unary("sqrt", np.sqrt, domain="positive")
rsqrt = unary("rsqrt", lambda x: 1.0 / np.sqrt(x), domain="positive")
