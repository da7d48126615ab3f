"""AVX-512 VNNI int8 GEMM (`vpdpbusd`) for `quant.linear_int8` / `quant.conv2d_int8`.

Selected when the target has avx512vnni (Cascade Lake and later, Zen 4); the AVX2 kernel in
qgemm.py serves everything else. `vpdpbusd` multiplies 4 unsigned bytes by 4 signed bytes and
adds the 4 products to an int32 lane: 64 multiply-adds per instruction. Why not TVM's built-in
`dot_16x4_vnni` tensor intrinsic: it passes <16 x i32> operands, and LLVM 22 (TVM 0.27) declares
the intrinsic on <64 x i8>, so it fails to compile; here the operands are reinterpreted as
u8x64/i8x64 explicitly.

Signed x signed: activations are stored as u = q + shift (shift 128 for i8, 0 for u8), so
sum (q - zp) * w = sum u * w - (zp + shift) * colsum(w); colsum is a per-column constant folded
at build time with the packed weights ([N/16, K/4, 16, 4]: lane 4*j + t of block (nb, kq) holds
w[16*nb + j, 4*kq + t]). The fill stage (quantize + optional im2col) is the shared qgemm_fill
prologue, into a local u8 tile; the epilogue applies the correction, scales, bias and relu.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.script import tirx as T

from .qgemm import TILE_SCOPE, Source
from .qgemm_fill import fill_macro, row_tiles

__all__ = ["MR", "colsum_te", "pack_weights", "pack_weights_te", "padded_n", "vnni_int8_gemm"]

MR = 4  # rows per tile; one zmm accumulator per row and 16-column panel


def padded_n(n: int) -> int:
    return -(-n // 16) * 16


def pack_weights(wq: np.ndarray) -> np.ndarray:
    """[N, K] int8 -> [Np/16, ceil(K/4), 64] int8 (zero padded), the kernel's lane order."""
    n, k = wq.shape
    npad, k4 = padded_n(n), -(-k // 4)
    w = np.zeros((npad, 4 * k4), np.int8)
    w[:n, :k] = wq
    return np.ascontiguousarray(w.reshape(npad // 16, 16, k4, 4).transpose(0, 2, 1, 3)
                                .reshape(npad // 16, k4, 64))


def pack_weights_te(w: te.Tensor) -> te.Tensor:
    n, k = (int(d) for d in w.shape)
    k4 = -(-k // 4)

    def val(nb, kq, lane):
        row, col = nb * 16 + lane // 4, 4 * kq + lane % 4
        return tirx.if_then_else(tirx.all(row < n, col < k),
                                 w[tirx.min(row, n - 1), tirx.min(col, k - 1)],
                                 tirx.const(0, "int8"))

    return te.compute((padded_n(n) // 16, k4, 64), val, name="vnni_pack_w")


def colsum_te(w: te.Tensor) -> te.Tensor:
    """Per output column sum of the int8 weight, padded to Np (for the +shift correction)."""
    from .qgemm_u8s8 import colsum_te as colsum

    return colsum(w, padded_n(int(w.shape[0])))


def vnni_int8_gemm(n: int, k: int, src: Source, relu: bool = False,
                   mr: int = MR) -> tirx.PrimFunc:
    """PrimFunc (X, x_scale f32[1], x_zp i32[1], Wp, colsum i32[Np], S, B) -> C (as qgemm)."""
    k4 = -(-k // 4)
    npad = padded_n(n)
    panels = npad // 16
    shift = 128 if src.lo < 0 else 0
    conv = src.conv is not None
    oh, ow, tpr = row_tiles(src, mr)
    if conv:
        cin, h, w = src.conv[:3]

    fill = fill_macro(src, k, 4 * k4, mr, "uint8", lambda q, z: T.Cast("uint8", q + shift),
                      lambda z: T.Cast("uint8", z + shift))  # padding: the zero point

    def epilogue(a, cs, z, sv, bv, lanes=1):
        y = T.Cast("float32" if lanes == 1 else f"float32x{lanes}",
                   a - cs * (z + shift if lanes == 1 else T.broadcast(z + shift, lanes))) * sv + bv
        if relu:
            return T.max(y, T.float32(0) if lanes == 1 else T.broadcast(T.float32(0), lanes))
        return y

    @T.prim_func(private=True)
    def qgemm_vnni(x: T.handle, qs: T.handle, qz: T.handle, wp: T.handle, csum: T.handle,
                   sc: T.handle, bi: T.handle, c: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        NB = T.int64()
        QS = T.match_buffer(qs, (1,), "float32")
        QZ = T.match_buffer(qz, (1,), "int32")
        W = T.match_buffer(wp, (panels, k4, 64), "int8")
        CS = T.match_buffer(csum, (npad,), "int32")
        S = T.match_buffer(sc, (npad,), "float32")
        B = T.match_buffer(bi, (npad,), "float32")
        if conv:
            X = T.match_buffer(x, (NB, cin, h, w), src.dtype)
            C = T.match_buffer(c, (NB, n, oh, ow), "float32")
            M = T.meta_var(NB * (oh * ow))
        else:
            X = T.match_buffer(x, (NB, k), src.dtype)
            C = T.match_buffer(c, (NB, n), "float32")
            M = T.meta_var(NB)
        rtiles = T.meta_var(NB * (oh * tpr) if conv else (M + mr - 1) // mr)
        for t in T.parallel(rtiles):
            a8 = T.alloc_buffer((mr, 4 * k4), "uint8", scope=TILE_SCOPE)
            acc = T.alloc_buffer((mr, 16), "int32", scope=TILE_SCOPE)
            row0 = T.meta_var(t * mr)
            ni = T.meta_var(t // (oh * tpr))
            oy = T.meta_var(t // tpr % oh)
            ox0 = T.meta_var(t % tpr * mr)
            z = T.meta_var(QZ[0])
            fill(a8, X, row0, ni, oy, ox0, M, QS[0], z)
            for p in range(panels):
                for r in T.unroll(mr):
                    acc[r, T.ramp(0, 1, 16)] = T.broadcast(T.int32(0), 16)
                for kq in range(k4):
                    for r in T.unroll(mr):
                        acc[r, T.ramp(0, 1, 16)] = T.call_llvm_pure_intrin(
                            "int32x16", "llvm.x86.avx512.vpdpbusd.512",
                            acc[r, T.ramp(0, 1, 16)],
                            T.reinterpret("uint8x64", T.broadcast(T.reinterpret(
                                "int32", a8[r, T.ramp(4 * kq, 1, 4)]), 16)),
                            W[p, kq, T.ramp(0, 1, 64)])
                for r in T.unroll(mr):
                    if conv:
                        if ox0 + r < ow:
                            for j in range(16):
                                if p * 16 + j < n:
                                    C[ni, p * 16 + j, oy, ox0 + r] = epilogue(
                                        acc[r, j], CS[p * 16 + j], z, S[p * 16 + j],
                                        B[p * 16 + j])
                    elif row0 + r < M:
                        if p * 16 + 16 <= n:
                            C[row0 + r, T.ramp(p * 16, 1, 16)] = epilogue(
                                acc[r, T.ramp(0, 1, 16)], CS[T.ramp(p * 16, 1, 16)], z,
                                S[T.ramp(p * 16, 1, 16)], B[T.ramp(p * 16, 1, 16)], 16)
                        else:
                            for j in range(16):
                                if p * 16 + j < n:
                                    C[row0 + r, p * 16 + j] = epilogue(
                                        acc[r, j], CS[p * 16 + j], z, S[p * 16 + j],
                                        B[p * 16 + j])

    return qgemm_vnni
