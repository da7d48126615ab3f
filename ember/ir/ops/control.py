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
