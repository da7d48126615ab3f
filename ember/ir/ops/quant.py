"""Op family: quant. Quantized tensors are integer tensors plus explicit scale/zero-point values.

Why explicit: a pass, the printer and every backend see the same integers and scales, so the
interpreter (these numpy references) is the ground truth for each kernel. Conventions:

- affine int8: real = (q - zero_point) * scale; activations per tensor (scale f32[], zp i32[]),
  weights symmetric per output channel (scale f32[N] or f16[N], zero point 0; f16 scales are
  widened to f32 before any arithmetic);
- int4 weights: two nibbles per byte (low nibble = even k), value = (nibble - 8) * scale[n, k//g];
- binary weights: sign bits packed little-endian into uint32 words along K (bit set = +1,
  clear = -1), `B` stacked bases w = sum_b scale[b, n] * (+-1). Ternary {-a, 0, a} is exactly
  two bases with equal scales a/2 (+,+ -> a; -,- -> -a; +,- -> 0), so it shares the op;
- partial binary adds salient corrections in ELL form (cols/vals i8 [N, S], val_scale f32[N]).
Padding bits beyond K are 0 in every packed word, which `binary_matmul` relies on.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..types import DType, TensorType
from . import _nn_numpy as K
from .registry import REQUIRED, define_op

_F32, _I32 = np.float32, np.int32
_QTYPES = (DType.i8, DType.u8)
_QRANGE = {DType.i8: (-128, 127), DType.u8: (0, 255)}
_SCALE_DTYPES = (DType.f32, DType.f16)  # weight scales may be stored as f16 (half the bytes)


def _need(t: TensorType | None, name: str, dtypes, shape=None) -> None:
    if t is None:
        return
    if t.dtype not in dtypes:
        raise ShapeError(f"{name} must be {'/'.join(str(d) for d in dtypes)}, got {t}")
    if shape is not None and t.shape != tuple(shape):
        raise ShapeError(f"{name} must have shape [{','.join(map(str, shape))}], got {t}")


def _param_shape(x: TensorType, axis) -> tuple:
    if axis is None:
        return ()
    if not -x.rank <= axis < x.rank:
        raise ShapeError(f"axis {axis} is out of range for {x}")
    return (x.shape[axis],)


def _bshape(arr: np.ndarray, rank: int, axis) -> np.ndarray:
    """Per-channel params broadcast along `axis` of a rank-`rank` tensor."""
    if axis is None:
        return arr
    shape = [1] * rank
    shape[axis % rank] = -1
    return arr.reshape(shape)


def words(k: int) -> int:
    """uint32 words holding k bits."""
    return (int(k) + 31) // 32


# ---- quantize / dequantize ---------------------------------------------------------------------

quantize = define_op("quant.quantize", inputs=("x", "scale", "zero_point"),
                     attrs={"axis": (int, None), "dtype": (DType, DType.i8)},
                     doc="q = clip(round_half_even(x / scale) + zero_point) as dtype; per tensor "
                         "(axis=None, scalar params) or per channel along axis.")


@quantize.infer
def _(x, scale, zero_point, axis, dtype):
    if not x.dtype.is_float:
        raise ShapeError(f"x must be float, got {x}")
    if dtype not in _QTYPES:
        raise ShapeError(f"dtype must be i8 or u8, got {dtype}")
    shp = _param_shape(x, axis)
    _need(scale, "scale", (DType.f32,), shp)
    _need(zero_point, "zero_point", (DType.i32,), shp)
    return x.with_dtype(dtype)


@quantize.reference
def _(x, scale, zero_point, axis, dtype):
    lo, hi = _QRANGE[dtype]
    s = _bshape(scale, x.ndim, axis).astype(_F32)
    z = _bshape(zero_point, x.ndim, axis).astype(_F32)
    q = np.round((x.astype(_F32) / s).astype(_F32)) + z
    return np.clip(q, lo, hi).astype(dtype.to_numpy())


@quantize.examples
def _(rng):
    x = rng.standard_normal((4, 6)).astype(_F32) * 3
    yield [x, np.array(0.05, _F32), np.array(3, _I32)], {}
    yield [x, np.abs(rng.standard_normal(6)).astype(_F32) * 0.1 + 0.01,
           np.zeros(6, _I32)], {"axis": 1}
    yield [np.abs(x), np.array(0.02, _F32), np.array(0, _I32)], {"dtype": DType.u8}


dequantize = define_op("quant.dequantize", inputs=("q", "scale", "zero_point"),
                       attrs={"axis": (int, None)},
                       doc="x = (q - zero_point) * scale as f32 (per tensor or along axis).")


@dequantize.infer
def _(q, scale, zero_point, axis):
    _need(q, "q", _QTYPES + (DType.i32,))
    shp = _param_shape(q, axis)
    _need(scale, "scale", (DType.f32,), shp)
    _need(zero_point, "zero_point", (DType.i32,), shp)
    return q.with_dtype(DType.f32)


@dequantize.reference
def _(q, scale, zero_point, axis):
    s = _bshape(scale, q.ndim, axis).astype(_F32)
    z = _bshape(zero_point, q.ndim, axis).astype(_I32)
    return ((q.astype(_I32) - z).astype(_F32) * s).astype(_F32)


@dequantize.examples
def _(rng):
    q = rng.integers(-128, 128, (3, 5)).astype(np.int8)
    yield [q, np.array(0.1, _F32), np.array(-2, _I32)], {}
    yield [q, np.linspace(0.01, 0.1, 3).astype(_F32), np.zeros(3, _I32)], {"axis": 0}


# ---- int8 GEMM and conv ------------------------------------------------------------------------

def _int8_out_scale(x_scale, w_scale) -> np.ndarray:
    """The one f32 multiplier per output channel every backend applies to the int32 sums."""
    return (x_scale.astype(_F32) * w_scale.astype(_F32)).astype(_F32)


_ACTIVATIONS = ("none", "relu")


def _check_activation(activation: str) -> None:
    if activation not in _ACTIVATIONS:
        raise ShapeError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")


def _activate(y: np.ndarray, activation: str) -> np.ndarray:
    return np.maximum(y, _F32(0)) if activation == "relu" else y


linear_int8 = define_op(
    "quant.linear_int8", inputs=("xq", "wq", "x_scale", "x_zp", "w_scale", "bias?"),
    attrs={"activation": (str, "none")}, tolerance=1e-4,
    doc="y = f32(sum_k (xq - x_zp) * wq[n, k]) * (x_scale * w_scale[n]) + bias; int32 sums; "
        "then activation (none|relu, fused into the kernel epilogue).")


@linear_int8.infer
def _(xq, wq, x_scale, x_zp, w_scale, bias, activation):
    _check_activation(activation)
    _need(xq, "xq", _QTYPES)
    _need(wq, "wq", (DType.i8,))
    if wq.rank != 2 or xq.rank < 1 or xq.shape[-1] != wq.shape[1]:
        raise ShapeError(f"xq [..., K] and wq [N, K] must agree on K, got {xq} and {wq}")
    n = wq.shape[0]
    _need(x_scale, "x_scale", (DType.f32,), ())
    _need(x_zp, "x_zp", (DType.i32,), ())
    _need(w_scale, "w_scale", _SCALE_DTYPES, (n,))
    _need(bias, "bias", (DType.f32,), (n,))
    return TensorType(xq.shape[:-1] + (n,), DType.f32)


@linear_int8.reference
def _(xq, wq, x_scale, x_zp, w_scale, bias, activation):
    acc = (xq.astype(np.int64) - int(x_zp)) @ wq.astype(np.int64).T
    out = acc.astype(_F32) * _int8_out_scale(x_scale, w_scale)
    out = out + bias.astype(_F32) if bias is not None else out
    return _activate(out.astype(_F32), activation)


def _i8(rng, *shape, lo=-128, hi=128, dtype=np.int8):
    return rng.integers(lo, hi, shape).astype(dtype)


@linear_int8.examples
def _(rng):
    sc = lambda n: (np.abs(rng.standard_normal(n)) * 0.01 + 0.001).astype(_F32)  # noqa: E731
    yield [_i8(rng, 5, 20), _i8(rng, 7, 20), np.array(0.02, _F32), np.array(3, _I32), sc(7),
           rng.standard_normal(7).astype(_F32)], {}
    yield [_i8(rng, 2, 3, 33, lo=0, hi=256, dtype=np.uint8), _i8(rng, 17, 33),
           np.array(0.01, _F32), np.array(128, _I32), sc(17).astype(np.float16)],\
        {"activation": "relu"}


linear_int8_dynamic = define_op(
    "quant.linear_int8_dynamic", inputs=("x", "wq", "w_scale", "bias?"), tolerance=1e-4,
    doc="Per-row dynamic int8: s = max|x_row|/127 (1 if 0), xq = round(x/s), then linear_int8.")


@linear_int8_dynamic.infer
def _(x, wq, w_scale, bias):
    _need(x, "x", (DType.f32,))
    _need(wq, "wq", (DType.i8,))
    if wq.rank != 2 or x.rank < 1 or x.shape[-1] != wq.shape[1]:
        raise ShapeError(f"x [..., K] and wq [N, K] must agree on K, got {x} and {wq}")
    _need(w_scale, "w_scale", _SCALE_DTYPES, (wq.shape[0],))
    _need(bias, "bias", (DType.f32,), (wq.shape[0],))
    return x.with_shape(x.shape[:-1] + (wq.shape[0],))


def dynamic_row_scale(x: np.ndarray) -> np.ndarray:
    amax = np.max(np.abs(x), axis=-1, keepdims=True).astype(_F32)
    return np.where(amax > 0, amax / _F32(127), _F32(1)).astype(_F32)


@linear_int8_dynamic.reference
def _(x, wq, w_scale, bias):
    s = dynamic_row_scale(x)
    xq = np.clip(np.round((x / s).astype(_F32)), -127, 127).astype(np.int64)
    acc = (xq @ wq.astype(np.int64).T).astype(_F32)
    out = acc * s * w_scale.astype(_F32)
    return (out + bias if bias is not None else out).astype(_F32)


@linear_int8_dynamic.examples
def _(rng):
    yield [rng.standard_normal((6, 24)).astype(_F32), _i8(rng, 5, 24),
           np.full(5, 0.01, np.float16), rng.standard_normal(5).astype(_F32)], {}
    yield [np.zeros((2, 8), _F32), _i8(rng, 3, 8), np.full(3, 0.1, _F32)], {}


conv2d_int8 = define_op(
    "quant.conv2d_int8", inputs=("xq", "wq", "x_scale", "x_zp", "w_scale", "bias?"),
    attrs={"stride": (tuple, (1, 1)), "padding": (tuple, (0, 0)), "dilation": (tuple, (1, 1)),
           "activation": (str, "none")},
    tolerance=1e-4,
    doc="NCHW int8 conv (groups=1): int32 sums of (xq - x_zp) * wq, padding counts as real 0 "
        "(= x_zp), then * x_scale * w_scale[o] + bias, then activation (none|relu).")


@conv2d_int8.infer
def _(xq, wq, x_scale, x_zp, w_scale, bias, stride, padding, dilation, activation):
    _check_activation(activation)
    _need(xq, "xq", _QTYPES)
    _need(wq, "wq", (DType.i8,))
    if xq.rank != 4 or wq.rank != 4 or xq.shape[1] != wq.shape[1]:
        raise ShapeError(f"xq [N,C,H,W] and wq [O,C,kh,kw] must agree on C, got {xq}, {wq}")
    _need(x_scale, "x_scale", (DType.f32,), ())
    _need(x_zp, "x_zp", (DType.i32,), ())
    _need(w_scale, "w_scale", _SCALE_DTYPES, (wq.shape[0],))
    _need(bias, "bias", (DType.f32,), (wq.shape[0],))
    (sh, sw), (ph, pw), (dh, dw) = K.window_attrs(stride, padding, dilation)
    oh = (xq.shape[2] + 2 * ph - dh * (wq.shape[2] - 1) - 1) // sh + 1
    ow = (xq.shape[3] + 2 * pw - dw * (wq.shape[3] - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f"window larger than the padded input: {xq}, {wq}")
    return TensorType((xq.shape[0], wq.shape[0], oh, ow), DType.f32)


@conv2d_int8.reference
def _(xq, wq, x_scale, x_zp, w_scale, bias, stride, padding, dilation, activation):
    xs = xq.astype(np.float64) - float(x_zp)  # exact integers in float64
    acc = K.conv2d(xs, wq.astype(np.float64), *K.window_attrs(stride, padding, dilation), 1)
    out = np.rint(acc).astype(_F32) * _int8_out_scale(x_scale, w_scale)[:, None, None]
    if bias is not None:
        out = out + bias.astype(_F32)[:, None, None]
    return _activate(out.astype(_F32), activation)


@conv2d_int8.examples
def _(rng):
    yield [_i8(rng, 2, 3, 6, 6), _i8(rng, 4, 3, 3, 3), np.array(0.05, _F32),
           np.array(-5, _I32), np.full(4, 0.01, _F32), rng.standard_normal(4).astype(_F32)], \
        {"padding": (1, 1)}
    yield [_i8(rng, 1, 2, 7, 5, lo=0, hi=256, dtype=np.uint8), _i8(rng, 3, 2, 2, 3),
           np.array(0.05, _F32), np.array(128, _I32), np.full(3, 0.02, _F32)], \
        {"stride": (2, 1), "activation": "relu"}


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
