"""Registry-driven TVM tests: every op's examples, lowered, built for `cpu`, run, and compared
with the numpy reference; plus dynamic batch, tuple outputs and error messages.

The examples of one op kind go into one IRModule (one function per example) built once, so
~300 tiny functions cost ~80 builds, not ~300.
"""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax

from ember.backends.tvm.build import build
from ember.backends.tvm.lower import lower, lower_into
from ember.backends.tvm.lowering import UNSUPPORTED
from ember.errors import BuildError, LoweringError
from ember.ir import DType, Graph, TensorType, interpret
from ember.ir.ops import HAS_REGIONS, all_schemas

SCHEMAS = all_schemas()


def _fn_name(kind: str, i: int) -> str:
    return f"{kind.replace('.', '_')}__{i}"


def _one_op_graph(schema, inputs, attrs, name) -> Graph:
    g = Graph(name)
    vals = [g.add_input(f"in{j}", TensorType.of(np.asarray(a))) for j, a in enumerate(inputs)]
    attrs = dict(attrs)
    regions = attrs.pop("regions", ()) if schema.has(HAS_REGIONS) else ()
    out = g.add(schema.kind, *vals, regions=regions, loc=f"test.{schema.kind}", **attrs)
    g.set_outputs(*(out if isinstance(out, tuple) else (out,)))
    return g


def _cases():
    for schema in SCHEMAS:
        rng = np.random.default_rng(0)
        for i, (inputs, attrs) in enumerate(schema.iter_examples(rng)):
            yield schema, i, [np.asarray(a) for a in inputs], attrs


class _KindBuild:
    """All examples of one kind lowered as functions of one module and built once.

    One module per kind (not one for everything): failures stay attributed to their op, and
    pytest-xdist workers each build only the kinds they run.
    """

    def __init__(self, kind: str):
        self.cases = [c for c in CASES if c[0].kind == kind]
        self.errors: dict[str, Exception] = {}
        self.vm = None
        bb = relax.BlockBuilder()
        lowered = 0
        for schema, i, inputs, attrs in self.cases:
            name = _fn_name(kind, i)
            graph = _one_op_graph(schema, inputs, attrs, name)
            try:  # dry run first: a failing lowering must not leave the shared builder half-built
                lower(graph, name)
            except LoweringError as e:
                self.errors[name] = e
                continue
            lower_into(bb, graph, name)
            lowered += 1
        if lowered:
            try:
                self.vm = relax.VirtualMachine(build(bb.get(), "cpu"), tvm.cpu())
            except BuildError as e:
                self.errors.update({_fn_name(kind, i): e for _, i, _, _ in self.cases})


CASES = list(_cases())
_BUILT: dict[str, _KindBuild] = {}


def _built(kind: str) -> _KindBuild:
    if kind not in _BUILT:
        _BUILT[kind] = _KindBuild(kind)
    return _BUILT[kind]


def _run(vm, name, inputs) -> list[np.ndarray]:
    out = vm[name](*[tvm.runtime.tensor(np.array(a, order="C")) for a in inputs])
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


@pytest.mark.parametrize("kind", [s.kind for s in SCHEMAS])
def test_op_examples_match_reference(kind):
    built = _built(kind)
    cases = built.cases
    if kind in UNSUPPORTED:
        for schema, i, _, _ in cases:
            err = built.errors.get(_fn_name(kind, i))
            assert isinstance(err, LoweringError) and kind in str(err)
        return
    assert cases, f"{kind} has no examples"
    failures = []
    for schema, i, inputs, attrs in cases:
        name = _fn_name(kind, i)
        if name in built.errors:
            failures.append(f"example {i} ({attrs}): {built.errors[name]}")
            continue
        attrs = dict(attrs)
        regions = attrs.pop("regions", ())
        want = schema.run_reference(inputs, schema.complete_attrs(attrs), regions)
        got = _run(built.vm, name, inputs)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            if g.shape != w.shape or g.dtype != w.dtype:
                failures.append(f"example {i} ({attrs}): got {g.dtype}{list(g.shape)}, "
                                f"reference {w.dtype}{list(w.shape)}")
                continue
            tol = schema.tolerance
            if not np.allclose(g, w, rtol=tol, atol=tol, equal_nan=True):
                err = np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))
                failures.append(f"example {i} ({attrs}): max abs error {err:.3g} > {tol}")
    assert not failures, f"{kind}:\n" + "\n".join(failures)


def _mlp(batch_dim="batch") -> Graph:
    rng = np.random.default_rng(1)
    g = Graph("mlp")
    x = g.add_input("x", TensorType((batch_dim, 16), DType.f32))
    w1 = g.const(rng.standard_normal((32, 16)).astype(np.float32), name="fc1.weight")
    b1 = g.const(rng.standard_normal(32).astype(np.float32), name="fc1.bias")
    w2 = g.const(rng.standard_normal((10, 32)).astype(np.float32), name="fc2.weight")
    h = g.add("relu", g.add("linear", x, w1, b1, loc="fc1"))
    logits = g.add("linear", h, w2, loc="fc2")
    g.set_outputs(g.add("softmax", logits, dim=-1), logits)
    return g


def test_dynamic_batch_compiles_once_and_runs_batch_1_and_7():
    g = _mlp()
    ex = build(lower(g), "cpu")
    assert set(ex.ember_timings) >= {"legalize", "fuse", "schedule", "compile"}
    vm = relax.VirtualMachine(ex, tvm.cpu())
    for n in (1, 7):
        x = np.random.default_rng(n).standard_normal((n, 16)).astype(np.float32)
        got = _run(vm, "main", [x])
        want = interpret(g, x)
        assert [a.shape for a in got] == [(n, 10), (n, 10)]
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_lowered_params_use_one_shared_symbol_per_dim():
    g = Graph("two")
    a = g.add_input("a", TensorType(("batch", 4), DType.f32))
    b = g.add_input("b", TensorType(("batch", 4), DType.f32))
    g.set_outputs(g.add("add", a, b))
    func = lower(g)["main"]
    da, db = (p.ty.shape[0] for p in func.params)
    assert da.same_as(db)


def test_unsupported_ops_are_listed_all_at_once_with_reasons(monkeypatch):
    from ember.backends.tvm import lowering

    g = Graph("bad")
    x = g.add_input("x", TensorType((2, 3), DType.f32))
    g.set_outputs(g.add("tanh", g.add("relu", x, loc="enc.act"), loc="enc.out"))
    monkeypatch.delitem(lowering.LOWERINGS, "relu")
    monkeypatch.delitem(lowering.LOWERINGS, "tanh")
    monkeypatch.setitem(lowering.UNSUPPORTED, "relu", "a test reason")
    with pytest.raises(LoweringError) as info:
        lower(g)
    msg = str(info.value)
    assert "relu" in msg and "enc.act" in msg and "a test reason" in msg
    assert "tanh" in msg and "enc.out" in msg


def test_decompose_is_used_when_a_kind_has_no_lowering(monkeypatch):
    from ember.backends.tvm import lowering

    g = Graph("t")
    x = g.add_input("x", TensorType(("batch", 3, 4), DType.f32))
    g.set_outputs(g.add("transpose", x, dim0=1, dim1=2))
    monkeypatch.delitem(lowering.LOWERINGS, "transpose")  # transpose decomposes to permute
    assert "permute_dims" in lower(g).script()
    vm = relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())
    xs = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(_run(vm, "main", [xs])[0], xs.transpose(0, 2, 1))


def test_lowering_error_names_op_loc_and_input_types():
    g = Graph("norm")
    x = g.add_input("x", TensorType(("batch", "width"), DType.f32))
    g.set_outputs(g.add("layer_norm", x, loc="model.norm"))
    with pytest.raises(LoweringError) as info:
        lower(g)
    msg = str(info.value)
    assert "layer_norm" in msg and "model.norm" in msg and "f32[batch,width]" in msg
    assert "static" in msg  # says what to do: make the normalized dim static


RUNTIME_ONLY = """
import sys, numpy as np, tvm
from tvm.runtime.vm import VirtualMachine
vm = VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())
x = np.load(sys.argv[2])
out = vm["main"](tvm.runtime.tensor(x))
np.save(sys.argv[3], out[0].numpy())
assert tvm.base._RUNTIME_ONLY and "tvm.relax" not in sys.modules, "compiler was loaded"
"""


def test_exported_library_runs_with_the_tvm_runtime_only(tmp_path):
    import os
    import subprocess
    import sys

    from ember.backends.tvm import export

    g = _mlp()
    ex = build(lower(g), "cpu")
    lib = export(ex, tmp_path / "lib.so")
    assert "export" in ex.ember_timings
    x = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}  # load libtvm_runtime only, no compiler
    subprocess.run([sys.executable, "-c", RUNTIME_ONLY, lib, str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, env=env)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), interpret(g, x)[0],
                               rtol=1e-4, atol=1e-5)


def test_package_names_stay_functions_after_submodule_imports():
    import ember.backends.tvm as backend
    import ember.backends.tvm.build
    import ember.backends.tvm.lower  # noqa: F401

    assert callable(backend.lower) and backend.lower is lower
    assert callable(backend.build) and backend.build is build


def test_build_failures_become_short_build_errors(monkeypatch):
    import sys

    build_mod = sys.modules["ember.backends.tvm.build"]  # the package attr is the function

    def broken(mod, target):
        raise RuntimeError("schedule exploded\n" + "  at some::cpp::frame()\n" * 200)

    monkeypatch.setattr(build_mod, "_apply_cpu_schedules", broken)
    with pytest.raises(BuildError) as info:
        build(lower(_mlp()), "cpu")
    msg = str(info.value)
    assert "schedule" in msg and "schedule exploded" in msg and len(msg) < 800
    ex = build(lower(_mlp()), "cpu", schedule=False)  # the escape hatch the message names
    assert ex.ember_timings["schedule"] == 0.0 and not ex.ember_scheduled


def test_gru_over_a_symbolic_sequence_length_is_a_clear_error():
    schema = next(s for s in SCHEMAS if s.kind == "ctrl.gru")
    inputs, attrs = next(schema.iter_examples(np.random.default_rng(0)))  # time-major x
    g = Graph("rnn")
    x = g.add_input("x", TensorType(("seq",) + inputs[0].shape[1:], DType.f32))
    rest = [g.const(a) for a in inputs[1:]]
    y, _ = g.add("ctrl.gru", x, *rest, loc="model.rnn", **attrs)
    g.set_outputs(y)
    with pytest.raises(LoweringError) as info:
        lower(g)
    assert "ctrl.gru" in str(info.value) and "static sequence length" in str(info.value)
