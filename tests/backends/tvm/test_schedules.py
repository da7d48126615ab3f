"""CPU schedules: every scheduled kernel must match numpy, and each test also checks which rule
scheduled it (a rule that silently stops applying would otherwise pass as "correct")."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax, tirx

from ember.backends.tvm.schedules import apply_cpu_schedules, cpu_params, schedule_func
from ember.backends.tvm.schedules.matmul import choose_tiles

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})  # baseline x86-64: runs anywhere
PIPELINE = [
    relax.transform.LegalizeOps(),
    relax.transform.AnnotateTIROpPattern(),
    relax.transform.FoldConstant(),
    relax.transform.FuseOps(),
    relax.transform.FuseTIR(),
]
RNG = np.random.default_rng(0)


def _build(params, body):
    """Relax module from `body(bb, *vars)`, through the build's fusion pipeline."""
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    return tvm.transform.Sequential(PIPELINE)(bb.get())


def _rules(mod):
    """{PrimFunc name: rule that schedules it (None = none)}."""
    return {
        gv.name_hint: schedule_func(f, TARGET)[1]
        for gv, f in mod.functions_items()
        if isinstance(f, tirx.PrimFunc)
    }


def _run(mod, *arrays):
    sched = apply_cpu_schedules(mod, TARGET)
    ex = tvm.compile(sched, target=TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def _var(name, shape, dtype="float32"):
    return relax.Var(name, relax.TensorType(shape, dtype))


def _rand(*shape):
    return RNG.standard_normal(shape).astype("float32")


@pytest.mark.parametrize(
    "m,n,k", [(37, 53, 29), (64, 64, 64), (6, 16, 8), (1, 10, 64), (130, 7, 300)]
)
def test_matmul_matches_numpy(m, n, k):
    mod = _build([_var("a", (m, k)), _var("b", (k, n))], lambda bb, a, b: relax.op.matmul(a, b))
    a, b = _rand(m, k), _rand(k, n)
    np.testing.assert_allclose(_run(mod, a, b), a @ b, rtol=1e-4, atol=1e-4)
    assert set(_rules(mod).values()) <= {"matmul", "reduction"}
    if m > 1:
        assert "matmul" in _rules(mod).values()


def test_dynamic_m_matmul_all_batch_sizes():
    n_var = tirx.Var("n", "int64")
    mod = _build(
        [_var("a", (n_var, 40)), _var("b", (40, 24))], lambda bb, a, b: relax.op.matmul(a, b)
    )
    assert list(_rules(mod).values()) == ["matmul"]
    ex = tvm.compile(apply_cpu_schedules(mod, TARGET), target=TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    b = _rand(40, 24)
    for m in (1, 5, 6, 7, 97):
        a = _rand(m, 40)
        out = vm["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
        np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-4)


def test_batch_matmul_transposed_b():
    def body(bb, a, b):
        return relax.op.matmul(a, relax.op.permute_dims(b, [0, 2, 1]))

    mod = _build([_var("a", (3, 17, 20)), _var("b", (3, 19, 20))], body)
    a, b = _rand(3, 17, 20), _rand(3, 19, 20)
    np.testing.assert_allclose(_run(mod, a, b), a @ b.transpose(0, 2, 1), rtol=1e-4, atol=1e-4)
    assert "matmul" in _rules(mod).values()


def test_dense_constant_weight_bias_relu_epilogue():
    w, bias = _rand(33, 50), _rand(33)

    def body(bb, x):
        y = bb.emit(relax.op.matmul(x, relax.op.permute_dims(relax.const(w))))
        return relax.op.nn.relu(relax.op.add(y, relax.const(bias)))

    mod = _build([_var("x", (21, 50))], body)
    rules = _rules(mod)
    assert list(rules.values()) == ["matmul"], rules  # one fused kernel, epilogue included
    x = _rand(21, 50)
    np.testing.assert_allclose(_run(mod, x), np.maximum(x @ w.T + bias, 0), rtol=1e-4, atol=1e-4)


def _conv_ref(x, w, stride, pad, groups):
    n, _c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, f, oh, ow), np.float32)
    fg = f // groups
    for o in range(f):
        g = o // fg
        for i in range(kh):
            for j in range(kw):
                patch = xp[
                    :,
                    g * cg : (g + 1) * cg,
                    i : i + stride * oh : stride,
                    j : j + stride * ow : stride,
                ]
                out[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, i, j])
    return out


@pytest.mark.parametrize("stride,pad,groups", [(1, 1, 1), (2, 0, 1), (2, 1, 2), (1, 1, 8)])
def test_conv2d_relu(stride, pad, groups):
    w = _rand(8, 8 // groups, 3, 3)

    def body(bb, x):
        y = bb.emit(
            relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=pad, groups=groups)
        )
        return relax.op.nn.relu(y)

    mod = _build([_var("x", (2, 8, 11, 13))], body)
    assert "conv2d" in _rules(mod).values()
    x = _rand(2, 8, 11, 13)
    ref = np.maximum(_conv_ref(x, w, stride, pad, groups), 0)
    np.testing.assert_allclose(_run(mod, x), ref, rtol=1e-4, atol=1e-4)


def test_max_pool():
    mod = _build(
        [_var("x", (2, 3, 9, 10))], lambda bb, x: relax.op.nn.max_pool2d(x, pool_size=2, strides=2)
    )
    assert list(_rules(mod).values()) == ["conv2d"]
    x = _rand(2, 3, 9, 10)
    ref = x[:, :, :8, :10].reshape(2, 3, 4, 2, 5, 2).max(axis=(3, 5))
    np.testing.assert_allclose(_run(mod, x), ref, rtol=1e-6)


def test_softmax():
    mod = _build([_var("x", (7, 37))], lambda bb, x: relax.op.nn.softmax(x))
    assert list(_rules(mod).values()) == ["row_reduction"]
    x = _rand(7, 37)
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(_run(mod, x), e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_single_row_softmax_computes_each_stage_once():
    """dlight's rule took the column loop of a [1, N] softmax as its row loop (max and sum
    recomputed per column: 5.7 ms for N = 1000); the rule now schedules it serially."""
    mod = _build([_var("x", (1, 300))], lambda bb, x: relax.op.nn.softmax(x))
    assert list(_rules(mod).values()) == ["row_reduction"]
    (func,) = [f for _, f in apply_cpu_schedules(mod, TARGET).functions_items()
               if isinstance(f, tirx.PrimFunc)]
    text = func.script()
    assert "T.vectorized" in text and "range(T.int64(300))" not in text  # no per-column loop
    x = _rand(1, 300)
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(_run(mod, x), e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def _allocations_after_planning(func) -> list[str]:
    """The lines of `func` that allocate a buffer, once TIR has placed and shrunk them."""
    from tvm import s_tir

    passes = [s_tir.transform.LowerInitBlock(),
              s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
              s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation()]
    with TARGET:
        low = tvm.transform.Sequential(passes)(tvm.IRModule({"main": func}))
    return [ln.strip() for ln in low["main"].script().splitlines() if "alloc_buffer(" in ln]


def test_symbolic_batch_branches_keep_per_row_intermediates():
    """The runtime serial/parallel branch of a symbolic batch: the two branches' intermediates
    (softmax's row max, exp and sum) must each be allocated per row, not for the whole batch
    (a buffer shared by both branches can only be allocated above the `if`)."""
    from ember.backends.tvm.schedules import threads

    batch = tirx.Var("batch", "int64")
    mod = _build([_var("x", (batch, 300))], lambda bb, x: relax.op.nn.softmax(x))
    (func,) = [f for _, f in apply_cpu_schedules(mod, TARGET).functions_items()
               if isinstance(f, tirx.PrimFunc)]
    assert str(threads.PARALLEL_MIN_WORK) in func.script()  # the branch is there
    allocs = _allocations_after_planning(func)
    assert len(allocs) == 6, allocs  # 3 intermediates per branch
    assert not [a for a in allocs if "batch" in a], allocs
    vm = relax.VirtualMachine(tvm.compile(apply_cpu_schedules(mod, TARGET), target=TARGET),
                              tvm.cpu())
    for rows in (1, 3, 2000):  # both branches (work = rows * 4 * 300)
        x = _rand(rows, 300)
        e = np.exp(x - x.max(-1, keepdims=True))
        np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(),
                                   e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_layer_norm():
    gamma, beta = _rand(30), _rand(30)

    def body(bb, x):
        return relax.op.nn.layer_norm(x, relax.const(gamma), relax.const(beta), axes=[-1])

    mod = _build([_var("x", (5, 30))], body)
    assert all(r is not None for r in _rules(mod).values())
    x = _rand(5, 30)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ref = (x - mu) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(_run(mod, x), ref, rtol=1e-4, atol=1e-4)


def test_elementwise_chain():
    def body(bb, x, y):
        return relax.op.tanh(relax.op.multiply(relax.op.add(x, y), relax.const(np.float32(0.5))))

    mod = _build([_var("x", (3, 45)), _var("y", (45,))], body)
    assert list(_rules(mod).values()) == ["elementwise"]
    x, y = _rand(3, 45), _rand(45)
    np.testing.assert_allclose(_run(mod, x, y), np.tanh((x + y) * 0.5), rtol=1e-5, atol=1e-6)


def test_unknown_primfunc_is_left_unchanged():
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def odd(a: T.Buffer((8,), "float32"), b: T.Buffer((1,), "float32")):
        for i in range(8):  # a scan-like serial dependence: no rule claims it
            with T.sblock("scan"):
                vi = T.axis.opaque(8, i)
                b[0] = b[0] + a[vi]

    mod = tvm.IRModule({"odd": odd})
    out = apply_cpu_schedules(mod, TARGET)
    tvm.ir.assert_structural_equal(out["odd"], odd)


def test_tile_choice_follows_the_register_file():
    avx2 = cpu_params(tvm.target.Target({"kind": "llvm", "mcpu": "znver3"}))
    avx512 = cpu_params(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))
    assert (avx2.vector_bits, avx2.vector_regs) == (256, 16)
    assert (avx512.vector_bits, avx512.vector_regs) == (512, 32)
    t = choose_tiles(avx2, "float32", None, 1024)
    assert (t.mr, t.nr) == (6, 16)  # 12 accumulators + 2 B vectors + 1 broadcast = 15 of 16
    assert choose_tiles(avx512, "float32", None, 1024).nr == 32
    assert choose_tiles(avx2, "float32", 3, 5).mr == 3  # never pad a small M up to the tile


@pytest.mark.parametrize("epilogue", ["silu", "gelu", "fork_after_chain"])
@pytest.mark.parametrize("rows", [4, 5])
def test_gemm_epilogue_whose_intermediate_has_several_readers(epilogue, rows):
    """silu(t) = t*sigmoid(t) reads t twice: once broke the build ("used before definition")."""
    import ember
    from ember.backends.tvm import build, lower
    from ember.ir import DType, Graph, TensorType
    from tvm.runtime.vm import VirtualMachine

    rng = np.random.default_rng(0)
    g = Graph("t")
    x = g.add_input("x", TensorType((rows, 64), DType.f32))
    w = g.const(rng.standard_normal((256, 64)).astype(np.float32))
    b = g.const(rng.standard_normal(256).astype(np.float32))
    h = g.add("linear", x, w, b)
    if epilogue == "fork_after_chain":
        h = g.add("mul", h, b)
        y = g.add("add", g.add("silu", h), h)
    else:
        y = g.add(epilogue, h)
    g.set_outputs(y)
    vm = VirtualMachine(build(lower(g), "cpu"), tvm.cpu())
    xi = rng.standard_normal((rows, 64)).astype(np.float32)
    want = ember.interpret(g, xi)
    got = vm["main"](tvm.runtime.tensor(xi)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---- constant weights packed at compile time (schedules/packed.py) ----------------------------
def _prepacked(params, body):
    """Like _build, with prepack_weights between legalization and fusion (as build.py does)."""
    from ember.backends.tvm.schedules import prepack_weights

    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    legal = tvm.transform.Sequential(PIPELINE[:3])(bb.get())
    packed = prepack_weights(legal, TARGET)
    return tvm.transform.Sequential(PIPELINE[3:])(packed)


@pytest.mark.parametrize("lead,n,k,transposed", [
    ((1,), 256, 96, False), ((7,), 10, 33, True), ((64,), 64, 256, False), ((3, 17), 48, 64, True),
])
def test_prepacked_weight_gemm_with_epilogue(lead, n, k, transposed):
    w = _rand(n, k) if transposed else _rand(k, n)
    b = _rand(n)
    x = _var("x", (*lead, k))

    def body(bb, xv):
        wt = relax.op.permute_dims(relax.const(w)) if transposed else relax.const(w)
        y = bb.emit(relax.op.matmul(xv, wt))
        return relax.op.nn.silu(relax.op.add(y, relax.const(b)))

    mod = _prepacked([x], body)
    rules = _rules(mod)
    assert "packed_matmul" in rules.values(), rules  # the constant weight was pre-packed
    xa = _rand(*lead, k)
    wkn = w.T if transposed else w
    y = xa @ wkn + b
    np.testing.assert_allclose(_run(mod, xa), y / (1 + np.exp(-y)), rtol=1e-4, atol=1e-4)


def test_prepacked_gemm_symbolic_batch_every_size():
    w = _rand(40, 24)
    x = _var("x", (tirx.Var("n", "int64"), 40))
    mod = _prepacked([x], lambda bb, xv: relax.op.matmul(xv, relax.const(w)))
    assert "packed_matmul" in _rules(mod).values()
    ex = tvm.compile(apply_cpu_schedules(mod, TARGET), target=TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    for rows in (1, 5, 6, 7, 13, 64):  # below, at and past the micro-tile height
        xa = _rand(rows, 40)
        got = vm["main"](tvm.runtime.tensor(xa)).numpy()
        np.testing.assert_allclose(got, xa @ w, rtol=1e-4, atol=1e-4)


def test_pack_weight_layout():
    from ember.backends.tvm.schedules.packed import pack_weight

    w = np.arange(3 * 20, dtype="float32").reshape(3, 20)
    p = pack_weight(w, 8)
    assert p.shape == (3, 3, 8)
    for j in range(24):
        for kk in range(3):
            assert p[j // 8, kk, j % 8] == (w[kk, j] if j < 20 else 0.0)


def test_non_constant_or_integer_weights_are_not_prepacked():
    from ember.backends.tvm.schedules.packed import BLOCK

    a, b = _var("a", (4, 8)), _var("b", (8, 16))
    mod = _prepacked([a, b], lambda bb, av, bv: relax.op.matmul(av, bv))
    w = RNG.integers(-3, 3, (8, 16)).astype("int32")
    ai = _var("ai", (4, 8), "int32")
    mod_i = _prepacked([ai], lambda bb, av: relax.op.matmul(av, relax.const(w)))
    for m in (mod, mod_i):
        assert BLOCK not in m.script(show_meta=False)
