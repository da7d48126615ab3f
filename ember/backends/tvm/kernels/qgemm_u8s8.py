"""AVX2 u8 x s8 int8 GEMM (`vpmaddubsw`) for 7-bit weights: what oneDNN runs on x86 without VNNI.

`vpmaddubsw` multiplies 32 unsigned bytes by 32 signed bytes and adds adjacent products into 16
int16 lanes (32 multiply-adds per instruction); `vpmaddwd` against ones then sums the int16
pairs into 8 int32 lanes, which `vpaddd` accumulates. That is 32 MACs for two multiply-pipe
uops, twice the 16 MAC/cycle of fp32 FMA (or of the `vpmaddwd`-on-int16 kernel in qgemm.py) on
Zen 3 / Skylake-class cores. The catch: the int16 pair sum saturates (255 * 127 * 2 > 32767), so
the kernel is only exact when |w| <= 64 (255 * 64 * 2 = 32640): the quantize pass then
quantizes weights to 7 bits ([-64, 64], scale x2; `int8_weights=int7`, chosen automatically on
AVX2 hosts without VNNI) and the lowering picks this kernel only for constant weights in that
range (8-bit weights keep the exact vpmaddwd kernel).

Activations: stored as u = q + shift (shift 128 for i8, 0 for u8), so
sum (q - zp) * w = sum u * w - (zp + shift) * colsum(w), colsum folded at build time.
Layouts: weights packed once at compile time to i8 [Np/8, ceil(K/4), 32], lane 4*j + t of block
(nb, kq) holding w[8*nb + j, 4*kq + t]. The micro-kernel keeps an mr x (nv*8) int32 tile in
registers over the K loop: per 4 k values, mr 4-byte broadcasts, nv 32-byte weight loads and
mr*nv (vpmaddubsw, vpmaddwd, vpaddd). The activation tile fill (quantize + im2col) is the
shared qgemm_fill prologue; the accumulators start at the zero-point correction and the f32
epilogue applies scales, bias and relu. A task owns `rb` row tiles (small layers: several, so
per-task costs do not dominate) and a group of column panels.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.script import tirx as T

from .qgemm import TILE_SCOPE, Source
from .qgemm_fill import fill_macro, row_tiles

__all__ = ["MR", "NV", "W_MAX", "colsum_te", "pack_weights", "pack_weights_te", "padded_n",
           "u8s8_int8_gemm", "weights_fit"]

MR, NV = 4, 2  # 4 rows x 16 columns: 8 ymm accumulators + 2 weights + broadcast + ones
W_MAX = 64  # |w| bound for an exact int16 pair sum: 255 * 64 * 2 = 32640 <= 32767
TASK_MACS = 1 << 16  # work per parallel task at least (small layers: several row tiles)
PANEL_BYTES = 384 * 1024  # packed weight bytes a task streams per activation-tile fill


def weights_fit(wq: np.ndarray) -> bool:
    """Whether int8 weights are in the 7-bit range this kernel is exact for."""
    return wq.size == 0 or (int(wq.min()) >= -W_MAX and int(wq.max()) <= W_MAX)


def padded_n(n: int, nv: int = NV) -> int:
    return -(-n // (8 * nv)) * 8 * nv


def pack_weights(wq: np.ndarray, nv: int = NV) -> np.ndarray:
    """[N, K] int8 -> [Np/8, ceil(K/4), 32] int8 (zero padded), the kernel's lane order."""
    n, k = wq.shape
    npad, k4 = padded_n(n, nv), -(-k // 4)
    w = np.zeros((npad, 4 * k4), np.int8)
    w[:n, :k] = wq
    return np.ascontiguousarray(w.reshape(npad // 8, 8, k4, 4).transpose(0, 2, 1, 3)
                                .reshape(npad // 8, k4, 32))


def pack_weights_te(w: te.Tensor, nv: int = NV) -> te.Tensor:
    """TE version of `pack_weights` (folded at build time when `w` is a constant)."""
    n, k = (int(d) for d in w.shape)
    k4 = -(-k // 4)

    def val(nb, kq, lane):
        row, col = nb * 8 + lane // 4, 4 * kq + lane % 4
        return tirx.if_then_else(tirx.all(row < n, col < k),
                                 w[tirx.min(row, n - 1), tirx.min(col, k - 1)],
                                 tirx.const(0, "int8"))

    return te.compute((padded_n(n, nv) // 8, k4, 32), val, name="u8s8_pack_w")


def colsum_te(w: te.Tensor, npad: int) -> te.Tensor:
    """Per output column sum of the int8 weight, zero padded to npad (the shift correction)."""
    n, k = (int(d) for d in w.shape)
    r = te.reduce_axis((0, k), name="k")
    s = te.compute((n,), lambda j: te.sum(w[j, r].astype("int32"), axis=r), name="colsum")
    return te.compute((npad,), lambda j: tirx.if_then_else(
        j < n, s[tirx.min(j, n - 1)], tirx.const(0, "int32")), name="colsum_pad")


def panels_per_task(n: int, k: int, nv: int = NV) -> int:
    """Column panels per activation-tile fill: all when they fit PANEL_BYTES, else as many as
    do (consecutive tasks of a thread share the group, so it stays in L2)."""
    panels = padded_n(n, nv) // (8 * nv)
    return min(panels, max(1, PANEL_BYTES // (8 * nv * (-(-k // 4) * 4))))


def rows_per_task(n: int, k: int, mr: int = MR, nv: int = NV) -> int:
    """Row tiles per parallel task: enough for ~TASK_MACS multiply-adds, so small layers (the
    zoo's 32x32 linears at batch 64) are not dominated by per-task costs (the runtime's
    workspace allocation of the local tiles, the parallel dispatch)."""
    return max(1, min(64, TASK_MACS // (mr * padded_n(n, nv) * 4 * -(-k // 4))))


def u8s8_int8_gemm(n: int, k: int, src: Source, relu: bool = False, mr: int = MR,
                   nv: int = NV) -> tirx.PrimFunc:
    """PrimFunc (X, x_scale f32[1], x_zp i32[1], Wp, colsum i32[Np], S f32[Np], B f32[Np])
    -> C f32[M, n] (conv: NCHW), as qgemm.int8_gemm. Weights must satisfy `weights_fit`."""
    k4 = -(-k // 4)
    npad = padded_n(n, nv)
    w8 = nv * 8
    gp = panels_per_task(n, k, nv)
    groups = -(-(npad // w8) // gp)
    rb = rows_per_task(n, k, mr, nv)
    shift = 128 if src.lo < 0 else 0
    conv = src.conv is not None
    oh, ow, tpr = row_tiles(src, mr)
    fill = fill_macro(src, k, 4 * k4, mr, "uint8",
                      lambda q, z: T.Cast("uint8", q + shift),
                      lambda z: T.Cast("uint8", z + shift))
    if conv:
        cin, h, w = src.conv[:3]

    def epilogue(a, sv, bv, lanes=1):
        """f32(acc) * out_scale + bias (+ relu); the zero-point correction is in acc already."""
        y = T.Cast("float32" if lanes == 1 else f"float32x{lanes}", a) * sv + bv
        if relu:
            return T.max(y, T.float32(0) if lanes == 1 else T.broadcast(T.float32(0), lanes))
        return y

    def madd(a4, wv):
        """8 int32 lanes += 4 u8 x 4 s8 products each (vpmaddubsw, vpmaddwd with ones)."""
        return T.call_llvm_pure_intrin(
            "int32x8", "llvm.x86.avx2.pmadd.wd",
            T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw",
                                    T.reinterpret("uint8x32", T.broadcast(a4, 8)), wv),
            T.broadcast(T.int16(1), 16))

    @T.macro
    def panel(a8, acc, W, CS, S, B, C, col0, row0, ni, oy, ox0, M, z):
        """One mr x (nv*8) output tile: acc starts at -(zp + shift) * colsum (the correction
        costs nv multiplies per tile, not one per output vector), K loop, epilogue."""
        for v in T.unroll(nv):
            for r in T.unroll(mr):
                acc[r, T.ramp(v * 8, 1, 8)] = CS[T.ramp(col0 + v * 8, 1, 8)] * \
                    T.broadcast(-(z + shift), 8)
        for kq in range(k4):
            for v in T.unroll(nv):
                for r in T.unroll(mr):
                    acc[r, T.ramp(v * 8, 1, 8)] = acc[r, T.ramp(v * 8, 1, 8)] + madd(
                        T.reinterpret("int32", a8[r, T.ramp(4 * kq, 1, 4)]),
                        W[col0 // 8 + v, kq, T.ramp(0, 1, 32)])
        for r in T.unroll(mr):
            if conv:
                if ox0 + r < ow:
                    for j in range(w8):
                        if col0 + j < n:
                            C[ni, col0 + j, oy, ox0 + r] = epilogue(acc[r, j], S[col0 + j],
                                                                    B[col0 + j])
            elif row0 + r < M:
                if col0 + w8 <= n:
                    for v in T.unroll(nv):
                        C[row0 + r, T.ramp(col0 + v * 8, 1, 8)] = epilogue(
                            acc[r, T.ramp(v * 8, 1, 8)], S[T.ramp(col0 + v * 8, 1, 8)],
                            B[T.ramp(col0 + v * 8, 1, 8)], 8)
                else:
                    for j in range(w8):
                        if col0 + j < n:
                            C[row0 + r, col0 + j] = epilogue(acc[r, j], S[col0 + j],
                                                             B[col0 + j])

    @T.prim_func(private=True)
    def qgemm_u8s8(x: T.handle, qs: T.handle, qz: T.handle, wp: T.handle, csum: T.handle,
                   sc: T.handle, bi: T.handle, c: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        NB = T.int64()
        QS = T.match_buffer(qs, (1,), "float32")
        QZ = T.match_buffer(qz, (1,), "int32")
        W = T.match_buffer(wp, (npad // 8, k4, 32), "int8")
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
        blocks = T.meta_var((rtiles + rb - 1) // rb)
        for t in T.parallel(blocks * groups):  # a task: rb row tiles x one panel group
            a8 = T.alloc_buffer((mr, 4 * k4), "uint8", scope=TILE_SCOPE)
            acc = T.alloc_buffer((mr, w8), "int32", scope=TILE_SCOPE)
            for i in range(rb):
                rt = T.meta_var(t % blocks * rb + i)
                if rt < rtiles:
                    row0 = T.meta_var(rt * mr)
                    ni = T.meta_var(rt // (oh * tpr))
                    oy = T.meta_var(rt // tpr % oh)
                    ox0 = T.meta_var(rt % tpr * mr)
                    fill(a8, X, row0, ni, oy, ox0, M, QS[0], QZ[0])
                    for p in range(gp):
                        if (t // blocks * gp + p) * w8 < npad:
                            panel(a8, acc, W, CS, S, B, C, (t // blocks * gp + p) * w8, row0,
                                  ni, oy, ox0, M, QZ[0])

    return qgemm_u8s8
