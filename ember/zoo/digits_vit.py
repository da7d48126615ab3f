"""`digits_vit`: a tiny vision transformer, written op by op.

Everything is spelled out so `torch.export` yields the primitive ops a compiler sees in real
transformers: patchify by reshape/permute (not unfold), a class token joined with `torch.cat`,
pre-norm blocks with separate q/k/v/out projections (targets for QKV fusion and head pruning) and
`F.scaled_dot_product_attention` (kept as one op). `nn.MultiheadAttention` and
`nn.TransformerEncoderLayer` are avoided because they trace into fused native ops instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ember.zoo.base import ZooModel, classifier_zoo_model
from ember.zoo.data import images_nchw

NAME = "digits_vit"
INPUT_NAMES = ("x",)
DYNAMIC_DIMS = {"x": {0: "batch"}}
TRAIN_CONFIG = {"epochs": 100, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05, "shift": True}

PATCH = 2
GRID = 8 // PATCH  # 4x4 = 16 patches of 4 pixels


class Attention(nn.Module):
    """Multi-head self-attention with separate projections (names match HF-style models)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, dim = x.shape[1], x.shape[2]

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, n, self.heads, self.head_dim).transpose(1, 2)

        q = split_heads(self.q_proj(x))
        k = split_heads(self.k_proj(x))
        v = split_heads(self.v_proj(x))
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(o.transpose(1, 2).reshape(-1, n, dim))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class DigitsViT(nn.Module):
    """x f32[batch, 1, 8, 8] in [0, 1] -> logits f32[batch, 10]."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4, mlp_hidden: int = 64) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(PATCH * PATCH, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, GRID * GRID + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[b, 1, 8, 8] -> [b, 16, 4]: row-major 2x2 patches, each flattened row-major."""
        x = x.reshape(-1, 1, GRID, PATCH, GRID, PATCH)  # b, c, gy, py, gx, px
        x = x.permute(0, 2, 4, 1, 3, 5)  # b, gy, gx, c, py, px
        return x.reshape(-1, GRID * GRID, PATCH * PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(self.patchify(x))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)[:, 0])


def build() -> DigitsViT:
    return DigitsViT()


preprocess = images_nchw  # flat [n, 64] pixels -> [n, 1, 8, 8]


def load() -> ZooModel:
    return classifier_zoo_model(
        name=NAME,
        module=build(),
        preprocess=preprocess,
        input_names=INPUT_NAMES,
        dynamic_dims=DYNAMIC_DIMS,
    )
