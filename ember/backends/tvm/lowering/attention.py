"""Lowering for scaled_dot_product_attention: softmax(q @ k^T * scale + mask) @ v.

Kept apart from nn.py because attention grows its own kernels (fused QK^T-softmax-V).
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax, te, tirx

from ....errors import LoweringError
from ....ir import DType
from . import LowerContext, lowers

R = relax.op


@lowers("scaled_dot_product_attention")
def _(cx, op, q, k, v, mask, is_causal=False, scale=None):
    qt = op.inputs[0].type
    e = qt.shape[-1]
    if scale is None and not isinstance(e, int):
        raise LoweringError(f"scaled_dot_product_attention: head dim of {qt} is symbolic; "
                            "pass an explicit scale")
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(e)
    rank = op.inputs[1].type.rank
    axes = list(range(rank - 2)) + [rank - 1, rank - 2]
    s = cx.emit(R.matmul(q, R.permute_dims(k, axes)))
    s = cx.emit(R.multiply(s, cx.const(scale, qt.dtype)))
    if is_causal:
        s = cx.emit_te(_causal_fill, s, primfunc_name_hint="causal_mask")
    if mask is not None:
        if op.inputs[3].type.dtype.value == "bool":
            s = cx.emit(R.where(mask, s, cx.const(-np.inf, qt.dtype)))
        else:
            s = cx.emit(R.add(s, mask))
    p = cx.emit(_safe_softmax(cx, s, qt.dtype) if (is_causal or mask is not None)
                else R.nn.softmax(s, axis=-1))
    return R.matmul(p, v)


def _safe_softmax(cx: LowerContext, s, dtype):
    """Softmax whose fully masked rows (all -inf) give 0, not NaN: torch's SDPA behaviour.

    The row max is clamped to the lowest finite value (TVM's max may start there or at -inf),
    so exp(-inf - top) is 0, and a row whose exponentials sum to 0 is a dead row.
    """
    lowest = {DType.f64: -1.7e308, DType.f16: -65504.0}.get(dtype, -3.0e38)  # finite, < any score
    top = cx.emit(R.maximum(R.max(s, axis=[-1], keepdims=True), cx.const(lowest, dtype)))
    e = cx.emit(R.exp(R.subtract(s, top)))
    z = cx.emit(R.sum(e, axis=[-1], keepdims=True))
    dead = cx.emit(R.equal(z, cx.const(0.0, dtype)))
    return R.divide(e, R.where(dead, cx.const(1.0, dtype), z))


def _causal_fill(s):
    """Keep key j <= query i (torch's top-left aligned causal mask), else -inf."""
    ninf = tirx.const(-np.inf, s.dtype)
    return te.compute(s.shape, lambda *i: tirx.Select(i[-1] <= i[-2], s(*i), ninf),
                      name="causal")
