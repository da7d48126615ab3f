"""Op family: embedding lookup and scaled dot-product attention.

Split from nn.py (one concept per module): the dense/conv/norm family lives there.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import InputError, ShapeError
from ..types import DType, broadcast_shapes
from .nn import _floats, _rand
from .registry import define_op

# ---- lookup and attention ---------------------------------------------------------------------

embedding = define_op("embedding", inputs=("weight", "indices"),
                      doc="Row lookup weight[indices]; result shape indices.shape + [D].")


@embedding.infer
def _(weight, indices):
    if weight.rank != 2:
        raise ShapeError(f"weight must be [V, D], got {weight}")
    if indices.dtype not in (DType.i64, DType.i32):
        raise ShapeError(f"indices must be i64 or i32, got {indices}")
    return weight.with_shape(indices.shape + (weight.shape[1],))


@embedding.reference
def _(weight, indices):
    v = weight.shape[0]
    if indices.size and (indices.min() < 0 or indices.max() >= v):
        bad = indices[(indices < 0) | (indices >= v)].flat[0]
        raise InputError(f"embedding: index {bad} is out of range for a table of {v} rows")
    return weight[indices]


@embedding.examples
def _(rng):
    yield [_rand(rng, 10, 4), rng.integers(0, 10, (2, 5))], {}
    yield [_rand(rng, 7, 3), rng.integers(0, 7, (6,)).astype(np.int32)], {}


sdpa = define_op("scaled_dot_product_attention", inputs=("q", "k", "v", "mask?"),
                 attrs={"is_causal": (bool, False), "scale": (float, None)}, tolerance=1e-4,
                 doc="softmax(q @ k^T * scale + mask) @ v; bool mask keeps True entries.")


@sdpa.infer
def _(q, k, v, mask, is_causal, scale):
    _floats(q=q, k=k, v=v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.rank < 2:
            raise ShapeError(f"{name} must have rank >= 2 ([..., seq, dim]), got {t}")
    (lq, e), (s, ek), (sv, ev) = q.shape[-2:], k.shape[-2:], v.shape[-2:]
    if e != ek:
        raise ShapeError(f"q has E={e} but k has E={ek}")
    if s != sv:
        raise ShapeError(f"k has S={s} keys but v has S={sv}")
    batch = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if mask is not None:
        if is_causal:
            raise ShapeError("give either a mask or is_causal=True, not both (as torch)")
        if mask.dtype is not DType.bool and mask.dtype != q.dtype:
            raise ShapeError(f"mask must be bool or {q.dtype}, got {mask}")
        scores = batch + (lq, s)
        try:
            fits = broadcast_shapes(mask.shape, scores) == scores
        except ShapeError:
            fits = False
        if not fits:
            raise ShapeError(f"mask {mask} does not broadcast to the attention scores "
                             f"[{','.join(map(str, scores))}] ([..., L, S])")
    return q.with_shape(batch + (lq, ev))


@sdpa.reference
def _(q, k, v, mask, is_causal, scale):
    q64, k64, v64 = (t.astype(np.float64) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q64 @ np.swapaxes(k64, -1, -2)) * scale
    if is_causal:
        mask = np.tril(np.ones(scores.shape[-2:], dtype=bool))
    if mask is not None and mask.dtype == np.bool_:
        scores = np.where(mask, scores, -np.inf)
    elif mask is not None:
        scores = scores + mask.astype(np.float64)
    top = scores.max(axis=-1, keepdims=True)
    dead = np.isneginf(top)  # rows with every key masked give 0, like torch's safe softmax
    p = np.exp(scores - np.where(dead, 0.0, top))
    p = p / np.where(dead, 1.0, p.sum(axis=-1, keepdims=True))
    return (p @ v64).astype(q.dtype)


@sdpa.examples
def _(rng):
    yield [_rand(rng, 2, 3, 4, 8), _rand(rng, 2, 3, 5, 8), _rand(rng, 2, 3, 5, 6)], {}
    yield [_rand(rng, 2, 4, 8), _rand(rng, 2, 4, 8), _rand(rng, 2, 4, 8)], {"is_causal": True}
    yield [_rand(rng, 3, 6, 4), _rand(rng, 3, 5, 4), _rand(rng, 3, 5, 4)], {"is_causal": True,
                                                                          "scale": 0.3}
    keep = rng.random((4, 5)) > 0.3
    keep[2] = False
    yield [_rand(rng, 2, 1, 4, 8), _rand(rng, 1, 3, 5, 8), _rand(rng, 3, 5, 2), keep], {}
    yield [_rand(rng, 2, 4, 8), _rand(rng, 2, 5, 8), _rand(rng, 2, 5, 8), _rand(rng, 2, 1, 5)], {}
