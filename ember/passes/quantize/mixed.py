"""Sensitivity-guided mixed precision: choose a scheme per layer to meet a user budget.

Candidates per layer, smallest first: binary (1 bit), ternary (2), int4 (4), int8 (8), float.
Sensitivity is measured, not guessed: each layer is quantized alone with each candidate and the
whole model's outputs on the calibration batches are compared with float (output SQNR).
- `max_accuracy_drop=d`: start every layer at its smallest candidate and, while the top-1
  agreement with the float model on the calibration data drops by more than d, move the layer
  whose current choice hurts the model output most one step up. (Calibration has no labels,
  so agreement with float predictions stands in for accuracy; the benchmark reports the real
  eval-set accuracy.)
- `target_bytes=b`: start at int8 and move the layer whose next-smaller candidate hurts the
  output least one step down until the weights fit in b bytes.
"""

from __future__ import annotations

import numpy as np

from ...errors import PassError
from ...ir.graph import Graph
from ...ir.interpret import check_inputs, run_graph
from .int8 import Layer
from .report import sqnr_db

__all__ = ["plan_mixed", "CANDIDATES"]

CANDIDATES = ("binary", "ternary", "int4_weight", "int8", "float")
_BITS = {"binary": 1, "ternary": 2, "int4_weight": 4.5, "int8": 8, "float": 32}


def _options(layer: Layer) -> list[str]:
    return ["int8", "float"] if layer.kind != "linear" else list(CANDIDATES)


def plan_mixed(graph: Graph, layers: list[Layer], acts, act_params, opts, ctx) -> list[str]:
    from .quantize import apply_scheme

    if (opts.max_accuracy_drop is None) == (opts.target_bytes is None):
        raise PassError("scheme=mixed needs exactly one budget: max_accuracy_drop=<fraction> "
                        "or target_bytes=<int>")
    batches = [tuple(np.asarray(a) for a in b) for b in (ctx.calibration or [])][:8]
    base = [run_graph(graph, check_inputs(graph, list(b)))[0] for b in batches]

    def evaluate(plan: list[str]) -> tuple[float, float]:
        g = graph.clone()
        index = {id(op): i for i, op in enumerate(graph.ops)}
        ops = g.ops
        for layer, scheme, params in zip(layers, plan, act_params):
            if scheme == "float":
                continue
            op = ops[index[id(layer.op)]]
            twin = Layer(op, layer.kind, layer.name, layer.weight, layer.bias)
            new = apply_scheme(g, twin, scheme, opts, params)
            if new is not None:
                g.replace_op(op, [new])
        outs = [run_graph(g, check_inputs(g, list(b)))[0] for b in batches]
        agree = np.mean([np.mean(o.argmax(-1) == r.argmax(-1)) for o, r in zip(outs, base)])
        snr = np.mean([sqnr_db(r, o) for o, r in zip(outs, base)])
        return 1.0 - float(agree), float(snr)

    opts_per = [_options(L) for L in layers]
    sens = {}  # (layer, scheme) -> output SQNR with only that layer quantized
    for i, L in enumerate(layers):
        for s in opts_per[i]:
            if s != "float":
                plan = ["float"] * len(layers)
                plan[i] = s
                sens[i, s] = evaluate(plan)[1]
        ctx.progress(i + 1, len(layers))
    size = lambda plan: sum(_BITS[s] / 8 * L.weight.size for L, s in zip(layers, plan))  # noqa

    if opts.max_accuracy_drop is not None:
        level = [0] * len(layers)
        plan = [opts_per[i][0] for i in range(len(layers))]
        while evaluate(plan)[0] > opts.max_accuracy_drop:
            movable = [i for i in range(len(layers)) if level[i] < len(opts_per[i]) - 1]
            if not movable:
                break
            worst = min(movable, key=lambda i: sens.get((i, plan[i]), np.inf))
            level[worst] += 1
            plan[worst] = opts_per[worst][level[worst]]
    else:
        plan = ["int8"] * len(layers)
        level = [opts_per[i].index("int8") for i in range(len(layers))]
        while size(plan) > opts.target_bytes:
            movable = [i for i in range(len(layers)) if level[i] > 0]
            if not movable:
                break
            best = max(movable, key=lambda i: sens[i, opts_per[i][level[i] - 1]])
            level[best] -= 1
            plan[best] = opts_per[best][level[best]]
    drop, snr = evaluate(plan)
    ctx.note(mixed_plan={L.name: s for L, s in zip(layers, plan)},
             mixed_calibration_agreement_drop=round(drop, 4), mixed_output_sqnr_db=round(snr, 2),
             mixed_sensitivity_db={f"{layers[i].name}:{s}": round(v, 2)
                                   for (i, s), v in sens.items()})
    return plan
