"""Converter coverage: small modules through ember.trace, run by the reference interpreter and
compared with torch eager (also at a second batch size when the batch dim is dynamic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ember
from ember.frontends.torch import ATEN_TO_EMBER
from ember.ir.ops import has_schema


class Fn(nn.Module):
    """Wrap a function of tensors as a module (its forward takes x[, y])."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for k, m in modules.items():
            setattr(self, k, m)

    def forward(self, x, y=None):
        return self.fn(self, x) if y is None else self.fn(self, x, y)


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)))


CASES = {
    "scalar_arith": (lambda m, x: (x + 1) * 2.5 - 3 / (x.abs() + 1) + (2 - x), (_x(4, 5),)),
    "int_float_promotion": (lambda m, x: x.long() + 0.5, (_x(4, 3) * 4,)),
    "alpha_add_sub": (lambda m, x, y: torch.add(x, y, alpha=2) - torch.sub(x, y, alpha=0.5),
                      (_x(4, 3), _x(4, 3))),
    "div_modes": (lambda m, x: torch.div(x, 0.7, rounding_mode="floor")
                  + torch.div(x, 0.7, rounding_mode="trunc"), (_x(4, 6) * 3,)),
    "int_floor_div": (lambda m, x: (x * 5).long() // 3, (_x(4, 6),)),
    "compare_where": (lambda m, x: torch.where(x > 0.1, x, -x) + (x <= 0).float(), (_x(4, 5),)),
    "masked_fill": (lambda m, x: x.masked_fill(x < 0, -1.0), (_x(4, 5),)),
    "logical": (lambda m, x: ((x > 0) & (x < 1) | ~(x > -1)).float(), (_x(4, 5),)),
    "unary": (lambda m, x: torch.sigmoid(x) + torch.tanh(x) + torch.exp(-x.abs()) + x.abs().sqrt()
              + torch.rsqrt(x.abs() + 1) + torch.log(x.abs() + 1) + torch.sin(x) * torch.cos(x)
              + torch.erf(x) + x.floor() + x.ceil() + torch.reciprocal(x.abs() + 1), (_x(3, 4),)),
    "activations": (lambda m, x: F.gelu(x, approximate="tanh") + F.gelu(x) + F.silu(x)
                    + F.hardswish(x) + F.hardsigmoid(x) + F.leaky_relu(x, 0.2) + F.relu6(x)
                    + F.elu(x) + F.softplus(x) + x.clamp(-0.5, 0.5) + F.hardtanh(x)
                    + x.clamp(min=0.1), (_x(3, 8) * 3,)),
    "pow_remainder": (lambda m, x: x ** 2 + torch.remainder(x, 0.7) + x.abs() ** 0.5, (_x(4, 4),)),
    "reductions": (lambda m, x: x.mean(-1, keepdim=True) + x.sum((0, 2)).sum()
                   + x.amax(1).unsqueeze(1) - x.amin(1, keepdim=True) + x.var(-1, keepdim=True)
                   + x.max(dim=1).values.unsqueeze(1) + x.mean(), (_x(2, 3, 4),)),
    "argmax": (lambda m, x: x.argmax(-1) + x.argmin(0).sum() + x.argmax(), (_x(3, 5),)),
    "softmax": (lambda m, x: x.softmax(-1) + F.log_softmax(x, dim=1), (_x(2, 5, 3),)),
    "views": (lambda m, x: x.reshape(2, -1).t().flatten().reshape(3, 2, 2).permute(2, 0, 1)
              .transpose(0, 2).unsqueeze(0).squeeze(0).contiguous(), (_x(3, 4),)),
    "slices": (lambda m, x: torch.cat([x[:, 1:3], x[:, ::2], x[:, -1:], x[:, :1].expand(-1, 1)
                                       .repeat(1, 1)[..., :1].expand(3, 1)], dim=1)
               + x[0, 0], (_x(3, 5),)),
    "split_chunk_unbind_stack": (lambda m, x: torch.stack([a.sum(-1) for a in x.split([1, 3], 1)]
                                                          + list(x.chunk(2, 1)[0].unbind(1)),
                                                          dim=1), (_x(4, 4),)),
    "expand_cat_batched": (lambda m, x: torch.cat([m.tok.expand(x.shape[0], -1), x], 1),
                           (_x(4, 3),)),
    "factories": (lambda m, x: x + torch.zeros(4, 3) + torch.ones(3) * 2 + torch.full((1, 3), 0.5)
                  + torch.arange(3).float() + torch.arange(1, 7, 2) + torch.zeros_like(x)
                  + torch.ones_like(x) + torch.tensor([1.0, 2.0, 3.0]), (_x(4, 3),)),
    "casts": (lambda m, x: x.to(torch.float64).sum(-1).float() + x.int().float().sum(-1)
              + x.type_as(x).sum(-1), (_x(4, 3) * 3,)),
    "pad": (lambda m, x: F.pad(x, (1, 2, 0, 1), value=0.5), (_x(2, 3, 4),)),
    "matmuls": (lambda m, x, y: x @ y + torch.bmm(x, y) + torch.addmm(m.b, x[0], y[0], beta=0.5,
                                                                      alpha=2.0),
                (_x(2, 3, 4), _x(2, 4, 3))),
    "mm_t": (lambda m, x: torch.mm(x, m.w.t()) + x @ m.w.T, (_x(5, 3),)),
    "sdpa_mask_causal": (lambda m, x: F.scaled_dot_product_attention(x, x, x, is_causal=True)
                         + F.scaled_dot_product_attention(x, x, x, attn_mask=(x[..., :1] > 0)
                                                          .transpose(-1, -2).expand(-1, -1, 5, -1)),
                         (_x(2, 2, 5, 4),)),
    "embedding": (lambda m, x: m.emb(x).sum(1), (torch.tensor([[1, 2, 3], [4, 0, 9]]),)),
    "conv_pool": (lambda m, x: F.adaptive_avg_pool2d(
        F.max_pool2d(m.conv(x), 3, 2, padding=1) + F.avg_pool2d(m.conv(x), 3, 2, padding=1,
                                                                 count_include_pad=False),
        (2, 1)), (_x(2, 4, 9, 9),)),
    "norms": (lambda m, x: m.ln(x) + m.bn(x.transpose(1, 2)).transpose(1, 2)
              + F.layer_norm(x, (3, 4), eps=1e-3), (_x(2, 3, 4),)),
    "dropout_eval": (lambda m, x: m.drop(x) + F.dropout(x, 0.5, training=False), (_x(3, 4),)),
    "linear_batched_dims": (lambda m, x: m.fc(x), (_x(2, 3, 3),)),
    "folded_mask": (lambda m, x: F.scaled_dot_product_attention(
        x, x, x, attn_mask=torch.triu(torch.full((5, 5), float("-inf")), 1))
        + torch.flip(torch.arange(4.0), [0]), (_x(2, 5, 4),)),
    "index_tensor": (lambda m, x: x[:, torch.tensor([2, 0, 2])] + x[torch.tensor([[1], [0]])]
                     .sum(1, keepdim=True)[:, :, :3], (_x(2, 4),)),
    "clamp_tensor": (lambda m, x: torch.clamp(x, min=-x.abs().mean(), max=m.hi), (_x(3, 4),)),
    "raw_aten": (lambda m, x: torch.ops.aten._native_batch_norm_legit_no_training(
        x, m.w, m.w, m.rm, m.rv, 0.1, 1e-5)[0]
        + torch.ops.aten.native_layer_norm(x, [5], m.w2, None, 1e-5)[0]
        + torch.ops.aten._softmax(x, -1, False)
        + torch.convolution(x, m.k, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
        + F.max_pool2d(x, 3, 1, 1, return_indices=True)[0], (_x(2, 3, 4, 5),)),
}

MODULES = {
    "expand_cat_batched": {"tok": nn.Parameter(torch.randn(1, 2))},
    "matmuls": {"b": nn.Parameter(torch.randn(3))},
    "mm_t": {"w": nn.Parameter(torch.randn(2, 3))},
    "embedding": {"emb": nn.Embedding(10, 4)},
    "conv_pool": {"conv": nn.Conv2d(4, 6, 3, stride=1, padding=2, dilation=2, groups=2)},
    "norms": {"ln": nn.LayerNorm(4), "bn": nn.BatchNorm1d(4)},
    "dropout_eval": {"drop": nn.Dropout(0.3)},
    "linear_batched_dims": {"fc": nn.Linear(3, 5)},
    "clamp_tensor": {"hi": nn.Parameter(torch.tensor(0.3))},
    "raw_aten": {"w": nn.Parameter(torch.rand(3) + 0.5), "rm": torch.randn(3) * 0.1,
                 "rv": torch.rand(3) + 0.5, "w2": nn.Parameter(torch.randn(5)),
                 "k": nn.Parameter(torch.randn(3, 3, 3, 3) * 0.2)},
}


def _module(name: str) -> nn.Module:
    fn, _ = CASES[name]
    m = Fn(fn)
    for k, v in MODULES.get(name, {}).items():
        if isinstance(v, nn.Parameter):
            m.register_parameter(k, v)
        elif isinstance(v, torch.Tensor):
            m.register_buffer(k, v)
        else:
            m.add_module(k, v)
    if name == "norms":  # non-trivial running statistics
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    return m.eval()


def _check(g, module, inputs, tol=1e-4):
    g.verify()
    got = ember.interpret(g, *[x.numpy() for x in inputs])
    with torch.no_grad():
        want = module(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        b = b.numpy()
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), atol=tol, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_converter_matches_eager(name):
    module = _module(name)
    inputs = CASES[name][1]
    g = ember.trace(module, inputs)
    _check(g, module, inputs)


DYNAMIC = ["scalar_arith", "compare_where", "reductions", "softmax", "expand_cat_batched",
           "factories_like", "norms", "linear_batched_dims", "slices_dynamic", "conv_pool",
           "head_rows", "index_tensor", "folded_mask"]
DYN_CASES = {
    "factories_like": (lambda m, x: x + torch.zeros_like(x) + torch.ones(x.shape[0], 1)
                       + torch.full((x.shape[0], 3), 2.0), (_x(4, 3),)),
    "slices_dynamic": (lambda m, x: torch.cat([x[:, 1:], x[:, :1]], 1).reshape(-1) * 2, (_x(4, 3),)),
    "head_rows": (lambda m, x: x[:2].sum(0) + x[1:3:1].mean(0) + x, (_x(4, 3),)),
}


@pytest.mark.parametrize("name", DYNAMIC)
def test_dynamic_batch(name):
    if name in DYN_CASES:
        CASES.setdefault(name, DYN_CASES[name])
    module = _module(name)
    inputs = CASES[name][1]
    g = ember.trace(module, inputs, {0: {0: "batch"}})
    assert g.inputs[0].type.shape[0] == "batch"
    bigger = tuple(torch.cat([x, x[:3] * 0.5]) for x in inputs)
    _check(g, module, bigger)


def test_symbolic_product_dims():
    module = Fn(lambda m, x: x.reshape(-1) * 2)
    g = ember.trace(module, (_x(4, 3),), {"x": {0: "n"}})
    assert str(g.outputs[0].type) == "f32[3*n]"
    _check(g, module, (_x(6, 3),))


def test_table_kinds_are_registered():
    missing = {aten: kind for aten, kind in ATEN_TO_EMBER.items() if not has_schema(kind)}
    assert not missing
