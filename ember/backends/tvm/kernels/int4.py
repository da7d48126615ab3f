"""Weight-only int4 GEMM with the unpack fused in: y = x @ dequant(packed, scales).T + bias.

Why one TE function: the nibble unpack and group scale become the producer of the GEMM's weight
operand, and the float GEMM schedule (schedules/matmul.py) inlines producers into its B-panel
packing stage. The unpack therefore runs once per weight element per call, inside the pack that
the fp32 kernel does anyway, and the weight stays 4 bits in memory. Kept as one function also
stops Relax FoldConstant from expanding the constant weight back to fp32 at build time.
"""

from __future__ import annotations

from tvm import te, tirx

__all__ = ["int4_linear"]


def int4_linear(x: te.Tensor, packed: te.Tensor, scales: te.Tensor, bias: te.Tensor | None,
                k: int, group_size: int) -> te.Tensor:
    """TE: x [M, K] f32, packed u8 [N, ceil(K/2)], scales f32 [N, G] -> [M, N] f32."""
    n = int(packed.shape[0])

    def weight(j, kk):
        byte = packed[j, kk // 2].astype("int32")
        nib = tirx.if_then_else(kk % 2 == 0, tirx.bitwise_and(byte, 15),
                                tirx.shift_right(byte, 4))
        return (nib - 8).astype("float32") * scales[j, kk // group_size]

    w = te.compute((n, k), weight, name="int4_dequant")
    r = te.reduce_axis((0, k), name="k")
    m = x.shape[0]
    y = te.compute((m, n), lambda i, j: te.sum(x[i, r] * w[j, r], axis=r), name="int4_gemm")
    if bias is None:
        return y
    return te.compute((m, n), lambda i, j: y[i, j] + bias[j], name="int4_bias")
