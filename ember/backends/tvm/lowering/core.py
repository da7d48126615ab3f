"""Lowerings for core ops: constants become Relax constants baked into the library."""

from __future__ import annotations

import numpy as np
from tvm import relax

from ....ir import DType
from . import LowerContext, lowers, tvm_dtype


@lowers("const")
def _(cx: LowerContext, op, value, name=None):
    if hasattr(value, "materialize"):  # lazily stored weights (e.g. packed or memory-mapped)
        value = value.materialize()
    arr = np.array(value, order="C", copy=False) if np.ndim(value) else np.asarray(value)
    # (np.ascontiguousarray would turn a 0-d scalar into shape (1,))
    return cx.const(arr, op.result.type.dtype)


@lowers("cast")
def _(cx: LowerContext, op, x, dtype: DType):
    src = op.inputs[0].type.dtype
    if dtype is DType.bool and src is not DType.bool:
        # numpy: nonzero -> True; an LLVM truncation to i1 would keep only the low bit.
        zero = cx.const(0, src)
        return relax.op.not_equal(x, zero)
    return relax.op.astype(x, tvm_dtype(dtype))
