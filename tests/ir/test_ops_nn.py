"""nn and reduce ops beyond the registry examples: symbolic dims, error messages, torch sweeps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ember.backends.torch import run_op
from ember.errors import InputError, ShapeError
from ember.ir import DType, Graph, TensorType, interpret
from ember.ir.ops import get_schema


def _infer(kind, types, **attrs):
    schema = get_schema(kind)
    return schema.infer_types(types, schema.complete_attrs(attrs))


def _ref(kind, arrays, **attrs):
    schema = get_schema(kind)
    return schema.run_reference(arrays, schema.complete_attrs(attrs))[0]


def f32(*shape):
    return TensorType(shape, DType.f32)


def test_linear_names_the_mismatch():
    with pytest.raises(ShapeError, match=r"x has K=64 but weight is \[128,60\]"):
        _infer("linear", [f32(4, 64), f32(128, 60)])
    with pytest.raises(ShapeError, match="bias must be"):
        _infer("linear", [f32(4, 60), f32(128, 60), f32(60)])


def test_symbolic_batch_passes_through():
    g = Graph()
    x = g.add_input("x", f32("batch", 1, 8, 8))
    w = g.const(np.zeros((4, 1, 3, 3), np.float32))
    y = g.add("conv2d", x, w, stride=(2, 2))
    assert str(y.type) == "f32[batch,4,3,3]"
    p = g.add("max_pool2d", y, kernel_size=(2, 2), stride=(1, 1))
    assert str(p.type) == "f32[batch,4,2,2]"
    s = g.add("sum", p, dims=(2, 3))
    assert str(s.type) == "f32[batch,4]"
    a = g.add("argmax", s, dim=-1)
    assert str(a.type) == "i64[batch]"
    assert str(_infer("linear", [f32("b", "t", 8), f32(3, 8)])[0]) == "f32[b,t,3]"
    assert str(_infer("matmul", [f32("b", 4, 8), f32(8, 2)])[0]) == "f32[b,4,2]"


def test_symbolic_spatial_dims_only_when_length_is_kept():
    same = _infer("conv2d", [f32("n", 3, "h", "w"), f32(8, 3, 3, 3)], padding=(1, 1))
    assert str(same[0]) == "f32[n,8,h,w]"
    with pytest.raises(ShapeError, match="symbolic.*static"):
        _infer("conv2d", [f32("n", 3, "h", 8), f32(8, 3, 3, 3)], stride=(2, 2), padding=(1, 1))
    pooled = _infer("adaptive_avg_pool2d", [f32("n", 3, "h", "w")], output_size=(1, 1))
    assert str(pooled[0]) == "f32[n,3,1,1]"


def test_conv_and_pool_shape_errors():
    with pytest.raises(ShapeError, match="C=4 channels"):
        _infer("conv2d", [f32(1, 4, 8, 8), f32(8, 3, 3, 3)])
    with pytest.raises(ShapeError, match="smaller than the window"):
        _infer("conv2d", [f32(1, 3, 2, 2), f32(8, 3, 3, 3)])
    with pytest.raises(ShapeError, match="at most half"):
        _infer("max_pool2d", [f32(1, 3, 8, 8)], kernel_size=(2, 2), stride=(2, 2), padding=(2, 2))
    with pytest.raises(ShapeError, match="pair of ints"):
        _infer("conv2d", [f32(1, 3, 8, 8), f32(8, 3, 3, 3)], stride=(1, 2, 3))
    with pytest.raises(ShapeError, match="float"):
        _infer("conv2d", [TensorType((1, 3, 8, 8), DType.i32), f32(8, 3, 3, 3)])


POOL_CASES = [
    (size, k, s, p, d, ceil)
    for size, k, s, ceil in itertools.product((4, 5, 7), (1, 2, 3), (1, 2, 3), (False, True))
    for p in range(k // 2 + 1)
    for d in (1, 2)
]


@pytest.mark.parametrize("kind", ["max_pool2d", "avg_pool2d"])
def test_pool_sizes_and_values_match_torch(kind):
    rng = np.random.default_rng(1)
    checked = 0
    for size, k, s, p, d, ceil in POOL_CASES:
        if kind == "avg_pool2d" and d != 1:
            continue
        x = rng.standard_normal((1, 2, size, size + 1)).astype(np.float32)
        tx = torch.from_numpy(x)
        attrs = {"kernel_size": (k, k), "stride": (s, s), "padding": (p, p), "ceil_mode": ceil}
        if kind == "max_pool2d":
            attrs["dilation"] = (d, d)
        else:
            attrs["count_include_pad"] = p % 2 == 0
        try:
            if kind == "max_pool2d":
                want = F.max_pool2d(tx, k, s, p, d, ceil_mode=ceil)
            else:
                want = F.avg_pool2d(tx, k, s, p, ceil_mode=ceil, count_include_pad=p % 2 == 0)
        except RuntimeError:  # torch rejects it: so must we
            with pytest.raises(ShapeError):
                _infer(kind, [TensorType.of(x)], **attrs)
            continue
        assert tuple(_infer(kind, [TensorType.of(x)], **attrs)[0].shape) == tuple(want.shape)
        np.testing.assert_allclose(_ref(kind, [x], **attrs), want.numpy(), rtol=1e-6, atol=1e-6)
        checked += 1
    assert checked > 50


def test_conv2d_random_configs_match_torch():
    rng = np.random.default_rng(2)
    for _ in range(40):
        groups = int(rng.choice([1, 2, 3]))
        c, o = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.integers(1, 3, 2))
        p = tuple(int(v) for v in rng.integers(0, 3, 2))
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        x = rng.standard_normal((2, c, 9, 8)).astype(np.float32)
        w = rng.standard_normal((o, c // groups, kh, kw)).astype(np.float32)
        b = rng.standard_normal(o).astype(np.float32)
        attrs = {"stride": s, "padding": p, "dilation": d, "groups": groups}
        want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), s, p, d,
                        groups).numpy()
        got = _ref("conv2d", [x, w, b], **attrs)
        assert _infer("conv2d", [TensorType.of(a) for a in (x, w, b)], **attrs)[0] == \
            TensorType.of(want)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_attention_masks():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(3))
    keep = np.ones((3, 3), bool)
    keep[1] = False  # a fully masked row gives zeros, like torch
    out = _ref("scaled_dot_product_attention", [q, k, v, keep])
    assert np.all(out[:, 1] == 0) and np.all(np.isfinite(out))
    with pytest.raises(ShapeError, match="not both"):
        _infer("scaled_dot_product_attention", [TensorType.of(a) for a in (q, k, v, keep)],
               is_causal=True)
    with pytest.raises(ShapeError, match="do(es)? not broadcast"):
        _infer("scaled_dot_product_attention",
               [TensorType.of(a) for a in (q, k, v)] + [TensorType((3, 5), DType.bool)])
    with pytest.raises(ShapeError, match="E=4 but k has E=5"):
        _infer("scaled_dot_product_attention", [f32(3, 4), f32(3, 5), f32(3, 5)])


def test_embedding_rejects_out_of_range_indices():
    w = np.zeros((5, 2), np.float32)
    with pytest.raises(InputError, match="index 5"):
        _ref("embedding", [w, np.array([0, 5])])
    with pytest.raises(InputError, match="index -1"):
        _ref("embedding", [w, np.array([-1])])
    with pytest.raises(ShapeError, match="i64 or i32"):
        _infer("embedding", [f32(5, 2), f32(3)])


def test_reduction_dtypes_and_errors():
    i32 = TensorType((3, 4), DType.i32)
    assert _infer("sum", [i32], dims=(1,))[0] == TensorType((3,), DType.i64)
    assert _infer("cumsum", [TensorType((3,), DType.bool)], dim=0)[0].dtype is DType.i64
    assert _infer("amax", [i32])[0] == TensorType((), DType.i32)
    with pytest.raises(ShapeError, match="float"):
        _infer("mean", [i32])
    with pytest.raises(ShapeError, match="twice"):
        _infer("sum", [f32(2, 3)], dims=(1, -1))
    with pytest.raises(ShapeError, match="out of range"):
        _infer("argmax", [f32(2, 3)], dim=2)
    assert _infer("var", [f32(2, 3, 4)], dims=(0, 2), keepdim=True)[0] == f32(1, 3, 1)


def test_small_cnn_interprets_like_torch():
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((10, 8)).astype(np.float32)
    g = Graph()
    x = g.add_input("x", f32("batch", 1, 8, 8))
    h = g.add("relu", g.add("conv2d", x, g.const(w1), padding=(1, 1)))
    h = g.add("conv2d", h, g.const(w2), groups=4, stride=(2, 2))
    h = g.add("avg_pool2d", h, kernel_size=(2, 2), stride=(2, 2), ceil_mode=True)
    h = g.add("mean", h, dims=(2, 3))
    g.set_outputs(g.add("log_softmax", g.add("linear", h, g.const(fc)), dim=1))
    xs = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    t = F.conv2d(F.relu(F.conv2d(torch.from_numpy(xs), torch.from_numpy(w1), padding=1)),
                 torch.from_numpy(w2), groups=4, stride=2)
    t = F.avg_pool2d(t, 2, 2, ceil_mode=True).mean((2, 3))
    want = torch.log_softmax(F.linear(t, torch.from_numpy(fc)), 1).numpy()
    np.testing.assert_allclose(interpret(g, xs), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind,shapes,attrs", [
    ("conv2d", [(1, 2, 5, 5), (2, 1, 3, 3), (2,)],
     {"stride": (2, 1), "padding": (1, 1), "groups": 2}),
    ("layer_norm", [(2, 3, 4), (3, 4), (3, 4)], {"normalized_ndim": 2, "eps": 1e-5}),
    ("scaled_dot_product_attention", [(2, 3, 4), (2, 5, 4), (2, 5, 2)],
     {"is_causal": False, "scale": None}),
    ("batch_norm", [(2, 3, 4), (3,), (3,), (3,), (3,)], {"eps": 1e-5}),
    ("prod", [(2, 3, 4)], {"dims": (0, 2), "keepdim": False}),
    ("var", [(3, 5)], {"dims": (1,), "keepdim": True, "correction": 1}),
])
def test_torch_implementations_are_differentiable(kind, shapes, attrs):
    gen = torch.Generator().manual_seed(0)
    args = [torch.rand(s, dtype=torch.float64, generator=gen) + 0.5 for s in shapes]
    for a in args:
        a.requires_grad_(True)
    full = get_schema(kind).complete_attrs(attrs)
    assert torch.autograd.gradcheck(lambda *xs: run_op(kind, xs, full)[0], args)


@pytest.mark.parametrize("kind,attrs", [
    ("sum", {}), ("amax", {"dims": (-1,)}), ("prod", {"keepdim": True}),
    ("argmin", {"dim": 0}), ("cumsum", {"dim": -1}),
])
def test_reductions_of_0d_tensors_match_torch(kind, attrs):
    x = np.array(3, np.int32)
    full = get_schema(kind).complete_attrs(attrs)
    want = run_op(kind, [torch.from_numpy(x)], full)[0].numpy()
    assert _infer(kind, [TensorType.of(x)], **attrs)[0] == TensorType.of(want)
    np.testing.assert_array_equal(_ref(kind, [x], **attrs), want)
