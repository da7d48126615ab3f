"""int8 x int8 -> int32 GEMM for `quant.linear_int8` / `quant.conv2d_int8` (after im2col).

Why hand-written TIR: LLVM does not turn a TIR int8 reduction into the x86 dot-product
instructions by itself (a widened i32 multiply per lane is slower than the fp32 FMA GEMM), so
the kernel calls the instruction directly. On AVX2 (no VNNI, the machine this was written on) the
instruction is `vpmaddwd`: 16 int16 products summed pairwise into 8 int32 lanes, i.e. 16
multiply-adds per instruction against 8 for an fp32 FMA. Layouts:

- weights, packed once at compile time: i8 [N/8, ceil(K/2), 16], lane 2*j + t holding
  w[8*nb + j, 2*kp + t] (N padded with zero rows to whole register tiles, K to even);
- activations, packed per call by a small TE stage: i32 [M, ceil(K/2)], each word holding the two
  int16 values (xq[m, 2kp] - zp, xq[m, 2kp+1] - zp). Subtracting the zero point here keeps
  every value in [-255, 255] and makes the result exact with no column-sum correction;
- the micro-kernel keeps an MR x (NV*8) int32 tile in registers over the whole K loop:
  per k pair, NV sign-extending loads of weights (vpmovsxbw), MR broadcasts of activation
  words and MR*NV vpmaddwd + vpaddd; the f32 epilogue applies x_scale*w_scale[n] and bias.

A VNNI target (avx512vnni) would use vpdpbusd on a [N/16, K/4, 16, 4] layout; that variant is
not written yet, and such targets run this AVX2 kernel (still correct, AVX-512 CPUs have AVX2).
Targets without AVX2 take the portable path in lowering/quant.py (Relax integer matmul).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx
from tvm.script import tirx as T

__all__ = ["MR", "NV", "avx2_int8_gemm", "has_avx2", "pack_activations", "pack_weights",
           "pack_weights_te", "padded_n"]

MR, NV = 4, 2  # register tile: 4 rows x 16 columns = 8 ymm accumulators (+2 weight, 1 bcast)


def has_avx2(target: tvm.target.Target | None) -> bool:
    """Whether `target` (or, when None, the host) can run the vpmaddwd kernel."""
    if target is None:
        from ..targets import host_features

        return host_features().has("avx2")
    if target.kind.name != "llvm":
        return False
    try:
        from tvm.target.codegen import llvm_get_cpu_features

        return "avx2" in {str(f) for f in llvm_get_cpu_features(target)}
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


def pack_activations(xq: te.Tensor, zp: te.Tensor) -> te.Tensor:
    """TE: [M, K] int8/uint8 and an i32 zero point -> [M, ceil(K/2)] i32 of int16 pairs."""
    m, k = xq.shape
    k2 = (int(k) + 1) // 2

    def half(i, kk):
        v = xq[i, tirx.min(kk, k - 1)].astype("int32") - zp()
        return tirx.if_then_else(kk < k, v, tirx.const(0, "int32"))

    return te.compute((m, k2), lambda i, kp: tirx.bitwise_and(half(i, 2 * kp), 0xFFFF)
                      | tirx.shift_left(half(i, 2 * kp + 1), 16), name="qgemm_pack_a")


def avx2_int8_gemm(n: int, k: int, mr: int = MR, nv: int = NV) -> tirx.PrimFunc:
    """C[M, n] f32 = f32(A . W) * scale + bias for packed A/W; M is symbolic (any batch)."""
    k2 = (k + 1) // 2
    npad = padded_n(n, nv)
    nb, nj, w8 = npad // 8, npad // (8 * nv), nv * 8

    @T.prim_func(private=True)
    def qgemm(a: T.handle, w: T.handle, sc: T.handle, bi: T.handle, c: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        M = T.int64()
        A = T.match_buffer(a, (M, k2), "int32")
        W = T.match_buffer(w, (nb, k2, 16), "int8")
        S = T.match_buffer(sc, (npad,), "float32")
        B = T.match_buffer(bi, (npad,), "float32")
        C = T.match_buffer(c, (M, n), "float32")
        # column panels outer, row tiles inner: consecutive tasks share one weight panel
        for t in T.parallel((M + mr - 1) // mr * nj):
            acc = T.alloc_buffer((mr, w8), "int32", scope="local")
            row0 = t % ((M + mr - 1) // mr) * mr
            col0 = t // ((M + mr - 1) // mr) * w8
            for r in T.unroll(mr):
                for v in T.unroll(nv):
                    acc[r, T.ramp(v * 8, 1, 8)] = T.broadcast(T.int32(0), 8)
            for kp in range(k2):
                for v in T.unroll(nv):
                    for r in T.unroll(mr):
                        acc[r, T.ramp(v * 8, 1, 8)] = acc[r, T.ramp(v * 8, 1, 8)] + \
                            T.call_llvm_pure_intrin(
                                "int32x8", "llvm.x86.avx2.pmadd.wd",
                                T.reinterpret("int16x16", T.broadcast(
                                    A[T.min(row0 + r, M - 1), kp], 8)),
                                T.Cast("int16x16", W[col0 // 8 + v, kp, T.ramp(0, 1, 16)]))
            for r in T.unroll(mr):
                for j in range(w8):
                    if row0 + r < M and col0 + j < n:
                        C[row0 + r, col0 + j] = T.Cast("float32", acc[r, j]) * S[col0 + j] \
                            + B[col0 + j]

    return qgemm
