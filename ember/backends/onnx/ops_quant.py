"""ONNX export of quant.* kinds as QDQ: QuantizeLinear / DequantizeLinear around float ops.

The QDQ form is what ONNX Runtime's quantization tooling writes and what its graph optimizer
fuses back into integer kernels (QLinearMatMul / QLinearConv / MatMulInteger), so it is the
portable way to hand an int8 graph to another runtime:

    quant.quantize(x, s, zp)          -> QuantizeLinear(x, s, zp as i8/u8, axis)
    quant.dequantize(q, s, zp)        -> DequantizeLinear(q, s, zp as q's type, axis)
    quant.linear_int8(xq, wq, ...)    -> DequantizeLinear(xq) , DequantizeLinear(wq, w_scale
                                         per channel, axis=0) -> Gemm(transB=1) (or MatMul+Add)
    quant.conv2d_int8(xq, wq, ...)    -> DequantizeLinear x2 -> Conv

The dequantized operands are exact multiples of the scales, so the float op computes the same
int32 sum times x_scale * w_scale[n] as ember's kernels, up to float rounding of the sum.
Weight-only int4, binary/ternary and per-row dynamic int8 have no ONNX operator with the same
arithmetic; they keep a reason in UNSUPPORTED.
"""

from __future__ import annotations

import numpy as np

from ...ir import DType, Value
from .exporter import UNSUPPORTED, Emitter, exports

_NP = {DType.i8: np.int8, DType.u8: np.uint8, DType.i32: np.int32}


def _known(v: Value | None) -> np.ndarray | None:
    if v is None or v.producer is None or v.producer.kind != "const":
        return None
    return np.asarray(v.producer.attrs["value"])


def _zero_point(em: Emitter, zp: Value, name: str, dtype: DType) -> str:
    """An ember i32 zero point as the ONNX zero point of the quantized type `dtype`."""
    known = _known(zp)
    if known is not None:
        return em.const(known.astype(_NP[dtype]), "zero_point")
    from .exporter import onnx_type

    return em.node("Cast", [name], to=onnx_type(dtype))


def _f32_scale(em: Emitter, v: Value, name: str) -> str:
    """Scales may be stored as f16 (smaller weights); ONNX's DequantizeLinear outputs the
    scale's type, and the float op after it is f32, so widen them (exactly)."""
    if v.dtype == DType.f32:
        return name
    known = _known(v)
    if known is not None:
        return em.const(known.astype(np.float32), "scale")
    from .exporter import onnx_type

    return em.node("Cast", [name], to=onnx_type(DType.f32))


def _axis(op) -> int | None:
    axis = op.attrs.get("axis")
    return None if axis is None else int(axis)


@exports("quant.quantize")
def _(em: Emitter, op, names):
    x, scale, zp = op.inputs
    dtype = op.results[0].dtype
    return em.node("QuantizeLinear", [names[0], _f32_scale(em, scale, names[1]), _zero_point(em, zp, names[2], dtype)],
                   axis=_axis(op))


@exports("quant.dequantize")
def _(em: Emitter, op, names):
    q, scale, zp = op.inputs
    return em.node("DequantizeLinear",
                   [names[0], _f32_scale(em, scale, names[1]),
                    _zero_point(em, zp, names[2], q.dtype)], axis=_axis(op))


def _dequant_operands(em: Emitter, op, names) -> tuple[str, str]:
    """(x, w) as f32 ONNX values: x per tensor, w per output channel (axis 0, zero point 0)."""
    xq, wq = op.inputs[0], op.inputs[1]
    x = em.node("DequantizeLinear", [names[0], _f32_scale(em, op.inputs[2], names[2]),
                                     _zero_point(em, op.inputs[3], names[3], xq.dtype)])
    w_zp = em.const(np.zeros(wq.shape[0], dtype=np.int8), "w_zero_point")
    w = em.node("DequantizeLinear", [names[1], _f32_scale(em, op.inputs[4], names[4]), w_zp],
                axis=0)
    return x, w


@exports("quant.linear_int8")
def _(em: Emitter, op, names):
    x, w = _dequant_operands(em, op, names)
    bias = names[5] if len(names) > 5 and names[5] else None
    if op.inputs[0].type.rank == 2:
        return em.node("Gemm", [x, w] + ([bias] if bias else []), transB=1)
    y = em.node("MatMul", [x, em.node("Transpose", [w], perm=[1, 0])])
    return em.node("Add", [y, bias]) if bias else y


@exports("quant.conv2d_int8")
def _(em: Emitter, op, names):
    x, w = _dequant_operands(em, op, names)
    a = op.attrs
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    bias = names[5] if len(names) > 5 and names[5] else None
    return em.node("Conv", [x, w] + ([bias] if bias else []), strides=[sh, sw],
                   pads=[ph, pw, ph, pw], dilations=[dh, dw])


_NO_ONNX_OP = {
    "quant.linear_int8_dynamic": "per-row dynamic int8 (symmetric, one scale per row) has no "
                                 "ONNX operator (DynamicQuantizeLinear is per-tensor uint8)",
    "quant.linear_int4": "weight-only int4 with group scales: ONNX's int4 DequantizeLinear with "
                         "block_size is not emitted yet; export before the int4 quantize pass",
    "quant.linear_binary": "binary/ternary packed sign weights have no ONNX operator",
    "quant.linear_partial_binary": "partially binary weights have no ONNX operator",
    "quant.binary_matmul": "XNOR-popcount products have no ONNX operator",
    "quant.pack_bits": "bit packing has no ONNX operator",
    "sparse.linear_nm": "N:M structured-sparse weights have no ONNX operator (ONNX tensors are "
                        "dense)",
}
for _kind, _why in _NO_ONNX_OP.items():
    UNSUPPORTED[_kind] = _why + "; export the float graph instead"
