"""Neural-network ops: dense and conv layers, pooling, normalization, softmax, embedding, attention.

The numpy references define what these ops mean for the interpreter and constant folding, so they
follow torch to the letter: output sizes (floor/ceil_mode), avg-pool divisors, adaptive-pool
windows, fully masked attention rows. The windowed kernels live in `_nn_numpy.py` to keep this
file a readable catalogue.
"""

from __future__ import annotations


import numpy as np

from ...errors import ShapeError
from ..types import DType, TensorType, broadcast_shapes, normalize_axis
from . import _nn_numpy as K
from .registry import REQUIRED, define_op

_F32 = np.float32


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(_F32)


def _floats(**named: TensorType | None) -> DType:
    """All given tensors are float and of one dtype; returns it (names appear in the error)."""
    first: tuple[str, DType] | None = None
    for name, t in named.items():
        if t is None:
            continue
        if not t.dtype.is_float:
            raise ShapeError(f"{name} must be a float tensor, got {t}")
        if first is None:
            first = (name, t.dtype)
        elif t.dtype != first[1]:
            raise ShapeError(f"{name} is {t.dtype} but {first[0]} is {first[1]}; insert a cast")
    assert first is not None
    return first[1]


def _rank(t: TensorType, name: str, ranks: tuple[int, ...]) -> None:
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"{name} must have rank {want}, got {t}")


def _vector(t: TensorType | None, name: str, n, what: str) -> None:
    """An optional per-channel tensor must be exactly [n]."""
    if t is not None and t.shape != (n,):
        raise ShapeError(f"{name} must be [{n}] ({what}), got {t}")


# ---- dense ------------------------------------------------------------------------------------

linear = define_op("linear", inputs=("x", "weight", "bias?"), tolerance=1e-4,
                   doc="x @ weight.T + bias over the last dim of x.")


@linear.infer
def _(x, weight, bias):
    _floats(x=x, weight=weight, bias=bias)
    if x.rank < 1 or weight.rank != 2:
        raise ShapeError(f"x must have rank >= 1 and weight rank 2, got x {x}, weight {weight}")
    n, k = weight.shape
    if x.shape[-1] != k:
        raise ShapeError(f"x has K={x.shape[-1]} but weight is [{n},{k}] (expects K={k})")
    _vector(bias, "bias", n, "one per output feature")
    return x.with_shape(x.shape[:-1] + (n,))


@linear.reference
def _(x, weight, bias):
    acc = K.acc_dtype(x.dtype)
    out = x.astype(acc) @ weight.astype(acc).T
    if bias is not None:
        out = out + bias.astype(acc)
    return out.astype(x.dtype)


@linear.examples
def _(rng):
    yield [_rand(rng, 4, 16), _rand(rng, 8, 16), _rand(rng, 8)], {}
    yield [_rand(rng, 2, 3, 16), _rand(rng, 5, 16)], {}
    yield [_rand(rng, 7), _rand(rng, 3, 7), _rand(rng, 3)], {}


matmul = define_op("matmul", inputs=("a", "b"), tolerance=1e-4,
                   doc="numpy.matmul: batch broadcasting, 1-D operands promoted then squeezed.")


@matmul.infer
def _(a, b):
    if a.dtype != b.dtype or a.dtype is DType.bool:
        raise ShapeError(f"operands must share a numeric dtype, got {a.dtype} and {b.dtype}")
    if a.rank == 0 or b.rank == 0:
        raise ShapeError("operands must have rank >= 1 (use mul for scalars)")
    ash = a.shape if a.rank > 1 else (1,) + a.shape
    bsh = b.shape if b.rank > 1 else b.shape + (1,)
    if ash[-1] != bsh[-2]:
        raise ShapeError(f"contraction dims differ: a has K={ash[-1]}, b has K={bsh[-2]}")
    batch = broadcast_shapes(ash[:-2], bsh[:-2])
    out = batch + ((ash[-2],) if a.rank > 1 else ()) + ((bsh[-1],) if b.rank > 1 else ())
    return a.with_shape(out)


@matmul.reference
def _(a, b):
    if a.dtype.kind != "f":
        return np.matmul(a, b)
    acc = K.acc_dtype(a.dtype)
    return np.matmul(a.astype(acc), b.astype(acc)).astype(a.dtype)


@matmul.examples
def _(rng):
    yield [_rand(rng, 3, 4), _rand(rng, 4, 5)], {}
    yield [_rand(rng, 2, 1, 3, 4), _rand(rng, 5, 4, 6)], {}
    yield [_rand(rng, 4), _rand(rng, 2, 4, 3)], {}
    yield [_rand(rng, 2, 3, 4), _rand(rng, 4)], {}
    yield [_rand(rng, 4), _rand(rng, 4)], {}
    yield [rng.integers(-5, 5, (3, 4)), rng.integers(-5, 5, (4, 2))], {}


# ---- convolution and pooling ------------------------------------------------------------------

conv2d = define_op("conv2d", inputs=("x", "weight", "bias?"), tolerance=1e-4,
                   attrs={"stride": (tuple, (1, 1)), "padding": (tuple, (0, 0)),
                          "dilation": (tuple, (1, 1)), "groups": (int, 1)},
                   doc="NCHW cross-correlation with weight [O, C/groups, kh, kw], as torch.")


@conv2d.infer
def _(x, weight, bias, stride, padding, dilation, groups):
    _floats(x=x, weight=weight, bias=bias)
    _rank(x, "x", (4,))
    _rank(weight, "weight", (4,))
    g = K.positive(groups, "groups")
    o, cg, kh, kw = weight.shape
    if x.shape[1] != K.mul(cg, g):
        raise ShapeError(f"x has C={x.shape[1]} channels but weight {weight} with groups={g} "
                         f"expects C={K.mul(cg, g)}")
    if not isinstance(o, int) or o % g:
        raise ShapeError(f"out channels {o} are not divisible by groups={g}")
    _vector(bias, "bias", o, "one per output channel")
    s, p, d = K.window_attrs(stride, padding, dilation)
    h = K.window_out(x.shape[2], kh, s[0], p[0], d[0], False, "H")
    w = K.window_out(x.shape[3], kw, s[1], p[1], d[1], False, "W")
    return x.with_shape((x.shape[0], o, h, w))


@conv2d.reference
def _(x, weight, bias, stride, padding, dilation, groups):
    out = K.conv2d(x, weight, *K.window_attrs(stride, padding, dilation), groups)
    if bias is not None:
        out = out + bias.astype(out.dtype)[:, None, None]
    return out.astype(x.dtype)


@conv2d.examples
def _(rng):
    yield [_rand(rng, 2, 3, 8, 8), _rand(rng, 4, 3, 3, 3), _rand(rng, 4)], {}
    yield [_rand(rng, 1, 4, 9, 7), _rand(rng, 6, 2, 3, 2)], {"stride": (2, 1), "padding": (1, 0),
                                                             "groups": 2}
    yield [_rand(rng, 2, 4, 10, 10), _rand(rng, 4, 1, 3, 3), _rand(rng, 4)], {
        "padding": (2, 2), "dilation": (2, 2), "groups": 4}
    yield [_rand(rng, 1, 3, 6, 6), _rand(rng, 5, 3, 1, 1)], {"stride": (3, 3)}
    yield [_rand(rng, 1, 2, 5, 6), _rand(rng, 3, 2, 2, 4), _rand(rng, 3)], {
        "stride": (2, 3), "padding": (1, 2), "dilation": (1, 2)}


def _pool_infer(x, kernel_size, stride, padding, dilation, ceil_mode):
    _floats(x=x)
    _rank(x, "x", (3, 4))
    k = K.pair(kernel_size, "kernel_size", 1)
    s, p, d = K.window_attrs(stride, padding, dilation)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ShapeError(f"padding {p} must be at most half of kernel_size {k}")
    h = K.window_out(x.shape[-2], k[0], s[0], p[0], d[0], bool(ceil_mode), "H")
    w = K.window_out(x.shape[-1], k[1], s[1], p[1], d[1], bool(ceil_mode), "W")
    return x.with_shape(x.shape[:-2] + (h, w))


max_pool2d = define_op("max_pool2d", inputs=("x",),
                       attrs={"kernel_size": (tuple, REQUIRED), "stride": (tuple, REQUIRED),
                              "padding": (tuple, (0, 0)), "dilation": (tuple, (1, 1)),
                              "ceil_mode": (bool, False)},
                       doc="Max over windows of the last two dims ([N,]C,H,W), as torch.")


@max_pool2d.infer
def _(x, kernel_size, stride, padding, dilation, ceil_mode):
    return _pool_infer(x, kernel_size, stride, padding, dilation, ceil_mode)


@max_pool2d.reference
def _(x, kernel_size, stride, padding, dilation, ceil_mode):
    return K.max_pool2d(x, K.pair(kernel_size, "kernel_size", 1),
                        *K.window_attrs(stride, padding, dilation), bool(ceil_mode))


@max_pool2d.examples
def _(rng):
    yield [_rand(rng, 2, 3, 8, 8)], {"kernel_size": (2, 2), "stride": (2, 2)}
    yield [_rand(rng, 1, 2, 7, 9)], {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}
    yield [_rand(rng, 1, 2, 4, 4)], {"kernel_size": (2, 2), "stride": (3, 3), "padding": (1, 1),
                                      "ceil_mode": True}
    yield [_rand(rng, 2, 5, 7)], {"kernel_size": (2, 3), "stride": (2, 2), "ceil_mode": True}
    yield [_rand(rng, 1, 1, 9, 9)], {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 1),
                                      "dilation": (2, 3)}


avg_pool2d = define_op("avg_pool2d", inputs=("x",),
                       attrs={"kernel_size": (tuple, REQUIRED), "stride": (tuple, REQUIRED),
                              "padding": (tuple, (0, 0)), "ceil_mode": (bool, False),
                              "count_include_pad": (bool, True)},
                       doc="Mean over windows of the last two dims, torch's divisor rules.")


@avg_pool2d.infer
def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    return _pool_infer(x, kernel_size, stride, padding, (1, 1), ceil_mode)


@avg_pool2d.reference
def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    return K.avg_pool2d(x, K.pair(kernel_size, "kernel_size", 1), K.pair(stride, "stride", 1),
                        K.pair(padding, "padding", 0), bool(ceil_mode), bool(count_include_pad))


@avg_pool2d.examples
def _(rng):
    yield [_rand(rng, 2, 3, 8, 8)], {"kernel_size": (2, 2), "stride": (2, 2)}
    yield [_rand(rng, 1, 2, 7, 9)], {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}
    yield [_rand(rng, 1, 2, 7, 9)], {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1),
                                      "count_include_pad": False}
    yield [_rand(rng, 1, 2, 4, 4)], {"kernel_size": (2, 2), "stride": (3, 3), "padding": (1, 1),
                                      "ceil_mode": True}
    yield [_rand(rng, 3, 6, 5)], {"kernel_size": (4, 2), "stride": (3, 2), "padding": (2, 1),
                                   "ceil_mode": True, "count_include_pad": False}


adaptive_avg_pool2d = define_op("adaptive_avg_pool2d", inputs=("x",),
                                attrs={"output_size": (tuple, REQUIRED)},
                                doc="torch adaptive average pooling; None keeps that input dim.")


def _adaptive_size(x: TensorType, output_size) -> tuple:
    sizes = output_size if isinstance(output_size, tuple) else (output_size, output_size)
    if len(sizes) != 2:
        raise ShapeError(f"output_size must be (oh, ow), got {output_size!r}")
    out = []
    for s, dim in zip(sizes, x.shape[-2:]):
        if s is None:
            out.append(dim)
        elif isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ShapeError(f"output_size entries must be positive ints or None, "
                             f"got {output_size!r}")
        else:
            out.append(s)
    return tuple(out)


@adaptive_avg_pool2d.infer
def _(x, output_size):
    _floats(x=x)
    _rank(x, "x", (3, 4))
    return x.with_shape(x.shape[:-2] + _adaptive_size(x, output_size))


@adaptive_avg_pool2d.reference
def _(x, output_size):
    oh, ow = _adaptive_size(TensorType.of(x), output_size)
    ph = K.adaptive_matrix(x.shape[-2], oh)
    pw = K.adaptive_matrix(x.shape[-1], ow)
    return (ph @ x.astype(np.float64) @ pw.T).astype(x.dtype)


@adaptive_avg_pool2d.examples
def _(rng):
    yield [_rand(rng, 2, 3, 8, 8)], {"output_size": (1, 1)}
    yield [_rand(rng, 1, 2, 7, 10)], {"output_size": (3, 4)}
    yield [_rand(rng, 2, 5, 6)], {"output_size": (None, 4)}
    yield [_rand(rng, 1, 1, 3, 3)], {"output_size": (5, 2)}


# ---- normalization ----------------------------------------------------------------------------

batch_norm = define_op("batch_norm", inputs=("x", "mean", "var", "weight?", "bias?"),
                       attrs={"eps": (float, 1e-5)}, tolerance=1e-4,
                       doc="Inference batch norm with running stats over dim 1.")


@batch_norm.infer
def _(x, mean, var, weight, bias, eps):
    _floats(x=x, mean=mean, var=var, weight=weight, bias=bias)
    if x.rank < 2:
        raise ShapeError(f"x must have rank >= 2 ([N, C, ...]), got {x}")
    c = x.shape[1]
    for name, t in (("mean", mean), ("var", var), ("weight", weight), ("bias", bias)):
        _vector(t, name, c, "one per channel of dim 1")
    return x


@batch_norm.reference
def _(x, mean, var, weight, bias, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    scale = inv if weight is None else inv * weight
    shift = -mean * scale + (0.0 if bias is None else bias)
    out = x.astype(np.float64) * scale.reshape(shape) + shift.reshape(shape)
    return out.astype(x.dtype)


@batch_norm.examples
def _(rng):
    def stats(c):
        return [_rand(rng, c), (rng.random(c) + 0.5).astype(_F32)]

    yield [_rand(rng, 2, 4, 5, 5), *stats(4), _rand(rng, 4), _rand(rng, 4)], {}
    yield [_rand(rng, 3, 6), *stats(6)], {"eps": 1e-3}
    yield [_rand(rng, 2, 3, 7), *stats(3), _rand(rng, 3)], {}


layer_norm = define_op("layer_norm", inputs=("x", "weight?", "bias?"),
                       attrs={"normalized_ndim": (int, 1), "eps": (float, 1e-5)}, tolerance=1e-4,
                       doc="Normalize over the last normalized_ndim dims (biased variance).")


@layer_norm.infer
def _(x, weight, bias, normalized_ndim, eps):
    _floats(x=x, weight=weight, bias=bias)
    n = normalized_ndim
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= x.rank:
        raise ShapeError(f"normalized_ndim={n!r} must be an int in [1, rank {x.rank}]")
    inner = x.shape[x.rank - n:]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != inner:
            raise ShapeError(f"{name} must have the normalized shape [{','.join(map(str, inner))}]"
                             f", got {t}")
    return x


@layer_norm.reference
def _(x, weight, bias, normalized_ndim, eps):
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mu) ** 2).mean(axis=axes, keepdims=True)
    out = (x64 - mu) / np.sqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out.astype(x.dtype)


@layer_norm.examples
def _(rng):
    yield [_rand(rng, 2, 5, 16), _rand(rng, 16), _rand(rng, 16)], {}
    yield [_rand(rng, 3, 4, 6), _rand(rng, 4, 6)], {"normalized_ndim": 2, "eps": 1e-6}
    yield [_rand(rng, 4, 8)], {}


def _softmax_family(kind: str, log: bool):
    schema = define_op(kind, inputs=("x",), attrs={"dim": (int, -1)},
                       doc=f"{'log ' if log else ''}softmax along `dim`.")

    @schema.infer
    def _(x, dim):
        _floats(x=x)
        if x.rank == 0:
            raise ShapeError(f"{kind} of a 0-d tensor: reshape it to [1] first")
        normalize_axis(dim, x.rank, "dim")
        return x

    @schema.reference
    def _(x, dim):
        x64 = x.astype(np.float64)
        shifted = x64 - x64.max(axis=dim, keepdims=True)
        if log:
            out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        else:
            e = np.exp(shifted)
            out = e / e.sum(axis=dim, keepdims=True)
        return out.astype(x.dtype)

    @schema.examples
    def _(rng):
        yield [_rand(rng, 3, 7) * 3], {}
        yield [_rand(rng, 2, 5, 4)], {"dim": 1}
        yield [_rand(rng, 4, 3, 2)], {"dim": -3}

    return schema


softmax = _softmax_family("softmax", log=False)
log_softmax = _softmax_family("log_softmax", log=True)
