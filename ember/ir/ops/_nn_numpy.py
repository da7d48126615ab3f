"""Numpy kernels and size rules for the windowed nn ops (conv, pooling), shared by infer/reference.

Kept apart from `nn.py` so the op catalogue stays short. Everything follows torch's CPU kernels:
`window_out` is torch's `pooling_output_shape`, the avg-pool divisor is `avg_pool2d`'s, and
conv is im2col + one batched matmul because the interpreter runs whole zoo models with it.
"""

from __future__ import annotations

from functools import reduce

import numpy as np

from ...errors import ShapeError
from ..types import Dim, mul_dims


def acc_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays float64; every other float accumulates in float32 (BLAS speed)."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def positive(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ShapeError(f"{what} must be a positive int, got {v!r}")
    return int(v)


def mul(a: Dim, b: Dim) -> Dim:
    return mul_dims((a, b))


def pair(v, what: str, minimum: int) -> tuple[int, int]:
    """An int or a 1/2-tuple of ints (torch accepts all three) as an (h, w) pair."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    elif isinstance(v, tuple) and len(v) == 1:
        v = (v[0], v[0])
    if (not isinstance(v, tuple) or len(v) != 2
            or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in v)):
        raise ShapeError(f"{what} must be an int or a pair of ints, got {v!r}")
    if min(v) < minimum:
        raise ShapeError(f"{what} entries must be >= {minimum}, got {v!r}")
    return int(v[0]), int(v[1])


def window_attrs(stride, padding, dilation) -> tuple[tuple[int, int], ...]:
    """(stride, padding, dilation) as validated (h, w) pairs."""
    return pair(stride, "stride", 1), pair(padding, "padding", 0), pair(dilation, "dilation", 1)


def window_out(size: Dim, k: int, s: int, p: int, d: int, ceil_mode: bool, axis: str) -> Dim:
    """Output length of a sliding window, exactly torch's `pooling_output_shape`.

    A symbolic input length passes through only when the window preserves length (stride 1,
    'same' padding); any other formula cannot be written as a dim, so we ask for a static one.
    """
    extent = d * (k - 1) + 1
    if isinstance(size, str):
        if s == 1 and extent - 1 == 2 * p:
            return size
        raise ShapeError(f"spatial dim {axis}={size!r} is symbolic, but kernel {k}, stride {s}, "
                         f"padding {p}, dilation {d} change its length; give it a static size")
    out = (size + 2 * p - extent + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1  # the last window would start in the right padding: torch drops it
    if out < 1:
        raise ShapeError(f"spatial dim {axis}={size} with padding {p} is smaller than the "
                         f"window extent {extent} (kernel {k}, dilation {d})")
    return out


def _taps(xp: np.ndarray, k, s, d, out):
    """Yield the strided view of `xp` seen by each kernel tap (i, j): [..., oh, ow]."""
    for i in range(k[0]):
        for j in range(k[1]):
            yield xp[..., i * d[0]: i * d[0] + s[0] * (out[0] - 1) + 1: s[0],
                     j * d[1]: j * d[1] + s[1] * (out[1] - 1) + 1: s[1]]


def _pad(x: np.ndarray, k, s, p, d, out, value: float) -> np.ndarray:
    """Pad the last two dims by p on the left and enough on the right for every window."""
    widths = [(0, 0)] * (x.ndim - 2)
    for ax in range(2):
        need = (out[ax] - 1) * s[ax] + d[ax] * (k[ax] - 1) + 1
        widths.append((p[ax], max(p[ax], need - x.shape[x.ndim - 2 + ax] - p[ax])))
    return np.pad(x, widths, constant_values=value)


def _out_hw(x: np.ndarray, k, s, p, d, ceil_mode: bool) -> tuple[int, int]:
    h, w = x.shape[-2:]
    return (window_out(h, k[0], s[0], p[0], d[0], ceil_mode, "H"),
            window_out(w, k[1], s[1], p[1], d[1], ceil_mode, "W"))


def conv2d(x: np.ndarray, w: np.ndarray, s, p, d, groups: int) -> np.ndarray:
    """NCHW grouped convolution as im2col + batched matmul, in the accumulation dtype."""
    acc = acc_dtype(x.dtype)
    x, w = x.astype(acc, copy=False), w.astype(acc, copy=False)
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    out = _out_hw(x, (kh, kw), s, p, d, False)
    xp = _pad(x, (kh, kw), s, p, d, out, 0.0)
    if cg == 1 and groups > 1:  # depthwise: a few big multiply-adds beat thousands of tiny GEMMs
        xp = np.repeat(xp, o // groups, axis=1) if o > groups else xp
        taps = w.reshape(o, kh * kw).T[:, :, None, None]
        return sum(t * wt for t, wt in zip(_taps(xp, (kh, kw), s, d, out), taps))
    cols = np.stack(list(_taps(xp, (kh, kw), s, d, out)), axis=2)  # [N, C, kh*kw, oh, ow]
    cols = cols.reshape(n, groups, cg * kh * kw, out[0] * out[1])
    wm = w.reshape(groups, o // groups, cg * kh * kw)
    if groups == 1:  # one big GEMM: [O, K] x [K, N*L]
        res = np.tensordot(wm[0], cols[:, 0], axes=([1], [1]))  # [O, N, L]
        return np.ascontiguousarray(res.transpose(1, 0, 2)).reshape(n, o, *out)
    return np.matmul(wm, cols).reshape(n, o, *out)


def max_pool2d(x: np.ndarray, k, s, p, d, ceil_mode: bool) -> np.ndarray:
    out = _out_hw(x, k, s, p, d, ceil_mode)
    xp = _pad(x, k, s, p, d, out, -np.inf)
    return reduce(np.maximum, _taps(xp, k, s, d, out)).astype(x.dtype)


def _divisor(size: int, k: int, s: int, p: int, out: int, count_include_pad: bool) -> np.ndarray:
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    if count_include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, size) - np.maximum(start, 0)).astype(np.float64)


def avg_pool2d(x: np.ndarray, k, s, p, ceil_mode: bool, count_include_pad: bool) -> np.ndarray:
    d = (1, 1)
    out = _out_hw(x, k, s, p, d, ceil_mode)
    xp = _pad(x.astype(np.float64), k, s, p, d, out, 0.0)
    total = reduce(np.add, _taps(xp, k, s, d, out))
    h, w = x.shape[-2:]
    div = np.outer(_divisor(h, k[0], s[0], p[0], out[0], count_include_pad),
                   _divisor(w, k[1], s[1], p[1], out[1], count_include_pad))
    return (total / div).astype(x.dtype)


def adaptive_matrix(size: int, out: int) -> np.ndarray:
    """[out, size] averaging matrix; row i spans floor(i*size/out) .. ceil((i+1)*size/out)."""
    m = np.zeros((out, size))
    for i in range(out):
        lo, hi = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m
