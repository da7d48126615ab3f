"""Lowering of `ctrl.newton_scan` (DEER / quasi-DEER): Newton iteration over the whole trajectory.

The iteration count depends on the data, so the loop is a private RECURSIVE Relax function
with a `relax.If` on a scalar condition (Relax has no while loop; the VM runs recursion and If
natively, and the functions are compiled once whatever the count):

    newton_iter(H, it, h0, xs.., inv..):        # H: the current guess [T, *S], it: i32 scalar
        prev = [h0, H[:-1]]; F, ys = f_all(prev, xs, inv)      (region 1, inlined)
        err = max|F - H|; converged = err <= tol * max(1, max|F|)
        if converged:                  return (F[-1], ys, it)
        elif it >= max_iters or !(err < 1e30): return newton_fallback(h0, xs, inv)   (.., -1)
        else: return newton_iter(newton_update(prev, F, h0, xs, inv), it + 1, ...)

which is `newton_solve` in ember/ir/ops/parallel_scan.py step for step (the same iteration
counts, up to float rounding when a residual lands next to tol: GEMM schedules differ).
Nothing is copied from the other lowerings; each piece is an ember op lowered by its own entry:
the fallback is a `ctrl.scan` over the step body (per-step calls or the sequential TIR loop,
lowering/control.py), the diagonal update is a `ctrl.linear_scan` (kernels/scan.py), and the
region bodies are lowered op by op. The full (DEER) Jacobian's update solves the dense linear
recurrence h_t = J_t h_{t-1} + b_t with a sequential kernel (kernels/newton.py): O(T m^2), the
same work as one pass of the loop, where the parallel matrix scan would cost O(T m^3 log T).

Invariants that are Relax constants (weights) are bound inside each function, not passed, so
constant-weight rewrites (prepack) see them, as in the scan lowering.

Speed (benchmarks/newton.py, 2-core Zen 3): each update materializes a [T, m, *S] Jacobian,
the whole sequential loop's work, so on few cores Newton loses to the better of ember's two
sequential lowerings in every case measured (0.01-0.3x), as the parallel_newton cost model
predicts; it pays only against the per-step-call form at a tiny state (tanh d=16: 4x), where
the TIR loop is faster still.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import tvm
from tvm import relax

from ....errors import LoweringError
from ....ir import Graph
from ..kernels.newton import check_full_jacobian, dense_update, tangent_first
from . import LowerContext, lowers, static_shape, tvm_dtype

R = relax.op


class _Frame:
    """The op's inputs (h0, xs.., invariants..) as seen inside one private function: Relax
    constants stay constants, the rest become parameters (in `params`, passed as `passed`)."""

    def __init__(self, scx: LowerContext, op, inputs: list) -> None:
        self.values: list = []
        self.params: list[relax.Var] = []
        self.passed: list = []
        for k, (v, x) in enumerate(zip(op.inputs, inputs)):
            if isinstance(x, tvm.ir.GenericConst):
                self.values.append(x)
                continue
            p = relax.Var(f"{v.name or 'in'}_{k}", scx.tensor_type(v.type))
            self.values.append(p)
            self.params.append(p)
            self.passed.append(x)


def _private(cx: LowerContext, name: str, op, inputs: list,
             extra: list[tuple[str, relax.TensorType]], build: Callable[..., Any],
             gv: relax.GlobalVar | None = None) -> tuple[relax.GlobalVar, list]:
    """Add private function `name(*extra, *non-constant op inputs)` whose body `build(scx,
    extra_vars, values)` emits (values: the op inputs inside it; it opens its own dataflow
    blocks, see `_block`) and returns the result. Returns the GlobalVar and the caller's
    arguments that follow `extra`. With `gv`, the function replaces the one `gv` names:
    recursion adds a placeholder of the same signature first, so the real body can call it."""
    sub = relax.BlockBuilder(cx.bb.get())  # same module: new PrimFuncs get unique names
    scx = LowerContext(sub, cx.symbols)
    frame = _Frame(scx, op, inputs)
    extra_vars = [relax.Var(n, t) for n, t in extra]
    with sub.function(name, [*extra_vars, *frame.params], private=True):
        new = sub.emit_func_output(build(scx, extra_vars, frame.values))
    have = {g.name_hint for g in cx.bb.get().get_global_vars()}
    for g, f in sub.get().functions_items():
        if g.same_as(new) and gv is not None:
            cx.bb.update_func(gv, f)
        elif g.name_hint not in have:
            cx.bb.update_func(g, f)
    return (gv if gv is not None else new), frame.passed


def _block(scx: LowerContext, emit: Callable[[], list]) -> list:
    """Run `emit` in one dataflow block (what FuseOps fuses within); its results leave it."""
    with scx.bb.dataflow():
        return [scx.bb.emit_output(o) for o in emit()]


def _scratch(op, name: str) -> tuple[Graph, list]:
    """A scratch ember graph whose inputs have the types of the op's inputs."""
    g = Graph(name)
    return g, [g.add_input(v.name or f"in{k}", v.type) for k, v in enumerate(op.inputs)]


def _lower_graph(scx: LowerContext, g: Graph, bound: list) -> list:
    from ..lower import lower_ops

    env = {id(v): x for v, x in zip(g.inputs, bound)}
    lower_ops(scx, g.ops, env)
    return [env[id(v)] for v in g.outputs]


def _numel(t) -> float:
    return math.prod(t.shape) if t.is_static else math.inf


def _lower_staged(scx: LowerContext, g: Graph, bound: list, ops: list, outputs: list,
                  then: Callable[[list], list]) -> list:
    """Lower `ops` of region `g` (inputs bound to `bound`) in two dataflow blocks: first the
    ops whose results are smaller than the largest value (and that need only such values),
    then the rest and `then(outputs)`.

    Why: the Jacobian (full, or diag taken from it) is a tangent per state component
    ([T, m, *S]) built by broadcasting the cell's [T, *S] gate values; in one block FuseOps
    inlines those gates (sigmoid, tanh, splits of a GEMM) into the [T, m, *S] kernel and
    recomputes each m times (digits_gru T=8, full: 2.2 ms per Jacobian; T=64, diag: 8.6 ms).
    Across blocks the gates are computed once and only loaded.
    """
    from ..lower import lower_ops

    env = {id(v): x for v, x in zip(g.inputs, bound)}
    largest = max((_numel(r.type) for o in ops for r in o.results), default=0)
    early = set(env)
    first, rest = [], []
    for o in ops:
        fits = all(_numel(r.type) < largest for r in o.results)
        if fits and all(id(v) in early for v in o.inputs):
            first.append(o)
            early.update(id(r) for r in o.results)
        else:
            rest.append(o)
    made = {id(r) for o in first for r in o.results}
    needed = list(dict.fromkeys(
        [id(v) for o in rest for v in o.inputs if id(v) in made]
        + [id(v) for v in outputs if id(v) in made]))
    if rest:
        outs = _block(scx, lambda: (lower_ops(scx, first, env), [env[i] for i in needed])[1])
        env.update(zip(needed, outs))
        first = rest
    return _block(scx, lambda: (lower_ops(scx, first, env),
                                then([env[id(v)] for v in outputs]))[1])


def _tuple_items(scx: LowerContext, call: relax.Expr, n: int) -> list:
    return [scx.emit(relax.TupleGetItem(call, i)) for i in range(n)]


@lowers("ctrl.newton_scan")
def _(cx, op, inputs, num_xs, max_iters, tol, jacobian, regions=None):
    body, f_all, j_all = op.regions
    inputs = list(inputs)
    h_type, steps = op.inputs[0].type, op.inputs[1].type.shape[0]
    static_shape(h_type, "ctrl.newton_scan state")
    if not isinstance(steps, int) or steps < 1:
        raise LoweringError(f"ctrl.newton_scan over {steps!r} steps: the TVM lowering needs a "
                            "static length >= 1 (trace with a static sequence length)")
    if jacobian == "full":
        check_full_jacobian(j_all.outputs[0].type, h_type)
    n_ys = len(body.outputs) - 1
    dt = tvm_dtype(h_type.dtype)
    h_all_type = cx.tensor_type(h_type.with_shape((steps, *h_type.shape)))

    # ---- sequential fallback: ctrl.scan over the step body ------------------------------
    def fallback(scx, _, vals):
        g, ins = _scratch(op, "newton_fallback")
        outs = g.add("ctrl.scan", *ins, regions=[body], num_carry=1, num_xs=num_xs)
        g.set_outputs(*(outs if isinstance(outs, (list, tuple)) else [outs]))
        return _block(scx, lambda: [relax.Tuple([*_lower_graph(scx, g, vals),
                                                 scx.const(-1, "int32")])])[0]

    fb_gv, _ = _private(cx, "newton_fallback", op, inputs, [], fallback)

    # ---- one Newton update: linearize at prev, solve the linear recurrence -------------
    permuted = tangent_first(j_all) if jacobian == "full" else None
    j_ops, j_out = permuted or (j_all.ops, j_all.outputs[0])

    def solve(scx, jac, prev, f, h0):
        if jacobian == "full":
            return dense_update(scx, jac, prev, f, h0, h_type, permuted is not None)
        b = scx.emit(R.subtract(f, R.multiply(jac, prev)))
        g = Graph("newton_linear")
        a_in = g.add_input("a", h_type.with_shape((steps, *h_type.shape)))
        b_in = g.add_input("b", a_in.type)
        h0_in = g.add_input("h0", h_type)
        g.set_outputs(g.add("ctrl.linear_scan", a_in, b_in, h0_in))
        return _lower_graph(scx, g, [jac, b, h0])[0]

    def update(scx, extra, vals):
        prev, f = extra
        return _lower_staged(scx, j_all, [prev, *vals[1:]], j_ops, [j_out],
                             lambda outs: [solve(scx, outs[0], prev, f, vals[0])])[0]

    pair = [("prev", h_all_type), ("f", h_all_type)]
    up_gv, _ = _private(cx, "newton_update", op, inputs, pair, update)

    # ---- the recursive iteration -------------------------------------------------------
    state = [("h", h_all_type), ("it", relax.TensorType([], "int32"))]

    def passed(vals):
        return [v for v in vals if isinstance(v, relax.Var)]

    # placeholder with the final signature, so that the real body can call itself
    iter_gv, iter_args = _private(cx, "newton_iter", op, inputs, state,
                                  lambda scx, _, vals: scx.bb.emit(relax.Call(fb_gv,
                                                                              passed(vals))))

    def iterate(scx, extra, vals):
        h, it = extra
        converged, stop, done, prev, f, nxt = _block(scx, lambda: residual(scx, h, it, vals))
        again = relax.Call(iter_gv, [relax.Call(up_gv, [prev, f, *passed(vals)]), nxt,
                                     *passed(vals)])
        return scx.bb.emit(relax.If(converged, done,
                                    relax.If(stop, relax.Call(fb_gv, passed(vals)), again)))

    def residual(scx, h, it, vals):
        """F(prev) for all steps and the tests on |F - H| (dataflow: fused kernels)."""
        head = scx.emit(R.expand_dims(vals[0], [0]))
        prev = head if steps == 1 else scx.emit(R.concat(
            [head, R.strided_slice(h, [0], [0], [steps - 1])], axis=0))
        f, *ys = _lower_graph(scx, f_all, [prev, *vals[1:]])
        err = scx.emit(R.max(R.abs(R.subtract(f, h))))
        scale = R.maximum(R.max(R.abs(f)), relax.const(1.0, dt))
        converged = R.less_equal(err, R.multiply(relax.const(tol, dt), scale))
        diverged = R.logical_not(R.less(err, relax.const(1e30, dt)))
        stop = R.logical_or(R.greater_equal(it, relax.const(max_iters, "int32")), diverged)
        last = R.squeeze(R.strided_slice(f, [0], [steps - 1], [steps]), [0])
        done = relax.Tuple([last, *ys, it])
        nxt = R.add(it, relax.const(1, "int32"))

        return [converged, stop, done, prev, f, nxt]

    _private(cx, "newton_iter", op, inputs, state, iterate, gv=iter_gv)

    guess = cx.emit(R.broadcast_to(R.expand_dims(inputs[0], [0]), h_all_type.shape))
    call = cx.emit(relax.Call(iter_gv, [guess, cx.const(0, "int32"), *iter_args]))
    return _tuple_items(cx, call, 2 + n_ys)
