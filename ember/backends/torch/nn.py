"""Torch implementations: nn ops (differentiable, used for cross-checks and for training)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import torch_op


@torch_op("linear")
def _(x, weight, bias):
    return F.linear(x, weight, bias)


@torch_op("matmul")
def _(a, b):
    return torch.matmul(a, b)


@torch_op("conv2d")
def _(x, weight, bias, stride, padding, dilation, groups):
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


@torch_op("max_pool2d")
def _(x, kernel_size, stride, padding, dilation, ceil_mode):
    return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)


@torch_op("avg_pool2d")
def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad)


@torch_op("adaptive_avg_pool2d")
def _(x, output_size):
    return F.adaptive_avg_pool2d(x, output_size)


@torch_op("batch_norm")
def _(x, mean, var, weight, bias, eps):
    # Written out rather than F.batch_norm, which refuses gradients for the running stats: in a
    # GraphModule every float const (mean and var included) may be a trainable parameter.
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    out = (x - mean.reshape(shape)) * scale.reshape(shape)
    return out if bias is None else out + bias.reshape(shape)


@torch_op("layer_norm")
def _(x, weight, bias, normalized_ndim, eps):
    return F.layer_norm(x, tuple(x.shape[x.dim() - normalized_ndim:]), weight, bias, eps)


@torch_op("softmax")
def _(x, dim):
    return torch.softmax(x, dim)


@torch_op("log_softmax")
def _(x, dim):
    return torch.log_softmax(x, dim)


@torch_op("embedding")
def _(weight, indices):
    return F.embedding(indices, weight)


@torch_op("scaled_dot_product_attention")
def _(q, k, v, mask, is_causal, scale):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                          scale=scale)
