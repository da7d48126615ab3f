"""ONNX neural-network ops: MatMul/Gemm, Conv, pooling, normalizations, softmax.

ember's conv/pool ops are 2-D with symmetric padding (torch's convention). 1-D ONNX ops run
through them with a unit height; asymmetric or SAME pads become an explicit `pad` op in front
(-inf for max pooling), which is exactly ONNX's definition.
"""

from __future__ import annotations

import math

import numpy as np

from ...ir import Value
from .context import Context, converts
from .convert_pool import general_pool


@converts("MatMul")
def _(cx: Context, node, inputs, attrs):
    return cx.add("matmul", *inputs)


@converts("Gemm")
def _(cx: Context, node, inputs, attrs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    n = b.shape[0] if trans_b else b.shape[1]
    if (trans_b and not trans_a and alpha == 1.0 and beta == 1.0 and a.dtype.is_float
            and (c is None or c.shape == (n,))):
        return cx.add("linear", a, b, *([c] if c is not None else []))
    if trans_a:
        a = cx.add("permute", a, dims=(1, 0))
    if trans_b:
        b = cx.add("permute", b, dims=(1, 0))
    y = cx.add("matmul", a, b)
    if alpha != 1.0:
        y = cx.add("mul", y, cx.scalar(alpha, y))
    if c is not None:
        if beta != 1.0:
            c = cx.add("mul", c, cx.scalar(beta, c))
        y = cx.add("add", y, c)
    return y


# ---- convolution and pooling ------------------------------------------------------------------
def _window(cx: Context, x: Value, attrs: dict, kernel: list[int], what: str):
    """(x as rank 4, strides, dilations, symmetric pads, was_1d) with ONNX pads resolved."""
    spatial = x.type.rank - 2
    if spatial not in (1, 2):
        raise cx.fail(f"{spatial}-D {what} (ember has 1-D and 2-D only)")
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    sizes = x.shape[2:]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * 2 * spatial
        for i in range(spatial):
            if not isinstance(sizes[i], int):
                raise cx.fail(f"auto_pad={auto} on a symbolic spatial dim")
            out = -(-sizes[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - sizes[i])
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[i], pads[i + spatial] = lo, total - lo
    elif auto == "VALID":
        pads = [0] * 2 * spatial
    elif auto != "NOTSET":
        raise cx.fail(f"auto_pad={auto!r}")
    if spatial == 1:
        x = cx.add("unsqueeze", x, dim=2)
        strides, dilations, kernel = [1] + strides, [1] + dilations, [1] + list(kernel)
        pads = [0, pads[0], 0, pads[1]]
    return x, strides, dilations, pads, kernel, spatial == 1


def _split_pads(cx: Context, x: Value, pads: list[int], value: float):
    """Symmetric (h, w) padding for the op, plus an explicit pad op for any asymmetric rest."""
    (hb, wb, he, we) = pads
    if hb == he and wb == we:
        return x, (hb, wb)
    return cx.add("pad", x, pads=(wb, we, hb, he), value=value), (0, 0)


@converts("Conv")
def _(cx: Context, node, inputs, attrs):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    x, strides, dilations, pads, _, one_d = _window(cx, x, attrs, kernel, "Conv")
    if one_d:
        w = cx.add("unsqueeze", w, dim=2)
    x, padding = _split_pads(cx, x, pads, 0.0)
    y = cx.add("conv2d", x, w, *([bias] if bias is not None else []), stride=tuple(strides),
               padding=padding, dilation=tuple(dilations), groups=int(attrs.get("group", 1)))
    return cx.add("squeeze", y, dims=(2,)) if one_d else y


def _fits_torch_pool(x: Value, attrs: dict, is_max: bool, indices: bool) -> bool:
    """Can ember's 2-D pooling op express this node (else the general N-d path)?"""
    spatial = x.type.rank - 2
    if spatial not in (1, 2) or indices or (is_max and not x.dtype.is_float):
        return False
    kernel = list(attrs["kernel_shape"])
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    if any(2 * max(pads[i], pads[i + spatial]) > kernel[i] for i in range(spatial)):
        return False
    if is_max:
        return True
    symmetric = pads[:spatial] == pads[spatial:]
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    return (all(d == 1 for d in attrs.get("dilations", [1] * spatial))
            and auto in ("NOTSET", "VALID") and (symmetric or attrs.get("count_include_pad", 0))
            and not (attrs.get("ceil_mode", 0) and not symmetric))


def _pool(kind: str):
    def convert(cx: Context, node, inputs, attrs):
        x = inputs[0]
        indices = len(node.output) > 1 and bool(node.output[1])
        is_max = kind == "max_pool2d"
        if not _fits_torch_pool(x, attrs, is_max, indices):
            return general_pool(cx, node, x, attrs, is_max, indices)
        kernel = list(attrs["kernel_shape"])
        x, strides, dilations, pads, kernel, one_d = _window(cx, x, attrs, kernel, node.op_type)
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "max_pool2d":
            if attrs.get("storage_order", 0):
                pass  # only affects the Indices output
            x, padding = _split_pads(cx, x, pads, -math.inf)
            y = cx.add(kind, x, kernel_size=tuple(kernel), stride=tuple(strides),
                       padding=padding, dilation=tuple(dilations), ceil_mode=ceil)
        else:
            if any(d != 1 for d in dilations):
                raise cx.fail("dilated AveragePool")
            include = bool(attrs.get("count_include_pad", 0))
            if not include and (pads[0] != pads[2] or pads[1] != pads[3]):
                raise cx.fail("asymmetric pads with count_include_pad=0")
            x, padding = _split_pads(cx, x, pads, 0.0)
            if any(2 * p > k for p, k in zip(padding, kernel)):
                raise cx.fail(f"pads {pads} larger than half the kernel {kernel}")
            y = cx.add(kind, x, kernel_size=tuple(kernel), stride=tuple(strides),
                       padding=padding, ceil_mode=ceil, count_include_pad=include)
        return cx.add("squeeze", y, dims=(2,)) if one_d else y
    return convert


converts("MaxPool")(_pool("max_pool2d"))
converts("AveragePool")(_pool("avg_pool2d"))


@converts("GlobalAveragePool", "GlobalMaxPool")
def _(cx: Context, node, inputs, attrs):
    x = inputs[0]
    kind = "mean" if node.op_type == "GlobalAveragePool" else "amax"
    return cx.add(kind, x, dims=tuple(range(2, x.type.rank)), keepdim=True)


# ---- normalization ----------------------------------------------------------------------------
@converts("BatchNormalization")
def _(cx: Context, node, inputs, attrs):
    if attrs.get("training_mode", 0):
        raise cx.fail("training_mode=1 (batch statistics); ember imports inference graphs")
    x, scale, bias, mean, var = inputs[:5]
    return cx.add("batch_norm", x, mean, var, scale, bias, eps=float(attrs.get("epsilon", 1e-5)))


@converts("LayerNormalization")
def _(cx: Context, node, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    rank = x.type.rank
    axis = attrs.get("axis", -1) % rank
    eps = float(attrs.get("epsilon", 1e-5))
    inner = x.shape[axis:]
    extra = [o for o in node.output[1:] if o]
    fits = scale.shape == inner and (bias is None or bias.shape == inner)
    if fits and not extra:
        return cx.add("layer_norm", x, scale, *([bias] if bias is not None else []),
                      normalized_ndim=rank - axis, eps=eps)
    dims = tuple(range(axis, rank))
    mu = cx.add("mean", x, dims=dims, keepdim=True)
    centered = cx.add("sub", x, mu)
    var = cx.add("mean", cx.add("mul", centered, centered), dims=dims, keepdim=True)
    inv = cx.add("rsqrt", cx.add("add", var, cx.scalar(eps, var)))
    y = cx.add("mul", cx.add("mul", centered, inv), scale)
    if bias is not None:
        y = cx.add("add", y, bias)
    return y, mu, inv


@converts("InstanceNormalization")
def _(cx: Context, node, inputs, attrs):
    x, scale, bias = inputs
    rank, eps = x.type.rank, float(attrs.get("epsilon", 1e-5))
    dims = tuple(range(2, rank))
    mu = cx.add("mean", x, dims=dims, keepdim=True)
    centered = cx.add("sub", x, mu)
    var = cx.add("mean", cx.add("mul", centered, centered), dims=dims, keepdim=True)
    y = cx.add("mul", centered, cx.add("rsqrt", cx.add("add", var, cx.scalar(eps, var))))
    per_channel = (scale.shape[0],) + (1,) * (rank - 2)
    y = cx.add("mul", y, cx.add("reshape", scale, shape=per_channel))
    return cx.add("add", y, cx.add("reshape", bias, shape=per_channel))


def _softmax(kind: str):
    def convert(cx: Context, node, inputs, attrs):
        x = inputs[0]
        if cx.opset >= 13:
            return cx.add(kind, x, dim=int(attrs.get("axis", -1)))
        # opset < 13: softmax over the 2-D coercion [prod(dims[:axis]), prod(dims[axis:])]
        axis = attrs.get("axis", 1) % max(x.type.rank, 1)
        if axis == x.type.rank - 1:
            return cx.add(kind, x, dim=-1)
        lead = int(np.prod(x.shape[:axis])) if x.type.is_static else -1
        flat = cx.add("reshape", x, shape=(lead, -1))
        return cx.add("reshape", cx.add(kind, flat, dim=-1), shape=x.shape)
    return convert


converts("Softmax")(_softmax("softmax"))
converts("LogSoftmax")(_softmax("log_softmax"))
