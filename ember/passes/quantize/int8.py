"""int8 schemes: static (per-channel weights, per-tensor calibrated activations) and dynamic.

Also the layer finder every scheme shares: a quantizable layer is a `linear` (or, for int8, a
groups=1 `conv2d`) whose weight and bias are constants. The rewrite keeps the float input:
    xq = quant.quantize(x, x_scale, x_zp)      # i8, affine (zero point from calibration)
    y  = quant.linear_int8(xq, wq, x_scale, x_zp, w_scale, bias)
so the integers and scales are ordinary consts in the IR (printed, saved, checked).

Weight range: 8-bit ([-127, 127], const `<layer>.weight.q8`) or 7-bit ([-64, 64], scale x2,
const `<layer>.weight.q7`). 7 bits is what the AVX2 int8 kernel without VNNI needs to use
u8 x s8 `vpmaddubsw` (twice the multiply rate of the int16 kernel; its int16 pair sums
saturate for |w| > 64); oneDNN makes the same choice on such CPUs. The pass picks it from
the target (`int8_weights=auto`, see cost.int8_weight_bits); the ops are unchanged (wq is still
i8), the lowering sees the weights fit and picks the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Op, Value
from ...ir.types import DType

__all__ = ["Layer", "find_layers", "int8_dynamic", "int8_static", "quantize_weight_int8"]


@dataclass
class Layer:
    op: Op
    kind: str  # "linear" or "conv2d"
    name: str
    weight: np.ndarray
    bias: np.ndarray | None

    @property
    def x(self) -> Value:
        return self.op.inputs[0]


def _const(v: Value | None) -> np.ndarray | None:
    if v is None or v.producer is None or v.producer.kind != "const":
        return None
    arr = v.producer.attrs.get("value")
    return arr if isinstance(arr, np.ndarray) else None


def _skipped(name: str, wname: str, skip: tuple[str, ...]) -> bool:
    for s in skip:
        for n in (name, wname):
            if n and (n == s or n.startswith(s + ".")):
                return True
    return False


def find_layers(graph: Graph, skip: tuple[str, ...] = ()) -> tuple[list[Layer], list[str]]:
    """(quantizable layers in order, names of layers left float by `skip`)."""
    layers, skipped = [], []
    for op in graph.ops:
        if op.kind not in ("linear", "conv2d"):
            continue
        w = _const(op.inputs[1])
        b = _const(op.inputs[2]) if len(op.inputs) > 2 else None
        if w is None or (len(op.inputs) > 2 and b is None) or w.dtype != np.float32:
            continue
        if op.kind == "conv2d" and op.attrs.get("groups", 1) != 1:
            continue
        wname = op.inputs[1].producer.attrs.get("name", "")  # type: ignore[union-attr]
        name = op.loc or wname.rsplit(".", 1)[0] or f"{op.kind}{len(layers)}"
        if _skipped(name, wname, skip):
            skipped.append(name)
            continue
        layers.append(Layer(op, op.kind, name, w, b))
    return layers, skipped


_F16_MIN_NORMAL = float(np.finfo(np.float16).tiny)


def quantize_weight_int8(w: np.ndarray, scale_dtype: str = "f32",
                         bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: (wq i8 same shape, scale [O] f32 or f16); `bits=7`
    limits wq to [-64, 64] (scale amax / 64).

    f16 scales halve the scale bytes (they matter on narrow layers: 32 f32 scales are 12% of
    a 32x32 int8 weight). The f16 scale is rounded up, never down, so |w| / scale stays
    <= qmax and nothing clips; the weights are quantized against that exact stored value. A
    layer whose scales would be subnormal or overflow in f16 keeps f32 scales."""
    qmax = {8: 127, 7: 64}[bits]
    flat = w.reshape(w.shape[0], -1)
    amax = np.abs(flat).max(axis=1)
    scale = np.where(amax > 0, amax / float(qmax), 1.0).astype(np.float32)
    if scale_dtype == "f16" and scale.min() >= _F16_MIN_NORMAL and scale.max() < 6e4:
        s16 = scale.astype(np.float16)
        low = s16.astype(np.float32) < scale
        s16[low] = np.nextafter(s16[low], np.float16(np.inf))
        scale = s16
    q = np.clip(np.round(flat / scale.astype(np.float32)[:, None]), -qmax, qmax).astype(np.int8)
    return q.reshape(w.shape), scale


def _bias(graph: Graph, layer: Layer) -> list[Value]:
    return [layer.op.inputs[2]] if layer.bias is not None else []


def int8_static(graph: Graph, layer: Layer, x_scale, x_zp, scale_dtype: str = "f32",
                weight_bits: int = 8) -> Value:
    wq, ws = quantize_weight_int8(layer.weight, scale_dtype, weight_bits)
    op = layer.op
    with graph.at(before=op):
        s = graph.const(np.asarray(x_scale, np.float32), name=f"{layer.name}.x_scale")
        z = graph.const(np.asarray(x_zp, np.int32), name=f"{layer.name}.x_zp")
        xq = graph.add("quant.quantize", layer.x, s, z, dtype=DType.i8, loc=op.loc)
        wv = graph.const(wq, name=f"{layer.name}.weight.q{weight_bits}")
        wsv = graph.const(ws, name=f"{layer.name}.weight.scale")
        if layer.kind == "linear":
            return graph.add("quant.linear_int8", xq, wv, s, z, wsv, *_bias(graph, layer),
                             loc=op.loc)
        return graph.add("quant.conv2d_int8", xq, wv, s, z, wsv, *_bias(graph, layer),
                         stride=op.attrs["stride"], padding=op.attrs["padding"],
                         dilation=op.attrs["dilation"], loc=op.loc)


def int8_dynamic(graph: Graph, layer: Layer, scale_dtype: str = "f32",
                 weight_bits: int = 8) -> Value | None:
    if layer.kind != "linear":
        return None  # no dynamic conv kernel: the layer stays float
    wq, ws = quantize_weight_int8(layer.weight, scale_dtype, weight_bits)
    with graph.at(before=layer.op):
        wv = graph.const(wq, name=f"{layer.name}.weight.q{weight_bits}")
        wsv = graph.const(ws, name=f"{layer.name}.weight.scale")
        return graph.add("quant.linear_int8_dynamic", layer.x, wv, wsv, *_bias(graph, layer),
                         loc=layer.op.loc)


def fuse_relu(graph: Graph, v: Value) -> Value:
    """Absorb a lone `relu` reading an int8 layer into its kernel epilogue (activation=relu).

    Why: the int8 kernel is an opaque call that Relax cannot fuse an elementwise op into, so
    an unfused relu costs a kernel launch and a pass over the output on every layer."""
    op = v.producer
    if op is None or op.kind not in ("quant.linear_int8", "quant.conv2d_int8") or \
            len(v.uses) != 1 or any(o is v for o in graph.outputs):
        return v
    user = v.uses[0].op
    if user.kind != "relu" or user.block is not graph:
        return v
    with graph.at(before=user):
        new = graph.add(op.kind, *op.inputs, loc=op.loc, **{**op.attrs, "activation": "relu"})
    graph.replace_all_uses(user.results[0], new)
    graph.erase(user)
    graph.erase(op)
    return new
