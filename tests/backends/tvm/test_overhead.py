"""Per-call overhead work: serial kernels for small work (a runtime branch on a symbolic batch),
the batch-1 specialization of `main`, and the runtime's staged inputs. Every case checks numbers
against numpy or torch as well as the mechanism."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
from tvm import relax, tirx

import ember
from ember.backends.tvm.lower import batch1_name
from ember.backends.tvm.schedules import apply_cpu_schedules, threads

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
PIPELINE = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
RNG = np.random.default_rng(0)


def _dense_relu(rows, k=64, n=48):
    """main(x: f32[rows, k]) = relu(x @ W + b) with a constant W, fused and scheduled."""
    w = RNG.standard_normal((k, n)).astype("float32")
    b = RNG.standard_normal((n,)).astype("float32")
    x = relax.Var("x", relax.TensorType((rows, k), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(w)))
            out = bb.emit_output(relax.op.nn.relu(relax.op.add(h, relax.const(b))))
        bb.emit_func_output(out)
    mod = tvm.transform.Sequential(PIPELINE)(bb.get())
    return apply_cpu_schedules(mod, TARGET), w, b


def _kernel_scripts(mod) -> str:
    return "\n".join(f.script() for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))


def _run(mod, x):
    vm = relax.VirtualMachine(tvm.compile(mod, target=TARGET), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_small_static_kernel_is_serial_large_one_parallel():
    small, _, _ = _dense_relu(2)
    assert "T.parallel" not in _kernel_scripts(small)
    large, w, b = _dense_relu(4096)  # 4096 * 64 * 48 multiply-adds: worth the thread pool
    assert "T.parallel" in _kernel_scripts(large)
    x = RNG.standard_normal((4096, 64)).astype("float32")
    np.testing.assert_allclose(_run(large, x), np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-4)


def test_symbolic_batch_branches_on_work_and_stays_exact():
    n = tirx.Var("batch", "int64")
    mod, w, b = _dense_relu(n)
    text = _kernel_scripts(mod)
    assert "T.parallel" in text and str(threads.PARALLEL_MIN_WORK) in text  # the branch
    vm = relax.VirtualMachine(tvm.compile(mod, target=TARGET), tvm.cpu())
    for rows in (1, 5, 64, 900):  # both sides of the threshold (rows * 48 * 64 + ...)
        x = RNG.standard_normal((rows, 64)).astype("float32")
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_allclose(got, np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-4,
                                   err_msg=f"rows={rows}")


def test_threshold_zero_keeps_the_parallel_schedule(monkeypatch):
    monkeypatch.setattr(threads, "PARALLEL_MIN_WORK", 0)
    small, _, _ = _dense_relu(2)
    assert "T.parallel" in _kernel_scripts(small)


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(24, 32), torch.nn.Linear(32, 5)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    torch.manual_seed(0)
    module = _Mlp().eval()
    x = torch.randn(4, 24)
    path = tmp_path_factory.mktemp("mlp") / "mlp.ember"
    ember.compile(module, (x,), dynamic_dims={"x": {0: "batch"}}, output=path, progress=False)
    return module, path


def _eager(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_lower_adds_a_batch1_function_only_for_a_symbolic_leading_dim():
    module = _Mlp().eval()
    x = torch.randn(4, 24)
    dyn = ember.trace(module, (x,), dynamic_dims={"x": {0: "batch"}})
    names = {gv.name_hint for gv in ember.backends.tvm.lower(dyn).get_global_vars()}
    assert names == {"main", batch1_name("main")}
    plain = {gv.name_hint for gv in ember.backends.tvm.lower(dyn, specialize=False)
             .get_global_vars()}
    assert plain == {"main"}
    static = ember.trace(module, (x,))
    assert {gv.name_hint for gv in ember.backends.tvm.lower(static).get_global_vars()} == {"main"}


def test_batch1_calls_take_the_specialized_function_and_match_eager(mlp_artifact):
    module, path = mlp_artifact
    m = ember.load(path)
    main, b1, _ = m._thread_state()
    assert b1 is not None
    for batch in (1, 2, 1, 9, 1):  # shapes alternate: staging tensors per shape
        x = RNG.standard_normal((batch, 24)).astype("float32")
        np.testing.assert_allclose(m(x), _eager(module, x), atol=1e-5)
    x = RNG.standard_normal((1, 24)).astype("float32")
    generic = main(tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(b1(tvm.runtime.tensor(x)).numpy(), generic, atol=1e-6)


def test_misaligned_and_strided_inputs_are_copied_not_mutated(mlp_artifact):
    module, path = mlp_artifact
    m = ember.load(path)
    buf = RNG.standard_normal(24 * 3 + 1).astype("float32")
    x = buf[1:].reshape(3, 24)  # 4-byte offset: not 64-byte aligned
    before = x.copy()
    np.testing.assert_allclose(m(x), _eager(module, before), atol=1e-5)
    np.testing.assert_array_equal(x, before)
    wide = RNG.standard_normal((2, 48)).astype("float32")[:, ::2]  # not contiguous
    np.testing.assert_allclose(m(wide), _eager(module, np.ascontiguousarray(wide)), atol=1e-5)
    first = m(x[:1])
    second = m(x[1:2])  # the same staging tensor is reused; the first result must not change
    np.testing.assert_allclose(first, _eager(module, before[:1]), atol=1e-5)
    np.testing.assert_allclose(second, _eager(module, before[1:2]), atol=1e-5)
