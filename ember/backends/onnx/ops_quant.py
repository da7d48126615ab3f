"""ONNX export of quant.* kinds: not mapped yet.

The plan is QuantizeLinear/DequantizeLinear (per-channel scales on axis 0 for weights) around
integer MatMulInteger/ConvInteger, or DQ -> float op -> Q where ONNX has no integer op. The
quant ops landed while this backend was written; until the mapping exists each kind has a
reason here, and exporting a graph that uses one raises an UnsupportedOpError naming it.
"""

from __future__ import annotations

from .exporter import UNSUPPORTED

_REASON = ("ONNX QDQ export (QuantizeLinear/DequantizeLinear around integer ops) is not "
           "written yet for {kind}; export the float graph (before the quantize pass)")
for _kind in ("quant.quantize", "quant.dequantize", "quant.linear_int8",
              "quant.linear_int8_dynamic", "quant.conv2d_int8", "quant.linear_int4",
              "quant.linear_binary", "quant.linear_partial_binary", "quant.binary_matmul",
              "quant.pack_bits"):
    UNSUPPORTED[_kind] = _REASON.format(kind=_kind)
