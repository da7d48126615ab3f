"""CompiledModel: calling with numpy/torch, input checks, threads, benchmark, no torch import."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import ember
from ember.errors import InputError


@pytest.fixture
def model(tiny_artifact):
    return ember.load(tiny_artifact)


def _inputs(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 16)).astype(np.float32),
            rng.standard_normal((batch, 8)).astype(np.float32))


def test_call_matches_reference_positional_and_named(model, tiny_lib):
    x, y = _inputs()
    out, twice = model(x, y)
    ref_out, ref_twice = tiny_lib.reference(x, y)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(twice, ref_twice, atol=1e-6)
    out2, _ = model(y=y, x=x)
    np.testing.assert_array_equal(out, out2)
    out3, _ = model(x, y=y)
    np.testing.assert_array_equal(out, out3)


def test_symbolic_batch_accepts_other_sizes(model, tiny_lib):
    for batch in (1, 7):
        x, y = _inputs(batch)
        out, _ = model(x, y)
        assert out.shape == (batch, 8)
        np.testing.assert_allclose(out, tiny_lib.reference(x, y)[0], atol=1e-5)


def test_torch_tensors_are_accepted(model, tiny_lib):
    torch = pytest.importorskip("torch")
    x, y = _inputs()
    out, _ = model(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(out, tiny_lib.reference(x, y)[0], atol=1e-5)


def test_metadata(model, tiny_artifact):
    assert model.input_names == ["x", "y"] and model.output_names == ["out", "twice"]
    assert model.manifest["name"] == "tiny" and model.target == "cpu"
    assert model.report == {"spec": "fold", "passes": []}
    assert model.ir_text.startswith("graph @tiny")
    assert "x: float32[batch,16]" in repr(model)


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: m(x), r"missing input\(s\) 'y'"),
    (lambda m, x, y: m(x, y, x), r"takes 2 input\(s\).*got 3 positional"),
    (lambda m, x, y: m(x, y, z=x), "no input named 'z'"),
    (lambda m, x, y: m(x, x=x), "'x' given both by position and by name"),
    (lambda m, x, y: m(x.astype(np.float64), y), r"input 'x': dtype float64 .* float32"),
    (lambda m, x, y: m(x[:, :15], y), r"input 'x': dim 1 is 15 but the model was compiled for 16"),
    (lambda m, x, y: m(x[0], y), r"input 'x': shape \[16\] has rank 1"),
    (lambda m, x, y: m(x, y[:2]), r"input 'y': dim 0 \('batch'\) is 2 but 'batch' is 3 in input 'x'"),
    (lambda m, x, y: m("x", y), "input 'x': expected a numpy array"),
])
def test_bad_inputs_name_the_input(model, call, message):
    x, y = _inputs()
    with pytest.raises(InputError, match=message):
        call(model, x, y)


def test_concurrent_calls_from_threads(model, tiny_lib):
    cases = [_inputs(batch=1 + i % 4, seed=i) for i in range(8)]
    expected = [tiny_lib.reference(*c)[0] for c in cases]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(cases))

    def work(i):
        try:
            barrier.wait()
            for _ in range(200):
                out, _ = model(*cases[i])
                np.testing.assert_allclose(out, expected[i], atol=1e-5)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_benchmark_and_random_inputs(model):
    stats = model.benchmark(warmup=2, repeat=5, batch=4)
    assert stats["repeat"] == 5 and stats["batch"] == 4
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert [a.shape for a in model.random_inputs(batch=4)] == [(4, 16), (4, 8)]
    given = model.benchmark(list(_inputs(batch=2)), warmup=0, repeat=2)
    assert given["batch"] == 2


def test_loading_in_fresh_process_imports_no_torch(tiny_artifact, tiny_lib):
    x, y = _inputs()
    np.save(tiny_artifact.parent / "x.npy", x)
    np.save(tiny_artifact.parent / "y.npy", y)
    code = textwrap.dedent(f"""
        import sys, numpy as np, ember
        m = ember.load({str(tiny_artifact)!r})
        out, _ = m(np.load({str(tiny_artifact.parent / 'x.npy')!r}),
                   np.load({str(tiny_artifact.parent / 'y.npy')!r}))
        np.save({str(tiny_artifact.parent / 'out.npy')!r}, out)
        assert 'torch' not in sys.modules, 'the runtime imported torch'
        import torch  # a user importing torch afterwards still works
        assert float(torch.ones(2).sum()) == 2.0
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    out = np.load(tiny_artifact.parent / "out.npy")
    np.testing.assert_allclose(out, tiny_lib.reference(x, y)[0], atol=1e-5)


def test_runtime_only_tvm_skips_the_relax_compiler(tiny_artifact):
    code = textwrap.dedent(f"""
        import sys, numpy as np, ember
        m = ember.load({str(tiny_artifact)!r})
        m(*m.random_inputs(2))
        assert 'torch' not in sys.modules
        assert 'tvm.relax' not in sys.modules, 'runtime-only TVM still imported the compiler'
    """)
    env = {**__import__("os").environ, "TVM_USE_RUNTIME_LIB": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_import_ember_runtime_imports_no_torch_or_tvm():
    code = ("import sys, ember.runtime; "
            "bad = [m for m in ('torch', 'tvm', 'ember.frontends', 'ember.passes') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_outputs_are_private_copies(tiny_lib, tmp_path):
    """An output that is a baked-in constant or an input must not alias model or user memory."""
    import tvm
    from tvm import relax

    from ember.runtime import TensorSpec, build_manifest, write_artifact
    from ember.runtime.compat import target_record

    const = np.arange(4, dtype=np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    with bb.function("main", [x]):
        bb.emit_func_output(relax.Tuple([x, relax.const(const)]))
    lib = tmp_path / "alias.so"
    tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"})).export_library(str(lib))
    spec = TensorSpec("x", (4,), "float32")
    manifest = build_manifest(target=target_record("cpu", {"kind": "llvm"}), inputs=[spec],
                              outputs=[TensorSpec("same", (4,), "float32"),
                                       TensorSpec("c", (4,), "float32")],
                              tvm_version=tvm.__version__)
    model = ember.load(write_artifact(tmp_path / "alias.ember", manifest=manifest, lib=lib,
                                      ir_text=""))
    buf = np.empty(32, np.float32)
    x_in = buf[(-buf.ctypes.data % 64) // 4:][:4]  # 64-byte aligned: passed zero-copy
    x_in[:] = 7
    same, c = model(x_in)
    same[:] = -1
    c[:] = -1
    np.testing.assert_array_equal(x_in, 7)
    np.testing.assert_array_equal(model(x_in)[1], const)
