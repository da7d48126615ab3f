"""ctrl.newton_scan through TVM: the recursive Newton loop gives the sequential loop's result
and the interpreter's iteration count; the not-converged case really runs the sequential body."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ember
from ember.backends.tvm import build, lower
from ember.backends.tvm.kernels.newton import dense_update_kernel
from ember.ir import DType, Graph
from ember.ir.ops.parallel_scan import _NumpyOps, affine_scan
from tests.passes.recurrence.graphs import tanh_rnn

F32 = DType.f32


def _run(g: Graph, *inputs) -> list[np.ndarray]:
    vm = relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs])
    return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]


def _newton(g: Graph, **opts) -> Graph:
    """parallel_newton (forced), with the iteration count as an extra output."""
    spec = ",".join(f"{k}={v}" for k, v in {"force": "true", **opts}.items())
    out = ember.Pipeline.parse(f"parallel_newton{{{spec}}}").run(g.clone())
    op = next(o for o in out.ops if o.kind == "ctrl.newton_scan")
    out.set_outputs(*out.outputs, op.results[-1])
    return out


def _close(got, want, atol=1e-4):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= atol * max(1.0, np.abs(b).max())


@pytest.mark.parametrize("jacobian", ["diag", "full"])
def test_tanh_rnn_matches_sequential_and_interpreter_iterations(jacobian):
    g, ins = tanh_rnn(40, 2, 6, seed=1)
    want = ember.interpret(g, *ins)
    ng = _newton(g, jacobian=jacobian, tol=1e-6, max_iters=40)
    *_, ref_iters = ember.interpret(ng, *ins)
    *got, iters = _run(ng, *ins)
    assert 1 <= int(ref_iters) < 40  # converged, in fewer updates than T
    assert int(iters) == int(ref_iters)
    _close(got, want)


def test_digits_gru_newton_matches_sequential():
    z = ember.zoo.load("digits_gru")
    x = z.example_inputs[0].numpy()
    seq = ember.Pipeline.parse("recognize_rnn,dce").run(ember.trace(z.module, z.example_inputs))
    want = ember.interpret(seq, x)
    ng = _newton(seq, tol=1e-6)  # full Jacobian (DEER), the pass's default
    assert "ctrl.scan" not in ng.op_counts()
    got, iters = _run(ng, x)
    _, ref_iters = ember.interpret(ng, x)
    assert 1 <= int(iters) == int(ref_iters) <= 8  # exact Newton: at most T=8 updates
    _close([got], [want])


def test_not_converged_runs_the_sequential_body():
    g, ins = tanh_rnn(16, 2, 4, seed=2)
    seq = _run(g, *ins)  # the sequential ctrl.scan, compiled
    *got, iters = _run(_newton(g, jacobian="diag", max_iters=1, tol=1e-12), *ins)
    assert int(iters) == -1
    for a, b in zip(got, seq):  # the same lowering of the same body: the same numbers
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    _close(got, ember.interpret(g, *ins))


def test_newton_loop_is_one_recursive_function():
    """The iteration count is data-dependent: one function that calls itself, not max_iters
    unrolled copies (the module does not grow with max_iters)."""
    g, _ = tanh_rnn(8, 1, 4, seed=3)
    sizes = []
    for iters in (20, 90):  # same number of digits: the same text but for the bound
        mod = lower(_newton(g, jacobian="diag", max_iters=iters))
        loops = [gv for gv in mod.get_global_vars() if gv.name_hint.startswith("newton_iter")]
        assert len(loops) == 1
        assert loops[0].name_hint in mod[loops[0]].script()  # calls itself
        sizes.append(len(mod.script()))
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("steps,rows,m", [(1, 1, 3), (9, 2, 5)])
def test_dense_update_kernel_solves_the_linear_recurrence(steps, rows, m):
    rng = np.random.default_rng(steps)
    j = rng.uniform(-0.5, 0.5, (steps, rows, m, m)).astype(np.float32)  # [t, r, i, k]
    p, f = (rng.standard_normal((steps, rows, m)).astype(np.float32) for _ in range(2))
    h0 = rng.standard_normal((rows, m)).astype(np.float32)
    b = f - (j @ p[..., None])[..., 0]
    want = affine_scan(j, b, h0, True, _NumpyOps)
    func = dense_update_kernel(steps, rows, m).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), "llvm")
    jt = np.ascontiguousarray(j.transpose(0, 3, 1, 2))  # the kernel's layout: [t, k, r, i]
    args = [tvm.runtime.tensor(a) for a in (jt, p, f, h0)]
    out = tvm.runtime.tensor(np.zeros((steps, rows, m), np.float32))
    lib["main"](*args, out)
    np.testing.assert_allclose(out.numpy(), want, atol=1e-5)
