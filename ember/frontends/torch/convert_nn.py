"""Converters for nn ops: linear/matmul, convolution, normalization, pooling, attention."""

from __future__ import annotations

from .context import Unsupported
from .importer import GraphImporter
from .table import converts


def _pair(v, what: str) -> tuple[int, int]:
    v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    if len(v) == 1:
        v = v * 2
    if len(v) != 2:
        raise Unsupported(f"{what}={list(v)}: only 2-d pooling/convolution is supported")
    return (int(v[0]), int(v[1]))


@converts("aten.linear.default")
def _linear(cx: GraphImporter, x, weight, bias=None):
    return cx.emit("linear", x, weight, *([bias] if bias is not None else []))


@converts("aten.addmm.default")
def _addmm(cx: GraphImporter, bias, a, b, beta=1, alpha=1):
    y = cx.emit("matmul", a, b)
    if alpha != 1:
        y = cx.emit("mul", y, cx.scalar(alpha, y.dtype))
    if beta == 0:
        return y
    if beta != 1:
        bias = cx.emit("mul", bias, cx.scalar(beta, bias.dtype))
    return cx.emit("add", y, bias)


@converts("aten.conv2d.default")
def _conv2d(cx: GraphImporter, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        raise Unsupported(f"conv2d padding={padding!r} (give explicit padding)")
    return _emit_conv(cx, x, weight, bias, stride, padding, dilation, groups)


@converts("aten.convolution.default")
def _convolution(cx: GraphImporter, x, weight, bias, stride, padding, dilation, transposed,
                 output_padding, groups):
    if transposed:
        raise Unsupported("transposed convolution")
    if weight.type.rank != 4:
        raise Unsupported(f"{weight.type.rank - 2}-d convolution (only conv2d is supported)")
    return _emit_conv(cx, x, weight, bias, stride, padding, dilation, groups)


def _emit_conv(cx, x, weight, bias, stride, padding, dilation, groups):
    if x.type.rank != 4:
        raise Unsupported(f"convolution of a rank-{x.type.rank} input (only NCHW conv2d)")
    return cx.emit("conv2d", x, weight, *([bias] if bias is not None else []),
                   stride=_pair(stride, "stride"), padding=_pair(padding, "padding"),
                   dilation=_pair(dilation, "dilation"), groups=int(groups))


@converts("aten.batch_norm.default")
def _batch_norm(cx: GraphImporter, x, weight, bias, running_mean, running_var, training,
                momentum, eps, cudnn_enabled=True):
    if training or running_mean is None:
        raise Unsupported("batch_norm in training mode (ember traces inference graphs)")
    return _emit_bn(cx, x, weight, bias, running_mean, running_var, eps)


@converts("aten._native_batch_norm_legit_no_training.default")
def _bn_no_training(cx: GraphImporter, x, weight, bias, running_mean, running_var, momentum, eps):
    return _emit_bn(cx, x, weight, bias, running_mean, running_var, eps), None, None


def _emit_bn(cx, x, weight, bias, mean, var, eps):
    extra = [weight] if weight is not None else []
    if bias is not None:
        if weight is None:
            raise Unsupported("batch_norm with a bias but no weight")
        extra.append(bias)
    return cx.emit("batch_norm", x, mean, var, *extra, eps=float(eps))


@converts("aten.layer_norm.default")
def _layer_norm(cx: GraphImporter, x, normalized_shape, weight=None, bias=None, eps=1e-5,
                cudnn_enable=True):
    return _emit_ln(cx, x, normalized_shape, weight, bias, eps)


@converts("aten.native_layer_norm.default")
def _native_layer_norm(cx: GraphImporter, x, normalized_shape, weight, bias, eps):
    return _emit_ln(cx, x, normalized_shape, weight, bias, eps), None, None


def _emit_ln(cx, x, normalized_shape, weight, bias, eps):
    extra = [weight] if weight is not None else []
    if bias is not None:
        if weight is None:
            raise Unsupported("layer_norm with a bias but no weight")
        extra.append(bias)
    return cx.emit("layer_norm", x, *extra, normalized_ndim=len(normalized_shape), eps=float(eps))


@converts("aten.max_pool2d.default")
def _max_pool2d(cx: GraphImporter, x, kernel_size, stride=(), padding=0, dilation=1,
                ceil_mode=False):
    kernel = _pair(kernel_size, "kernel_size")
    return cx.emit("max_pool2d", x, kernel_size=kernel,
                   stride=_pair(stride, "stride") if stride else kernel,
                   padding=_pair(padding, "padding"), dilation=_pair(dilation, "dilation"),
                   ceil_mode=bool(ceil_mode))


@converts("aten.max_pool2d_with_indices.default")
def _max_pool2d_with_indices(cx: GraphImporter, x, kernel_size, stride=(), padding=0, dilation=1,
                             ceil_mode=False):
    return _max_pool2d(cx, x, kernel_size, stride, padding, dilation, ceil_mode), None


@converts("aten.avg_pool2d.default")
def _avg_pool2d(cx: GraphImporter, x, kernel_size, stride=(), padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
    if divisor_override is not None:
        raise Unsupported(f"avg_pool2d divisor_override={divisor_override}")
    kernel = _pair(kernel_size, "kernel_size")
    return cx.emit("avg_pool2d", x, kernel_size=kernel,
                   stride=_pair(stride, "stride") if stride else kernel,
                   padding=_pair(padding, "padding"), ceil_mode=bool(ceil_mode),
                   count_include_pad=bool(count_include_pad))


@converts("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default")
def _adaptive_avg_pool2d(cx: GraphImporter, x, output_size):
    size = tuple(output_size)
    if any(s is None for s in size):
        size = tuple(x.shape[-2 + i] if s is None else s for i, s in enumerate(size))
    return cx.emit("adaptive_avg_pool2d", x, output_size=_pair(size, "output_size"))


@converts("aten.scaled_dot_product_attention.default")
def _sdpa(cx: GraphImporter, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    if dropout_p:
        raise Unsupported(f"scaled_dot_product_attention with dropout_p={dropout_p} (trace in "
                          "eval mode with dropout disabled)")
    if enable_gqa:
        raise Unsupported("scaled_dot_product_attention with enable_gqa=True")
    mask = [attn_mask] if attn_mask is not None else []
    return cx.emit("scaled_dot_product_attention", q, k, v, *mask, is_causal=bool(is_causal),
                   scale=None if scale is None else float(scale))
