"""Torch implementations: quant ops (the same integer arithmetic as the numpy references).

Integer sums run in int64 (exact) and are turned into f32 once, so results match the references
bit for bit before the final scale. uint32 words are widened to int64 before bit tricks (torch's
uint32 supports few ops). These are reference-speed implementations for checks and training
graphs, not fast kernels (those are the TVM ones).
"""

from __future__ import annotations

import torch

from . import torch_op

_QRANGE = {"i8": (-128, 127), "u8": (0, 255)}
_TORCH_Q = {"i8": torch.int8, "u8": torch.uint8}


def _bshape(t: torch.Tensor, rank: int, axis) -> torch.Tensor:
    if axis is None:
        return t
    shape = [1] * rank
    shape[axis % rank] = -1
    return t.reshape(shape)


@torch_op("quant.quantize")
def _(x, scale, zero_point, axis, dtype):
    lo, hi = _QRANGE[str(dtype)]
    s = _bshape(scale.float(), x.dim(), axis)
    z = _bshape(zero_point.float(), x.dim(), axis)
    return torch.clamp(torch.round(x.float() / s) + z, lo, hi).to(_TORCH_Q[str(dtype)])


@torch_op("quant.dequantize")
def _(q, scale, zero_point, axis):
    s = _bshape(scale.float(), q.dim(), axis)
    z = _bshape(zero_point.to(torch.int32), q.dim(), axis)
    return (q.to(torch.int32) - z).float() * s


def _out_scale(x_scale, w_scale):
    return x_scale.float() * w_scale.float()


def _activate(y: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.relu(y) if activation == "relu" else y


@torch_op("quant.linear_int8")
def _(xq, wq, x_scale, x_zp, w_scale, bias, activation):
    acc = torch.matmul(xq.to(torch.int64) - x_zp.to(torch.int64), wq.to(torch.int64).T)
    out = acc.float() * _out_scale(x_scale, w_scale)
    return _activate(out + bias.float() if bias is not None else out, activation)


@torch_op("quant.linear_int8_dynamic")
def _(x, wq, w_scale, bias):
    amax = x.abs().amax(dim=-1, keepdim=True)
    s = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    xq = torch.clamp(torch.round(x / s), -127, 127).to(torch.int64)
    out = torch.matmul(xq, wq.to(torch.int64).T).float() * s * w_scale.float()
    return out + bias if bias is not None else out


@torch_op("quant.conv2d_int8")
def _(xq, wq, x_scale, x_zp, w_scale, bias, stride, padding, dilation, activation):
    xs = xq.to(torch.float64) - x_zp.to(torch.float64)  # exact integers in float64
    acc = torch.nn.functional.conv2d(xs, wq.to(torch.float64), None, stride, padding, dilation)
    out = torch.round(acc).float() * _out_scale(x_scale, w_scale)[:, None, None]
    return _activate(out + bias.float()[:, None, None] if bias is not None else out, activation)


def _unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    p = packed.to(torch.int32)
    q = torch.stack([(p & 15) - 8, (p >> 4) - 8], dim=-1).reshape(packed.shape[0], -1)
    return q[:, :k]


@torch_op("quant.linear_int4")
def _(x, packed, scales, bias, k, group_size):
    w = _unpack_int4(packed, k).float() * scales.repeat_interleave(group_size, dim=1)[:, :k]
    out = torch.matmul(x, w.T)
    return out + bias if bias is not None else out


def _signs(packed: torch.Tensor, k: int) -> torch.Tensor:
    """[..., W] uint32 words -> [..., k] float +-1."""
    p = packed.to(torch.int64)
    bits = (p.unsqueeze(-1) >> torch.arange(32, dtype=torch.int64)) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :k].float() * 2 - 1


def _pack(x: torch.Tensor) -> torch.Tensor:
    k = x.shape[-1]
    words = (k + 31) // 32
    bits = (x >= 0).to(torch.int64)
    bits = torch.nn.functional.pad(bits, (0, words * 32 - k)).reshape(*x.shape[:-1], words, 32)
    packed = (bits << torch.arange(32, dtype=torch.int64)).sum(-1)
    return packed.to(torch.uint32)


@torch_op("quant.pack_bits")
def _(x):
    return _pack(x)


@torch_op("quant.binary_matmul")
def _(a, b, k):
    sa = _signs(a, k).to(torch.int64)
    sb = _signs(b, k).to(torch.int64)
    return torch.matmul(sa, sb.T).to(torch.int32)


def _binary_weight(bits, scale, k):
    return (_signs(bits, k) * scale.float()[:, :, None]).sum(0)


@torch_op("quant.linear_binary")
def _(x, bits, scale, bias, k, act):
    if act == "sign":
        alpha = x.abs().mean(dim=-1, keepdim=True)
        xs = torch.where(x >= 0, 1.0, -1.0).to(torch.float64)
        dots = sum(torch.matmul(xs, _signs(bits[b], k).to(torch.float64).T).float()
                   * scale[b].float() for b in range(bits.shape[0]))
        out = dots * alpha
    else:
        out = torch.matmul(x, _binary_weight(bits, scale, k).T)
    return out + bias if bias is not None else out


@torch_op("quant.linear_partial_binary")
def _(x, bits, scale, cols, vals, val_scale, bias, k):
    out = torch.matmul(x, _binary_weight(bits, scale, k).T)
    sal = (x[..., cols.long()] * (vals.float() * val_scale[:, None])).sum(-1)
    out = out + sal
    return out + bias if bias is not None else out
