"""ONNX backend: `export(graph, path)` writes an ember graph as an ONNX model (opset 20).

    from ember.backends.onnx import export
    model = export(graph, "model.onnx")        # also returns the onnx.ModelProto

`EXPORTERS` maps each ember kind to its export function (`ops_math`, `ops_nn`, `ops_shape`,
`ops_control`); `UNSUPPORTED` gives the reason for kinds without one. A graph using any of those
fails with one UnsupportedOpError listing every such kind. Quantized kinds (quant.*) are not
mapped yet: they are added to this table as QuantizeLinear/DequantizeLinear pairs once the
quantization ops exist in ember/ir/ops/quant.py.
"""

from __future__ import annotations

from . import ops_control, ops_math, ops_nn, ops_quant, ops_shape  # noqa: F401  (fill tables)
from .exporter import EXPORTERS, OPSET, UNSUPPORTED, check_exportable, export, to_model

__all__ = ["EXPORTERS", "OPSET", "UNSUPPORTED", "check_exportable", "export", "to_model"]
