"""Tensor types: a dtype and a shape whose dims are ints or symbolic names ("batch")."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import ShapeError

Dim = Union[int, str]


class DType(enum.Enum):
    """Element types. Values are the short names used in the text form."""

    f64 = "f64"
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    i64 = "i64"
    i32 = "i32"
    i16 = "i16"
    i8 = "i8"
    u8 = "u8"
    i4 = "i4"
    u4 = "u4"
    u32 = "u32"
    bool = "bool"
    u16 = "u16"
    u64 = "u64"
    i2 = "i2"
    u2 = "u2"
    f8e4m3fn = "f8e4m3fn"
    f8e4m3fnuz = "f8e4m3fnuz"
    f8e5m2 = "f8e5m2"
    f8e5m2fnuz = "f8e5m2fnuz"
    f8e8m0 = "f8e8m0"
    f4e2m1 = "f4e2m1"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"DType.{self.value}"

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        return not self.is_float and self is not DType.bool

    @property
    def bits(self) -> int:
        return _BITS[self]

    def to_numpy(self) -> np.dtype:
        """The numpy dtype that holds values of this type (sub-byte ints widen to int8/uint8)."""
        if self in _ML_DTYPES:  # bf16 and the 8/4-bit floats: numpy via ml_dtypes (lazy)
            try:
                import ml_dtypes
            except ImportError:
                raise ShapeError(f"dtype {self} needs the ml_dtypes package for its numpy "
                                 "equivalent; pip install ml_dtypes") from None
            return np.dtype(getattr(ml_dtypes, _ML_DTYPES[self]))
        if self not in _TO_NUMPY:
            raise ShapeError(f"dtype {self} has no numpy equivalent")
        return np.dtype(_TO_NUMPY[self])

    @staticmethod
    def from_numpy(dtype: np.dtype | type | str) -> "DType":
        key = np.dtype(dtype).name
        if key not in _FROM_NUMPY:
            raise ShapeError(f"numpy dtype {key!r} has no ember equivalent")
        return _FROM_NUMPY[key]

    @staticmethod
    def parse(name: str) -> "DType":
        try:
            return DType(name)
        except ValueError:
            names = ", ".join(d.value for d in DType)
            raise ShapeError(f"unknown dtype {name!r}; expected one of {names}") from None


_BITS = {
    DType.f64: 64, DType.f32: 32, DType.f16: 16, DType.bf16: 16, DType.i64: 64, DType.i32: 32,
    DType.i16: 16, DType.i8: 8, DType.u8: 8, DType.i4: 4, DType.u4: 4, DType.u32: 32,
    DType.bool: 1, DType.u16: 16, DType.u64: 64, DType.i2: 2, DType.u2: 2, DType.f8e4m3fn: 8,
    DType.f8e4m3fnuz: 8, DType.f8e5m2: 8, DType.f8e5m2fnuz: 8, DType.f8e8m0: 8, DType.f4e2m1: 4,
}
_FLOATS = frozenset({DType.f64, DType.f32, DType.f16, DType.bf16, DType.f8e4m3fn,
                     DType.f8e4m3fnuz, DType.f8e5m2, DType.f8e5m2fnuz, DType.f8e8m0,
                     DType.f4e2m1})
# ml_dtypes names; imported only when such a dtype is turned into numpy (ember.ir stays light)
_ML_DTYPES = {
    DType.bf16: "bfloat16", DType.f8e4m3fn: "float8_e4m3fn", DType.f8e4m3fnuz: "float8_e4m3fnuz",
    DType.f8e5m2: "float8_e5m2", DType.f8e5m2fnuz: "float8_e5m2fnuz",
    DType.f8e8m0: "float8_e8m0fnu", DType.f4e2m1: "float4_e2m1fn",
}
_TO_NUMPY = {
    DType.f64: "float64", DType.f32: "float32", DType.f16: "float16", DType.i64: "int64",
    DType.i32: "int32", DType.i16: "int16", DType.i8: "int8", DType.u8: "uint8", DType.i4: "int8",
    DType.u4: "uint8", DType.u32: "uint32", DType.bool: "bool", DType.u16: "uint16",
    DType.u64: "uint64", DType.i2: "int8", DType.u2: "uint8",
}
_FROM_NUMPY = {
    "float64": DType.f64, "float32": DType.f32, "float16": DType.f16, "int64": DType.i64,
    "int32": DType.i32, "int16": DType.i16, "int8": DType.i8, "uint8": DType.u8,
    "uint32": DType.u32, "bool": DType.bool, "uint16": DType.u16, "uint64": DType.u64,
    # ml_dtypes arrays (by name, so ml_dtypes is not imported here); sub-byte ints map to the
    # ember dtype whose values they hold (ember stores them widened, see to_numpy)
    "int4": DType.i4, "uint4": DType.u4, "int2": DType.i2, "uint2": DType.u2,
    **{v: k for k, v in _ML_DTYPES.items()},
}


@dataclass(frozen=True, slots=True)
class TensorType:
    """A tensor's shape and element type; symbolic dims are identifier strings."""

    shape: tuple[Dim, ...]
    dtype: DType

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        for d in shape:
            if isinstance(d, bool) or not isinstance(d, (int, str, np.integer)):
                raise ShapeError(f"bad dim {d!r} in shape {shape}: dims are ints or symbol names")
            if isinstance(d, (int, np.integer)) and d < 0:
                raise ShapeError(f"negative dim {d} in shape {shape}")
        object.__setattr__(self, "shape", tuple(int(d) if not isinstance(d, str) else d for d in shape))
        if not isinstance(self.dtype, DType):
            object.__setattr__(self, "dtype", DType.parse(str(self.dtype)))

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def symbols(self) -> set[str]:
        return {d for d in self.shape if isinstance(d, str)}

    def numel(self) -> int:
        if not self.is_static:
            raise ShapeError(f"numel of {self} is not static")
        return math.prod(self.shape)  # type: ignore[arg-type]

    def nbytes(self) -> int:
        return (self.numel() * self.dtype.bits + 7) // 8

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    @staticmethod
    def of(array: np.ndarray) -> "TensorType":
        return TensorType(tuple(array.shape), DType.from_numpy(array.dtype))


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    """Map a possibly negative axis into [0, rank), raising a ShapeError that names it."""
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def dims_equal(a: Dim, b: Dim) -> bool:
    return a == b


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """Numpy broadcasting over dims that may be symbolic (a symbol broadcasts only with 1 or itself)."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dim: Dim = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif d != dim:
                raise ShapeError(f"shapes {' and '.join(str(list(x)) for x in shapes)} do not broadcast")
        out.append(dim)
    return tuple(out)


def mul_dims(dims) -> Dim:
    """Product of dims; symbolic dims give a canonical product expression like '4*batch'."""
    const = 1
    syms: list[str] = []
    for d in dims:
        if isinstance(d, str):
            syms.extend(d.split("*"))
        else:
            const *= d
    ints = [s for s in syms if s.isdigit()]
    for s in ints:
        const *= int(s)
    syms = sorted(s for s in syms if not s.isdigit())
    if not syms:
        return const
    if const == 0:
        return 0
    return "*".join(([str(const)] if const != 1 else []) + syms)
