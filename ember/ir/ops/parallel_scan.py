"""Op family: parallel forms of recurrences, targets of the recurrence passes.

`ctrl.linear_scan` (h_t = a_t * h_{t-1} + b_t, solved by an associative scan) and
`ctrl.newton_scan` (DEER: Newton iterations over the whole trajectory). Split from control.py,
which holds the sequential loop ops they replace.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..graph import Graph
from ..types import DType, TensorType
from .control import _scan_infer, _scan_reference
from .registry import HAS_REGIONS, PURE, REQUIRED, define_op

# ---- linear scan --------------------------------------------------------------------------
linear_scan = define_op(
    "ctrl.linear_scan", inputs=("a", "b", "h0"), traits=(PURE,), attrs={"chunk": (int, 0)},
    doc="Diagonal linear recurrence h_t = a_t * h_{t-1} + b_t with h_{-1} = h0; a is [T, *S] "
        "(per step) or [*S] (time-invariant), b is [T, *S], h0 is [*S]; result h [T, *S]. "
        "Associative, so backends may evaluate it as a parallel (chunked) scan; chunk = steps "
        "per chunk for such a backend (0: its own choice; the result does not depend on it).")


@linear_scan.infer
def _(a, b, h0, chunk):
    if b.rank < 1 or b.shape[1:] != h0.shape or b.dtype != h0.dtype or not b.dtype.is_float:
        raise ShapeError(f"b must be a float [T, *S] tensor with S = h0's shape; got b {b}, "
                         f"h0 {h0}")
    if a.dtype != b.dtype or a.shape not in (b.shape, h0.shape):
        raise ShapeError(f"a must be [T, *S] ({b}) or time-invariant [*S] ({h0}), got {a}; "
                         "broadcast it to one of these first")
    return b


@linear_scan.reference
def _(a, b, h0, chunk):
    h = np.empty_like(b)
    prev = h0
    per_step = a.ndim == b.ndim
    for t in range(b.shape[0]):
        prev = (a[t] if per_step else a) * prev + b[t]
        h[t] = prev
    return h


@linear_scan.examples
def _(rng):
    f32 = np.float32
    for steps, shape, per_step in ((7, (2, 5), True), (1, (3,), True), (9, (4,), False),
                                   (33, (16,), True)):
        a_shape = (steps, *shape) if per_step else shape
        yield [rng.uniform(-1.0, 1.0, a_shape).astype(f32),
               rng.standard_normal((steps, *shape)).astype(f32),
               rng.standard_normal(shape).astype(f32)], {"chunk": 4 if steps > 8 else 0}


# ---- newton scan (DEER) -------------------------------------------------------------------
newton_scan = define_op(
    "ctrl.newton_scan", inputs=("*inputs",), traits=(PURE, HAS_REGIONS), num_results=None,
    attrs={"num_xs": (int, REQUIRED), "max_iters": (int, 20), "tol": (float, 1e-5),
           "jacobian": (str, "full")},
    doc="A one-carry forward ctrl.scan solved by Newton iteration (DEER). Regions: the step "
        "body, the body for all T steps at once (h_prev [T,*S], xs, invariants), and its "
        "Jacobian dh'/dh for all steps ([T,*S] diag, or [T,*rows,m,m] full). Results: those of "
        "ctrl.scan ++ iterations (i32 scalar; -1 = not converged, sequential fallback used).")


def _newton_types(inputs, regions):
    if len(regions) != 3:
        raise ShapeError(f"ctrl.newton_scan takes 3 regions (body, all-steps body, Jacobian), "
                         f"got {len(regions)}")
    return regions


@newton_scan.infer
def _(inputs, num_xs, max_iters, tol, jacobian, regions):
    body, fall, jall = _newton_types(inputs, regions)
    outs = _scan_infer(inputs, 1, num_xs, False, [body])
    h0, steps = inputs[0], inputs[1].shape[0]
    want_in = [h0.with_shape((steps, *h0.shape)), *inputs[1:]]
    for name, region in (("all-steps body", fall), ("Jacobian", jall)):
        got = [v.type for v in region.inputs]
        if got != want_in:
            raise ShapeError(f"{name} @{region.name} takes {[str(t) for t in got]}, expected "
                             f"{[str(t) for t in want_in]} (h_prev for all steps, xs, invariants)")
    want_out = [want_in[0], *outs[1:]]
    if [v.type for v in fall.outputs] != want_out:
        raise ShapeError(f"all-steps body @{fall.name} returns "
                         f"{[str(v.type) for v in fall.outputs]}, expected "
                         f"{[str(t) for t in want_out]}")
    j = jall.outputs[0].type if len(jall.outputs) == 1 else None
    if jacobian not in ("diag", "full") or j is None or \
            (jacobian == "diag" and j != want_in[0]) or \
            (jacobian == "full" and (j.rank < 3 or j.shape[-1] != j.shape[-2])):
        raise ShapeError(f"Jacobian @{jall.name} ({jacobian}) returns "
                         f"{[str(v.type) for v in jall.outputs]}; diag wants {want_in[0]}, full "
                         "wants [T, *rows, m, m]")
    return (*outs, TensorType((), DType.i32))


class _NumpyOps:
    concat = staticmethod(lambda xs: np.concatenate(xs, axis=0))
    absmax = staticmethod(lambda x: float(np.max(np.abs(x))) if x.size else 0.0)
    broadcast = staticmethod(lambda h0, n: np.broadcast_to(h0, (n, *h0.shape)).copy())


def affine_scan(a, b, h0, full: bool, xp):
    """h_t = a_t h_{t-1} + b_t (a elementwise, or [.., m, m] matrices when full) for all t, in
    ceil(log2 T) vectorized rounds (Hillis-Steele): the parallel scan, over any array type."""
    def mv(m, v):
        return (m @ v[..., None])[..., 0] if full else m * v

    steps = b.shape[0]
    b = xp.concat([mv(a[:1], h0[None]) + b[:1], b[1:]])
    k = 1
    while k < steps:
        b = xp.concat([b[:k], mv(a[k:], b[:-k]) + b[k:]])
        if 2 * k < steps:
            a = xp.concat([a[:k], (a[k:] @ a[:-k]) if full else a[k:] * a[:-k]])
        k *= 2
    return b


def newton_solve(h0, steps: int, run_f, run_j, jacobian: str, max_iters: int, tol: float, xp):
    """DEER: Newton on the whole trajectory. Returns (H [T,*S], ys, updates) or None.

    Converged when max|f(H_prev) - H| <= tol * max(1, max|f|); each update solves the
    linearized recurrence H_t = J_t H_{t-1} + (F_t - J_t Hprev_t) with the parallel scan.
    Undamped Newton can diverge (long T, expansive Jacobian products): a non-finite residual
    stops the iteration early and the caller falls back to the sequential loop.
    """
    shape = tuple(h0.shape)
    h = xp.broadcast(h0, steps)
    for it in range(max_iters + 1):
        prev = xp.concat([h0[None], h[:-1]])
        f, *ys = run_f(prev)
        err, scale = xp.absmax(f - h), max(1.0, xp.absmax(f))
        if err <= tol * scale:
            return f, ys, it
        if it == max_iters or not err < 1e30:  # out of iterations, or diverged (inf/nan)
            return None
        jac = run_j(prev)
        if jacobian == "diag":
            h = affine_scan(jac, f - jac * prev, h0, False, xp)
            continue
        flat = (*jac.shape[1:-2], jac.shape[-1])
        p2, f2 = prev.reshape(steps, *flat), f.reshape(steps, *flat)
        b = f2 - (jac @ p2[..., None])[..., 0]
        h = affine_scan(jac, b, h0.reshape(flat), True, xp).reshape(steps, *shape)
    return None


@newton_scan.reference
def _(inputs, num_xs, max_iters, tol, jacobian, regions):
    from ..interpret import run_graph

    body, fall, jall = regions
    rest = list(inputs[1:])
    steps = inputs[1].shape[0]
    got = None
    if steps:
        got = newton_solve(inputs[0], steps, lambda p: run_graph(fall, [p, *rest]),
                           lambda p: run_graph(jall, [p, *rest])[0], jacobian, max_iters, tol,
                           _NumpyOps)
    if got is None:
        outs = _scan_reference(inputs, 1, num_xs, False, [body])
        return (*outs, np.array(-1 if steps else 0, np.int32))
    h, ys, it = got
    return (np.ascontiguousarray(h[-1]), *ys, np.array(it, np.int32))


def _tanh_rnn_regions(d: int, steps: int, jacobian: str) -> list[Graph]:
    """Example regions for h' = tanh(h * w + x_t), y = h'; J = (1 - h'^2) * w (diagonal)."""
    def cell(g, h, x, w):
        return g.add("tanh", g.add("add", g.add("mul", h, w), x))

    regions = []
    for lead in ((), (steps,), (steps,)):
        g = Graph("cell" if not lead else "cell_all")
        h = g.add_input("h", TensorType((*lead, d), DType.f32))
        x = g.add_input("x", TensorType((*lead, d), DType.f32))
        w = g.add_input("w", TensorType((d,), DType.f32))
        g.set_outputs(*[cell(g, h, x, w)] * 2)
        regions.append(g)
    jg = regions[2]
    jg.name = "cell_jac"
    y = jg.outputs[0]
    one = jg.const(np.ones((), np.float32))
    dj = jg.add("mul", jg.add("sub", one, jg.add("mul", y, y)), jg.inputs[2])
    if jacobian == "full":
        dj = jg.add("mul", jg.add("unsqueeze", dj, dim=-1), jg.const(np.eye(d, dtype=np.float32)))
    jg.set_outputs(dj)
    return regions


@newton_scan.examples
def _(rng):
    f32, d, steps = np.float32, 4, 6
    h0 = rng.standard_normal(d).astype(f32) * 0.5
    w = rng.uniform(-0.9, 0.9, d).astype(f32)
    xs = rng.standard_normal((steps, d)).astype(f32)
    for jac, iters in (("diag", 20), ("full", 20), ("diag", 1)):
        regions = _tanh_rnn_regions(d, steps, jac)
        yield [h0, xs, w], {"num_xs": 1, "max_iters": iters, "tol": 1e-6, "jacobian": jac,
                            "regions": regions}
