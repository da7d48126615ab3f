"""Lowerings for control ops. GRU/LSTM unroll over a static sequence length in Relax.

Why unroll: it reuses the fused dense kernels the rest of the model gets, and the input
projection of every step is hoisted into one matmul over the whole sequence, so only the small
[B, H] x [H, G*H] recurrent product stays inside the loop. A symbolic sequence length cannot be
unrolled; that case raises until the recurrence work lands a real scan kernel.
"""

from __future__ import annotations

from typing import Callable

from tvm import relax

from ....errors import LoweringError
from . import UNSUPPORTED, LowerContext, lowers

R = relax.op

UNSUPPORTED["ctrl.scan"] = ("general scan regions are not lowered yet (the recurrence passes "
                            "rewrite known scans to parallel/unrolled forms first); run the "
                            "'recurrence' passes or keep the model in the torch backend")


def _check(op, extra: dict) -> int:
    if extra.get("proj_size"):
        raise LoweringError(f"{op.kind} with proj_size={extra['proj_size']} is not lowered yet")
    x = op.inputs[0].type
    t = x.shape[1] if op.attrs.get("batch_first") else x.shape[0]
    if not isinstance(t, int):
        raise LoweringError(
            f"{op.kind} over symbolic sequence length {t!r} ({x}) cannot be unrolled; trace the "
            "model with a static sequence length, or run the recurrence passes to turn it into a "
            "scan")
    return t


def _rnn(cx: LowerContext, op, x, states: list, params: list, attrs: dict,
         gates: int, step: Callable) -> list:
    """Shared layer/direction loop: returns [y, *final states stacked over layers*dirs]."""
    num_layers, bidir = int(attrs.get("num_layers", 1)), bool(attrs.get("bidirectional", False))
    has_b, batch_first = bool(attrs.get("has_biases", True)), bool(attrs.get("batch_first", False))
    seq = _check(op, attrs)
    dirs = 2 if bidir else 1
    per = 4 if has_b else 2
    if len(params) != num_layers * dirs * per:
        raise LoweringError(f"{op.kind}: expected {num_layers * dirs * per} weight tensors for "
                            f"{num_layers} layer(s) x {dirs} direction(s), got {len(params)}")
    inp = cx.emit(R.permute_dims(x, [1, 0, 2])) if batch_first else x
    finals: list[list] = [[] for _ in states]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = (layer * dirs + d) * per
            w_ih, w_hh = params[k], params[k + 1]
            b_ih, b_hh = (params[k + 2], params[k + 3]) if has_b else (None, None)
            gi = cx.emit(R.linear(inp, w_ih, b_ih))  # [T, B, gates*H]: all steps at once
            st = [cx.emit(R.squeeze(R.strided_slice(s, [0], [layer * dirs + d],
                                                    [layer * dirs + d + 1]), [0]))
                  for s in states]
            ys = [None] * seq
            for t in (range(seq - 1, -1, -1) if d else range(seq)):
                gi_t = cx.emit(R.squeeze(R.strided_slice(gi, [0], [t], [t + 1]), [0]))
                gh = cx.emit(R.linear(st[0], w_hh, b_hh))
                st = step(cx, gi_t, gh, st, gates)
                ys[t] = st[0]
            outs.append(cx.emit(R.stack(ys, axis=0)))
            for f, s in zip(finals, st):
                f.append(s)
        inp = outs[0] if dirs == 1 else cx.emit(R.concat(outs, axis=-1))
    y = cx.emit(R.permute_dims(inp, [1, 0, 2])) if batch_first else inp
    return [y] + [R.stack(f, axis=0) for f in finals]


def _chunks(cx: LowerContext, v, n: int) -> list:
    parts = cx.emit(R.split(v, n, axis=-1))
    return [relax.TupleGetItem(parts, i) for i in range(n)]


def _gru_step(cx: LowerContext, gi, gh, st, gates):
    (h,) = st
    ir, iz, in_ = _chunks(cx, gi, 3)
    hr, hz, hn = _chunks(cx, gh, 3)
    r = cx.emit(R.sigmoid(R.add(ir, hr)))
    z = cx.emit(R.sigmoid(R.add(iz, hz)))
    n = cx.emit(R.tanh(R.add(in_, R.multiply(r, hn))))
    return [cx.emit(R.add(n, R.multiply(z, R.subtract(h, n))))]  # (1-z)*n + z*h


def _lstm_step(cx: LowerContext, gi, gh, st, gates):
    _, c = st
    i, f, g, o = _chunks(cx, cx.emit(R.add(gi, gh)), 4)
    c = cx.emit(R.add(R.multiply(R.sigmoid(f), c), R.multiply(R.sigmoid(i), R.tanh(g))))
    h = cx.emit(R.multiply(R.sigmoid(o), R.tanh(c)))
    return [h, c]


@lowers("ctrl.gru")
def _(cx, op, x, h0, params, **attrs):
    return _rnn(cx, op, x, [h0], list(params), attrs, 3, _gru_step)


@lowers("ctrl.lstm")
def _(cx, op, x, h0, c0, params, **attrs):
    return _rnn(cx, op, x, [h0, c0], list(params), attrs, 4, _lstm_step)
