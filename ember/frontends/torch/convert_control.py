"""Recurrences kept whole: aten.gru/aten.lstm -> ctrl.gru/ctrl.lstm, higher_order.scan -> ctrl.scan.

These are never unrolled here: a loop unrolled at import time cannot be rolled back up cheaply,
while passes (parallel scan, Newton/DEER) and backends want to see the recurrence as one op.
"""

from __future__ import annotations

import torch

from ...ir.types import TensorType
from .context import Unsupported
from .importer import GraphImporter
from .table import converts


def _rnn_attrs(cx: GraphImporter, params, hidden: TensorType, has_biases, num_layers, dropout,
               train, bidirectional, batch_first, gates: int, kind: str) -> dict:
    if train and dropout:
        raise Unsupported(f"{kind} with dropout={dropout} in training mode")
    directions = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != num_layers * directions * per:
        raise Unsupported(f"{kind} with {len(params)} parameter tensors for {num_layers} "
                          f"layer(s) x {directions} direction(s): projections (proj_size) are "
                          "not supported")
    hidden_size = hidden.shape[-1]
    w_ih = params[0].type
    if w_ih.shape[0] != gates * hidden_size:
        raise Unsupported(f"{kind} weight_ih_l0 is {w_ih}, expected {gates}*{hidden_size} rows")
    return {"hidden_size": int(hidden_size), "num_layers": int(num_layers),
            "bidirectional": bool(bidirectional), "batch_first": bool(batch_first),
            "has_biases": bool(has_biases)}


@converts("aten.gru.input")
def _gru(cx: GraphImporter, x, h0, params, has_biases, num_layers, dropout, train, bidirectional,
         batch_first):
    attrs = _rnn_attrs(cx, params, h0.type, has_biases, num_layers, dropout, train,
                       bidirectional, batch_first, 3, "gru")
    return cx.emit("ctrl.gru", x, h0, *params, **attrs)


@converts("aten.lstm.input")
def _lstm(cx: GraphImporter, x, hx, params, has_biases, num_layers, dropout, train,
          bidirectional, batch_first):
    h0, c0 = hx
    attrs = _rnn_attrs(cx, params, h0.type, has_biases, num_layers, dropout, train,
                       bidirectional, batch_first, 4, "lstm")
    return cx.emit("ctrl.lstm", x, h0, c0, *params, **attrs)


@converts("higher_order.scan")
def _scan(cx: GraphImporter, combine, init, xs, additional_inputs=()):
    if not isinstance(combine, torch.fx.GraphModule):
        raise Unsupported(f"scan combine function is a {type(combine).__name__}, not a graph")
    init, xs, extra = list(init), list(xs), list(additional_inputs)
    for v in init + xs + extra:
        if not hasattr(v, "type"):
            raise Unsupported(f"scan operand {v!r} is not a tensor")
    for x in xs:
        if x.type.rank == 0:
            raise Unsupported("scan over a 0-d tensor")
    body_types = ([v.type for v in init] + [x.type.with_shape(x.shape[1:]) for x in xs]
                  + [v.type for v in extra])
    body = cx.import_region(combine, body_types, "scan_body")
    out = cx.emit("ctrl.scan", *init, *xs, *extra, regions=[body], num_carry=len(init),
                  num_xs=len(xs))
    return out if isinstance(out, tuple) else (out,)
