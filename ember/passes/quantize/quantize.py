"""The `quantize` pass: calibrate, rewrite each linear/conv with the chosen scheme, report.

    quantize{scheme=int8,observer=minmax,calib=128,skip=fc3}
    quantize{scheme=int4_weight,group_size=32}  quantize{scheme=binary_residual,bits=2}
    quantize{scheme=mixed,max_accuracy_drop=0.005}   (see mixed.py)

Layers no scheme kernel covers (e.g. conv2d under a weight-only scheme) stay float, and the
report says so per layer: a layer is never rewritten into something without a kernel.

A model must never get slower when quantized: each layer's quantized replacement is timed
against the float layer on this host at batch `batch` (cost.py: compiled micro-benchmarks,
cached per shape), and a layer whose replacement is not faster stays float, with both times in
the report. `force=true` quantizes anyway (for size); `keep_slower=true` only skips the check.
The mixed-precision plan targets a size/accuracy budget, so it is not overridden for speed.
A relu that reads an int8 layer is fused into its kernel (`activation=relu`).
int8 weights are 7-bit ([-64, 64]) where the target's int8 kernel needs it (AVX2 without VNNI:
u8 x s8 vpmaddubsw); `int8_weights=int8|int7` overrides; the report and notes say which.
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
from .cost import Speed, has_oracle, int8_weight_bits, measure_layer, with_batch
from .int4 import int4_weight
from .int8 import Layer, find_layers, fuse_relu, int8_dynamic, int8_static
from .observers import make_observer
from .partial import partial_binary
from .report import LayerRow, evaluate_value, render, sqnr_db, value_weight_bytes
from .residual import residual_bases
from .ternary import ternary_bases

Scheme = Literal["int8", "int8_dynamic", "int4_weight", "ternary", "binary", "binary_residual",
                 "partial_binary", "mixed"]

KERNELS = {
    "int8": "int8 GEMM, quantize (+im2col) fused in (vpdpbusd with VNNI, vpmaddwd on AVX2)",
    "int8_w7": "int8 GEMM, 7-bit weights [-64, 64] (u8 x s8 vpmaddubsw on AVX2 without VNNI), "
               "quantize (+im2col) fused in",
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
        return int8_static(graph, layer, *act_params, scale_dtype=opts.scale_dtype,
                           weight_bits=weight_bits_int8(opts))
    if scheme == "int8_dynamic":
        return int8_dynamic(graph, layer, scale_dtype=opts.scale_dtype,
                            weight_bits=weight_bits_int8(opts))
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


def weight_bits_int8(opts) -> int:
    """The int8 schemes' weight range: int8_weights=int7|int8, or auto (the target's kernel)."""
    choice = getattr(opts, "int8_weights", "auto")
    return {"int7": 7, "int8": 8}.get(choice) or int8_weight_bits()


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
    force: bool = False  # quantize every layer even where it is slower (size over speed)
    keep_slower: bool = False  # skip the speed check (keep quantized layers that are slower)
    batch: int = 64  # batch the speed check times each layer at
    scale_dtype: Literal["f16", "f32"] = "f16"  # int8 per-channel weight scales
    # int8 weight range: int7 = [-64, 64] for the AVX2 u8 x s8 kernel; auto = what the target's
    # int8 kernel wants (7 on AVX2 without VNNI, else 8; cost.int8_weight_bits)
    int8_weights: Literal["auto", "int7", "int8"] = "auto"
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
        check = not (self.force or self.keep_slower or self.scheme == "mixed")
        unchecked_reason = None
        if check and not has_oracle():
            check = False  # no backend timer installed: say so instead of guessing
            unchecked_reason = ("no kernel timer installed, so layer speed was not checked; "
                                "ember.compile installs one; from Python: ember.passes.quantize."
                                "cost.install_oracle(ember.backends.tvm.layer_timer."
                                "TvmLayerTimer())")
        rows = [self._rewrite(graph, L, s, a, p, check) for L, s, a, p in
                zip(layers, plan, acts, act_params)]
        rows += [LayerRow(n, "float (skip)", 32, 0, 0, None, "kept float by skip=")
                 for n in skipped]
        total_f = sum(r.float_bytes for r in rows if r.float_bytes)
        total_q = sum(r.weight_bytes for r in rows if r.float_bytes)
        w8 = weight_bits_int8(self) if any(s in ("int8", "int8_dynamic") for s in plan) else None
        ctx.note(scheme=self.scheme, layers=[r.as_dict() for r in rows], int8_weight_bits=w8,
                 quantized_weight_bytes=total_q, float_weight_bytes=total_f,
                 weight_ratio=round(total_q / total_f, 4) if total_f else None,
                 speed_checked=check, speed_unchecked_reason=unchecked_reason,
                 kept_float_slower=[r.layer for r in rows
                                                         if r.scheme == "float (slower)"],
                 table=render(rows))
        graph.meta.setdefault("quantization", []).append([r.as_dict() for r in rows])
        return graph

    def _rewrite(self, graph: Graph, layer: Layer, scheme: str, x: np.ndarray,
                 params, check: bool) -> LayerRow:
        fbytes = int(layer.weight.nbytes)
        if scheme == "float":
            return LayerRow(layer.name, "float", 32, fbytes, fbytes, None,
                            "kept float by the mixed-precision plan")
        relu = _relu_follows(graph, layer)
        new = apply_scheme(graph, layer, scheme, self, params)
        if new is None:
            return LayerRow(layer.name, "float", 32, fbytes, fbytes, None,
                            f"no {scheme} kernel for {layer.kind}: kept float")
        from ..rewrite import erase_dead

        speed = self._speed(layer, scheme, params, relu) if check else None
        if speed is not None and not speed.faster:
            erase_dead(graph, new.producer)  # type: ignore[arg-type]
            return LayerRow(layer.name, "float (slower)", 32, fbytes, fbytes, None,
                            f"{scheme} not faster here: {speed.describe(self.batch)}; kept "
                            "float (force=true quantizes anyway)")
        ref = evaluate_value(layer.op.results[0], {id(layer.x): x})
        got = evaluate_value(new, {id(layer.x): x})
        qbytes = value_weight_bytes(new, layer.x)
        if layer.bias is not None:
            qbytes -= int(layer.bias.nbytes)
        old_inputs = list(layer.op.inputs)
        graph.replace_op(layer.op, [new])
        for v in old_inputs:  # the float weight is dead now (the bias is shared)
            if v.producer is not None:
                erase_dead(graph, v.producer)
        fuse_relu(graph, new)
        kernel = KERNELS["binary_sign"] if self.act == "sign" and "bin" in scheme \
            else KERNELS.get(scheme, scheme)
        if scheme == "int8" and weight_bits_int8(self) == 7:
            kernel = KERNELS["int8_w7"]
        if speed is not None:
            kernel += f"; {speed.describe(self.batch)}"
        return LayerRow(layer.name, scheme, 8 * qbytes / layer.weight.size, qbytes, fbytes,
                        sqnr_db(ref, got), kernel)

    def _speed(self, layer: Layer, scheme: str, params, relu: bool) -> Speed | None:
        """Time the float layer against its `scheme` replacement (None: cannot measure)."""
        fg = _layer_graph(layer, self.batch, relu)
        qg = _layer_graph(layer, self.batch, relu)
        (ql,), _ = find_layers(qg)
        new = apply_scheme(qg, ql, scheme, self, params)
        if new is None:
            return None
        from ..rewrite import erase_dead

        qg.replace_op(ql.op, [new])
        for v in list(ql.op.inputs):
            if v.producer is not None:
                erase_dead(qg, v.producer)
        fuse_relu(qg, new)
        key = {"scheme": scheme, "kind": layer.kind, "x": str(fg.inputs[0].type),
               "w": list(layer.weight.shape), "bias": layer.bias is not None, "relu": relu,
               "attrs": {k: v for k, v in layer.op.attrs.items() if k != "value"},
               "opts": [self.group_size, self.bits, self.salient, self.act, self.scale_dtype,
                        weight_bits_int8(self)]}
        return measure_layer(key, fg, qg)


def _relu_follows(graph: Graph, layer: Layer) -> bool:
    r = layer.op.results[0]
    return len(r.uses) == 1 and r.uses[0].op.kind == "relu" and \
        not any(o is r for o in graph.outputs)


def _layer_graph(layer: Layer, batch: int, relu: bool) -> Graph:
    """A one-layer graph (input at batch `batch`, the layer's consts, + relu) to time."""
    g = Graph(f"speed_{layer.kind}")
    x = g.add_input("x", with_batch(layer.x.type, batch))
    ins = [x, g.const(layer.weight, name=f"{layer.name}.weight")]
    if layer.bias is not None:
        ins.append(g.const(layer.bias, name=f"{layer.name}.bias"))
    y = g.add(layer.kind, *ins, loc=layer.op.loc, **layer.op.attrs)
    g.set_outputs(g.add("relu", y) if relu else y)
    return g
