"""Control ops kept whole by the frontend: recurrent layers (GRU, LSTM) and a general scan.

Keeping them whole (never unrolled silently) lets the recurrence passes see the loop and lets
backends pick a scan kernel. GRU/LSTM follow torch's `aten.gru`/`aten.lstm` exactly, with the
weights as variadic inputs in torch's flat order (per layer, per direction: w_ih, w_hh, b_ih,
b_hh). `ctrl.scan` carries a body region that runs once per step.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..graph import Graph
from ..types import DType, TensorType
from .registry import HAS_REGIONS, PURE, REQUIRED, define_op

_RNN_ATTRS = {"hidden_size": (int, REQUIRED), "num_layers": (int, 1),
              "bidirectional": (bool, False), "batch_first": (bool, False),
              "has_biases": (bool, True)}
_GATES = {"ctrl.gru": 3, "ctrl.lstm": 4}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---- GRU / LSTM ---------------------------------------------------------------------------
def _rnn_infer(kind: str, x: TensorType, states: list[TensorType], params: list[TensorType],
               hidden_size: int, num_layers: int, bidirectional: bool, batch_first: bool,
               has_biases: bool) -> tuple[TensorType, ...]:
    if hidden_size < 1 or num_layers < 1:
        raise ShapeError(f"hidden_size ({hidden_size}) and num_layers ({num_layers}) must be >= 1")
    if x.rank != 3 or not x.dtype.is_float:
        raise ShapeError(f"input must be a float [T,B,I] tensor ([B,T,I] with batch_first), "
                         f"got {x}; unsqueeze an unbatched input first")
    d, h, g = 2 if bidirectional else 1, hidden_size, _GATES[kind]
    steps, batch = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    want_state = TensorType((num_layers * d, batch, h), x.dtype)
    for name, s in zip(("h0", "c0"), states):
        if s != want_state:
            raise ShapeError(f"{name} is {s}, expected {want_state} (num_layers*directions, "
                             "batch, hidden_size)")
    per = 4 if has_biases else 2
    if len(params) != num_layers * d * per:
        raise ShapeError(f"expected {num_layers * d * per} weight tensors (num_layers={num_layers}"
                         f", {d} direction(s), {per} each), got {len(params)}")
    names = ("w_ih", "w_hh", "b_ih", "b_hh")
    for k, t in enumerate(params):
        layer, which = k // (d * per), k % per
        in_size = x.shape[2] if layer == 0 else d * h
        want = [(g * h, in_size), (g * h, h), (g * h,), (g * h,)][which]
        if t != TensorType(want, x.dtype):
            raise ShapeError(f"weight {k} ({names[which]} of layer {layer}) is {t}, expected "
                             f"{TensorType(want, x.dtype)}")
    y_shape = (batch, steps, d * h) if batch_first else (steps, batch, d * h)
    return (TensorType(y_shape, x.dtype), *[want_state] * len(states))


def _gru_cell(x, state, w_ih, w_hh, b_ih, b_hh):
    (h,) = state
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r = _sigmoid(i_r + h_r)
    z = _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return [(1.0 - z) * n + z * h]


def _lstm_cell(x, state, w_ih, w_hh, b_ih, b_hh):
    h, c = state
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return [_sigmoid(o) * np.tanh(c), c]


def _rnn_reference(cell, x, states, params, hidden_size, num_layers, bidirectional, batch_first,
                   has_biases):
    """Step-by-step recurrence, layer by layer; the reverse direction walks time backwards."""
    d, per = (2 if bidirectional else 1), (4 if has_biases else 2)
    layer_in = x.transpose(1, 0, 2) if batch_first else x
    steps, batch = layer_in.shape[:2]
    finals: list[list[np.ndarray]] = [[] for _ in states]
    for layer in range(num_layers):
        outs = []
        for direction in range(d):
            k = layer * d + direction
            w_ih, w_hh, *biases = params[k * per:(k + 1) * per]
            b_ih, b_hh = biases if has_biases else (np.zeros((), x.dtype),) * 2
            state = [s[k] for s in states]
            ys = np.empty((steps, batch, hidden_size), x.dtype)
            for t in reversed(range(steps)) if direction else range(steps):
                state = [s.astype(x.dtype) for s in cell(layer_in[t], state, w_ih, w_hh, b_ih,
                                                         b_hh)]
                ys[t] = state[0]
            outs.append(ys)
            for f, s in zip(finals, state):
                f.append(s)
        layer_in = np.concatenate(outs, axis=-1)
    y = layer_in.transpose(1, 0, 2) if batch_first else layer_in
    return (np.ascontiguousarray(y), *[np.stack(f) for f in finals])


def _rnn_examples(rng, num_states: int, gates: int):
    cases = [{}, {"num_layers": 2}, {"bidirectional": True, "batch_first": True},
             {"num_layers": 2, "bidirectional": True, "has_biases": False}]
    steps, batch, in_size, h = 5, 2, 3, 4
    for attrs in cases:
        layers, d = attrs.get("num_layers", 1), 2 if attrs.get("bidirectional") else 1
        x_shape = (batch, steps, in_size) if attrs.get("batch_first") else (steps, batch, in_size)
        x = rng.standard_normal(x_shape).astype(np.float32)
        states = [rng.standard_normal((layers * d, batch, h)).astype(np.float32) * 0.5
                  for _ in range(num_states)]
        params = []
        for layer in range(layers):
            for _ in range(d):
                shapes = [(gates * h, in_size if layer == 0 else d * h), (gates * h, h)]
                if attrs.get("has_biases", True):
                    shapes += [(gates * h,), (gates * h,)]
                params += [(rng.standard_normal(s) * 0.4).astype(np.float32) for s in shapes]
        yield [x, *states, *params], {"hidden_size": h, **attrs}


gru = define_op("ctrl.gru", inputs=("x", "h0", "*params"), attrs=dict(_RNN_ATTRS),
                traits=(PURE,), num_results=2,
                doc="Multi-layer GRU, torch aten.gru semantics; results (y, h_n).")
lstm = define_op("ctrl.lstm", inputs=("x", "h0", "c0", "*params"), attrs=dict(_RNN_ATTRS),
                 traits=(PURE,), num_results=3,
                 doc="Multi-layer LSTM, torch aten.lstm semantics (no proj_size); results "
                     "(y, h_n, c_n).")


@gru.infer
def _(x, h0, params, **attrs):
    return _rnn_infer("ctrl.gru", x, [h0], params, **attrs)


@gru.reference
def _(x, h0, params, **attrs):
    return _rnn_reference(_gru_cell, x, [h0], params, **attrs)


@gru.examples
def _(rng):
    return _rnn_examples(rng, 1, 3)


@lstm.infer
def _(x, h0, c0, params, **attrs):
    return _rnn_infer("ctrl.lstm", x, [h0, c0], params, **attrs)


@lstm.reference
def _(x, h0, c0, params, **attrs):
    return _rnn_reference(_lstm_cell, x, [h0, c0], params, **attrs)


@lstm.examples
def _(rng):
    return _rnn_examples(rng, 2, 4)


# ---- scan ---------------------------------------------------------------------------------
scan = define_op("ctrl.scan", inputs=("*inputs",), traits=(PURE, HAS_REGIONS), num_results=None,
                 attrs={"num_carry": (int, REQUIRED), "num_xs": (int, REQUIRED),
                        "reverse": (bool, False)},
                 doc="body(carries..., x_t..., invariants...) -> (new carries..., y_t...); "
                     "results: final carries ++ ys stacked along a new dim 0.")


def scan_body_types(types, num_carry: int, num_xs: int) -> list[TensorType]:
    """The input types a scan body must declare for scan operands `types`."""
    if num_carry < 0 or num_xs < 1 or num_carry + num_xs > len(types):
        raise ShapeError(f"num_carry={num_carry}, num_xs={num_xs} do not fit {len(types)} "
                         "operands (need num_xs >= 1: the xs give the number of steps)")
    xs = types[num_carry:num_carry + num_xs]
    for k, x in enumerate(xs):
        if x.rank < 1 or x.shape[0] != xs[0].shape[0]:
            raise ShapeError(f"scanned input {k} is {x}; every x needs dim 0 = the step count "
                             f"{xs[0].shape[0] if xs[0].rank else '(rank 0)'}")
    return [*types[:num_carry], *[x.with_shape(x.shape[1:]) for x in xs],
            *types[num_carry + num_xs:]]


@scan.infer
def _scan_infer(inputs, num_carry, num_xs, reverse, regions):
    if len(regions) != 1:
        raise ShapeError(f"ctrl.scan takes exactly one body region, got {len(regions)}")
    body = regions[0]
    want = scan_body_types(inputs, num_carry, num_xs)
    got = [v.type for v in body.inputs]
    num_inv = len(want) - num_carry - num_xs
    roles = ["carry"] * num_carry + ["x slice"] * num_xs + ["invariant"] * num_inv
    if len(got) != len(want):
        raise ShapeError(f"body @{body.name} takes {len(got)} inputs, but the scan passes "
                         f"{len(want)} ({num_carry} carries, {num_xs} x slices, "
                         f"{num_inv} invariants)")
    for k, (g, w, role) in enumerate(zip(got, want, roles)):
        if g != w:
            raise ShapeError(f"body @{body.name} input {k} ({role}) is {g}, but the scan passes "
                             f"{w}")
    outs = [v.type for v in body.outputs]
    if not outs:
        raise ShapeError(f"body @{body.name} returns nothing, so the scan has no results")
    if len(outs) < num_carry:
        raise ShapeError(f"body @{body.name} returns {len(outs)} values, fewer than its "
                         f"{num_carry} carries")
    for k in range(num_carry):
        if outs[k] != want[k]:
            raise ShapeError(f"body @{body.name} output {k} (new carry) is {outs[k]}, but the "
                             f"carry is {want[k]}")
    steps = inputs[num_carry].shape[0]
    return (*outs[:num_carry], *[TensorType((steps, *y.shape), y.dtype) for y in outs[num_carry:]])


@scan.reference
def _scan_reference(inputs, num_carry, num_xs, reverse, regions):
    from ..interpret import run_graph

    body = regions[0]
    carries = list(inputs[:num_carry])
    xs, invariants = inputs[num_carry:num_carry + num_xs], inputs[num_carry + num_xs:]
    steps = xs[0].shape[0]
    ys: list[list[np.ndarray]] = [[] for _ in range(steps)]
    for t in reversed(range(steps)) if reverse else range(steps):
        outs = run_graph(body, [*carries, *[x[t] for x in xs], *invariants])
        carries, ys[t] = outs[:num_carry], outs[num_carry:]
    stacked = []
    for j, v in enumerate(body.outputs[num_carry:]):
        if steps:
            stacked.append(np.stack([ys[t][j] for t in range(steps)]))
        else:
            stacked.append(np.empty((0, *_static_shape(v.type)), v.type.dtype.to_numpy()))
    return (*[np.array(c) for c in carries], *stacked)


def _static_shape(t: TensorType) -> tuple[int, ...]:
    if not t.is_static:
        raise ShapeError(f"a zero-step scan cannot stack y of symbolic type {t}")
    return t.shape  # type: ignore[return-value]


def _rnn_body(h: int, f: int) -> Graph:
    """Example body: h' = tanh(h * w + x_t); y_t = h' + x_t (one carry, one x, one invariant)."""
    body = Graph("body")
    hv = body.add_input("h", TensorType((h,), DType.f32))
    x = body.add_input("x", TensorType((f,), DType.f32))
    w = body.add_input("w", TensorType((h,), DType.f32))
    new = body.add("tanh", body.add("add", body.add("mul", hv, w), x))
    body.set_outputs(new, body.add("add", new, x))
    return body


def _pair_body() -> Graph:
    """Example body with two carries, two xs, no invariants: a running sum and max."""
    body = Graph("body")
    s = body.add_input("s", TensorType((2, 3), DType.f32))
    m = body.add_input("m", TensorType((3,), DType.f32))
    a = body.add_input("a", TensorType((2, 3), DType.f32))
    b = body.add_input("b", TensorType((3,), DType.f32))
    s2, m2 = body.add("add", s, a), body.add("maximum", m, b)
    body.set_outputs(s2, m2, body.add("mul", s2, a), body.add("gt", m2, b))
    return body


@scan.examples
def _(rng):
    """Region ops pass their regions in attrs["regions"] (not an attribute; tests pop it)."""
    f32 = np.float32
    h = rng.standard_normal(4).astype(f32)
    xs, w = rng.standard_normal((5, 4)).astype(f32), rng.standard_normal(4).astype(f32)
    yield [h, xs, w], {"num_carry": 1, "num_xs": 1, "regions": [_rnn_body(4, 4)]}
    yield [h, xs, w], {"num_carry": 1, "num_xs": 1, "reverse": True,
                       "regions": [_rnn_body(4, 4)]}
    pair = [rng.standard_normal(s).astype(f32) for s in ((2, 3), (3,), (6, 2, 3), (6, 3))]
    yield pair, {"num_carry": 2, "num_xs": 2, "regions": [_pair_body()]}
    empty = [pair[0], pair[1], pair[2][:0], pair[3][:0]]
    yield empty, {"num_carry": 2, "num_xs": 2, "regions": [_pair_body()]}


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
