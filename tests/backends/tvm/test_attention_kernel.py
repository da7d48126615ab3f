"""The fused attention kernel (kernels/attention.py) against torch's SDPA: masks none / causal /
bool / additive, fully masked rows (0, as torch), finfo.min rows (a softmax, as torch), L != S,
several key blocks, a symbolic batch; and the cases that keep the composite lowering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax

from ember.backends.tvm import build, lower
from ember.backends.tvm.build import fused_module
from ember.backends.tvm.kernels.attention import KEY_BLOCK, fast_exp
from ember.backends.tvm.lowering import attention as attention_lowering
from ember.ir import DType, Graph, TensorType

F32 = DType.f32


def _graph(qs, ks, vs, ms=None, mdtype=F32, dtype=F32, **attrs) -> Graph:
    g = Graph("main")
    ins = [g.add_input(n, TensorType(s, dtype)) for n, s in (("q", qs), ("k", ks), ("v", vs))]
    if ms is not None:
        ins.append(g.add_input("m", TensorType(ms, mdtype)))
    g.set_outputs(g.add("scaled_dot_product_attention", *ins, **attrs))
    return g


def _kernel_names(g: Graph) -> set[str]:
    return {gv.name_hint for gv in lower(g).get_global_vars()}


def _run(g: Graph, *arrays) -> np.ndarray:
    vm = relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]).numpy()


def _torch(q, k, v, m=None, **attrs) -> np.ndarray:
    t = [torch.from_numpy(a) for a in (q, k, v)]
    mask = None if m is None else torch.from_numpy(m)
    return F.scaled_dot_product_attention(*t, attn_mask=mask, **attrs).numpy()


def _qkv(rng, qs, ks, vs):
    return [rng.standard_normal(s).astype(np.float32) for s in (qs, ks, vs)]


def _check(g, arrays, want, fused=True):
    assert ("fused_attention" in _kernel_names(g)) == fused
    got = _run(g, *arrays)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("shapes,attrs", [
    (((2, 4, 17, 8), (2, 4, 17, 8), (2, 4, 17, 8)), {}),  # digits_vit's attention
    (((3, 5, 16), (3, 70, 16), (3, 70, 12)), {"scale": 0.3}),  # L < S, 3 key blocks, Ev 12
    (((2, 2, 20, 8), (2, 2, 9, 8), (2, 2, 9, 3)), {"is_causal": True}),  # L > S, Ev 3
    (((1, 3, 9, 4), (1, 3, 40, 4), (1, 3, 40, 8)), {"is_causal": True}),  # L < S, 2 blocks
    (((6, 8), (11, 8), (11, 8)), {}),  # no batch dims
    (((2, 3, 30, 32), (2, 3, 45, 32), (2, 3, 45, 24)), {"is_causal": True}),  # 4 keys at once
    (((1, 2, 3, 72), (1, 2, 61, 72), (1, 2, 61, 72)), {}),  # E > 64: the E loop not unrolled
])
def test_fused_matches_torch(shapes, attrs):
    rng = np.random.default_rng(0)
    arrays = _qkv(rng, *shapes)
    _check(_graph(*shapes, **attrs), arrays, _torch(*arrays, **attrs))


def test_bool_mask_with_fully_masked_rows_gives_zero_rows():
    rng = np.random.default_rng(1)
    shapes = ((2, 3, 10, 8), (2, 3, 45, 8), (2, 3, 45, 8))
    arrays = _qkv(rng, *shapes)
    keep = rng.random((10, 45)) > 0.4
    keep[3] = False  # every key masked: torch gives 0 (its safe softmax), not NaN
    want = _torch(*arrays, keep)
    assert np.all(want[:, :, 3] == 0)
    _check(_graph(*shapes, (10, 45), DType.bool), [*arrays, keep], want)


def test_padding_mask_broadcast_over_heads_and_queries():
    rng = np.random.default_rng(2)
    shapes = ((3, 2, 7, 8), (3, 2, 12, 8), (3, 2, 12, 8))
    arrays = _qkv(rng, *shapes)
    keep = rng.random((3, 1, 1, 12)) > 0.3
    keep[1] = False  # a whole sequence padded away
    _check(_graph(*shapes, (3, 1, 1, 12), DType.bool), [*arrays, keep], _torch(*arrays, keep))


@pytest.mark.parametrize("mshape", [(1, 12), (1, 4, 1, 12), (3, 1, 7, 1), (4, 7, 12)])
def test_masks_broadcast_along_any_dim(mshape):
    rng = np.random.default_rng(7)
    shapes = ((3, 4, 7, 8), (3, 4, 12, 8), (3, 4, 12, 8))
    arrays = _qkv(rng, *shapes)
    keep = rng.random(mshape) > 0.3
    add = rng.standard_normal(mshape).astype(np.float32)
    _check(_graph(*shapes, mshape, DType.bool), [*arrays, keep], _torch(*arrays, keep))
    _check(_graph(*shapes, mshape), [*arrays, add], _torch(*arrays, add))


def test_additive_mask_with_inf_and_finfo_min_rows():
    rng = np.random.default_rng(3)
    shapes = ((2, 4, 9, 8), (2, 4, 33, 8), (2, 4, 33, 8))
    arrays = _qkv(rng, *shapes)
    add = rng.standard_normal((2, 4, 9, 33)).astype(np.float32)
    add[0, 1, 2] = -np.inf  # dead row: 0
    add[1, 3, 5] = np.finfo(np.float32).min  # torch: a softmax over near-equal scores (mean of v)
    add[1, 0, :, 5:] = -np.inf  # keys beyond the first block all masked
    want = _torch(*arrays, add)
    assert np.all(want[0, 1, 2] == 0)
    np.testing.assert_allclose(want[1, 3, 5], arrays[2][1, 3].mean(0), rtol=1e-4, atol=1e-5)
    _check(_graph(*shapes, (2, 4, 9, 33)), [*arrays, add], want)


def test_finfo_min_row_in_the_composite_form_matches_torch(monkeypatch):
    monkeypatch.setattr(attention_lowering, "FUSED_ATTENTION", False)
    rng = np.random.default_rng(4)
    shapes = ((1, 2, 4, 8), (1, 2, 6, 8), (1, 2, 6, 8))
    arrays = _qkv(rng, *shapes)
    add = np.zeros((4, 6), np.float32)
    add[1] = np.finfo(np.float32).min
    add[2] = -np.inf
    _check(_graph(*shapes, (4, 6)), [*arrays, add], _torch(*arrays, add), fused=False)


def test_symbolic_batch_builds_once_and_runs_small_and_large_batches():
    """Batch 1 stays under the parallel threshold, batch 80 above it: both loops must agree."""
    rng = np.random.default_rng(5)
    shapes = (("batch", 4, 17, 8), ("batch", 4, 17, 8), ("batch", 4, 17, 8))
    g = _graph(*shapes, ("batch", 1, 1, 17), DType.bool)
    assert "fused_attention" in _kernel_names(g)
    vm = relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())
    for b in (1, 80):
        arrays = _qkv(rng, *[(b, 4, 17, 8)] * 3)
        keep = rng.random((b, 1, 1, 17)) > 0.2
        keep[0, ..., :] = False
        got = vm["main"](*[tvm.runtime.tensor(a) for a in (*arrays, keep)]).numpy()
        np.testing.assert_allclose(got, _torch(*arrays, keep), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("batch", [3, "batch"])
def test_split_heads_transposes_are_read_in_place(batch):
    """q/k/v = permute(x, (0, 2, 1, 3)) of [B, L, H, E] (a transformer's split heads): the
    kernel reads x, and no transpose kernel is left for q/k/v."""
    g = Graph("main")
    xs = [g.add_input(n, TensorType((batch, 17, 4, 8), F32)) for n in ("q", "k", "v")]
    heads = [g.add("permute", x, dims=(0, 2, 1, 3)) for x in xs]
    m = g.add_input("m", TensorType((batch, 1, 1, 17), DType.bool))
    g.set_outputs(g.add("scaled_dot_product_attention", *heads, m))
    mod = lower(g)
    assert "fused_attention" in {gv.name_hint for gv in mod.get_global_vars()}
    fused, _ = fused_module(mod, "cpu")  # dead transposes are gone after fusion
    assert not [gv for gv in fused.get_global_vars() if "transpose" in gv.name_hint]
    vm = relax.VirtualMachine(build(mod, "cpu"), tvm.cpu())
    rng = np.random.default_rng(8)
    for b in ([3] if batch == 3 else [1, 70]):
        arrays = _qkv(rng, *[(b, 17, 4, 8)] * 3)
        keep = rng.random((b, 1, 1, 17)) > 0.3
        got = vm["main"](*[tvm.runtime.tensor(a) for a in (*arrays, keep)]).numpy()
        want = _torch(*[a.transpose(0, 2, 1, 3).copy() for a in arrays], keep)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", ["f16", "broadcast_batch", "symbolic_seq"])
def test_other_cases_keep_the_composite_lowering(case):
    rng = np.random.default_rng(6)
    if case == "f16":
        g = _graph((2, 5, 8), (2, 7, 8), (2, 7, 8), dtype=DType.f16)
        assert "fused_attention" not in _kernel_names(g)
        return
    if case == "symbolic_seq":
        g = _graph((2, "seq", 8), (2, "seq", 8), (2, "seq", 8))
        assert "fused_attention" not in _kernel_names(g)
        return
    shapes = ((2, 1, 4, 8), (1, 3, 5, 8), (1, 3, 5, 2))
    arrays = _qkv(rng, *shapes)
    _check(_graph(*shapes), arrays, _torch(*arrays), fused=False)


def test_fast_exp_is_close_to_exp_and_zero_below_range():
    x = np.concatenate([np.linspace(-87.0, 0.0, 4000, dtype=np.float32),
                        np.array([-np.inf, -1e30, -88.0, -200.0, -3e38, 0.0, -1e-7, -0.5],
                                 np.float32)])
    x = np.concatenate([x, np.zeros((-len(x)) % 8, np.float32)])
    n = len(x)
    from tvm.script import tirx as T

    @T.prim_func
    def f(a: T.Buffer((n,), "float32"), b: T.Buffer((n,), "float32")):
        for i in range(n // 8):
            b[T.ramp(i * 8, 1, 8)] = fast_exp(a[T.ramp(i * 8, 1, 8)])

    lib = tvm.compile(tvm.IRModule({"main": f}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(n, np.float32))
    lib["main"](tvm.runtime.tensor(x), out)
    got, want = out.numpy(), np.exp(x.astype(np.float64))
    small = x < -87.3
    assert np.all(got[small] == 0)
    np.testing.assert_allclose(got[~small], want[~small], rtol=3e-7, atol=0)
    assert KEY_BLOCK * 8 * 4 < 1024  # the score tile stays a stack array (TVM: < 1 KiB)
