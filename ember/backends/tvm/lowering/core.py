"""Lowerings for core ops: constants become Relax constants baked into the library; casts.

Casts from and to the 8-bit floats are written out in TE: TVM 0.27's own float8 conversions
on CPU round wrongly (the fnuz formats get the fn exponent bias), and its fp8 legalization
emits vector `if_then_else` that LLVM codegen rejects. Decoding is a 256-entry lookup table
(built with ml_dtypes, exact by construction); encoding is round-to-nearest-even on the
integer bits, with the format's overflow rule (inf for e5m2, NaN for the fn/fnuz formats;
ONNX's saturate=1 clamps before the cast, in the frontend).
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from ....errors import LoweringError
from ....ir import DType
from . import LowerContext, lowers, tvm_dtype


@lowers("const")
def _(cx: LowerContext, op, value, name=None):
    if hasattr(value, "materialize"):  # lazily stored weights (e.g. packed or memory-mapped)
        value = value.materialize()
    arr = np.array(value, order="C", copy=False) if np.ndim(value) else np.asarray(value)
    # (np.ascontiguousarray would turn a 0-d scalar into shape (1,))
    return cx.const(arr, op.result.type.dtype)


# format -> (exponent bits, mantissa bits, bias, largest finite value, special-value rule)
_F8 = {DType.f8e4m3fn: (4, 3, 7, 448.0, "fn"), DType.f8e4m3fnuz: (4, 3, 8, 240.0, "fnuz"),
       DType.f8e5m2: (5, 2, 15, 57344.0, "ieee"), DType.f8e5m2fnuz: (5, 2, 16, 57344.0, "fnuz")}
_DECODED = {DType.f8e4m3fn, DType.f8e4m3fnuz, DType.f8e5m2, DType.f8e5m2fnuz, DType.f8e8m0}


@lowers("cast")
def _(cx: LowerContext, op, x, dtype: DType):
    src = op.inputs[0].type.dtype
    if DType.f4e2m1 in (src, dtype):
        raise LoweringError(f"cast {src} -> {dtype}: TVM 0.27's runtime stores 4-bit floats "
                            "packed and its VM cannot allocate them (bits % 8 != 0); the "
                            "reference interpreter runs this cast")
    if src is dtype:
        return x
    if src in _DECODED:  # exact in f32: every f8 value is an f32 value
        x = cx.emit(_decode_f8(cx, x, src))
        src = DType.f32
        if dtype is DType.f32:
            return x
    if dtype in _F8:
        if src not in (DType.f32, DType.f64):  # f16/bf16/ints: exact (or numpy's) via f32
            x = cx.emit(relax.op.astype(x, "float32"))
        return cx.emit_te(lambda t: _encode_f8(t, dtype), x, primfunc_name_hint=f"cast_{dtype.value}")
    if dtype is DType.f8e8m0:
        raise LoweringError("cast to f8e8m0 (exponent-only, rounding mode) has no TVM lowering")
    if dtype is DType.bool:
        # numpy: nonzero -> True; an LLVM truncation to i1 would keep only the low bit.
        return relax.op.not_equal(x, cx.const(0, src))
    return relax.op.astype(x, tvm_dtype(dtype))


def _decode_f8(cx: LowerContext, x, src: DType):
    table = np.arange(256, dtype=np.uint8).view(src.to_numpy()).astype(np.float32)
    return cx.emit_te(
        lambda t, lut: te.compute(
            t.shape, lambda *i: lut[tirx.reinterpret("uint8", t(*i)).astype("int32")],
            name="f8_decode"),
        x, relax.const(table), primfunc_name_hint=f"cast_{src.value}_f32")


def _encode_f8(x: te.Tensor, dst: DType) -> te.Tensor:
    """Round `x` (f32 or f64) to the nearest `dst` value, ties to even, as ml_dtypes does."""
    e_bits, m_bits, bias, largest, rule = _F8[dst]
    fdt = x.dtype
    idt, frac, ebias = ("uint64", 52, 1023) if fdt == "float64" else ("uint32", 23, 127)
    width = 64 if fdt == "float64" else 32

    def u(v):
        return tirx.const(v, idt)

    def one(*i):
        v = x(*i)
        bits = tirx.reinterpret(idt, v)
        sign = (bits >> u(width - 1)).astype("int32")
        mag = tirx.abs(v)
        exp = ((bits >> u(frac)) & u(2 * ebias + 1)).astype("int32") - ebias
        exp = tirx.max(exp, 1 - bias)  # below the smallest normal: the subnormal quantum
        quantum = tirx.reinterpret(fdt, ((exp - m_bits + ebias).astype(idt) << u(frac)))
        steps = tirx.nearbyint(mag / quantum)  # exact: a power-of-two scaling
        over = tirx.any(steps * quantum > tirx.const(largest, fdt), tirx.isinf(v))
        # code = exponent field << m + mantissa, with the carry of a rounded-up mantissa
        code = ((exp + (bias - 1)) << m_bits) + tirx.Select(over, tirx.const(0, fdt),
                                                             steps).astype("int32")
        top = (1 << (e_bits + m_bits)) - 1
        nan = tirx.const(128 if rule == "fnuz" else top, "int32")
        inf = tirx.const(((1 << e_bits) - 1) << m_bits, "int32")
        code = tirx.Select(over, inf if rule == "ieee" else nan, code)
        signed = code | (sign << 7)
        if rule == "fnuz":  # no negative zero, one NaN (0x80)
            signed = tirx.Select(tirx.any(code == 0, over), code, signed)
        code = tirx.Select(tirx.isnan(v), nan, signed)
        return tirx.reinterpret(tvm_dtype(dst), code.astype("uint8"))

    return te.compute(x.shape, one, name="f8_encode")
