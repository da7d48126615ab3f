"""ctrl.scan lowering strategies (per-step Relax calls vs one TIR loop) and the linear-scan
kernels (lane split, warm-start split with its fix-up, reduce/carry/rescan) and the plan that
picks one, against the reference interpreter or, bitwise, against a sequential loop with the
same rounding."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ember
from ember.backends.tvm import build, lower
from ember.backends.tvm.kernels.scan import (
    LANE_BLOCK_BYTES,
    SERIAL_BELOW,
    STREAM_BYTES,
    forced_split,
    linear_scan_kernel,
    plan_scan,
    prefix_cuts,
)
from ember.backends.tvm.kernels.scan_lanes import lane_blocks, lane_scan_kernel
from ember.backends.tvm.kernels.scan_warm import warm_scan_kernel
from ember.backends.tvm.lowering.control import CALL_MAX_STEPS, scan_strategy
from ember.errors import LoweringError
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


def _fma_sequential(a, b, h0):
    """The sequential loop with one rounding per step (a fused multiply-add, what the kernels
    compile to on an FMA target): exact product and sum in float64, then rounded once."""
    h, prev = np.empty_like(b), h0.copy()
    for t in range(b.shape[0]):
        prev = (a[t if a.shape[0] > 1 else 0].astype(np.float64) * prev + b[t]).astype(b.dtype)
        h[t] = prev
    return h


_FMA_TARGET = {"kind": "llvm", "mcpu": "haswell"}  # AVX2 + FMA: runs on any x86-64 host since


def _run_kernel(fn, a, b, h0):
    out = tvm.runtime.tensor(np.zeros(b.shape, b.dtype))
    fn(*[tvm.runtime.tensor(v) for v in (a, b, h0)], out)
    return out.numpy()


# a's range: decays fast (window << cut), decays too slowly (prefix replay from h0), grows and
# changes sign (no decay: replay from h0; per-step a may pass the probes: the fix-up repairs)
_A_RANGES = [(0.3, 0.9), (0.999, 1.0), (-1.05, 1.05)]


@pytest.mark.parametrize("cores", [2, 3, 4])
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("streaming", [False, True])
def test_warm_split_is_bitwise_the_sequential_loop(cores, per_step, streaming):
    steps, lanes = 1031, 40 if not streaming else 48
    cuts = prefix_cuts(steps, cores, 0.4)
    assert cuts[0] == 0 and cuts[-1] == steps and list(cuts) == sorted(cuts)
    key = ("warm", steps, lanes, cores, per_step, streaming)
    if key not in _KERNELS:
        f = warm_scan_kernel(steps, lanes, cores, per_step, 0.4, cuts, streaming)
        f = f.with_attr("global_symbol", "main")
        _KERNELS[key] = tvm.compile(tvm.IRModule({"main": f}), target=_FMA_TARGET)["main"]
    for k, (lo, hi) in enumerate(_A_RANGES):
        rng = np.random.default_rng(cores * 10 + k)
        a = rng.uniform(lo, hi, (steps if per_step else 1, lanes)).astype(np.float32)
        b = rng.standard_normal((steps, lanes)).astype(np.float32)
        h0 = rng.standard_normal(lanes).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            np.testing.assert_array_equal(_run_kernel(_KERNELS[key], a, b, h0),
                                          _fma_sequential(a, b, h0))


def test_warm_split_repairs_a_window_that_was_too_short():
    """Per-step a: the window comes from a few sampled rows of a; here those rows decay fast
    and the rows before the cut do not decay at all, so the warm start is wrong and the fix-up
    must recompute the rows (and NaN in b before the cut must reach every later row)."""
    steps, lanes = 2048, 16
    cuts = prefix_cuts(steps, 2, 0.65)
    f = warm_scan_kernel(steps, lanes, 2, True, 0.65, cuts).with_attr("global_symbol", "main")
    fn = tvm.compile(tvm.IRModule({"main": f}), target=_FMA_TARGET)["main"]
    rng = np.random.default_rng(5)
    a = np.full((steps, lanes), 1.0, np.float32)
    for q in (1, 2, 3):
        a[steps * q // 4] = 0.01  # the sampled rows promise a window of ~5 steps
    b = rng.standard_normal((steps, lanes)).astype(np.float32)
    h0 = rng.standard_normal(lanes).astype(np.float32)
    np.testing.assert_array_equal(_run_kernel(fn, a, b, h0), _fma_sequential(a, b, h0))
    a[:] = 0.5
    b[100, 3] = np.nan
    got = _run_kernel(fn, a, b, h0)
    assert np.isnan(got[100:, 3]).all() and np.isfinite(got[:, 4]).all()


def test_plans():
    wide = plan_scan(65536, 1024, 2, per_step_a=False, streaming=True)
    assert wide.kind == "time" and wide.threads == 2
    assert wide.cuts[1] > 65536 // 2  # a full replay writes fewer rows
    assert wide.streaming and wide.width == 1024  # whole rows, non-temporal stores
    assert not plan_scan(65536, 1024, 2, per_step_a=False).streaming  # not an x86 target
    assert not plan_scan(4096, 64, 2, streaming=True).streaming  # h stays in cache
    assert plan_scan(STREAM_BYTES // 4, 1, 1, streaming=True).streaming is False  # odd rows
    assert plan_scan(100, 8, 2).parallel is False  # too small to wake the pool
    serial_big = plan_scan(65536, 1024, 1, streaming=True)
    assert serial_big.kind == "serial" and serial_big.threads == 1 and serial_big.streaming
    narrow = plan_scan(65536, 8, 2)
    assert narrow.threads == 2 and narrow.rho == 1.0  # latency-bound rows: replay costs a row
    assert plan_scan(65536, 1024, 4).threads == 4
    forced = plan_scan(1000, 64, 2, chunk=100)
    assert not forced.cuts and forced.chunks == 10 and forced.kind == "chunks"


def test_plan_picks_serial_lanes_or_time_by_size():
    # under SERIAL_BELOW elements waking the pool costs more than the scan
    assert plan_scan(SERIAL_BELOW // 64 - 1, 64, 2).kind == "serial"
    # narrow or medium rows share lines between the cores' prefetchers: cut time
    for steps, lanes in ((4096, 64), (65536, 64), (16384, 1024)):
        assert plan_scan(steps, lanes, 2).kind == "time", (steps, lanes)
    # each thread's block of a row spans two pages: cut the lanes, even for a short scan
    lanes = 2 * LANE_BLOCK_BYTES // 4
    for steps in (64, 4096):
        plan = plan_scan(steps, lanes, 2, streaming=True)
        assert plan.kind == "lanes" and plan.lane_threads == 2, steps
    assert plan_scan(4096, lanes, 1).kind == "serial"
    assert plan_scan(256, 1024, 2).kind == "serial"  # short, and too narrow for lanes
    with forced_split("lanes"):
        assert plan_scan(4096, 64, 2).kind == "lanes"
        assert plan_scan(4096, 16, 2).kind == "serial"  # one cache line: nothing to split
    with forced_split("serial"):
        assert plan_scan(65536, 1024, 2).kind == "serial"
    assert plan_scan(4096, 64, 2).kind == "time"  # the forced split ends with the block
    with pytest.raises(LoweringError, match="unknown split"), forced_split("diagonal"):
        pass


def test_lane_blocks_are_whole_cache_lines():
    assert lane_blocks(64, 2) == ((0, 32), (32, 32))
    assert lane_blocks(80, 2) == ((0, 48), (48, 32))  # 5 lines: 3 + 2
    assert lane_blocks(70, 2) == ((0, 48), (48, 22))  # the last block ends at N
    assert lane_blocks(200, 4) == ((0, 64), (64, 48), (112, 48), (160, 40))
    assert lane_blocks(20, 4) == ((0, 16), (16, 4))  # fewer lines than threads
    assert lane_blocks(64, 2, itemsize=8) == ((0, 32), (32, 32))  # 8 doubles a line


@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("steps,lanes", [(1, 80), (1031, 32), (1031, 64), (1031, 80)])
def test_lane_split_is_bitwise_the_sequential_loop(steps, lanes, per_step):
    """Each thread runs the whole time loop over its lanes: the sequential loop's rounding
    (one FMA per step) whatever a does, growing and sign-changing included."""
    key = ("lanes", steps, lanes, per_step)
    fn = _KERNELS.get(key)
    if fn is None:
        f = lane_scan_kernel(steps, lanes, 2, per_step).with_attr("global_symbol", "main")
        fn = _KERNELS[key] = tvm.compile(tvm.IRModule({"main": f}), target=_FMA_TARGET)["main"]
    for k, (lo, hi) in enumerate(_A_RANGES):
        rng = np.random.default_rng(lanes + k)
        a = rng.uniform(lo, hi, (steps if per_step else 1, lanes)).astype(np.float32)
        b = rng.standard_normal((steps, lanes)).astype(np.float32)
        h0 = rng.standard_normal(lanes).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            np.testing.assert_array_equal(_run_kernel(fn, a, b, h0), _fma_sequential(a, b, h0))


@pytest.mark.parametrize("per_step", [False, True])
def test_lane_split_matches_numpy_without_fma(per_step):
    """On a target without FMA the kernel rounds a*h and then + b, as numpy does: the same
    bits as a plain float32 numpy loop; 3 threads over 80 lanes (blocks of 32, 32, 16) and
    non-temporal stores."""
    steps, lanes = 515, 80
    f = lane_scan_kernel(steps, lanes, 3, per_step, streaming=True)
    fn = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}),
                     target={"kind": "llvm", "mcpu": "x86-64"})["main"]
    rng = np.random.default_rng(11)
    a = rng.uniform(-1.0, 1.0, (steps if per_step else 1, lanes)).astype(np.float32)
    b = rng.standard_normal((steps, lanes)).astype(np.float32)
    h0 = rng.standard_normal(lanes).astype(np.float32)
    want, prev = np.empty_like(b), h0
    for t in range(steps):
        prev = a[t if per_step else 0] * prev + b[t]
        want[t] = prev
    np.testing.assert_array_equal(_run_kernel(fn, a, b, h0), want)


def test_lane_split_op_views_batched_state_in_place():
    """ctrl.linear_scan over [T, 2, 40] (batch 2: N = 80 lanes, 5 lines) with a per-step a,
    lowered with the lane split: no reshape kernels, bitwise the sequential FMA loop."""
    steps = 700
    g = Graph("ls_lanes")
    av = g.add_input("a", TensorType((steps, 2, 40), F32))
    bv = g.add_input("b", TensorType((steps, 2, 40), F32))
    hv = g.add_input("h0", TensorType((2, 40), F32))
    g.set_outputs(g.add("ctrl.linear_scan", av, bv, hv))
    with forced_split("lanes"):
        mod = lower(g)
    assert {gv.name_hint for gv in mod.get_global_vars()} == {"main", "linear_scan"}
    vm = relax.VirtualMachine(build(mod, "cpu"), tvm.cpu())
    rng = np.random.default_rng(8)
    a = rng.uniform(0.2, 1.0, (steps, 2, 40)).astype(np.float32)
    b = rng.standard_normal((steps, 2, 40)).astype(np.float32)
    h0 = rng.standard_normal((2, 40)).astype(np.float32)
    got = vm["main"](*[tvm.runtime.tensor(v) for v in (a, b, h0)]).numpy()
    want = _fma_sequential(a.reshape(steps, 80), b.reshape(steps, 80), h0.reshape(80))
    np.testing.assert_array_equal(got.reshape(steps, 80), want)


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


def test_linear_scan_views_its_operands_in_place():
    """A [T, 1, d] scan with a [1, d] decay: the kernel takes the tensors as they are (no
    reshape kernels around it, each a full copy of [T, d]) and matches the interpreter."""
    steps, d = 1500, 24
    g = Graph("ls3")
    av = g.add_input("a", TensorType((1, d), F32))
    bv = g.add_input("b", TensorType((steps, 1, d), F32))
    hv = g.add_input("h0", TensorType((1, d), F32))
    g.set_outputs(g.add("ctrl.linear_scan", av, bv, hv))
    names = {gv.name_hint for gv in lower(g).get_global_vars()}
    assert names == {"main", "linear_scan"}, names
    rng = np.random.default_rng(7)
    a = rng.uniform(0.2, 0.9, (1, d)).astype(np.float32)
    b = rng.standard_normal((steps, 1, d)).astype(np.float32)
    h0 = rng.standard_normal((1, d)).astype(np.float32)
    np.testing.assert_allclose(_run(g, a, b, h0)[0], ember.interpret(g, a, b, h0),
                               rtol=1e-5, atol=1e-5)
