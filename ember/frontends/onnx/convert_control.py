"""ONNX recurrent and looping ops -> ember's whole-loop ops (`ctrl.lstm`, `ctrl.gru`, `ctrl.scan`).

Keeping them whole is the point: TVM's own importer has no LSTM/GRU/Scan/Loop, and ember's
recurrence passes want to see the loop. ONNX orders gates differently from torch (LSTM i,o,f,c
vs i,f,g,o; GRU z,r,h vs r,z,n), so weights are re-ordered here (folded when they are
constants). ONNX GRU's default linear_before_reset=0 is a different cell from torch's, which
ctrl.gru models, so only linear_before_reset=1 maps.
"""

from __future__ import annotations

import numpy as np

from ...ir import Graph, Value
from .context import Context, converts
from .convert_gru import gru_scan
from .convert_shape import flip

_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2)}  # torch gate k comes from ONNX chunk ORDER[k]


def _reorder(cx: Context, v: Value, d: int, order, start: int, hidden: int) -> Value:
    """Direction d of an ONNX [D, G*H, ...] (or [D, 2*G*H] bias) tensor in torch gate order."""
    g = len(order)
    known = cx.static(v)
    if known is not None:
        part = known[d][start * hidden:(start + g) * hidden]
        chunks = [part[k * hidden:(k + 1) * hidden] for k in order]
        return cx.const(np.ascontiguousarray(np.concatenate(chunks, axis=0)))
    part = cx.add("slice", cx.add("select", v, dim=0, index=d), dim=0, start=start * hidden,
                  end=(start + g) * hidden)
    chunks = cx.add("split", part, dim=0, sizes=(hidden,) * g)
    return cx.add("concat", *[chunks[k] for k in order], dim=0)


def _rnn(cx: Context, node, inputs, attrs, kind: str):
    op = node.op_type
    get = (lambda i: inputs[i] if len(inputs) > i else None)
    x, w, r, b = get(0), get(1), get(2), get(3)
    hidden = int(attrs["hidden_size"])
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    per_dir = [a.lower() for a in _DEFAULT_ACTS[op]]
    if acts and [a.lower() for a in acts] != per_dir * (len(acts) // len(per_dir) or 1):
        raise cx.fail(f"activations {acts} (ember's cells use {_DEFAULT_ACTS[op]})")
    if "clip" in attrs:
        raise cx.fail("cell clipping (clip attribute)")
    if attrs.get("input_forget", 0):
        raise cx.fail("input_forget=1 (coupled input and forget gates)")
    if get(4) is not None:
        lens = cx.static(get(4))
        steps = x.shape[1 if attrs.get("layout", 0) else 0]
        if lens is None or not np.all(lens == steps):
            raise cx.fail("sequence_lens shorter than the sequence (ragged batches)")
    if op == "GRU" and not attrs.get("linear_before_reset", 0):
        # ONNX's default GRU cell applies the reset gate before the recurrent matmul; ember's
        # ctrl.gru is torch's cell (after it), so this variant becomes a ctrl.scan of the cell
        return gru_scan(cx, x, w, r, b, get(5), hidden, direction, int(attrs.get("layout", 0)))
    if op == "LSTM" and get(7) is not None:
        raise cx.fail("peephole weights (input P)")
    layout = int(attrs.get("layout", 0))
    dirs = 2 if direction == "bidirectional" else 1
    if layout:  # [B, T, I] and states [B, D, H]
        batch = x.shape[0]
    else:
        batch = x.shape[1]
    if direction == "reverse":
        x = flip(cx, x, 1 if layout else 0)
    order = _ORDER[op]
    g = len(order)
    params: list[Value] = []
    for d in range(dirs):
        params += [_reorder(cx, w, d, order, 0, hidden), _reorder(cx, r, d, order, 0, hidden)]
        if b is not None:
            params += [_reorder(cx, b, d, order, 0, hidden), _reorder(cx, b, d, order, g, hidden)]
    states = []
    for idx in ((5, 6) if op == "LSTM" else (5,)):
        s = get(idx)
        if s is None:
            if not isinstance(batch, int):
                raise cx.fail("no initial state and a symbolic batch size")
            s = cx.const(np.zeros((dirs, batch, hidden), x.dtype.to_numpy()))
        elif layout:
            s = cx.add("permute", s, dims=(1, 0, 2))
        states.append(s)
    results = cx.add(kind, x, *states, *params, hidden_size=hidden, bidirectional=dirs == 2,
                     batch_first=bool(layout), has_biases=b is not None)
    y, finals = results[0], list(results[1:])
    if direction == "reverse":
        y = flip(cx, y, 1 if layout else 0)
    if layout:
        y = cx.add("reshape", y, shape=(*y.shape[:2], dirs, hidden))
        finals = [cx.add("permute", f, dims=(1, 0, 2)) for f in finals]
    else:
        y = cx.add("permute", cx.add("reshape", y, shape=(*y.shape[:2], dirs, hidden)),
                   dims=(0, 2, 1, 3))
    return (y, *finals)


@converts("LSTM", static=(4,))
def _(cx: Context, node, inputs, attrs):
    return _rnn(cx, node, inputs, attrs, "ctrl.lstm")


@converts("GRU", static=(4,))
def _(cx: Context, node, inputs, attrs):
    return _rnn(cx, node, inputs, attrs, "ctrl.gru")


# ---- Scan ---------------------------------------------------------------------------------
def convert_body(cx: Context, body_proto, input_types) -> tuple[Graph, Context]:
    """An ONNX subgraph as an ember region; outer names it reads become trailing inputs."""
    from .importer import convert_nodes

    body = Graph(_safe(body_proto.name or "body"))
    bcx = Context(body, cx.opsets, parent=cx)
    for vi, t in zip(body_proto.input, input_types):
        bcx.bind(vi.name, body.add_input(vi.name, t))
    for init in body_proto.initializer:
        import onnx

        bcx.bind(init.name, bcx.const(onnx.numpy_helper.to_array(init), name=init.name))
    saved = cx.node
    convert_nodes(bcx, body_proto.node)
    cx.node = saved
    body.set_outputs(*[bcx.lookup(o.name) for o in body_proto.output])
    return body, bcx


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "body"


@converts("Scan")
def _(cx: Context, node, inputs, attrs):
    if cx.opset < 9:
        raise cx.fail("Scan before opset 9 (batched form with sequence_lens)")
    m = int(attrs["num_scan_inputs"])
    n = len(inputs) - m
    for key in ("scan_input_axes", "scan_output_axes"):
        if any(a != 0 for a in attrs.get(key, [])):
            raise cx.fail(f"{key} other than 0")
    in_dirs = set(attrs.get("scan_input_directions", [0] * m))
    out_dirs = set(attrs.get("scan_output_directions", [0]))
    if len(in_dirs) > 1 or in_dirs != out_dirs and attrs.get("scan_output_directions"):
        raise cx.fail("mixed scan directions")
    reverse = in_dirs == {1}
    carries, xs = inputs[:n], inputs[n:]
    types = [v.type for v in carries] + [v.type.with_shape(v.shape[1:]) for v in xs]
    body, bcx = convert_body(cx, attrs["body"], types)
    invariants = [outer for outer, _ in bcx.captures]
    out = cx.add("ctrl.scan", *carries, *xs, *invariants, regions=[body], num_carry=n,
                 num_xs=m, reverse=reverse)
    return out if isinstance(out, tuple) else (out,)



# ---- Loop ---------------------------------------------------------------------------------
_MAX_UNROLL = 64


@converts("Loop", static=(0, 1))
def _(cx: Context, node, inputs, attrs):
    """Loop with a constant trip count and a constant-true condition -> ctrl.scan.

    The iteration number is the scan's x (arange(M)); loop-carried values are its carries and
    the scan outputs its ys. A body that needs the iteration number at compile time (a Slice
    whose start is the counter) cannot be a scan body in ember, whose shape operands are
    static; such a loop is unrolled when the trip count is at most 64.
    """
    from ...errors import UnsupportedOpError

    trip, cond = (inputs + [None, None])[:2]
    carried = inputs[2:]
    count = cx.static(trip) if trip is not None else None
    if count is None:
        raise cx.fail("a trip count that is absent or computed at run time (ember's ctrl.scan "
                      "needs a constant number of steps)")
    if cond is not None:
        known = cx.static(cond)
        if known is None or not bool(known):
            raise cx.fail("a loop condition that is not the constant true (while-loops with a "
                          "data-dependent exit are not modelled)")
    steps = int(np.asarray(count).reshape(-1)[0])
    body = attrs["body"]
    try:
        return _loop_scan(cx, node, body, steps, carried)
    except UnsupportedOpError as e:
        if steps > _MAX_UNROLL or "compile time" not in str(e):
            raise
    return _loop_unrolled(cx, node, body, steps, carried)


def _check_true(cx: Context, bcx: Context, name: str) -> None:
    known = bcx.static(bcx.lookup(name))
    if known is None or not bool(known):
        raise cx.fail("a body whose condition output is not the constant true (an early exit)")


def _loop_scan(cx: Context, node, body_proto, steps: int, carried: list):
    from ...ir import DType, TensorType
    from .importer import convert_nodes

    body = Graph(_safe(body_proto.name or "loop_body"))
    bcx = Context(body, cx.opsets, parent=cx)
    names = [vi.name for vi in body_proto.input]
    for name, v in zip(names[2:], carried):
        bcx.bind(name, body.add_input(name, v.type))
    bcx.bind(names[0], body.add_input(names[0], TensorType((), DType.i64)))
    bcx.bind(names[1], bcx.const(np.asarray(True)))
    saved = cx.node
    convert_nodes(bcx, body_proto.node)
    cx.node = saved
    _check_true(cx, bcx, body_proto.output[0].name)
    body.set_outputs(*[bcx.lookup(o.name) for o in body_proto.output[1:]])
    invariants = [outer for outer, _ in bcx.captures]
    xs = cx.const(np.arange(steps, dtype=np.int64))
    out = cx.add("ctrl.scan", *carried, xs, *invariants, regions=[body],
                 num_carry=len(carried), num_xs=1)
    return out if isinstance(out, tuple) else (out,)


def _loop_unrolled(cx: Context, node, body_proto, steps: int, carried: list):
    from .importer import convert_nodes

    names = [vi.name for vi in body_proto.input]
    n_scan = len(body_proto.output) - 1 - len(carried)
    values, ys = list(carried), [[] for _ in range(n_scan)]
    saved = cx.node
    for i in range(steps):
        ucx = Context(cx.g, cx.opsets)
        ucx.env = dict(cx.env)
        ucx.bind(names[0], ucx.const(np.asarray(i, dtype=np.int64)))
        ucx.bind(names[1], ucx.const(np.asarray(True)))
        for name, v in zip(names[2:], values):
            ucx.env[name] = v
        convert_nodes(ucx, body_proto.node)
        _check_true(cx, ucx, body_proto.output[0].name)
        outs = [ucx.lookup(o.name) for o in body_proto.output[1:]]
        values = outs[:len(carried)]
        for k, y in enumerate(outs[len(carried):]):
            ys[k].append(cx.add("unsqueeze", y, dim=0))
    cx.node = saved
    if steps == 0 and n_scan:
        raise cx.fail("a zero-trip Loop with scan outputs (their element shape is unknown)")
    stacked = [y[0] if len(y) == 1 else cx.add("concat", *y, dim=0) for y in ys]
    return (*values, *stacked)
