"""The AVX2 u8 x s8 (vpmaddubsw) int8 GEMM: exact vs an integer numpy reference, kernel choice."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.ir import DType, Graph, TensorType

tvm = pytest.importorskip("tvm")

from ember.backends.tvm.kernels import qgemm_u8s8 as QU
from ember.backends.tvm.kernels.qgemm import Source
from ember.backends.tvm.targets import host_features

F32 = np.float32
AVX2 = host_features().has("avx2")
needs_avx2 = pytest.mark.skipif(not AVX2, reason="runs the AVX2 kernel on this host")
ZNVER3 = {"kind": "llvm", "mcpu": "znver3"}


def _run_kernel(x, zp, wq, bias, relu, src, mr=QU.MR, nv=QU.NV):
    f = QU.u8s8_int8_gemm(wq.shape[0], wq.shape[1], src, relu, mr, nv)
    ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}),
                     target=tvm.target.Target(ZNVER3))
    n = wq.shape[0]
    wp = QU.pack_weights(wq, nv)
    npad = wp.shape[0] * 8
    cs = np.zeros(npad, np.int32)
    cs[:n] = wq.astype(np.int32).sum(1)
    s, b = np.zeros(npad, F32), np.zeros(npad, F32)
    s[:n], b[:n] = 1.0, bias
    out = tvm.runtime.tensor(np.zeros((x.shape[0], n), F32))
    args = [tvm.runtime.tensor(a) for a in (x, np.ones(1, F32), np.array([zp], np.int32), wp,
                                            cs, s, b)]
    ex["main"](*args, out)
    return out.numpy()


@needs_avx2
@pytest.mark.parametrize("m,n,k,dtype,relu,mr,nv", [
    (5, 7, 20, "int8", False, 4, 2), (9, 33, 37, "uint8", True, 4, 2),
    (1, 1, 1, "int8", False, 4, 2), (13, 40, 130, "int8", True, 3, 3),
    (64, 48, 64, "uint8", False, 4, 2), (300, 40, 32, "int8", True, 4, 2)])
def test_kernel_exact_vs_integer_reference(m, n, k, dtype, relu, mr, nv):
    rng = np.random.default_rng(m * 1000 + k)
    wq = rng.integers(-64, 65, (n, k)).astype(np.int8)
    if dtype == "int8":
        x, zp, src = rng.integers(-128, 128, (m, k)).astype(np.int8), -7, Source("int8")
    else:
        x, zp = rng.integers(0, 256, (m, k)).astype(np.uint8), 131
        src = Source("uint8", None, 0, 255)
    bias = rng.integers(-50, 50, n).astype(F32)
    want = ((x.astype(np.int64) - zp) @ wq.astype(np.int64).T).astype(F32) + bias
    got = _run_kernel(x, zp, wq, bias, relu, src, mr, nv)
    assert np.array_equal(got, np.maximum(want, 0) if relu else want)


@needs_avx2
def test_int16_pair_sums_do_not_saturate_at_the_7bit_extremes():
    """u = 255 against w = +-64 everywhere: the largest int16 pair sums (+-32640) stay exact."""
    k, n = 256, 16
    wq = np.where(np.arange(n)[:, None] % 2 == 0, 64, -64) * np.ones((n, k), np.int64)
    wq = wq.astype(np.int8)
    x = np.full((4, k), 255, np.uint8)
    got = _run_kernel(x, 0, wq, np.zeros(n, F32), False, Source("uint8", None, 0, 255))
    assert np.array_equal(got, (x.astype(np.int64) @ wq.astype(np.int64).T).astype(F32))


def test_weights_fit_and_packing_layout():
    assert QU.weights_fit(np.array([[-64, 64]], np.int8))
    assert not QU.weights_fit(np.array([[-65, 0]], np.int8))
    wq = np.arange(3 * 9, dtype=np.int8).reshape(3, 9)
    p = QU.pack_weights(wq)
    assert p.shape == (2, 3, 32)
    assert p[0, 1, 4 * 2 + 3] == wq[2, 7] and p[0, 2, 4 * 1 + 1] == 0  # k padding is 0


def _graph(w, conv: bool, relu: bool):
    rng = np.random.default_rng(11)
    g = Graph("u8s8")
    shape = ("batch", 3, 7, 9) if conv else ("batch", 37)
    x = g.add_input("x", TensorType(shape, DType.f32))
    xq = g.add("quant.quantize", x, g.const(np.array(0.02, F32)), g.const(np.array(5, np.int32)))
    kind = "quant.conv2d_int8" if conv else "quant.linear_int8"
    attrs = {"stride": (2, 1), "padding": (1, 2)} if conv else {}
    n = w.shape[0]
    g.set_outputs(g.add(kind, xq, g.const(w), g.const(np.array(0.02, F32)),
                        g.const(np.array(5, np.int32)), g.const(np.full(n, 0.01, F32)),
                        g.const(rng.standard_normal(n).astype(F32)),
                        activation="relu" if relu else "none", **attrs))
    return g


def _lowered_names(g, target="cpu"):
    from ember.backends.tvm.lower import lower

    return {gv.name_hint for gv in lower(g, target=target).functions}


@needs_avx2
@pytest.mark.parametrize("conv,relu", [(False, False), (False, True), (True, True), (True, False)])
def test_fused_quantize_layers_with_7bit_weights_use_the_u8s8_kernel(conv, relu):
    """float x -> quantize (+ im2col) -> u8 x s8 GEMM -> epilogue, matching the reference."""
    from tvm import relax

    from ember.backends.tvm.build import build
    from ember.backends.tvm.lower import lower

    rng = np.random.default_rng(12)
    w = rng.integers(-64, 65, (6, 3, 3, 2) if conv else (21, 37)).astype(np.int8)
    g = _graph(w, conv, relu)
    if not host_features().has("avx512_vnni"):
        assert "qgemm_int8_u8s8" in _lowered_names(g)
    vm = relax.VirtualMachine(build(lower(g, target="cpu"), "cpu"), tvm.cpu())
    xs = rng.standard_normal((2, 3, 7, 9) if conv else (5, 37)).astype(F32)
    got = vm["main"](tvm.runtime.tensor(xs)).numpy()
    np.testing.assert_allclose(got, ember.interpret(g, xs), rtol=1e-6, atol=1e-5)


def test_kernel_choice_follows_the_weight_range_and_target():
    rng = np.random.default_rng(13)
    w7 = _graph(rng.integers(-64, 65, (8, 37)).astype(np.int8), False, False)
    w8 = _graph(rng.integers(-127, 128, (8, 37)).astype(np.int8), False, False)
    assert "qgemm_int8_u8s8" in _lowered_names(w7, ZNVER3)
    assert "qgemm_int8_avx2" in _lowered_names(w8, ZNVER3)  # 8-bit weights: exact vpmaddwd
    vnni = {"kind": "llvm", "mcpu": "cascadelake"}
    assert "qgemm_int8_vnni" in _lowered_names(w7, vnni)


def test_asm_has_vpmaddubsw():
    f = QU.u8s8_int8_gemm(32, 64, Source("float32"))
    ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}),
                     target=tvm.target.Target(ZNVER3))
    mods, asm = [ex.mod] if hasattr(ex, "mod") else [ex], []
    while mods:
        m = mods.pop()
        if m.kind in ("llvm", "static_library"):
            asm.append(m.inspect_source("asm"))
        mods.extend(m.imports)
    text = "\n".join(asm)
    assert "vpmaddubsw" in text and "vpmaddwd" in text


@needs_avx2
@pytest.mark.parametrize("lo,hi", [(-64, 65), (-127, 128)])
def test_dynamic_int8_linear_compiles_and_matches(lo, hi):
    """linear_int8_dynamic on a symbolic batch (7-bit weights: u8s8; 8-bit: vpmaddwd)."""
    from tvm import relax

    from ember.backends.tvm.build import build
    from ember.backends.tvm.lower import lower

    rng = np.random.default_rng(14)
    g = Graph("dyn")
    x = g.add_input("x", TensorType(("b", 40), DType.f32))
    g.set_outputs(g.add("quant.linear_int8_dynamic", x,
                        g.const(rng.integers(lo, hi, (24, 40)).astype(np.int8)),
                        g.const(np.full(24, 0.01, F32)),
                        g.const(rng.standard_normal(24).astype(F32))))
    vm = relax.VirtualMachine(build(lower(g, target="cpu"), "cpu"), tvm.cpu())
    xs = rng.standard_normal((7, 40)).astype(F32)
    got = vm["main"](tvm.runtime.tensor(xs)).numpy()
    np.testing.assert_allclose(got, ember.interpret(g, xs), rtol=1e-6, atol=1e-5)
