"""The `quantize` pass: calibrate, rewrite each linear/conv with the chosen scheme, report.

    quantize{scheme=int8,observer=minmax,calib=128,skip=fc3}
    quantize{scheme=int4_weight,group_size=32}  quantize{scheme=binary_residual,bits=2}
    quantize{scheme=mixed,max_accuracy_drop=0.005}   (see mixed.py)

Layers no scheme kernel covers (e.g. conv2d under a weight-only scheme) stay float, and the
report says so per layer: a layer is never rewritten into something without a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ...errors import PassError
from ...ir.graph import Graph, Value
from ..pipeline import Pass, PassContext, register_pass
from .binary import binary_bases, emit_binary
from .calibrate import collect
from .int4 import int4_weight
from .int8 import Layer, find_layers, int8_dynamic, int8_static
from .observers import make_observer
from .partial import partial_binary
from .report import LayerRow, evaluate_value, render, sqnr_db, value_weight_bytes
from .residual import residual_bases
from .ternary import ternary_bases

Scheme = Literal["int8", "int8_dynamic", "int4_weight", "ternary", "binary", "binary_residual",
                 "partial_binary", "mixed"]

KERNELS = {
    "int8": "int8 GEMM (vpmaddwd on AVX2, int32 accumulate)",
    "int8_dynamic": "int8 GEMM, activations quantized per row at run time",
    "int4_weight": "fp32 GEMM, int4 unpack fused into its weight packing",
    "ternary": "fp32 GEMM, 2 sign planes unpacked in its weight packing",
    "binary": "fp32 GEMM, sign bits unpacked in its weight packing",
    "binary_sign": "XNOR-popcount GEMM (binary activations)",
    "binary_residual": "fp32 GEMM, k sign planes unpacked in its weight packing",
    "partial_binary": "fp32 GEMM (binary) + salient int8 gather",
}


@dataclass
class Choice:
    scheme: str
    value: Value | None  # the rewritten output (None: left float)


def apply_scheme(graph: Graph, layer: Layer, scheme: str, opts, act_params) -> Value | None:
    """Build the quantized replacement of `layer` before it; None when it must stay float."""
    w = layer.weight
    if scheme == "int8":
        return int8_static(graph, layer, *act_params)
    if scheme == "int8_dynamic":
        return int8_dynamic(graph, layer)
    if scheme == "int4_weight":
        return int4_weight(graph, layer, opts.group_size)
    if layer.kind != "linear":
        return None
    if scheme == "binary":
        return emit_binary(graph, layer, *binary_bases(w, 1), act=opts.act)
    if scheme == "ternary":
        return emit_binary(graph, layer, *ternary_bases(w), act=opts.act, tag="tern")
    if scheme == "binary_residual":
        return emit_binary(graph, layer, *residual_bases(w, opts.bits), act=opts.act,
                           tag=f"bin{opts.bits}")
    if scheme == "partial_binary":
        return partial_binary(graph, layer, opts.salient)
    raise PassError(f"unknown quantization scheme {scheme!r}")


def weight_bits(scheme: str, opts) -> float:
    return {"int8": 8, "int8_dynamic": 8, "int4_weight": 4, "binary": 1, "ternary": 2,
            "binary_residual": opts.bits, "partial_binary": 1 + 8 * opts.salient}.get(scheme, 32)


@register_pass("quantize")
@dataclass(frozen=True)
class Quantize(Pass):
    """Quantize linear/conv layers (int8 static/dynamic, int4, ternary, binary, residual,
    partial binary, or a sensitivity-guided mix) with per-layer SQNR in the report."""

    scheme: Scheme = "int8"
    observer: Literal["minmax", "percentile", "mse"] = "minmax"
    calib: int = 128
    group_size: int = 32
    bits: int = 2
    salient: float = 0.05
    act: Literal["float", "sign"] = "float"
    skip: tuple[str, ...] = ()
    max_accuracy_drop: float | None = None
    target_bytes: int | None = None
    show_progress: bool = True
    tolerance: ClassVar[float | None] = float("inf")  # lossy; the report states SQNR per layer
    requires: ClassVar[tuple[str, ...]] = ("calibration",)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        layers, skipped = find_layers(graph, self.skip)
        if not layers:
            ctx.note(layers=[], skipped=skipped, message="no constant-weight linear/conv layers")
            return graph
        batches = collect(graph, [L.x for L in layers], ctx.calibration or [], self.calib,
                          ctx.progress, show=self.show_progress)
        acts = [np.concatenate([b[i] for b in batches], axis=0) for i in range(len(layers))]
        act_params = []
        for i in range(len(layers)):
            obs = make_observer(self.observer)
            for b in batches:
                obs.observe(b[i])
            act_params.append(obs.params())
        if self.scheme == "mixed":
            from .mixed import plan_mixed

            plan = plan_mixed(graph, layers, acts, act_params, self, ctx)
        else:
            plan = [self.scheme] * len(layers)
        rows = [self._rewrite(graph, L, s, a, p) for L, s, a, p in
                zip(layers, plan, acts, act_params)]
        rows += [LayerRow(n, "float (skip)", 32, 0, 0, None, "kept float by skip=")
                 for n in skipped]
        total_f = sum(r.float_bytes for r in rows if r.float_bytes)
        total_q = sum(r.weight_bytes for r in rows if r.float_bytes)
        ctx.note(scheme=self.scheme, layers=[r.as_dict() for r in rows],
                 quantized_weight_bytes=total_q, float_weight_bytes=total_f,
                 weight_ratio=round(total_q / total_f, 4) if total_f else None,
                 table=render(rows))
        graph.meta.setdefault("quantization", []).append([r.as_dict() for r in rows])
        return graph

    def _rewrite(self, graph: Graph, layer: Layer, scheme: str, x: np.ndarray,
                 params) -> LayerRow:
        fbytes = int(layer.weight.nbytes)
        if scheme == "float":
            return LayerRow(layer.name, "float", 32, fbytes, fbytes, None,
                            "kept float by the mixed-precision plan")
        new = apply_scheme(graph, layer, scheme, self, params)
        if new is None:
            return LayerRow(layer.name, "float", 32, fbytes, fbytes, None,
                            f"no {scheme} kernel for {layer.kind}: kept float")
        ref = evaluate_value(layer.op.results[0], {id(layer.x): x})
        got = evaluate_value(new, {id(layer.x): x})
        qbytes = value_weight_bytes(new, layer.x)
        if layer.bias is not None:
            qbytes -= int(layer.bias.nbytes)
        old_inputs = list(layer.op.inputs)
        graph.replace_op(layer.op, [new])
        from ..rewrite import erase_dead

        for v in old_inputs:  # the float weight is dead now (the bias is shared)
            if v.producer is not None:
                erase_dead(graph, v.producer)
        kernel = KERNELS["binary_sign"] if self.act == "sign" and "bin" in scheme \
            else KERNELS.get(scheme, scheme)
        return LayerRow(layer.name, scheme, 8 * qbytes / layer.weight.size, qbytes, fbytes,
                        sqnr_db(ref, got), kernel)
