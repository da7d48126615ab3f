"""Op family: low-bit weights (int4 group-wise, binary, ternary, residual and partial binary).

Split from quant.py (int8 quantize/dequantize/GEMM/conv), whose helpers these ops share.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..types import DType, TensorType
from .quant import _F32, _I32, _i8, _need, words
from .registry import REQUIRED, define_op

# ---- int4 weight-only ----------------------------------------------------------------------------

def unpack_int4(packed: np.ndarray, k: int) -> np.ndarray:
    """[N, ceil(K/2)] u8 -> [N, K] int8 in [-8, 7] (low nibble first)."""
    lo = (packed & 0x0F).astype(np.int8) - 8
    hi = (packed >> 4).astype(np.int8) - 8
    out = np.stack([lo, hi], axis=-1).reshape(packed.shape[0], -1)
    return out[:, :k]


def pack_int4(q: np.ndarray) -> np.ndarray:
    """[N, K] ints in [-8, 7] -> [N, ceil(K/2)] u8 (the inverse of unpack_int4)."""
    n, k = q.shape
    u = (np.asarray(q, np.int16) + 8).astype(np.uint8)
    if k % 2:
        u = np.concatenate([u, np.full((n, 1), 8, np.uint8)], axis=1)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


linear_int4 = define_op(
    "quant.linear_int4", inputs=("x", "packed", "scales", "bias?"),
    attrs={"k": (int, REQUIRED), "group_size": (int, 32)}, tolerance=1e-4,
    doc="Weight-only int4: w[n,k] = (nibble - 8) * scales[n, k // group_size]; y = x @ w.T + b.")


@linear_int4.infer
def _(x, packed, scales, bias, k, group_size):
    _need(x, "x", (DType.f32,))
    if x.rank < 1 or x.shape[-1] != k or group_size < 1:
        raise ShapeError(f"x must end in K={k} (group_size {group_size} >= 1), got {x}")
    _need(packed, "packed", (DType.u8,))
    if packed.rank != 2 or packed.shape[1] != (k + 1) // 2:
        raise ShapeError(f"packed must be [N, {(k + 1) // 2}] u8, got {packed}")
    n = packed.shape[0]
    _need(scales, "scales", (DType.f32,), (n, -(-k // group_size)))
    _need(bias, "bias", (DType.f32,), (n,))
    return x.with_shape(x.shape[:-1] + (n,))


def int4_weight(packed, scales, k, group_size) -> np.ndarray:
    q = unpack_int4(packed, k).astype(_F32)
    return (q * np.repeat(scales, group_size, axis=1)[:, :k]).astype(_F32)


@linear_int4.reference
def _(x, packed, scales, bias, k, group_size):
    out = x.astype(_F32) @ int4_weight(packed, scales, k, group_size).T
    return (out + bias if bias is not None else out).astype(_F32)


@linear_int4.examples
def _(rng):
    yield [rng.standard_normal((3, 20)).astype(_F32), _i8(rng, 6, 10, lo=0, hi=256,
           dtype=np.uint8), np.full((6, 3), 0.1, _F32), rng.standard_normal(6).astype(_F32)], \
        {"k": 20, "group_size": 8}
    yield [rng.standard_normal((2, 2, 7)).astype(_F32), _i8(rng, 4, 4, lo=0, hi=256,
           dtype=np.uint8), np.abs(rng.standard_normal((4, 1))).astype(_F32)], {"k": 7}


# ---- binary / ternary / residual binary / partial binary ---------------------------------------

def pack_signs(w: np.ndarray) -> np.ndarray:
    """[..., K] -> [..., ceil(K/32)] u32; bit j of word i is set when w[..., 32i+j] >= 0."""
    k = w.shape[-1]
    bits = (np.asarray(w) >= 0).astype(np.uint64)
    pad = words(k) * 32 - k
    if pad:
        bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (pad,), np.uint64)], axis=-1)
    bits = bits.reshape(bits.shape[:-1] + (-1, 32))
    return (bits << np.arange(32, dtype=np.uint64)).sum(axis=-1).astype(np.uint32)


def unpack_signs(packed: np.ndarray, k: int) -> np.ndarray:
    """The +-1 (f32) matrix a packed tensor holds: [..., W] u32 -> [..., k]."""
    bits = (packed[..., None].astype(np.uint64) >> np.arange(32, dtype=np.uint64)) & 1
    bits = bits.reshape(packed.shape[:-1] + (-1,))[..., :k]
    return (bits.astype(_F32) * 2 - 1).astype(_F32)


def binary_weight(bits, scale, k) -> np.ndarray:
    """sum_b scale[b, n] * signs[b, n, :] as an f32 [N, K] matrix."""
    return (unpack_signs(bits, k) * scale[:, :, None]).sum(axis=0).astype(_F32)


def _binary_types(x, bits, scale, bias, k, what):
    _need(x, "x", (DType.f32,))
    if x.rank < 1 or x.shape[-1] != k:
        raise ShapeError(f"x must end in K={k}, got {x}")
    _need(bits, "bits", (DType.u32,))
    if bits.rank != 3 or bits.shape[2] != words(k):
        raise ShapeError(f"bits must be [bases, N, {words(k)}] u32 for K={k}, got {bits}")
    _need(scale, "scale", (DType.f32,), bits.shape[:2])
    _need(bias, "bias", (DType.f32,), (bits.shape[1],))
    return x.with_shape(x.shape[:-1] + (bits.shape[1],))


pack_bits = define_op("quant.pack_bits", inputs=("x",), tolerance=0,
                      doc="Sign bits of x along the last dim packed into uint32 words "
                          "(bit set = x >= 0; padding bits 0).")


@pack_bits.infer
def _(x):
    if not x.dtype.is_float or x.rank < 1 or not isinstance(x.shape[-1], int):
        raise ShapeError(f"x must be float with a static last dim, got {x}")
    return TensorType(x.shape[:-1] + (words(x.shape[-1]),), DType.u32)


@pack_bits.reference
def _(x):
    return pack_signs(x)


@pack_bits.examples
def _(rng):
    yield [rng.standard_normal((3, 70)).astype(_F32)], {}
    yield [rng.standard_normal((2, 2, 32)).astype(_F32)], {}


binary_matmul = define_op(
    "quant.binary_matmul", inputs=("a", "b"), attrs={"k": (int, REQUIRED)}, tolerance=0,
    doc="+-1 dot products of packed sign bits: out[m, n] = k - 2 * popcount(a[m] xor b[n]).")


@binary_matmul.infer
def _(a, b, k):
    _need(a, "a", (DType.u32,))
    _need(b, "b", (DType.u32,))
    if a.rank != 2 or b.rank != 2 or a.shape[1] != b.shape[1] or a.shape[1] != words(k):
        raise ShapeError(f"a [M, {words(k)}] and b [N, {words(k)}] u32 for k={k}, got {a}, {b}")
    return TensorType((a.shape[0], b.shape[0]), DType.i32)


@binary_matmul.reference
def _(a, b, k):
    sa, sb = unpack_signs(a, k).astype(np.int64), unpack_signs(b, k).astype(np.int64)
    return (sa @ sb.T).astype(_I32)


@binary_matmul.examples
def _(rng):
    for m, n, k in ((5, 7, 64), (3, 4, 45)):
        yield [pack_signs(rng.standard_normal((m, k))), pack_signs(rng.standard_normal((n, k)))], \
            {"k": k}


linear_binary = define_op(
    "quant.linear_binary", inputs=("x", "bits", "scale", "bias?"),
    attrs={"k": (int, REQUIRED), "act": (str, "float")}, tolerance=1e-4,
    doc="Binary/ternary/residual-binary weights w = sum_b scale[b,n] * sign bits. act=float: "
        "y = x @ w.T + b; act=sign: x -> mean|x_row| * sign(x) (XNOR-popcount kernel).")


@linear_binary.infer
def _(x, bits, scale, bias, k, act):
    if act not in ("float", "sign"):
        raise ShapeError(f"act must be 'float' or 'sign', got {act!r}")
    return _binary_types(x, bits, scale, bias, k, "linear_binary")


@linear_binary.reference
def _(x, bits, scale, bias, k, act):
    x = x.astype(_F32)
    if act == "sign":
        alpha = np.mean(np.abs(x), axis=-1, keepdims=True).astype(_F32)
        xs = np.where(x >= 0, 1, -1).astype(np.int64).reshape(-1, k)
        dots = [(xs @ unpack_signs(bits[b], k).astype(np.int64).T).astype(_F32) * scale[b]
                for b in range(bits.shape[0])]
        out = np.sum(dots, axis=0).reshape(x.shape[:-1] + (-1,)).astype(_F32) * alpha
    else:
        out = x @ binary_weight(bits, scale, k).T
    return (out + bias if bias is not None else out).astype(_F32)


@linear_binary.examples
def _(rng):
    w = rng.standard_normal((2, 6, 40))
    bits, scale = pack_signs(w), np.abs(rng.standard_normal((2, 6))).astype(_F32)
    x = rng.standard_normal((4, 40)).astype(_F32)
    yield [x, bits, scale, rng.standard_normal(6).astype(_F32)], {"k": 40}
    yield [x, bits[:1], scale[:1]], {"k": 40, "act": "sign"}
    yield [x.reshape(2, 2, 40), bits, scale], {"k": 40}


linear_partial_binary = define_op(
    "quant.linear_partial_binary",
    inputs=("x", "bits", "scale", "cols", "vals", "val_scale", "bias?"),
    attrs={"k": (int, REQUIRED)}, tolerance=1e-4,
    doc="Binary weights plus salient int8 corrections in ELL form: w[n, cols[n, j]] += "
        "vals[n, j] * val_scale[n] (padding entries have vals 0).")


@linear_partial_binary.infer
def _(x, bits, scale, cols, vals, val_scale, bias, k):
    out = _binary_types(x, bits, scale, bias, k, "linear_partial_binary")
    n = bits.shape[1]
    _need(cols, "cols", (DType.i32,))
    if cols.rank != 2 or cols.shape[0] != n:
        raise ShapeError(f"cols must be [{n}, S] i32, got {cols}")
    _need(vals, "vals", (DType.i8,), cols.shape)
    _need(val_scale, "val_scale", (DType.f32,), (n,))
    return out


def partial_weight(bits, scale, cols, vals, val_scale, k) -> np.ndarray:
    w = binary_weight(bits, scale, k)
    corr = vals.astype(_F32) * val_scale[:, None]
    rows = np.repeat(np.arange(w.shape[0]), cols.shape[1])
    np.add.at(w, (rows, cols.reshape(-1)), corr.reshape(-1))
    return w.astype(_F32)


@linear_partial_binary.reference
def _(x, bits, scale, cols, vals, val_scale, bias, k):
    xb = x.astype(_F32) @ binary_weight(bits, scale, k).T
    sal = (x[..., cols].astype(_F32) * (vals.astype(_F32) * val_scale[:, None])).sum(-1)
    out = (xb + sal).astype(_F32)
    return (out + bias if bias is not None else out).astype(_F32)


@linear_partial_binary.examples
def _(rng):
    bits = pack_signs(rng.standard_normal((1, 5, 33)))
    cols = rng.integers(0, 33, (5, 3)).astype(_I32)
    vals = _i8(rng, 5, 3)
    yield [rng.standard_normal((4, 33)).astype(_F32), bits, np.full((1, 5), 0.5, _F32), cols,
           vals, np.full(5, 0.01, _F32), rng.standard_normal(5).astype(_F32)], {"k": 33}
