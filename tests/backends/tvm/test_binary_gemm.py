"""XNOR-popcount GEMM (nibble-plane vpshufb kernel): exact vs a +-1 float reference."""

from __future__ import annotations

import numpy as np
import pytest

from ember.ir import Graph, TensorType
from ember.ir.ops.quant_lowbit import pack_signs

tvm = pytest.importorskip("tvm")

from ember.backends.tvm.kernels import binary_gemm as BG
from ember.backends.tvm.targets import host_features

needs_avx2 = pytest.mark.skipif(not host_features().has("avx2"), reason="AVX2 kernel")
ZNVER3 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})


def _pm1(a):
    return np.where(a >= 0, 1.0, -1.0)


def _nibbles_np(b, nv):
    n, w = b.shape
    npad = BG.padded(n, nv)
    bp = np.zeros((npad, w), np.uint32)
    bp[:n] = b
    lo, hi = bp & np.uint32(0x0F0F0F0F), (bp >> np.uint32(4)) & np.uint32(0x0F0F0F0F)
    return np.ascontiguousarray(np.stack([lo, hi], 2).reshape(npad // 8, 8, w, 2)
                                .transpose(0, 2, 3, 1))


@needs_avx2
@pytest.mark.parametrize("m,n,k,mr,nv", [(5, 7, 20, 4, 2), (33, 40, 1000, 4, 2),
                                         (4, 16, 2048, 3, 3), (1, 1, 1, 4, 2),
                                         (17, 24, 4000, 2, 2)])
def test_kernel_exact(m, n, k, mr, nv):
    """Odd K (padding bits), N not a panel multiple, several u8 chunks (K > 31 words)."""
    rng = np.random.default_rng(k + n)
    x, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    a, b = pack_signs(x.astype(np.float32)), pack_signs(w.astype(np.float32))
    f = BG.binary_gemm(n, a.shape[1], k, mr, nv)
    ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=ZNVER3)
    out = tvm.runtime.tensor(np.zeros((m, n), np.int32))
    ex["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(_nibbles_np(b, nv)), out)
    assert np.array_equal(out.numpy(), (_pm1(x) @ _pm1(w).T).astype(np.int32))


def test_nibble_packing_te_matches_numpy():
    from tvm import te

    rng = np.random.default_rng(0)
    b = rng.integers(0, 2**32, (21, 5), dtype=np.uint64).astype(np.uint32)
    bt = te.placeholder(b.shape, "uint32", name="b")
    out = BG.pack_nibbles(bt)
    f = tvm.compile(te.create_prim_func([bt, out]), target="llvm")
    res = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], np.uint32))
    f(tvm.runtime.tensor(b), res)
    assert np.array_equal(res.numpy(), _nibbles_np(b, BG.NV))


@pytest.mark.parametrize("target", ["cpu", "cpu-generic"])
def test_binary_matmul_op_exact_through_lowering(target):
    """The op end to end (weight nibble packing folded at build time on AVX2 targets, the
    portable per-lane popcount kernel elsewhere)."""
    from tvm import relax

    from ember.backends.tvm.build import build
    from ember.backends.tvm.lower import lower

    rng = np.random.default_rng(3)
    k, n = 300, 19
    x, w = rng.standard_normal((6, k)).astype(np.float32), rng.standard_normal((n, k))
    a, b = pack_signs(x), pack_signs(w.astype(np.float32))
    g = Graph("bm")
    av = g.add_input("a", TensorType(("m", a.shape[1]), "u32"))
    g.set_outputs(g.add("quant.binary_matmul", av, g.const(b), k=k))
    vm = relax.VirtualMachine(build(lower(g, target=target), target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(a)).numpy()
    assert np.array_equal(got, (_pm1(x) @ _pm1(w).T).astype(np.int32))
