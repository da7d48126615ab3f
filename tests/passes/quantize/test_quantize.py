"""Quantization passes: numerics properties, scheme accuracy on the zoo, report, kernels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ember
from ember.ir import DType, Graph, TensorType
from ember.ir.ops import get_schema
from ember.ir.ops.quant_lowbit import pack_int4, pack_signs, unpack_int4, unpack_signs
from ember.passes import Pipeline
from ember.passes.quantize.binary import binary_bases
from ember.passes.quantize.observers import affine_params, fake_quant, make_observer

F32 = np.float32


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(F32, st.integers(1, 64), elements=st.floats(-50, 50, width=32)),
       st.floats(1e-3, 2.0), st.integers(-20, 20))
def test_quantize_dequantize_error_is_at_most_half_a_step(x, scale, zp):
    s, z = np.array(scale, F32), np.array(zp, np.int32)
    q = get_schema("quant.quantize").run_reference([x, s, z], {"axis": None, "dtype": DType.i8})[0]
    back = get_schema("quant.dequantize").run_reference([q, s, z], {"axis": None})[0]
    lo, hi = (-128 - zp) * s, (127 - zp) * s
    inside = (x >= lo) & (x <= hi)  # values outside the range clip, by design
    err = np.abs(back - x)[inside]
    assert np.all(err <= s / 2 * (1 + 1e-5) + 1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(0, 2**31))
def test_int4_and_sign_packing_round_trip(n, k, seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-8, 8, (n, k)).astype(np.int8)
    assert np.array_equal(unpack_int4(pack_int4(q), k), q)
    signs = np.where(rng.standard_normal((n, k)) >= 0, 1.0, -1.0).astype(F32)
    packed = pack_signs(signs)
    assert packed.shape == (n, (k + 31) // 32) and packed.dtype == np.uint32
    assert np.array_equal(unpack_signs(packed, k), signs)
    pad = k % 32
    if pad:  # padding bits stay 0 (binary_matmul relies on it)
        assert np.all(packed[:, -1] >> np.uint32(pad) == 0)


def test_observers_cover_range_and_mse_is_not_worse():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(5000), [40.0]]).astype(F32)  # one outlier
    errs = {}
    for m in ("minmax", "percentile", "mse"):
        obs = make_observer(m)
        obs.observe(x)
        s, z = obs.params()
        errs[m] = float(np.mean((fake_quant(x, s, z) - x) ** 2))
        errs[m + "_bulk"] = float(np.mean((fake_quant(x[:-1], s, z) - x[:-1]) ** 2))
    s, z = affine_params(x.min(), x.max())
    assert (127 - z) * s >= 40 - s  # min-max keeps the outlier representable
    assert errs["mse"] <= errs["minmax"] and errs["percentile_bulk"] < errs["minmax_bulk"]


@pytest.fixture(scope="module")
def mlp():
    z = ember.zoo.load("digits_mlp")
    g = ember.trace(z.module, z.example_inputs, dynamic_dims=z.dynamic_dims)
    calib = [tuple(np.asarray(a) for a in b) for b in z.calibration]
    acc = z.evaluate(lambda *xs: ember.interpret(g, *xs))
    return z, g, calib, acc


def _acc(z, g):
    return z.evaluate(lambda *xs: ember.interpret(g, *xs))


def test_int8_static_keeps_accuracy_and_shrinks_weights(mlp):
    z, g, calib, acc = mlp
    p = Pipeline.parse("quantize{scheme=int8,observer=mse,force=true,show_progress=false}")
    q = p.run(g, calibration=calib, check=True)
    notes = p.report.passes[-1].notes
    assert notes["weight_ratio"] <= 0.27
    assert {r["layer"] for r in notes["layers"]} == {"fc1", "fc2", "fc3"}
    assert all(r["sqnr_db"] > 30 for r in notes["layers"])
    kinds = q.op_counts()
    assert kinds.get("quant.linear_int8") == 3 and "linear" not in kinds
    assert "relu" not in kinds  # both relus fused into the int8 kernels' epilogues
    assert acc - _acc(z, q) <= 0.005
    assert "pass_report" in q.meta


def test_skip_keeps_named_layer_float(mlp):
    z, g, calib, _ = mlp
    p = Pipeline.parse("quantize{scheme=int8,skip=fc3,force=true,show_progress=false}")
    q = p.run(g, calibration=calib)
    assert q.op_counts().get("linear") == 1
    rows = {r["layer"]: r for r in p.report.passes[-1].notes["layers"]}
    assert rows["fc3"]["scheme"].startswith("float")


def test_residual_binary_recovers_accuracy_of_plain_binary(mlp):
    z, g, calib, acc = mlp
    res = {}
    for spec in ("binary", "binary_residual,bits=3"):
        p = Pipeline.parse(f"quantize{{scheme={spec},force=true,show_progress=false}}")
        res[spec] = (_acc(z, p.run(g, calibration=calib)), p.report.passes[-1].notes)
    (a1, n1), (a3, n3) = res["binary"], res["binary_residual,bits=3"]
    assert n1["weight_ratio"] <= 1 / 16 and a3 > a1 and acc - a3 < 0.5 * (acc - a1)


@pytest.mark.parametrize("scheme", ["int8_dynamic", "int4_weight", "ternary", "partial_binary"])
def test_other_schemes_run_and_report(mlp, scheme):
    z, g, calib, acc = mlp
    p = Pipeline.parse(f"quantize{{scheme={scheme},force=true,show_progress=false}}")
    q = p.run(g, calibration=calib)
    notes = p.report.passes[-1].notes
    assert notes["weight_ratio"] < 0.3
    assert acc - _acc(z, q) < 0.1
    if scheme == "ternary":
        assert notes["weight_ratio"] <= 0.1


def test_smooth_quant_is_exact(mlp):
    _, g, calib, _ = mlp
    # check=True fails the pipeline when the pass exceeds its stated tolerance (1e-5)
    q = Pipeline.parse("smooth_quant{alpha=0.5}").run(g, calibration=calib, check=True)
    assert q.op_counts().get("mul") == 3


def test_residual_bases_reduce_error():
    w = np.random.default_rng(0).standard_normal((16, 64)).astype(F32)
    errs = [np.linalg.norm(w - (s * a[:, :, None]).sum(0))
            for s, a in (binary_bases(w, k) for k in (1, 2, 3))]
    assert errs[0] > errs[1] > errs[2]


def test_mixed_target_bytes_meets_budget(mlp):
    z, g, calib, _ = mlp
    budget = 6000
    p = Pipeline.parse(f"quantize{{scheme=mixed,target_bytes={budget},show_progress=false}}")
    p.run(g, calibration=calib)
    notes = p.report.passes[-1].notes
    assert set(notes["mixed_plan"]) == {"fc1", "fc2", "fc3"}
    assert notes["quantized_weight_bytes"] <= budget * 1.3  # scales/params on top of the bits


@pytest.fixture
def fake_timer():
    """Install a deterministic timer: (float us, quantized us) per layer name pattern."""
    from ember.passes.quantize import cost

    calls = []

    def install(fn):
        def timer(fg, qg, x):
            calls.append((fg, qg))
            return fn(fg, qg)
        cost.set_timer(timer)
        return calls

    yield install
    cost.set_timer(None)


def test_speed_check_keeps_slower_layers_float(mlp, fake_timer):
    _, g, calib, _ = mlp
    # fc2 (K=128) "measures" faster quantized, the others slower
    calls = fake_timer(lambda fg, qg: (1.0, 0.5) if fg.inputs[0].type.shape[-1] == 128
                       else (1.0, 2.0))
    p = Pipeline.parse("quantize{scheme=int8,show_progress=false}")
    q = p.run(g, calibration=calib)
    notes = p.report.passes[-1].notes
    rows = {r["layer"]: r for r in notes["layers"]}
    assert len(calls) == 3 and notes["speed_checked"]
    assert rows["fc2"]["scheme"] == "int8" and "0.50x" in rows["fc2"]["kernel"]
    assert notes["kept_float_slower"] == ["fc1", "fc3"]
    assert rows["fc1"]["scheme"] == "float (slower)" and "force=true" in rows["fc1"]["kernel"]
    kinds = q.op_counts()
    assert kinds.get("quant.linear_int8") == 1 and kinds.get("linear") == 2
    assert kinds.get("quant.quantize") == 1  # no dead quantize left behind
    # the micro-benchmark compares like with like: relu on both sides, fused on the int8 one
    fg, qg = calls[0]
    assert fg.op_counts().get("relu") == 1 and "relu" not in qg.op_counts()
    np.testing.assert_allclose(ember.interpret(q, calib[0][0]), ember.interpret(g, calib[0][0]),
                               atol=0.25)  # int8 rounding on logits of ~10


@pytest.mark.parametrize("opt", ["force=true", "keep_slower=true"])
def test_force_and_keep_slower_skip_the_speed_check(mlp, fake_timer, opt):
    _, g, calib, _ = mlp
    calls = fake_timer(lambda fg, qg: (1.0, 2.0))
    p = Pipeline.parse(f"quantize{{scheme=int8,{opt},show_progress=false}}")
    q = p.run(g, calibration=calib)
    assert not calls and q.op_counts().get("quant.linear_int8") == 3


def test_speed_check_measures_and_caches(mlp, tmp_path, monkeypatch):
    """The real micro-benchmark (TVM builds), once per layer shape, then from the cache."""
    pytest.importorskip("tvm")
    from ember.passes.quantize import cost

    from ember.backends.tvm.layer_timer import TvmLayerTimer

    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    cost.set_timer(None)
    monkeypatch.setattr(cost, "_ORACLE", TvmLayerTimer())  # restored after the test
    z, g, calib, acc = mlp
    spec = "quantize{scheme=int8,skip=fc1,show_progress=false}"
    p = Pipeline.parse(spec)
    q = p.run(g, calibration=calib)
    rows = [r for r in p.report.passes[-1].notes["layers"] if r["layer"] != "fc1"]
    for r in rows:  # each decision carries both measured times
        assert r["scheme"] in ("int8", "float (slower)") and " us vs float " in r["kernel"]
    import json

    assert len(json.loads(cost.cache_path().read_text())) == 2
    cost._MEMO.clear()
    p2 = Pipeline.parse(spec)
    q2 = p2.run(g, calibration=calib)  # answered from the file: same decisions
    assert q2.op_counts() == q.op_counts()
    assert acc - _acc(z, q) <= 0.005


# ---- kernels (TVM) ---------------------------------------------------------------------------
tvm = pytest.importorskip("tvm")


def _build_one(kind, inputs, attrs):
    from tvm import relax

    from ember.backends.tvm.build import build
    from ember.backends.tvm.lower import lower

    g = Graph("k")
    vals = [g.add_input(f"in{i}", TensorType.of(a)) for i, a in enumerate(inputs)]
    g.set_outputs(g.add(kind, *vals, **attrs))
    vm = relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()
    ref = get_schema(kind).run_reference(inputs, get_schema(kind).complete_attrs(attrs))[0]
    return out, ref


def test_xnor_popcount_gemm_is_exact():
    rng = np.random.default_rng(1)
    m, n, k = 37, 50, 300
    a, b = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    out, ref = _build_one("quant.binary_matmul", [pack_signs(a), pack_signs(b)], {"k": k})
    pm = lambda x: np.where(x >= 0, 1, -1)  # noqa: E731
    assert np.array_equal(out, ref) and np.array_equal(out, pm(a) @ pm(b).T)


def test_int8_gemm_kernel_matches_integer_reference():
    rng = np.random.default_rng(2)
    xq = rng.integers(-128, 128, (13, 77)).astype(np.int8)
    wq = rng.integers(-128, 128, (29, 77)).astype(np.int8)
    args = [xq, wq, np.array(0.5, F32), np.array(-7, np.int32), np.ones(29, F32)]
    out, ref = _build_one("quant.linear_int8", args, {})
    assert np.array_equal(out, ref)  # small ints: every step exact in f32


def _compile_graph(g):
    from tvm import relax

    from ember.backends.tvm.build import build
    from ember.backends.tvm.lower import lower

    vm = relax.VirtualMachine(build(lower(g, target="cpu"), "cpu"), tvm.cpu())
    return lambda *xs: vm["main"](*[tvm.runtime.tensor(a) for a in xs]).numpy()


@pytest.mark.parametrize("relu", [False, True])
def test_fused_quantize_linear_kernel_is_exact(relu):
    """float x -> quantize -> linear_int8 (-> relu): one kernel, same numbers as the reference."""
    rng = np.random.default_rng(3)
    g = Graph("fused")
    x = g.add_input("x", TensorType(("batch", 3, 37), DType.f32))
    xq = g.add("quant.quantize", x, g.const(np.array(0.03, F32)), g.const(np.array(-5, np.int32)))
    y = g.add("quant.linear_int8", xq, g.const(rng.integers(-127, 128, (21, 37)).astype(np.int8)),
              g.const(np.array(0.03, F32)), g.const(np.array(-5, np.int32)),
              g.const(np.linspace(0.01, 0.02, 21).astype(F32)),
              g.const(rng.standard_normal(21).astype(F32)),
              activation="relu" if relu else "none")
    g.set_outputs(y)
    fn = _compile_graph(g)
    for b in (1, 5):
        xs = (rng.standard_normal((b, 3, 37)) * 2).astype(F32)
        np.testing.assert_allclose(fn(xs), ember.interpret(g, xs), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("stride,padding,relu", [((1, 1), (1, 1), True), ((2, 1), (0, 2), False)])
def test_fused_quantize_conv_kernel_is_exact(stride, padding, relu):
    """quantize + im2col + int8 GEMM + NCHW epilogue in one kernel (ow not a tile multiple)."""
    rng = np.random.default_rng(4)
    g = Graph("fused_conv")
    x = g.add_input("x", TensorType(("batch", 3, 7, 9), DType.f32))
    xq = g.add("quant.quantize", x, g.const(np.array(0.02, F32)), g.const(np.array(7, np.int32)))
    y = g.add("quant.conv2d_int8", xq,
              g.const(rng.integers(-127, 128, (5, 3, 3, 2)).astype(np.int8)),
              g.const(np.array(0.02, F32)), g.const(np.array(7, np.int32)),
              g.const(np.full(5, 0.01, F32)), g.const(rng.standard_normal(5).astype(F32)),
              stride=stride, padding=padding, activation="relu" if relu else "none")
    g.set_outputs(y)
    fn = _compile_graph(g)
    xs = rng.standard_normal((2, 3, 7, 9)).astype(F32)
    np.testing.assert_allclose(fn(xs), ember.interpret(g, xs), rtol=1e-6, atol=1e-5)


def _asm(executable) -> str:
    mods = [executable.mod] if hasattr(executable, "mod") else [executable]
    text = []
    while mods:
        m = mods.pop()
        if m.kind in ("llvm", "static_library"):  # the VM bytecode module has no asm
            text.append(m.inspect_source("asm"))
        mods.extend(m.imports if hasattr(m, "imports") else [])
    return "\n".join(text)


def test_vnni_kernel_compiles_for_cascadelake():
    """Codegen only (this host has no AVX-512): the target picks the vpdpbusd kernel."""
    from ember.backends.tvm.build import build
    from ember.backends.tvm.lower import lower

    rng = np.random.default_rng(5)
    g = Graph("vnni")
    x = g.add_input("x", TensorType(("batch", 40), DType.f32))
    xq = g.add("quant.quantize", x, g.const(np.array(0.03, F32)), g.const(np.array(2, np.int32)))
    g.set_outputs(g.add("quant.linear_int8", xq,
                        g.const(rng.integers(-127, 128, (24, 40)).astype(np.int8)),
                        g.const(np.array(0.03, F32)), g.const(np.array(2, np.int32)),
                        g.const(np.full(24, 0.01, F32)), activation="relu"))
    target = {"kind": "llvm", "mcpu": "cascadelake"}
    asm = _asm(build(lower(g, target=target), target))
    assert "vpdpbusd" in asm
    host = _asm(build(lower(g, target="cpu"), "cpu"))
    assert "vpdpbusd" not in host and ("vpmaddwd" in host) == ("avx2" in _host_flags())


def _host_flags():
    from ember.backends.tvm.targets import host_features

    return host_features().flags
