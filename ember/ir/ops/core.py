"""Ops every graph has: constants (weights) and dtype casts."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..types import DType, TensorType
from .registry import ELEMENTWISE, PURE, REQUIRED, define_op

const = define_op("const", inputs=(), attrs={"name": (str, None), "value": (np.ndarray, REQUIRED)},
                  traits=(PURE,), doc="A constant tensor (weights, biases, scalars).")


@const.infer
def _(value, name):
    if not isinstance(value, np.ndarray) and not hasattr(value, "type"):
        raise ShapeError(f"const value must be a numpy array, got {type(value).__name__}")
    return value.type if hasattr(value, "type") else TensorType.of(value)


@const.reference
def _(value, name):
    if hasattr(value, "materialize"):
        return value.materialize()
    return value


@const.examples
def _(rng):
    yield [], {"value": rng.standard_normal((2, 3)).astype(np.float32)}


cast = define_op("cast", inputs=("x",), attrs={"dtype": (DType, REQUIRED)},
                 traits=(PURE, ELEMENTWISE), doc="Convert element type (float->int truncates).")


@cast.infer
def _(x, dtype):
    return x.with_dtype(dtype)


@cast.reference
def _(x, dtype):
    return x.astype(dtype.to_numpy())


@cast.examples
def _(rng):
    yield [rng.standard_normal((3, 4)).astype(np.float32) * 4], {"dtype": DType.i32}
    yield [rng.integers(-5, 5, (5,)).astype(np.int64)], {"dtype": DType.f32}
