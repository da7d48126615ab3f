"""ONNX export of nn kinds: linear/matmul, conv and pooling, normalizations, softmax,
embedding and attention (spelled out: MatMul, Softmax, MatMul)."""

from __future__ import annotations

import math

import numpy as np

from .exporter import Emitter, exports
from .ops_math import scalar


@exports("linear")
def _(em: Emitter, op, names):
    x = op.inputs[0]
    if x.type.rank == 2:
        return em.node("Gemm", names, transB=1)
    y = em.node("MatMul", [names[0], em.node("Transpose", [names[1]], perm=[1, 0])])
    return em.node("Add", [y, names[2]]) if len(names) > 2 and names[2] else y


@exports("matmul")
def _(em: Emitter, op, names):
    return em.node("MatMul", names)


@exports("conv2d")
def _(em: Emitter, op, names):
    a = op.attrs
    ph, pw = a["padding"]
    return em.node("Conv", [n for n in names if n], strides=list(a["stride"]),
                   pads=[ph, pw, ph, pw], dilations=list(a["dilation"]), group=a["groups"])


@exports("max_pool2d")
def _(em: Emitter, op, names):
    a = op.attrs
    ph, pw = a["padding"]
    return em.node("MaxPool", names, kernel_shape=list(a["kernel_size"]),
                   strides=list(a["stride"]), pads=[ph, pw, ph, pw],
                   dilations=list(a["dilation"]), ceil_mode=int(a["ceil_mode"]))


@exports("avg_pool2d")
def _(em: Emitter, op, names):
    a = op.attrs
    ph, pw = a["padding"]
    return em.node("AveragePool", names, kernel_shape=list(a["kernel_size"]),
                   strides=list(a["stride"]), pads=[ph, pw, ph, pw],
                   ceil_mode=int(a["ceil_mode"]),
                   count_include_pad=int(a["count_include_pad"]))


@exports("adaptive_avg_pool2d")
def _(em: Emitter, op, names):
    x = op.inputs[0]
    oh, ow = op.attrs["output_size"]
    h, w = x.shape[2:]
    if (oh, ow) == (1, 1):
        return em.node("GlobalAveragePool", names)
    if not (isinstance(h, int) and isinstance(w, int)) or h % oh or w % ow:
        raise em.fail(f"adaptive pooling {h}x{w} -> {oh}x{ow} with uneven windows (ONNX has "
                      "no adaptive pooling; only divisible sizes map to AveragePool)")
    k = [h // oh, w // ow]
    return em.node("AveragePool", names, kernel_shape=k, strides=k)


def _ones(em: Emitter, shape, like, value: float) -> str:
    if not all(isinstance(d, int) for d in shape):
        raise em.fail(f"missing affine parameter over symbolic dims {shape}")
    return em.const(np.full(shape, value, like.dtype.to_numpy()), "affine")


@exports("batch_norm")
def _(em: Emitter, op, names):
    x = op.inputs[0]
    c = (x.shape[1],)
    scale = names[3] if len(names) > 3 and names[3] else _ones(em, c, x, 1.0)
    bias = names[4] if len(names) > 4 and names[4] else _ones(em, c, x, 0.0)
    return em.node("BatchNormalization", [names[0], scale, bias, names[1], names[2]],
                   epsilon=float(op.attrs["eps"]))


@exports("layer_norm")
def _(em: Emitter, op, names):
    x, n = op.inputs[0], op.attrs["normalized_ndim"]
    inner = x.shape[x.type.rank - n:]
    scale = names[1] if len(names) > 1 and names[1] else _ones(em, inner, x, 1.0)
    ins = [names[0], scale] + ([names[2]] if len(names) > 2 and names[2] else [])
    return em.node("LayerNormalization", ins, axis=-n, epsilon=float(op.attrs["eps"]))


@exports("softmax")
def _(em: Emitter, op, names):
    return em.node("Softmax", names, axis=op.attrs["dim"])


@exports("log_softmax")
def _(em: Emitter, op, names):
    return em.node("LogSoftmax", names, axis=op.attrs["dim"])


@exports("embedding")
def _(em: Emitter, op, names):
    return em.node("Gather", names, axis=0)


@exports("scaled_dot_product_attention")
def _(em: Emitter, op, names):
    q, k = op.inputs[0], op.inputs[1]
    mask = op.inputs[3] if len(op.inputs) > 3 else None
    rank = k.type.rank
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    scale = op.attrs["scale"] or 1.0 / math.sqrt(q.shape[-1])
    scores = em.node("Mul", [em.node("MatMul", [names[0], em.node("Transpose", [names[1]],
                                                                  perm=perm)]),
                             scalar(em, scale, q)])
    ninf = scalar(em, -np.inf, q)
    if op.attrs["is_causal"]:
        ql, kl = q.shape[-2], k.shape[-2]
        if not (isinstance(ql, int) and isinstance(kl, int)):
            raise em.fail("is_causal with symbolic sequence lengths")
        keep = em.const(np.tril(np.ones((ql, kl), bool)), "causal")
        scores = em.node("Where", [keep, scores, ninf])
    if mask is not None:
        if mask.dtype.is_float:
            scores = em.node("Add", [scores, names[3]])
        else:
            scores = em.node("Where", [names[3], scores, ninf])
    return em.node("MatMul", [em.node("Softmax", [scores], axis=-1), names[2]])
