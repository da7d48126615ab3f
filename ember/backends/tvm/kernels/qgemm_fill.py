"""The activation-tile prologue the fused int8 GEMM kernels share (qgemm, qgemm_u8s8, vnni).

Each parallel task of a fused int8 kernel owns `mr` output rows and fills a local tile of their
quantized activations once, then runs its GEMM from it: float activations are quantized on the
fly (x / scale, round half even, + zero point, clip to the quantized type) and, for conv, the
im2col window is gathered from the NCHW input (M = batch * oh * ow; a row tile is `mr`
consecutive outputs of one output row, so no division per row). Only what a kernel stores
differs: `store(q_int32, z)` maps the quantized value (q in [lo, hi], the zero point z) to the
tile's element (zero-point-centred int16 for the vpmaddwd kernel, q + shift as uint8 for the
u8 x s8 ones), and `pad(z)` is what an im2col padding position holds (the value of a real 0).
K padding (tile columns k..kpad) is 0: the packed weights are 0 there.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm.script import tirx as T

__all__ = ["fill_macro", "row_tiles"]


def row_tiles(src, mr: int) -> tuple[int, int, int]:
    """(oh, ow, tiles per output row) of a conv source (1, 1, 1 for a matrix)."""
    if src.conv is None:
        return 1, 1, 1
    oh, ow = src.conv[5], src.conv[6]
    return oh, ow, -(-ow // mr)


def fill_macro(src, k: int, kpad: int, mr: int, tile_dtype: str,
               store: Callable, pad: Callable):
    """A T.macro `fill(tile, X, row0, ni, oy, ox0, M, s, z)` writing tile[mr, kpad]."""
    is_f32 = src.dtype == "float32"
    lo, hi = float(src.lo), float(src.hi)
    conv = src.conv is not None
    cin, h, w, kh, kw, _oh, ow, sh, sw, ph, pw, dh, dw = src.conv if conv else (1,) * 13
    vec = 8 if k >= 8 else 1

    def quant(v, s, z):
        """x (f32 or an already quantized i8/u8) -> store(q, z)."""
        if is_f32:
            q = T.max(T.min(T.nearbyint(v / s) + T.Cast("float32", z), hi), lo)
            return store(T.Cast("int32", q), z)
        return store(T.Cast("int32", v), z)

    @T.macro
    def fill(tile, X, row0, ni, oy, ox0, M, s, z):
        for r in range(mr):
            if conv:
                ox = T.meta_var(T.min(ox0 + r, ow - 1))
                for ci, ky, kx in T.grid(cin, kh, kw):
                    iy = T.meta_var(oy * sh - ph + ky * dh)
                    ix = T.meta_var(ox * sw - pw + kx * dw)
                    tile[r, (ci * kh + ky) * kw + kx] = T.if_then_else(
                        0 <= iy < h and 0 <= ix < w,
                        quant(X[ni, ci, T.max(T.min(iy, h - 1), 0),
                                T.max(T.min(ix, w - 1), 0)], s, z), pad(z))
            else:  # `vec` lanes at a time: vdivps/vroundps, not a scalar loop
                row = T.meta_var(T.min(row0 + r, M - 1))
                for kc in range(k // vec):
                    for kl in T.vectorized(vec):
                        tile[r, kc * vec + kl] = quant(X[row, kc * vec + kl], s, z)
                for kk in range(k // vec * vec, k):
                    tile[r, kk] = quant(X[row, kk], s, z)
            for kk in range(k, kpad):
                tile[r, kk] = T.Cast(tile_dtype, 0)

    return fill
