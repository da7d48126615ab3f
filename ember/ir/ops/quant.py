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
from .registry import define_op

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
