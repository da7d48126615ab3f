"""int8 x int8 -> int32 GEMM for `quant.linear_int8` / `quant.conv2d_int8`, one kernel per layer.

Why hand-written TIR: LLVM does not turn a TIR int8 reduction into the x86 dot-product
instructions by itself (a widened i32 multiply per lane is slower than the fp32 FMA GEMM), so
the kernel calls the instruction directly. On AVX2 (no VNNI) it is `vpmaddwd`: 16 int16
products summed pairwise into 8 int32 lanes, 16 multiply-adds per instruction against 8 for an
fp32 FMA. (AVX-512 VNNI targets use `qgemm_vnni.py`.)

(7-bit weights on AVX2 use the u8 x s8 `vpmaddubsw` kernel in qgemm_u8s8.py, twice the rate.)

Why one kernel: on the small layers of real models the separate quantize, activation-pack and
im2col kernels each cost as much as the integer GEMM saves (they made digits_cnn 2.3x slower
than fp32). Here each parallel task owns `mr` rows and a group of column panels, and fills a
local int16 tile of its rows once — quantizing float activations (x / scale, round half even,
+ zero point, clip) and, for conv, gathering the im2col window on the fly — then runs the GEMM
from it. Values are stored zero-point-centred (in [-255, 255]), so the sums are exact with no
column-sum correction, and im2col padding is a real 0.

Layouts: weights are packed once at compile time (a TE stage FoldConstant evaluates) to
i8 [Np/8, ceil(K/2), 16], lane 2*j + t holding w[8*nb + j, 2*kp + t]. The micro-kernel keeps an
mr x (nv*8) int32 tile in registers over the whole K loop: per k pair, nv sign-extending weight
loads, mr broadcasts of an int16 pair, mr*nv vpmaddwd + vpaddd; the f32 epilogue applies
x_scale*w_scale[n], bias and an optional relu.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te, tirx
from tvm.script import tirx as T

from .qgemm_fill import fill_macro, row_tiles

__all__ = ["MR", "NV", "Source", "has_feature", "int8_gemm", "pack_weights", "pack_weights_te",
           "padded_n"]

MR, NV = 4, 2  # register tile: 4 rows x 16 columns = 8 ymm accumulators (+2 weight, 1 bcast)
PANEL_BYTES = 48 * 1024  # weight bytes one task streams per row tile (stays in L1/L2)
# Per-task tiles are "global": TVM 0.27 turns a CPU "local" allocation into a
# TVMBackendAllocWorkspace/Free call pair per task, a "global" one under 1 KiB (the
# accumulators; the activation tile for small K) into a stack array kept in registers.
TILE_SCOPE = "global"


@dataclass(frozen=True)
class Source:
    """Where the activation tile comes from.

    dtype: "float32" (quantized in the kernel with x_scale/x_zp), "int8" or "uint8";
    conv: None for a [M, K] matrix, else (C, H, W, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw) and
    the input is NCHW (im2col gathered in the kernel, M = batch * oh * ow).
    """

    dtype: str = "float32"
    conv: tuple[int, ...] | None = None
    lo: int = -128  # clip range of the quantized type
    hi: int = 127


def has_feature(target: tvm.target.Target | None, feature: str) -> bool:
    """Whether `target` (or, when None, the host) has the CPU `feature` (e.g. avx2)."""
    if target is None:
        from ..targets import host_features

        return host_features().has(feature)
    if target.kind.name != "llvm":
        return False
    try:
        from tvm.target.codegen import llvm_get_cpu_features

        return feature in {str(f) for f in llvm_get_cpu_features(target)}
    except Exception:  # noqa: BLE001 - a target LLVM cannot describe gets the portable path
        return False


def padded_n(n: int, nv: int = NV) -> int:
    return -(-n // (8 * nv)) * 8 * nv


def pack_weights(wq: np.ndarray, nv: int = NV) -> np.ndarray:
    """[N, K] int8 -> [Np/8, ceil(K/2), 16] int8 in the kernel's lane order (zero padded)."""
    n, k = wq.shape
    npad, k2 = padded_n(n, nv), (k + 1) // 2
    w = np.zeros((npad, 2 * k2), np.int8)
    w[:n, :k] = wq
    return np.ascontiguousarray(w.reshape(npad // 8, 8, k2, 2).transpose(0, 2, 1, 3)
                                .reshape(npad // 8, k2, 16))


def pack_weights_te(w: te.Tensor, nv: int = NV) -> te.Tensor:
    """TE version of `pack_weights` (folded at build time when `w` is a constant)."""
    n, k = (int(d) for d in w.shape)
    k2 = (k + 1) // 2

    def val(nb, kp, lane):
        row, col = nb * 8 + lane // 2, 2 * kp + lane % 2
        return tirx.if_then_else(tirx.all(row < n, col < k),
                                 w[tirx.min(row, n - 1), tirx.min(col, k - 1)],
                                 tirx.const(0, "int8"))

    return te.compute((padded_n(n, nv) // 8, k2, 16), val, name="qgemm_pack_w")


def panels_per_task(n: int, k: int, nv: int = NV) -> int:
    """Column panels a task handles: all of them when the weight is small (one activation
    tile fill per row tile), else as many as fit PANEL_BYTES (the fill repeats per group)."""
    panels = padded_n(n, nv) // (8 * nv)
    per = max(1, PANEL_BYTES // (8 * nv * (k + 1)))
    return min(panels, per)


def int8_gemm(n: int, k: int, src: Source, relu: bool = False, mr: int = MR,
              nv: int = NV) -> tirx.PrimFunc:
    """PrimFunc (X, x_scale f32[1], x_zp i32[1], Wp, S f32[Np], B f32[Np]) -> C f32[M, n].

    X is [M, k] (any batch M) or, for conv, NCHW with a symbolic batch; C is then NCHW too
    (the epilogue scatters each row's outputs to their (n, o, oy, ox) places: no transpose).
    """
    k2 = (k + 1) // 2
    npad = padded_n(n, nv)
    w8 = nv * 8
    gp = panels_per_task(n, k, nv)
    groups = -(-(npad // w8) // gp)
    conv = src.conv is not None
    oh, ow, tpr = row_tiles(src, mr)  # conv: row tiles per output row
    if conv:
        cin, h, w, kh, kw = src.conv[:5]
        assert cin * kh * kw == k

    fill = fill_macro(src, k, 2 * k2, mr, "int16",  # zero-point-centred; padding is 0
                      lambda q, z: T.Cast("int16", q - z), lambda z: T.int16(0))

    def epilogue(a, sv, bv, lanes=1):
        """f32(acc) * out_scale + bias, then relu when fused."""
        y = (T.Cast("float32", a) if lanes == 1 else a) * sv + bv
        if relu:
            return T.max(y, T.float32(0) if lanes == 1 else T.broadcast(T.float32(0), lanes))
        return y

    @T.prim_func(private=True)
    def qgemm(x: T.handle, qs: T.handle, qz: T.handle, wp: T.handle, sc: T.handle,
              bi: T.handle, c: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        NB = T.int64()
        QS = T.match_buffer(qs, (1,), "float32")
        QZ = T.match_buffer(qz, (1,), "int32")
        W = T.match_buffer(wp, (npad // 8, k2, 16), "int8")
        S = T.match_buffer(sc, (npad,), "float32")
        B = T.match_buffer(bi, (npad,), "float32")
        if conv:
            X = T.match_buffer(x, (NB, cin, h, w), src.dtype)
            M = T.meta_var(NB * (oh * ow))
        else:
            X = T.match_buffer(x, (NB, k), src.dtype)
            M = T.meta_var(NB)
        if conv:
            C = T.match_buffer(c, (NB, n, oh, ow), "float32")
        else:
            C = T.match_buffer(c, (NB, n), "float32")
        # conv: a row tile is mr consecutive outputs of one output row (no divisions per row)
        rtiles = T.meta_var(NB * (oh * tpr) if conv else (M + mr - 1) // mr)
        for t in T.parallel(rtiles * groups):
            a16 = T.alloc_buffer((mr, 2 * k2), "int16", scope=TILE_SCOPE)
            acc = T.alloc_buffer((mr, w8), "int32", scope=TILE_SCOPE)
            rt = T.meta_var(t % rtiles)
            row0 = T.meta_var(rt * mr)
            ni = T.meta_var(rt // (oh * tpr))
            oy = T.meta_var(rt // tpr % oh)
            ox0 = T.meta_var(rt % tpr * mr)
            grp = T.meta_var(t // rtiles)
            fill(a16, X, row0, ni, oy, ox0, M, QS[0], QZ[0])
            for p in range(gp):
                col0 = T.meta_var((grp * gp + p) * w8)
                if col0 < npad:
                    for r in T.unroll(mr):
                        for v in T.unroll(nv):
                            acc[r, T.ramp(v * 8, 1, 8)] = T.broadcast(T.int32(0), 8)
                    for kp in range(k2):
                        for v in T.unroll(nv):
                            for r in T.unroll(mr):
                                acc[r, T.ramp(v * 8, 1, 8)] = acc[r, T.ramp(v * 8, 1, 8)] + \
                                    T.call_llvm_pure_intrin(
                                        "int32x8", "llvm.x86.avx2.pmadd.wd",
                                        T.reinterpret("int16x16", T.broadcast(T.reinterpret(
                                            "int32", a16[r, T.ramp(2 * kp, 1, 2)]), 8)),
                                        T.Cast("int16x16", W[col0 // 8 + v, kp, T.ramp(0, 1, 16)]))
                    for r in T.unroll(mr):
                        if conv:
                            if ox0 + r < ow:
                                for j in range(w8):
                                    if col0 + j < n:
                                        C[ni, col0 + j, oy, ox0 + r] = epilogue(
                                            acc[r, j], S[col0 + j], B[col0 + j])
                        elif row0 + r < M:
                            if col0 + w8 <= n:
                                for v in T.unroll(nv):
                                    C[row0 + r, T.ramp(col0 + v * 8, 1, 8)] = epilogue(
                                        T.Cast("float32x8", acc[r, T.ramp(v * 8, 1, 8)]),
                                        S[T.ramp(col0 + v * 8, 1, 8)],
                                        B[T.ramp(col0 + v * 8, 1, 8)], 8)
                            else:
                                for j in range(w8):
                                    if col0 + j < n:
                                        C[row0 + r, col0 + j] = epilogue(
                                            acc[r, j], S[col0 + j], B[col0 + j])

    return qgemm
