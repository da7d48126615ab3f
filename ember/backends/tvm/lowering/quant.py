"""TVM lowerings: quant ops. Integer GEMMs go to the hand-written kernels in kernels/.

Kernel choice needs the target; `lower()` has none, so the target is the one in scope
(`with target:` around lowering) or, when none is, the host (the `cpu` target is the host).
Constant weights are packed by TE stages that FoldConstant evaluates once at build time.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from ..kernels import binary_gemm as BG
from ..kernels import int4 as I4
from ..kernels import qgemm as QG
from ..kernels import qgemm_u8s8 as QU
from ..kernels import qgemm_vnni as QV
from . import lowers, static_shape

R = relax.op
_QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def _target():
    return tvm.target.Target.current(allow_none=True)


def _flat(x, k: int):
    return R.reshape(x, (-1, k))


def _bcast(cx, p, rank: int, axis):
    if axis is None:
        return p
    shape = [1] * rank
    shape[axis % rank] = -1
    return R.reshape(p, shape)


@lowers("quant.quantize")
def _(cx, op, x, scale, zero_point, axis=None, dtype=None):
    out_dt = str(op.results[0].type.dtype)
    tdt = {"i8": "int8", "u8": "uint8"}[out_dt]
    lo, hi = _QRANGE[tdt]
    rank = op.inputs[0].type.rank
    s = cx.emit(_bcast(cx, scale, rank, axis))
    z = cx.emit(_bcast(cx, zero_point, rank, axis))

    def q(xv, sv, zv):
        from tvm import topi

        sv, zv = topi.broadcast_to(sv, xv.shape), topi.broadcast_to(zv, xv.shape)
        return te.compute(xv.shape, lambda *i: tirx.max(tirx.min(
            tirx.nearbyint(xv(*i) / sv(*i)) + zv(*i).astype("float32"), float(hi)),
            float(lo)).astype(tdt), name="quantize")

    out = cx.emit_te(q, x, s, z, primfunc_name_hint="quantize")
    if axis is None:
        _fusable(cx)[id(out)] = (out, x, scale, zero_point, tdt)
    return out


@lowers("quant.dequantize")
def _(cx, op, q, scale, zero_point, axis=None):
    rank = op.inputs[0].type.rank
    z = _bcast(cx, zero_point, rank, axis)
    s = _bcast(cx, scale, rank, axis)
    return R.multiply(R.astype(R.subtract(R.astype(q, "int32"), z), "float32"), s)


# ---- int8 --------------------------------------------------------------------------------------
# A per-tensor `quant.quantize` whose result feeds an int8 GEMM is not run as its own kernel: its
# lowering records (float x, scale, zero point, range) under the Relax var it returns, the GEMM
# lowering quantizes inside its kernel from the float x, and Relax DCE drops the unused call.

def _fusable(cx):
    if not hasattr(cx, "_ember_quantize"):
        cx._ember_quantize = {}
    return cx._ember_quantize


def _int8_source(cx, xq, x_zp, flat_k: int | None):
    """(activation arg, x_scale[1], x_zp[1], dtype, (lo, hi)) for the fused kernel; the float
    input of the quantize that produced `xq` when there is one (flattened to [M, K] for GEMMs)."""
    rec = _fusable(cx).get(id(xq))
    if rec is not None and rec[0].same_as(xq):
        _, x, s, z, tdt = rec
        s, z, dt, rng = cx.emit(R.reshape(s, (1,))), cx.emit(R.reshape(z, (1,))), "float32", \
            _QRANGE[tdt]
    else:
        x, s, z = xq, cx.const(np.ones(1, np.float32), "float32"), cx.emit(R.reshape(x_zp, (1,)))
        dt = str(xq.ty.dtype)
        rng = _QRANGE[dt]
    if flat_k is not None and not (x.ty.shape is not None and len(x.ty.shape) == 2):
        x = cx.emit(_flat(x, flat_k))  # (an identity reshape of a 2-D dynq output breaks fusion)
    return x, s, z, dt, rng


def _epilogue_consts(cx, w2, out_scale, bias, n: int):
    wp = cx.emit_te(QG.pack_weights_te, w2, primfunc_name_hint="qgemm_pack_w")
    sc = cx.emit_te(_pad_vec, out_scale, QG.padded_n(n), primfunc_name_hint="qgemm_pad")
    b = cx.emit_te(_pad_vec, bias, QG.padded_n(n), primfunc_name_hint="qgemm_pad") \
        if bias is not None else cx.const(np.zeros(QG.padded_n(n), np.float32), "float32")
    return wp, sc, b


def _fused_gemm(cx, op, xq, x_zp, w2, out_scale, bias, n: int, k: int, conv=None, relu=False):
    """The one-kernel int8 GEMM (quantize + im2col + pack + GEMM + epilogue): vpdpbusd on
    AVX-512 VNNI targets; on AVX2 ones vpmaddubsw (u8 x s8) when the constant weights are in
    the 7-bit range it is exact for (the quantize pass's int7 weights), else vpmaddwd."""
    x, s, z, dt, (lo, hi) = _int8_source(cx, xq, x_zp, None if conv else k)
    src = QG.Source(dt, conv, lo, hi)
    out = cx.tensor_type(op.results[0].type) if conv else \
        relax.TensorType([x.ty.shape[0], n], "float32")
    kernel = _int8_kernel(op)
    if kernel in ("vnni", "u8s8"):
        K = QV if kernel == "vnni" else QU
        npad = K.padded_n(n)
        wp = cx.emit_te(K.pack_weights_te, w2, primfunc_name_hint=f"{kernel}_pack_w")
        cs = cx.emit_te(QU.colsum_te, w2, npad, primfunc_name_hint=f"{kernel}_colsum")
        sc = cx.emit_te(_pad_vec, out_scale, npad, primfunc_name_hint="qgemm_pad")
        b = cx.emit_te(_pad_vec, bias, npad, primfunc_name_hint="qgemm_pad") \
            if bias is not None else cx.const(np.zeros(npad, np.float32), "float32")
        prim = QV.vnni_int8_gemm(n, k, src, relu=relu) if kernel == "vnni" else \
            QU.u8s8_int8_gemm(n, k, src, relu=relu)
        gv = cx.bb.add_func(prim, f"qgemm_int8_{kernel}")
        return relax.call_tir(gv, [x, s, z, wp, cs, sc, b], out)
    wp, sc, b = _epilogue_consts(cx, w2, out_scale, bias, n)
    gv = cx.bb.add_func(QG.int8_gemm(n, k, src, relu=relu), "qgemm_int8_avx2")
    return relax.call_tir(gv, [x, s, z, wp, sc, b], out)


def _int8_kernel(op) -> str:
    """"vnni", "u8s8" (AVX2, constant weights within +-64) or "avx2" (vpmaddwd, any int8)."""
    if _vnni():
        return "vnni"
    p = op.inputs[1].producer
    w = p.attrs.get("value") if p is not None and p.kind == "const" else None
    return "u8s8" if isinstance(w, np.ndarray) and QU.weights_fit(w) else "avx2"


def _portable_gemm(cx, centred, w2, out_scale, bias):
    """Targets without AVX2: Relax int32 matmul (correct everywhere, not fast)."""
    acc = cx.emit(R.matmul(centred, R.permute_dims(R.astype(w2, "int32"), [1, 0])))
    y = R.multiply(R.astype(acc, "float32"), out_scale)
    return y if bias is None else R.add(cx.emit(y), bias)


def _pad_vec(v, npad: int):
    n = int(v.shape[0])
    return te.compute((npad,), lambda i: tirx.if_then_else(
        i < n, v[tirx.min(i, n - 1)], tirx.const(0.0, v.dtype)), name="pad")


def _centred(xq, zp):
    return te.compute(xq.shape, lambda *i: xq(*i).astype("int32") - zp(), name="q_centre")


def _avx2() -> bool:
    return QG.has_feature(_target(), "avx2")


def _vnni() -> bool:
    """avx512vnni (LLVM's name; /proc/cpuinfo says avx512_vnni) -> the vpdpbusd kernel."""
    t = _target()
    return QG.has_feature(t, "avx512vnni") or (t is None and QG.has_feature(t, "avx512_vnni"))


def _relu(op) -> bool:
    return op.attrs.get("activation", "none") == "relu"


@lowers("quant.linear_int8")
def _(cx, op, xq, wq, x_scale, x_zp, w_scale, bias, activation="none"):
    n, k = static_shape(op.inputs[1].type, "quant.linear_int8 weight")
    out_scale = cx.emit(R.multiply(x_scale, R.astype(w_scale, "float32")))
    if _avx2():
        y = cx.emit(_fused_gemm(cx, op, xq, x_zp, wq, out_scale, bias, n, k, relu=_relu(op)))
        return R.reshape(y, cx.shape(op.results[0].type))
    x2 = cx.emit(_flat(xq, k))
    centred = cx.emit_te(_centred, x2, x_zp, primfunc_name_hint="q_centre")
    y = cx.emit(_portable_gemm(cx, centred, wq, out_scale, bias))
    if _relu(op):
        y = cx.emit(R.nn.relu(y))
    return R.reshape(y, cx.shape(op.results[0].type))


@lowers("quant.linear_int8_dynamic")
def _(cx, op, x, wq, w_scale, bias):
    n, k = static_shape(op.inputs[1].type, "quant.linear_int8_dynamic weight")
    x2 = cx.emit(_flat(x, k))
    amax = cx.emit(R.max(R.abs(x2), axis=[1], keepdims=True))
    s = cx.emit(R.where(R.greater(amax, cx.const(0.0, "float32")),
                        R.divide(amax, cx.const(127.0, "float32")), cx.const(1.0, "float32")))

    def quant(xv, sv):
        return te.compute(xv.shape, lambda i, j: tirx.max(tirx.min(
            tirx.nearbyint(xv[i, j] / sv[i, 0]), 127.0), -127.0).astype("int8"), name="dynq")

    xq = cx.emit_te(quant, x2, s, primfunc_name_hint="dynq")
    ws = cx.emit(R.astype(w_scale, "float32"))
    zero = cx.const(np.zeros((), np.int32), "int32")
    if _avx2():
        y = cx.emit(_fused_gemm(cx, op, xq, zero, wq, ws, None, n, k))
    else:
        y = cx.emit(_portable_gemm(cx, cx.emit(R.astype(xq, "int32")), wq, ws, None))
    y = R.multiply(y, s)
    if bias is not None:
        y = R.add(cx.emit(y), bias)
    return R.reshape(cx.emit(y), cx.shape(op.results[0].type))


@lowers("quant.conv2d_int8")
def _(cx, op, xq, wq, x_scale, x_zp, w_scale, bias, stride=(1, 1), padding=(0, 0),
      dilation=(1, 1), activation="none"):
    xt = op.inputs[0].type
    nb = cx.dim(xt.shape[0])  # the batch may be symbolic
    c, h, w = static_shape(xt.with_shape(xt.shape[1:]), "quant.conv2d_int8 input (C, H, W)")
    o, _, kh, kw = static_shape(op.inputs[1].type, "quant.conv2d_int8 weight")
    _, _, oh, ow = op.results[0].type.shape
    (sh, sw), (ph, pw), (dh, dw) = [(int(v[0]), int(v[1])) for v in (stride, padding, dilation)]
    out_scale = cx.emit(R.multiply(x_scale, R.astype(w_scale, "float32")))
    kk = c * kh * kw
    w2 = cx.emit(R.reshape(wq, (o, kk)))
    if _avx2():
        geo = (c, h, w, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw)
        return _fused_gemm(cx, op, xq, x_zp, w2, out_scale, bias, o, kk, conv=geo,
                           relu=_relu(op))

    def im2col(x, zp):
        def val(row, col):
            ni, rem = row // (oh * ow), row % (oh * ow)
            oy, ox = rem // ow, rem % ow
            ci, r2 = col // (kh * kw), col % (kh * kw)
            iy = oy * sh - ph + (r2 // kw) * dh
            ix = ox * sw - pw + (r2 % kw) * dw
            inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
            v = x[ni, ci, tirx.max(tirx.min(iy, h - 1), 0), tirx.max(tirx.min(ix, w - 1), 0)]
            return tirx.if_then_else(inside, v.astype("int32") - zp(), 0)  # padding is real 0

        return te.compute((x.shape[0] * oh * ow, kk), val, name="im2col")

    cols = cx.emit_te(im2col, xq, x_zp, primfunc_name_hint="im2col")
    y = cx.emit(_portable_gemm(cx, cols, w2, out_scale, bias))
    if _relu(op):
        y = cx.emit(R.nn.relu(y))
    y = cx.emit(R.reshape(y, (nb, oh, ow, o)))
    return R.permute_dims(y, [0, 3, 1, 2])


# ---- int4 / binary weight-only ----------------------------------------------------------------

@lowers("quant.linear_int4")
def _(cx, op, x, packed, scales, bias, k, group_size=32):
    x2 = cx.emit(_flat(x, k))
    args = [x2, packed, scales] + ([bias] if bias is not None else [])
    y = cx.emit_te(lambda xv, p, s, *b: I4.int4_linear(xv, p, s, b[0] if b else None, k,
                                                       group_size),
                   *args, primfunc_name_hint="int4_linear")
    return R.reshape(y, cx.shape(op.results[0].type))


def _xnor(cx, a_bits, b_bits, n: int, words: int, k: int):
    if QG.has_feature(_target(), "avx2"):  # nibble planes for the vpshufb-popcount kernel
        bt = cx.emit_te(BG.pack_nibbles, b_bits, primfunc_name_hint="bgemm_pack_nibbles")
        kernel = BG.binary_gemm
    else:
        bt = cx.emit_te(BG.transpose_pad_words, b_bits, primfunc_name_hint="bgemm_pack_b")
        kernel = BG.binary_gemm_portable
    gv = cx.bb.add_func(kernel(n, words, k), "binary_gemm_xnor")
    return relax.call_tir(gv, [a_bits, bt], relax.TensorType([a_bits.ty.shape[0], n],
                                                                    "int32"))


def _pack_bits_te(x):
    k = int(x.shape[-1])
    nw = (k + 31) // 32

    def word(*idx):
        *lead, wi = idx
        acc = tirx.const(0, "uint32")
        for j in range(32):
            kk = wi * 32 + j
            bit = tirx.if_then_else(tirx.all(kk < k, x(*lead, tirx.min(kk, k - 1)) >= 0),
                                    tirx.const(1 << j, "uint32"), tirx.const(0, "uint32"))
            acc = acc | bit
        return acc

    return te.compute(tuple(x.shape[:-1]) + (nw,), word, name="pack_bits")


@lowers("quant.pack_bits")
def _(cx, op, x):
    return cx.emit_te(_pack_bits_te, x, primfunc_name_hint="pack_bits")


@lowers("quant.binary_matmul")
def _(cx, op, a, b, k):
    n, words = static_shape(op.inputs[1].type, "quant.binary_matmul b")
    return _xnor(cx, a, b, n, words, k)


@lowers("quant.linear_binary")
def _(cx, op, x, bits, scale, bias, k, act="float"):
    nbases, n, words = static_shape(op.inputs[1].type, "quant.linear_binary bits")
    x2 = cx.emit(_flat(x, k))
    if act == "float":
        args = [x2, bits, scale] + ([bias] if bias is not None else [])
        y = cx.emit_te(lambda xv, bt, s, *b: BG.binary_weight_linear(xv, bt, s,
                                                                     b[0] if b else None, k),
                       *args, primfunc_name_hint="binary_linear")
        return R.reshape(y, cx.shape(op.results[0].type))
    alpha = cx.emit(R.mean(R.abs(x2), axis=[1], keepdims=True))
    xb = cx.emit_te(_pack_bits_te, x2, primfunc_name_hint="pack_bits")
    total = None
    for b in range(nbases):
        wb = cx.emit(R.squeeze(R.strided_slice(bits, [0], [b], [b + 1]), [0]))
        sb = cx.emit(R.squeeze(R.strided_slice(scale, [0], [b], [b + 1]), [0]))
        d = cx.emit(_xnor(cx, xb, wb, n, words, k))
        term = cx.emit(R.multiply(R.astype(d, "float32"), sb))
        total = term if total is None else cx.emit(R.add(total, term))
    y = cx.emit(R.multiply(total, alpha))
    if bias is not None:
        y = cx.emit(R.add(y, bias))
    return R.reshape(y, cx.shape(op.results[0].type))


@lowers("quant.linear_partial_binary")
def _(cx, op, x, bits, scale, cols, vals, val_scale, bias, k):
    _, n, _ = static_shape(op.inputs[1].type, "quant.linear_partial_binary bits")
    x2 = cx.emit(_flat(x, k))
    yb = cx.emit_te(lambda xv, bt, s: BG.binary_weight_linear(xv, bt, s, None, k), x2, bits,
                    scale, primfunc_name_hint="binary_linear")

    def salient(xv, c, v, vs):
        j = te.reduce_axis((0, int(c.shape[1])), name="j")
        return te.compute((xv.shape[0], n), lambda i, r: te.sum(
            xv[i, c[r, j]] * v[r, j].astype("float32") * vs[r], axis=j), name="salient")

    ys = cx.emit_te(salient, x2, cols, vals, val_scale, primfunc_name_hint="salient_gather")
    y = cx.emit(R.add(yb, ys))
    if bias is not None:
        y = cx.emit(R.add(y, bias))
    return R.reshape(y, cx.shape(op.results[0].type))
