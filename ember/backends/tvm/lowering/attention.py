"""Lowering for scaled_dot_product_attention: softmax(q @ k^T * scale + mask) @ v.

Two forms: the fused kernel (kernels/attention.py: one TIR kernel, no [.., L, S] score tensor in
memory, vectorized exp) where `fused_attention_plan` accepts the op (f32, static L/S/E/Ev, q/k/v
with the same batch dims, at most the leading batch dim symbolic, a mask that broadcasts per
dim); otherwise the composite Relax form (matmul -> scale -> mask -> softmax -> matmul), with
the reason in a debug log. `FUSED_ATTENTION = False` forces the composite form (benchmarks).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import tvm
from tvm import relax, te, tirx

from ....errors import LoweringError
from ....ir import DType
from ..kernels.attention import AttentionPlan, MaskPlan, attention_kernel, attention_work
from . import LowerContext, lowers

R = relax.op
log = logging.getLogger("ember.backends.tvm.lowering.attention")

FUSED_ATTENTION = True  # False: always the composite form (to compare the two)
MAX_DIM = 128  # measured up to 128 (parity with the composite form there); above: untested


@lowers("scaled_dot_product_attention")
def _(cx, op, q, k, v, mask, is_causal=False, scale=None):
    qt = op.inputs[0].type
    e = qt.shape[-1]
    if scale is None and not isinstance(e, int):
        raise LoweringError(f"scaled_dot_product_attention: head dim of {qt} is symbolic; "
                            "pass an explicit scale")
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(e)
    plan = fused_attention_plan(op, scale) if FUSED_ATTENTION else "disabled (FUSED_ATTENTION)"
    if isinstance(plan, AttentionPlan):
        return _fused(cx, op, plan, q, k, v, mask)
    log.debug("scaled_dot_product_attention %s: composite lowering: %s", qt, plan)
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
    so exp(-inf - top) is 0, and a row whose exponentials sum to 0 is a dead row. It must be
    the dtype's exact lowest: a row masked additively with finfo.min (HF-style) is a softmax
    over scores near finfo.min in torch, and a higher clamp (-3e38) turned it into 0s.
    """
    lowest = _LOWEST.get(dtype, float(np.finfo(np.float32).min))
    top = cx.emit(R.maximum(R.max(s, axis=[-1], keepdims=True), cx.const(lowest, dtype)))
    e = cx.emit(R.exp(R.subtract(s, top)))
    z = cx.emit(R.sum(e, axis=[-1], keepdims=True))
    dead = cx.emit(R.equal(z, cx.const(0.0, dtype)))
    return R.divide(e, R.where(dead, cx.const(1.0, dtype), z))


_LOWEST = {DType.f64: float(np.finfo(np.float64).min), DType.f16: -65504.0,
           DType.bf16: -3.3895313892515355e38}


def _causal_fill(s):
    """Keep key j <= query i (torch's top-left aligned causal mask), else -inf."""
    ninf = tirx.const(-np.inf, s.dtype)
    return te.compute(s.shape, lambda *i: tirx.Select(i[-1] <= i[-2], s(*i), ninf),
                      name="causal")


def fused_attention_plan(op, scale: float) -> AttentionPlan | str:
    """The fused kernel's plan for this op, or why it takes the composite form."""
    qt, kt, vt = (op.inputs[i].type for i in range(3))
    mt = op.inputs[3].type if len(op.inputs) > 3 and op.inputs[3] is not None else None
    if any(t.dtype is not DType.f32 for t in (qt, kt, vt)):
        return f"dtype {qt.dtype} (the kernel is f32 only)"
    (ln, e), (s, ev) = qt.shape[-2:], vt.shape[-2:]
    if not all(isinstance(d, int) for d in (ln, e, s, ev)):
        return "symbolic sequence length or head dim"
    if min(ln, e, s, ev) < 1 or max(e, ev) > MAX_DIM:
        return f"sizes L={ln} S={s} E={e} Ev={ev} outside 1..{MAX_DIM} head dims"
    batch = qt.shape[:-2]
    if kt.shape[:-2] != batch or vt.shape[:-2] != batch:
        return "q/k/v batch dims differ (broadcast)"
    if any(not isinstance(d, int) for d in batch[1:]):
        return "a symbolic batch dim other than the leading one"
    flat = _prod(batch) if all(isinstance(d, int) for d in batch) else None
    mplan = None
    if mt is not None:
        mplan = _mask_plan(mt, batch, ln, s)
        if isinstance(mplan, str):
            return mplan
    return AttentionPlan(flat, ln, s, e, ev, scale, bool(op.attrs.get("is_causal")), mplan)


def _mask_plan(mt, batch: tuple, ln: int, s: int) -> MaskPlan | str:
    """How the kernel indexes a mask that broadcasts to [*batch, L, S] (right-aligned)."""
    if mt.dtype not in (DType.bool, DType.f32):
        return f"mask dtype {mt.dtype}"
    full = (1,) * (len(batch) + 2 - mt.rank) + tuple(mt.shape)
    mb, (rows, cols) = full[:-2], full[-2:]
    if rows not in (1, ln) or cols not in (1, s):
        return f"mask {mt} does not broadcast per dim to [..., {ln}, {s}]"
    if any(not isinstance(d, int) for d in mb[1:]) or (mb and not isinstance(mb[0], int)
                                                         and mb[0] != batch[0]):
        return f"mask {mt} has a symbolic dim the kernel cannot index"
    terms = []
    for i, m in enumerate(mb):
        if m == 1:
            continue
        divisor = _prod(batch[i + 1:])
        terms.append((divisor, None if i == 0 else batch[i], _prod(mb[i + 1:])))
    flat = _prod(mb) if all(isinstance(d, int) for d in mb) else None
    return MaskPlan(mt.dtype is not DType.bool, flat, rows, cols, tuple(terms))


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _fused(cx: LowerContext, op, plan: AttentionPlan, q, k, v, mask):
    """call_tir of the fused kernel on [N, L, E] views; the result reshaped back."""
    qt = op.inputs[0].type
    n = _flat_dim(cx, qt.shape[:-2])
    ln, e, s, ev = plan.q_len, plan.head_dim, plan.kv_len, plan.v_dim
    sources = [_heads_transposed_source(cx, x) for x in (q, k, v)] if qt.rank == 4 else [None]
    if all(src is not None for src in sources):
        # q/k/v are transpose(1, 2) of [B, L, H, E] tensors (split heads): the kernel reads
        # those, and the transposes (three copies) become dead code
        plan = dataclasses.replace(plan, heads_inner=int(qt.shape[1]))
        args = list(sources)
    else:
        args = [cx.emit(R.reshape(q, [n, ln, e])), cx.emit(R.reshape(k, [n, s, e])),
                cx.emit(R.reshape(v, [n, s, ev]))]
    if plan.mask is not None:
        args.append(cx.emit(R.reshape(mask, [_flat_dim(cx, op.inputs[3].type.shape)])))
    if plan.batch is not None:
        parallel = attention_work(plan, plan.batch) >= _parallel_min_work()
    else:
        parallel = None
    gv = cx.bb.add_func(attention_kernel(plan, parallel), "fused_attention")
    out = cx.emit(relax.call_tir(gv, args, relax.TensorType([n, ln, ev], "float32")))
    return R.reshape(out, cx.shape(op.results[0].type))


def _heads_transposed_source(cx: LowerContext, x) -> relax.Expr | None:
    """x's source when x is bound to permute_dims(src, [0, 2, 1, 3]) with a static head count."""
    try:
        bound = cx.bb.lookup_binding(x) if isinstance(x, relax.Var) else None
    except Exception:  # noqa: BLE001 - not bound in this function: no source
        return None
    if not (isinstance(bound, relax.Call) and isinstance(bound.op, tvm.ir.Op)
            and bound.op.name == "relax.permute_dims" and bound.attrs.axes is not None
            and [int(a) for a in bound.attrs.axes] == [0, 2, 1, 3]):
        return None
    src = bound.args[0]
    shape = getattr(src.ty, "shape", None)
    if shape is None or len(shape) != 4 or not isinstance(shape[2], tirx.IntImm):
        return None
    return src


def _flat_dim(cx: LowerContext, dims) -> object:
    """The product of (possibly symbolic) dims as one Relax shape value (1 for none)."""
    out = 1
    for d in dims:
        out = out * cx.dim(d)
    return out


def _parallel_min_work() -> int:
    from ..schedules.threads import PARALLEL_MIN_WORK

    return PARALLEL_MIN_WORK
