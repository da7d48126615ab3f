"""ctrl.scan lowering strategies (per-step Relax calls vs one TIR loop) and the linear-scan
kernels (prefix split, reduce/carry/rescan), each against the reference interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ember
from ember.backends.tvm import build, lower
from ember.backends.tvm.kernels.scan import (
    linear_scan_kernel,
    plan_scan,
    prefix_cuts,
    prefix_scan_kernel,
)
from ember.backends.tvm.lowering.control import CALL_MAX_STEPS, scan_strategy
from ember.ir import DType, Graph, TensorType

F32 = DType.f32


def _run(g: Graph, *inputs):
    vm = relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs])
    return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]


def _mlp_scan(steps: int, batch, hid: int, rng, reverse: bool = False) -> Graph:
    """A sampler-like loop: x' = x + c_t * mlp(x, t), a constant [steps, 2] table as xs, the
    weights as invariants (constants), a stacked y per step; batch may be symbolic."""
    body = Graph("body")
    x = body.add_input("x", TensorType((batch, 8), F32))
    row = body.add_input("row", TensorType((2,), F32))
    w1 = body.add_input("w1", TensorType((hid, 8), F32))
    b1 = body.add_input("b1", TensorType((hid,), F32))
    w2 = body.add_input("w2", TensorType((8, hid), F32))
    t = body.add("select", row, dim=0, index=0)
    c = body.add("select", row, dim=0, index=1)
    h = body.add("silu", body.add("linear", body.add("add", x, t), w1, b1))
    v = body.add("linear", h, w2)
    new = body.add("add", x, body.add("mul", c, v))
    body.set_outputs(new, body.add("tanh", v))
    g = Graph("main")
    x0 = g.add_input("x0", TensorType((batch, 8), F32))
    table = np.stack([np.linspace(0, 1, steps), np.full(steps, 1.0 / steps)], 1)
    consts = [g.const(table.astype(np.float32))]
    for shape in ((hid, 8), (hid,), (8, hid)):
        consts.append(g.const((rng.standard_normal(shape) * 0.3).astype(np.float32)))
    final, ys = g.add("ctrl.scan", x0, *consts, regions=[body], num_carry=1, num_xs=1,
                      reverse=reverse)
    g.set_outputs(final, ys)
    return g


@pytest.mark.parametrize("reverse", [False, True])
def test_dense_body_static_scan_runs_as_calls_and_matches(reverse):
    rng = np.random.default_rng(0)
    g = _mlp_scan(6, "batch", 16, rng, reverse)
    op = next(o for o in g.ops if o.kind == "ctrl.scan")
    assert scan_strategy(op) == "calls"
    mod = lower(g)
    names = {gv.name_hint for gv in mod.get_global_vars()}
    assert "scan_body" in names and "scan_loop" not in names
    for batch in (3, 5):  # one build, any batch
        x0 = rng.standard_normal((batch, 8)).astype(np.float32)
        want = ember.interpret(g, x0)
        got = _run(g, x0)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_two_scans_get_two_body_functions():
    rng = np.random.default_rng(3)
    g, other = _mlp_scan(3, 4, 16, rng), _mlp_scan(5, 4, 32, rng)
    first = next(o for o in g.ops if o.kind == "ctrl.scan")
    second = next(o for o in other.ops if o.kind == "ctrl.scan")
    consts = [g.const(v.producer.attrs["value"]) for v in second.inputs[1:]]
    final, ys = g.add("ctrl.scan", first.results[0], *consts, regions=[second.regions[0].clone()],
                      num_carry=1, num_xs=1)
    g.set_outputs(final, first.results[1], ys)
    names = {gv.name_hint for gv in lower(g).get_global_vars()}
    assert {"scan_body", "scan_body1"} <= names
    x0 = rng.standard_normal((4, 8)).astype(np.float32)
    for a, b in zip(_run(g, x0), ember.interpret(g, x0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_calls_keep_one_copy_of_each_weight():
    """The weights are bound inside the body function, so constant folding (and prepacking)
    happen once, not once per step: a per-step copy would grow the library with T."""
    from ember.backends.tvm.build import legalize_passes

    rng = np.random.default_rng(1)
    counts = []
    for steps in (2, 40):
        mod = lower(_mlp_scan(steps, 4, 64, rng))
        with tvm.target.Target("llvm"):
            mod = tvm.transform.Sequential(legalize_passes())(mod)
        counts.append(_large_constants(mod))
    assert counts == [2, 2]  # w1 and w2 (folded to their transposes), once each


def _large_constants(mod, size: int = 512) -> int:
    found: list = []

    def visit(e):
        if isinstance(e, tvm.ir.GenericConst) and e.value.numpy().size >= size and \
                not any(e.same_as(f) for f in found):
            found.append(e)

    for _, f in mod.functions_items():
        if isinstance(f, relax.Function):
            relax.analysis.post_order_visit(f, visit)
    return len(found)


def test_long_or_elementwise_scans_stay_one_loop():
    rng = np.random.default_rng(2)
    long = _mlp_scan(CALL_MAX_STEPS + 1, 2, 8, rng)
    assert scan_strategy(next(o for o in long.ops if o.kind == "ctrl.scan")) == "loop"
    body = Graph("body")
    h = body.add_input("h", TensorType((4,), F32))
    x = body.add_input("x", TensorType((4,), F32))
    new = body.add("add", body.add("mul", h, h), x)
    body.set_outputs(new)
    g = Graph("main")
    xs = g.add_input("xs", TensorType((5, 4), F32))
    g.set_outputs(g.add("ctrl.scan", g.const(np.zeros(4, np.float32)), xs, regions=[body],
                        num_carry=1, num_xs=1))
    assert scan_strategy(g.ops[-1]) == "loop"
    xv = rng.uniform(-0.5, 0.5, (5, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(g, xv)[0], ember.interpret(g, xv), rtol=1e-6)


_KERNELS: dict = {}


def _kernel(key, make):
    if key not in _KERNELS:
        f = make().with_attr("global_symbol", "main")
        _KERNELS[key] = tvm.compile(tvm.IRModule({"main": f}), target="llvm")["main"]
    return _KERNELS[key]


def _sequential(a, b, h0):
    h, prev = np.empty_like(b), h0.copy()
    for t in range(b.shape[0]):
        prev = a[t if a.shape[0] > 1 else 0] * prev + b[t]
        h[t] = prev
    return h


@pytest.mark.parametrize("cores", [2, 3, 4])
@pytest.mark.parametrize("per_step", [False, True])
def test_prefix_split_is_bitwise_the_sequential_loop(cores, per_step):
    rng = np.random.default_rng(cores)
    steps, lanes = 1031, 40
    cuts = prefix_cuts(steps, cores, 0.4)
    assert cuts[0] == 0 and cuts[-1] == steps and list(cuts) == sorted(cuts)
    fn = _kernel(("prefix", steps, lanes, cuts, per_step),
                 lambda: prefix_scan_kernel(steps, lanes, cuts, per_step))
    a = rng.uniform(-1.05, 1.05, (steps if per_step else 1, lanes)).astype(np.float32)
    b = rng.standard_normal((steps, lanes)).astype(np.float32)
    h0 = rng.standard_normal(lanes).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((steps, lanes), np.float32))
    fn(*[tvm.runtime.tensor(v) for v in (a, b, h0)], out)
    np.testing.assert_array_equal(out.numpy(), _sequential(a, b, h0))


def test_plans():
    wide = plan_scan(65536, 1024, 2, per_step_a=False)
    assert wide.cuts and wide.cuts[1] > 65536 // 2  # the replaying thread writes fewer rows
    assert wide.width == 1024  # whole rows
    assert plan_scan(100, 8, 2).parallel is False  # too small to wake the pool
    narrow = plan_scan(65536, 8, 2)
    assert not narrow.cuts and narrow.chunks == 8
    assert plan_scan(65536, 1024, 4).chunks == 16  # more cores: reduce / carry / rescan
    forced = plan_scan(1000, 64, 2, chunk=100)
    assert not forced.cuts and forced.chunks == 10


@pytest.mark.parametrize("steps,lanes,cores,per_step", [(4096, 64, 2, False), (2000, 48, 2, True),
                                                        (3000, 16, 2, True), (5000, 96, 4, False)])
def test_linear_scan_op_matches_interpreter(steps, lanes, cores, per_step):
    rng = np.random.default_rng(steps)
    plan = plan_scan(steps, lanes, cores, per_step_a=per_step)
    fn = _kernel(("plan", plan, per_step), lambda: linear_scan_kernel(plan, per_step))
    a = rng.uniform(-1.0, 1.0, (steps if per_step else 1, lanes)).astype(np.float32)
    b = rng.standard_normal((steps, lanes)).astype(np.float32)
    h0 = rng.standard_normal(lanes).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((steps, lanes), np.float32))
    fn(*[tvm.runtime.tensor(v) for v in (a, b, h0)], out)
    g = Graph("ls")
    av = g.add_input("a", TensorType(a.shape if per_step else (lanes,), F32))
    bv = g.add_input("b", TensorType(b.shape, F32))
    hv = g.add_input("h0", TensorType(h0.shape, F32))
    g.set_outputs(g.add("ctrl.linear_scan", av, bv, hv))
    want = ember.interpret(g, a if per_step else a[0], b, h0)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4)
