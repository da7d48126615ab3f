"""ctrl.scan's sequential TVM loop and ctrl.linear_scan's chunked kernel vs the interpreter."""

from __future__ import annotations

import numpy as np
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

import ember
from ember.backends.tvm import build, lower
from ember.backends.tvm.kernels.scan import linear_scan_kernel, plan_scan
from ember.ir import DType, Graph, TensorType
from ember.passes.recurrence.linearity import DENSE, DIAG, NONLINEAR, classify

F32 = DType.f32


def _run_tvm(g: Graph, *inputs):
    vm = relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs])
    return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]


def _gru_like_scan(steps: int, batch: int, hid: int, rng) -> Graph:
    """A GRU cell written out as body ops: linear, split, sigmoid, tanh, mul, sub, add."""
    body = Graph("body")
    h = body.add_input("h", TensorType((batch, hid), F32))
    gi = body.add_input("gi", TensorType((batch, 3 * hid), F32))
    w = body.add_input("w_hh", TensorType((3 * hid, hid), F32))
    gh = body.add("linear", h, w, body.const(rng.standard_normal(3 * hid).astype(np.float32)))
    ir, iz, in_ = body.add("split", gi, dim=1, sizes=(hid, hid, hid))
    hr, hz, hn = body.add("split", gh, dim=1, sizes=(hid, hid, hid))
    r, z = body.add("sigmoid", body.add("add", ir, hr)), body.add("sigmoid", body.add("add", iz, hz))
    n = body.add("tanh", body.add("add", in_, body.add("mul", r, hn)))
    new = body.add("add", n, body.add("mul", z, body.add("sub", h, n)))
    body.set_outputs(new, body.add("unsqueeze", new, dim=0))
    g = Graph("main")
    h0 = g.add_input("h0", TensorType((batch, hid), F32))
    xs = g.add_input("xs", TensorType((steps, batch, 3 * hid), F32))
    wv = g.const((rng.standard_normal((3 * hid, hid)) * 0.3).astype(np.float32))
    final, ys = g.add("ctrl.scan", h0, xs, wv, regions=[body], num_carry=1, num_xs=1)
    g.set_outputs(final, ys)
    return g


def test_sequential_loop_matches_interpreter_gru_body():
    rng = np.random.default_rng(0)
    g = _gru_like_scan(9, 2, 8, rng)
    h0 = rng.standard_normal((2, 8)).astype(np.float32)
    xs = rng.standard_normal((9, 2, 24)).astype(np.float32)
    want = ember.interpret(g, h0, xs)
    got = _run_tvm(g, h0, xs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _diag_scan_graph(steps: int, d: int, reverse: bool = False) -> Graph:
    body = Graph("body")
    h = body.add_input("h", TensorType((d,), F32))
    x = body.add_input("x", TensorType((d,), F32))
    a = body.add_input("a", TensorType((d,), F32))
    new = body.add("add", body.add("mul", a, h), x)
    body.set_outputs(new, new)
    g = Graph("main")
    h0, xs = g.add_input("h0", TensorType((d,), F32)), g.add_input("xs", TensorType((steps, d), F32))
    av = g.add("sigmoid", g.const(np.linspace(-1, 3, d).astype(np.float32)))
    final, ys = g.add("ctrl.scan", h0, xs, av, regions=[body], num_carry=1, num_xs=1,
                      reverse=reverse)
    g.set_outputs(final, ys)
    return g


def test_long_loop_is_a_loop_not_unrolled():
    g = _diag_scan_graph(65536, 8)
    rng = np.random.default_rng(1)
    h0, xs = rng.standard_normal(8).astype(np.float32), rng.standard_normal((65536, 8)).astype(np.float32)
    got = _run_tvm(g, h0, xs)
    want = ember.interpret(g, h0, xs)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)


def test_parallel_scan_rewrite_matches_sequential_in_tvm():
    g = _diag_scan_graph(1000, 16)
    g2 = ember.Pipeline.parse("parallel_scan{chunk=64},dce").run(g.clone())
    assert [op.kind for op in g2.ops].count("ctrl.linear_scan") == 1
    assert not any(op.kind == "ctrl.scan" for op in g2.ops)
    rng = np.random.default_rng(2)
    h0, xs = rng.standard_normal(16).astype(np.float32), rng.standard_normal((1000, 16)).astype(np.float32)
    seq, par = _run_tvm(g, h0, xs), _run_tvm(g2, h0, xs)
    for a, b in zip(par, seq):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_reverse_scan_is_left_sequential():
    g = _diag_scan_graph(10, 4, reverse=True)
    g2 = ember.Pipeline.parse("parallel_scan").run(g.clone())
    assert any(op.kind == "ctrl.scan" for op in g2.ops)


def test_linearity_classes():
    d = 4
    cases = {}
    for name in ("diag", "dense", "nonlinear", "two_carries_product"):
        body = Graph("body")
        h = body.add_input("h", TensorType((d,), F32))
        x = body.add_input("x", TensorType((d,), F32))
        w = body.add_input("w", TensorType((d, d), F32))
        if name == "diag":  # h' = (x * 0.5) * h - x  (coefficient depends on x: still affine)
            new = body.add("sub", body.add("mul", body.add("mul", x, x), h), x)
        elif name == "dense":
            new = body.add("add", body.add("matmul", w, h), x)
        elif name == "nonlinear":
            new = body.add("tanh", body.add("add", h, x))
        else:
            new = body.add("mul", h, body.add("add", h, x))
        body.set_outputs(new)
        cases[name] = classify(body, 1)[0][0]
    assert cases == {"diag": DIAG, "dense": DENSE, "nonlinear": NONLINEAR,
                     "two_carries_product": NONLINEAR}


_KERNELS: dict = {}


@settings(max_examples=12, deadline=None)
@given(steps=st.sampled_from([1, 2, 3, 7, 64, 100, 257, 1000]),
       lanes=st.sampled_from([1, 3, 8, 24, 40]), chunk=st.sampled_from([None, 1, 5, 64]),
       per_step=st.booleans(), seed=st.integers(0, 2**16))
def test_hypothesis_random_affine_scan_equals_sequential(steps, lanes, chunk, per_step, seed):
    rng = np.random.default_rng(seed)
    plan = plan_scan(steps, lanes, 2, chunk)
    key = (plan, per_step)
    if key not in _KERNELS:
        f = linear_scan_kernel(plan, per_step).with_attr("global_symbol", "main")
        _KERNELS[key] = tvm.compile(tvm.IRModule({"main": f}), target="llvm")["main"]
    # |a| <= 1.05: a constant a of 1.1 overflows float32 by step 1000 (the float64 reference not)
    a = rng.uniform(-1.05, 1.05, (steps if per_step else 1, lanes)).astype(np.float32)
    b = rng.standard_normal((steps, lanes)).astype(np.float32)
    h0 = rng.standard_normal(lanes).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((steps, lanes), np.float32))
    _KERNELS[key](*[tvm.runtime.tensor(v) for v in (a, b, h0)], out)
    ref = np.empty((steps, lanes), np.float64)
    prev = h0.astype(np.float64)
    for t in range(steps):
        prev = a[t if per_step else 0] * prev + b[t]
        ref[t] = prev
    scale = np.maximum(1.0, np.abs(ref))
    assert np.max(np.abs(out.numpy() - ref) / scale) <= 1e-4
