"""Canonicalization: algebraic identities, shape-op chains and batch-norm folding, as rules.

Every rule keeps result types exactly: `x + 0` goes only when broadcasting does not change the
type (`f32[4] + zeros[3,4]` is a broadcast, not an identity). Batch-norm folding changes
rounding, hence the pass's tolerance (1e-5, relative to the output scale); everything else is
exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...errors import ShapeError
from ...ir.graph import Graph, Value
from ..pipeline import Pass, PassContext, register_pass
from ..rewrite import Builder, P, Rules, rewrite

# Reinterpretations whose result equals the input whenever the type is unchanged.
_SAME_TYPE_IS_IDENTITY = ("reshape", "flatten", "squeeze", "expand", "tile", "cast")
_RESHAPE_LIKE = ("reshape", "flatten", "squeeze", "unsqueeze")
_PERMUTES = ("permute", "transpose")


@register_pass("canonicalize")
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Remove identities (x+0, x*1, x-0, x/1, no-op reshapes/permutes/casts), merge permute and
    reshape chains, fold inference batch norms into the conv2d/linear before them (or into a
    mul+add)."""

    batch_norm: bool = True  # fold batch norms (the only non-exact rewrite here)
    max_rounds: int = 64
    tolerance: ClassVar[float | None] = 1e-5

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        rules = IDENTITY_RULES + SHAPE_RULES + (BATCH_NORM_RULES if self.batch_norm else Rules())
        ctx.record_rewrites(rewrite(graph, rules, max_rounds=self.max_rounds))
        return graph


def _same_type(x: Value, out: Value) -> Value | None:
    return x if x.type == out.type else None


def _identity(b: Builder, x: Value, out: Value) -> Value | None:
    return _same_type(x, out)


IDENTITY_RULES = Rules([
    (P("add", P.any("x"), P.const(0), name="out"), _identity, "add_zero"),
    (P("sub", P.any("x"), P.const(0), name="out"), _identity, "sub_zero"),
    (P("mul", P.any("x"), P.const(1), name="out"), _identity, "mul_one"),
    (P("div", P.any("x"), P.const(1), name="out"), _identity, "div_one"),
    (P(_SAME_TYPE_IS_IDENTITY, P.any("x"), name="out"), _identity, "same_type_noop"),
])


def permutation(v: Value) -> tuple[int, ...]:
    """The `dims` a permute/transpose result applies to its input (axes normalized)."""
    op = v.producer
    assert op is not None
    rank = op.inputs[0].type.rank
    if op.kind == "permute":
        return tuple(d % rank for d in op.attrs["dims"])
    dims = list(range(rank))
    a, c = op.attrs["dim0"] % rank, op.attrs["dim1"] % rank
    dims[a], dims[c] = dims[c], dims[a]
    return tuple(dims)


def _identity_permute(b: Builder, x: Value, out: Value) -> Value | None:
    return x if permutation(out) == tuple(range(x.type.rank)) else None


def _compose_permutes(b: Builder, x: Value, inner: Value, out: Value) -> Value | None:
    p1, p2 = permutation(inner), permutation(out)
    dims = tuple(p1[j] for j in p2)
    if dims == tuple(range(len(dims))):
        return x
    return b.add("permute", x, dims=dims)


def _permute_of_unit_dims(b: Builder, x: Value, out: Value) -> Value | None:
    """A permute that moves only size-1 dims keeps the data order: it is a reshape, which costs
    no copy (a [1, T, d] -> [T, 1, d] permute around a scan was a full pass over memory)."""
    perm = permutation(out)
    moved = [d for d in perm if x.type.shape[d] != 1]
    if perm == tuple(range(len(perm))) or moved != sorted(moved):
        return None
    shape = tuple(d if isinstance(d, int) else -1 for d in out.type.shape)
    if shape.count(-1) > 1:
        return None  # two symbolic dims: a reshape could not say which is which
    try:
        new = b.add("reshape", x, shape=shape)
    except ShapeError:
        return None
    return new if new.type == out.type else None


def _compose_reshapes(b: Builder, x: Value, out: Value) -> Value | None:
    """Any chain of reshape-like ops is one reshape (or nothing) of the chain's input."""
    if x.type == out.type:
        return x
    op = out.producer
    assert op is not None
    shape = op.attrs["shape"] if op.kind == "reshape" else out.type.shape
    try:
        new = b.add("reshape", x, shape=tuple(shape))
    except ShapeError:
        return None
    return new if new.type == out.type else None  # symbolic dims may not resolve alike


SHAPE_RULES = Rules([
    (P(_PERMUTES, P.any("x"), name="out"), _identity_permute, "identity_permute"),
    (P(_PERMUTES, P(_PERMUTES, P.any("x"), name="inner"), name="out"), _compose_permutes,
     "compose_permutes"),
    (P(_PERMUTES, P.any("x"), name="out"), _permute_of_unit_dims, "unit_dim_permute"),
    (P(_RESHAPE_LIKE, P(_RESHAPE_LIKE, P.any("x")), name="out"), _compose_reshapes,
     "compose_reshapes"),
])


def _const_array(v: Value | None) -> np.ndarray | None:
    if v is None or v.producer is None or v.producer.kind != "const":
        return None
    arr = v.producer.attrs.get("value")
    return arr if isinstance(arr, np.ndarray) else None


def _bn_affine(bn_inputs: tuple[Value, ...], eps: float, channels: int
               ) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """(scale, shift, name prefix) with y = x * scale + shift, in float64; None if not const."""
    arrays = [_const_array(v) for v in bn_inputs[1:]]
    if any(a is None for a in arrays):
        return None
    mean, var = (a.astype(np.float64) for a in arrays[:2])  # type: ignore[union-attr]
    gamma = arrays[2].astype(np.float64) if len(arrays) > 2 else np.ones(channels)  # type: ignore[union-attr]
    beta = arrays[3].astype(np.float64) if len(arrays) > 3 else np.zeros(channels)  # type: ignore[union-attr]
    if any(a.shape != (channels,) for a in (mean, var, gamma, beta)):
        return None
    scale = gamma / np.sqrt(var + eps)
    names = [v.producer.attrs.get("name") for v in bn_inputs[1:]]  # type: ignore[union-attr]
    prefix = next((n.rsplit(".", 1)[0] for n in names if n), None)
    return scale, beta - mean * scale, prefix


def _fold_bn_into_producer(b: Builder, out: Value) -> Value | None:
    """conv2d/linear -> batch_norm becomes one conv2d/linear with scaled weights and bias."""
    bn = b.op
    y = bn.inputs[0]
    layer = y.producer
    if layer is None or layer.kind not in ("conv2d", "linear") or len(y.uses) != 1:
        return None
    if any(o is y for o in b.graph.outputs) or (layer.kind == "linear" and y.type.rank != 2):
        return None
    weight = _const_array(layer.inputs[1])
    bias_in = layer.inputs[2] if len(layer.inputs) > 2 else None
    if weight is None or not y.type.dtype.is_float:
        return None
    bias = np.zeros(weight.shape[0]) if bias_in is None else _const_array(bias_in)
    if bias is None:
        return None
    affine = _bn_affine(bn.inputs, bn.attrs["eps"], weight.shape[0])
    if affine is None:
        return None
    scale, shift, _ = affine
    w_name = layer.inputs[1].producer.attrs.get("name")  # type: ignore[union-attr]
    b_name = bias_in.producer.attrs.get("name") if bias_in is not None else (  # type: ignore[union-attr]
        w_name.rsplit(".", 1)[0] + ".bias" if w_name and "." in w_name else None)
    scaled = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    new_w = b.const(scaled.astype(weight.dtype), name=w_name)
    new_b = b.const((bias.astype(np.float64) * scale + shift).astype(weight.dtype), name=b_name)
    return b.graph.add(layer.kind, layer.inputs[0], new_w, new_b, loc=layer.loc, **layer.attrs)


def _batch_norm_to_affine(b: Builder, out: Value) -> Value | None:
    """A batch norm with const statistics is x * scale + shift, per channel (dim 1)."""
    x = b.op.inputs[0]
    if x.type.rank < 2 or not isinstance(x.type.shape[1], int) or not x.type.dtype.is_float:
        return None
    affine = _bn_affine(b.op.inputs, b.op.attrs["eps"], x.type.shape[1])
    if affine is None:
        return None
    scale, shift, prefix = affine
    shape = (-1,) + (1,) * (x.type.rank - 2)
    dtype = x.type.dtype.to_numpy()
    s = b.const(scale.reshape(shape).astype(dtype), name=prefix and prefix + ".scale")
    t = b.const(shift.reshape(shape).astype(dtype), name=prefix and prefix + ".shift")
    return _same_type(b.add("add", b.add("mul", x, s), t), out)


BATCH_NORM_RULES = Rules([
    (P("batch_norm", name="out"), _fold_bn_into_producer, "fold_bn_into_conv_linear"),
    (P("batch_norm", name="out"), _batch_norm_to_affine, "batch_norm_to_mul_add"),
])
