"""ONNX export of ctrl.gru / ctrl.lstm as ONNX GRU (linear_before_reset=1, torch's cell) and
LSTM, one ONNX node per layer; gates re-ordered from torch's (r,z,n / i,f,g,o) to ONNX's
(z,r,h / i,o,f,c). Weights must be consts (they are folded into initializers)."""

from __future__ import annotations

import numpy as np

from ...ir import Value
from .exporter import UNSUPPORTED, Emitter, exports

_ORDER = {"ctrl.gru": (1, 0, 2), "ctrl.lstm": (0, 3, 1, 2)}  # ONNX chunk k = torch chunk ORDER[k]
UNSUPPORTED["ctrl.linear_scan"] = ("ONNX has no linear-scan op; export the graph before "
                                   "parallel_scan (the ctrl.scan form) or use the TVM backend")
UNSUPPORTED["ctrl.scan"] = ("ONNX Scan export of ember bodies is not written yet; "
                            "run the recurrence passes or export the unrolled graph")
UNSUPPORTED["ctrl.newton_scan"] = ("ONNX has no fixed-point (Newton/DEER) scan op; export the "
                                   "graph before the pass that introduces it")


def _weight(em: Emitter, v: Value) -> np.ndarray:
    p = v.producer
    if p is None or p.kind != "const":
        raise em.fail("recurrent weights computed at run time (ONNX export folds them into "
                      "re-ordered initializers); run the fold pass first")
    value = p.attrs["value"]
    return np.asarray(value.materialize() if hasattr(value, "materialize") else value)


def _reorder(a: np.ndarray, order, hidden: int) -> np.ndarray:
    return np.concatenate([a[k * hidden:(k + 1) * hidden] for k in order], axis=0)


@exports("ctrl.gru", "ctrl.lstm")
def _(em: Emitter, op, names):
    a = op.attrs
    h, layers, dirs = a["hidden_size"], a["num_layers"], 2 if a["bidirectional"] else 1
    n_states = 1 if op.kind == "ctrl.gru" else 2
    x = names[0]
    if a["batch_first"]:
        x = em.node("Transpose", [x], perm=[1, 0, 2])
    states = names[1:1 + n_states]
    params = op.inputs[1 + n_states:]
    per = 4 if a["has_biases"] else 2
    order = _ORDER[op.kind]
    finals: list[list[str]] = [[] for _ in range(n_states)]
    for layer in range(layers):
        ws, rs, bs = [], [], []
        for d in range(dirs):
            k = (layer * dirs + d) * per
            w_ih, w_hh = (_weight(em, v) for v in params[k:k + 2])
            ws.append(_reorder(w_ih, order, h))
            rs.append(_reorder(w_hh, order, h))
            if a["has_biases"]:
                b_ih, b_hh = (_weight(em, v) for v in params[k + 2:k + 4])
                bs.append(np.concatenate([_reorder(b_ih, order, h), _reorder(b_hh, order, h)]))
        init = [em.node("Slice", [s, em.ints([layer * dirs]), em.ints([(layer + 1) * dirs]),
                                  em.ints([0])]) for s in states]
        ins = [x, em.const(np.stack(ws), "W"), em.const(np.stack(rs), "R"),
               em.const(np.stack(bs), "B") if bs else "", "", *init]
        extra = {"linear_before_reset": 1} if op.kind == "ctrl.gru" else {}
        outs = em.node("GRU" if op.kind == "ctrl.gru" else "LSTM", ins, n_out=1 + n_states,
                       hidden_size=h, direction="bidirectional" if dirs == 2 else "forward",
                       **extra)
        y = em.node("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # [T, B, D, H]
        x = em.node("Reshape", [y, em.ints([0, 0, dirs * h], "shape")])
        for f, o in zip(finals, outs[1:]):
            f.append(o)
    if a["batch_first"]:
        x = em.node("Transpose", [x], perm=[1, 0, 2])
    out_states = [f[0] if len(f) == 1 else em.node("Concat", f, axis=0) for f in finals]
    return [x, *out_states]
