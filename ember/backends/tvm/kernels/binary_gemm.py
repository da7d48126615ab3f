"""XNOR-popcount GEMM on bit-packed uint32 words, and the weight-only binary dequant-GEMM.

`binary_gemm`: out[m, n] = k - 2 * sum_w popcount(a[m, w] xor b[n, w]) is the +-1 dot product
of two sign-bit rows (padding bits are 0 in both operands, so they never count). Why
hand-written TIR: the schedule that makes it fast is the GEMM register tile with the multiply
replaced by xor+popcount: B is transposed to [W, Np] (a compile-time fold for constant weights)
so 8 output columns are one u32x8 vector; each A word is broadcast, xor-ed with NV vectors of B
and LLVM's vector ctpop (a nibble-LUT `vpshufb` sequence on AVX2, `vpopcntd` with AVX-512
VPOPCNTDQ) is added into an MR x NV*8 int32 tile held in registers. One instruction stream
handles 32 multiply-adds per lane, which is where the speed-up over fp32 GEMM comes from.

`binary_weight_linear`: for float activations the packed weights are expanded to +-scale inside
the GEMM's weight-packing stage (one TE function, scheduled by the float GEMM rule, whose B pack
inlines this dequant), so the weight stays 1 bit per entry in memory and costs one O(N*K) pass.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.script import tirx as T

__all__ = ["MR", "NV", "binary_gemm", "binary_gemm_portable", "binary_weight_linear", "transpose_pad_words"]

MR, NV = 4, 2


def padded(n: int, nv: int = NV) -> int:
    return -(-n // (8 * nv)) * 8 * nv


def transpose_pad_words(b: te.Tensor, nv: int = NV) -> te.Tensor:
    """TE: [N, W] u32 -> [W, Np] u32 (zero columns past N)."""
    n, w = (int(d) for d in b.shape)
    npad = padded(n, nv)
    return te.compute((w, npad), lambda j, i: tirx.if_then_else(
        i < n, b[tirx.min(i, n - 1), j], tirx.const(0, "uint32")), name="bgemm_pack_b")


CHUNK = 16  # words summed in u8 lanes before widening (16 * 8 = 128 < 256: no overflow)


def binary_gemm(n: int, words: int, k: int, mr: int = MR, nv: int = NV) -> tirx.PrimFunc:
    """PrimFunc (A u32[M, W], Bt u32[W, Np]) -> i32[M, n]; M symbolic.

    Popcounts are taken per byte (<32 x i8> ctpop: the vpshufb nibble-LUT sequence on AVX2,
    vpopcntb with AVX-512 BITALG) and summed in u8 lanes for CHUNK words, then widened once per
    chunk (vpmaddubsw + vpmaddwd with ones: 4 bytes -> the column's i32 lane). A per-i32-lane
    ctpop would widen on every word (vpsadbw/unpack sequences), which costs more than the
    xor + popcount themselves."""
    npad = padded(n, nv)
    w8 = nv * 8
    nchunks = -(-words // CHUNK)

    @T.prim_func(private=True)
    def bgemm(a: T.handle, b: T.handle, c: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        M = T.int64()
        A = T.match_buffer(a, (M, words), "uint32")
        Bt = T.match_buffer(b, (words, npad), "uint32")
        C = T.match_buffer(c, (M, n), "int32")
        for t in T.parallel((M + mr - 1) // mr * (npad // w8)):
            acc = T.alloc_buffer((mr, w8), "int32", scope="local")
            acc8 = T.alloc_buffer((mr, nv * 32), "uint8", scope="local")
            row0 = T.meta_var(t % ((M + mr - 1) // mr) * mr)
            col0 = T.meta_var(t // ((M + mr - 1) // mr) * w8)
            for r in T.unroll(mr):
                for v in T.unroll(nv):
                    acc[r, T.ramp(v * 8, 1, 8)] = T.broadcast(T.int32(0), 8)
            for ch in range(nchunks):
                for r in T.unroll(mr):
                    for v in T.unroll(nv):
                        acc8[r, T.ramp(v * 32, 1, 32)] = T.broadcast(T.uint8(0), 32)
                for kk in range(T.min(CHUNK, words - ch * CHUNK)):
                    for v in T.unroll(nv):
                        for r in T.unroll(mr):
                            acc8[r, T.ramp(v * 32, 1, 32)] = acc8[r, T.ramp(v * 32, 1, 32)] + \
                                T.popcount(T.reinterpret("uint8x32", T.bitwise_xor(
                                    T.broadcast(A[T.min(row0 + r, M - 1), ch * CHUNK + kk], 8),
                                    Bt[ch * CHUNK + kk, T.ramp(col0 + v * 8, 1, 8)])))
                for r in T.unroll(mr):
                    for v in T.unroll(nv):
                        acc[r, T.ramp(v * 8, 1, 8)] = acc[r, T.ramp(v * 8, 1, 8)] + \
                            T.call_llvm_pure_intrin(
                                "int32x8", "llvm.x86.avx2.pmadd.wd",
                                T.call_llvm_pure_intrin(
                                    "int16x16", "llvm.x86.avx2.pmadd.ub.sw",
                                    acc8[r, T.ramp(v * 32, 1, 32)],
                                    T.broadcast(T.int8(1), 32)),
                                T.broadcast(T.int16(1), 16))
            for r in T.unroll(mr):
                if row0 + r < M:
                    if col0 + w8 <= n:
                        for v in T.unroll(nv):
                            C[row0 + r, T.ramp(col0 + v * 8, 1, 8)] = \
                                T.broadcast(T.int32(k), 8) - acc[r, T.ramp(v * 8, 1, 8)] * 2
                    else:
                        for j in range(w8):
                            if col0 + j < n:
                                C[row0 + r, col0 + j] = T.int32(k) - 2 * acc[r, j]

    return bgemm


def binary_gemm_portable(n: int, words: int, k: int, mr: int = MR,
                         nv: int = NV) -> tirx.PrimFunc:
    """The same GEMM with a per-i32-lane popcount (any target LLVM supports)."""
    npad = padded(n, nv)
    w8 = nv * 8

    @T.prim_func(private=True)
    def bgemm(a: T.handle, b: T.handle, c: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        M = T.int64()
        A = T.match_buffer(a, (M, words), "uint32")
        Bt = T.match_buffer(b, (words, npad), "uint32")
        C = T.match_buffer(c, (M, n), "int32")
        for t in T.parallel((M + mr - 1) // mr * (npad // w8)):
            acc = T.alloc_buffer((mr, w8), "uint32", scope="local")
            row0 = t % ((M + mr - 1) // mr) * mr
            col0 = t // ((M + mr - 1) // mr) * w8
            for r in T.unroll(mr):
                for v in T.unroll(nv):
                    acc[r, T.ramp(v * 8, 1, 8)] = T.broadcast(T.uint32(0), 8)
            for kw in range(words):
                for v in T.unroll(nv):
                    for r in T.unroll(mr):
                        acc[r, T.ramp(v * 8, 1, 8)] = acc[r, T.ramp(v * 8, 1, 8)] + T.popcount(
                            T.bitwise_xor(T.broadcast(A[T.min(row0 + r, M - 1), kw], 8),
                                          Bt[kw, T.ramp(col0 + v * 8, 1, 8)]))
            for r in T.unroll(mr):
                for j in range(w8):
                    if row0 + r < M and col0 + j < n:
                        C[row0 + r, col0 + j] = T.int32(k) - 2 * T.Cast("int32", acc[r, j])

    return bgemm


def binary_weight_linear(x: te.Tensor, bits: te.Tensor, scale: te.Tensor,
                         bias: te.Tensor | None, k: int) -> te.Tensor:
    """TE: x [M, K] f32 times the expanded binary weight; bases are unrolled (no extra
    reduction stage, so the float GEMM rule sees one GEMM and inlines this into its pack)."""
    nbases, n = int(bits.shape[0]), int(bits.shape[1])

    def weight(j, kk):
        word = kk // 32
        shift = (kk % 32).astype("uint32")
        total = tirx.const(0.0, "float32")
        for b in range(nbases):
            bit = tirx.bitwise_and(tirx.shift_right(bits[b, j, word], shift),
                                   tirx.const(1, "uint32"))
            total = total + scale[b, j] * (bit.astype("float32") * 2.0 - 1.0)
        return total

    w = te.compute((n, k), weight, name="binary_dequant")
    r = te.reduce_axis((0, k), name="k")
    m = x.shape[0]
    y = te.compute((m, n), lambda i, j: te.sum(x[i, r] * w[j, r], axis=r), name="binary_gemm_f")
    if bias is None:
        return y
    return te.compute((m, n), lambda i, j: y[i, j] + bias[j], name="binary_bias")
