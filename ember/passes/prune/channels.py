"""`prune_channels`: structured channel/head pruning that physically shrinks weights and shapes.

The dependency groups (`_groups.analyze`) say which channel slices must go together; in each
group the lowest-scoring `ratio` of its units is removed, and the graph is rebuilt with every
const sliced and every shape attribute (reshape/expand targets, split sizes) shrunk, so the
next compiler stage sees smaller GEMMs and convolutions, not masks. Attention heads fall out of
the same analysis: a reshape into heads ties feature i to head i // head_dim, so q/k/v rows and
the out-projection columns of one head form one unit.

Criteria: `l1` scores a unit by the L1 norm of its source rows (the output rows of the
linear/conv weights that produce the channel); `taylor` by |sum(w * dL/dw)| over the same rows,
with gradients of a self-distillation loss (cross entropy against the model's own argmax) on
the calibration batches, so no labels are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ...ir.graph import Graph, Value
from ..pipeline import Pass, PassContext, register_pass
from . import _common as C
from ._groups import Analysis, Group, analyze


@register_pass("prune_channels")
@dataclass(frozen=True)
class PruneChannels(Pass):
    """Remove the least important channels/heads of every dependency group (shapes shrink)."""

    ratio: float = 0.3
    criterion: Literal["l1", "taylor"] = "l1"
    skip: tuple[str, ...] = ()  # weight names (substrings) whose groups are left whole
    min_units: int = 1  # never shrink a group below this many units
    tolerance: ClassVar[float | None] = math.inf  # changes outputs by design; finetune recovers

    def __post_init__(self) -> None:
        C.check_ratio(self.name, "ratio", self.ratio, 0.0, 0.95)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if self.criterion == "taylor" and not (ctx.calibration or ctx.sample_inputs):
            from ...errors import PassError

            raise PassError("prune_channels{criterion=taylor} needs calibration data for the "
                            "gradients: pass calibration=[(x, ...), ...] to Pipeline.run, or "
                            "use criterion=l1")
        C.stash_teacher(graph)
        analysis = analyze(graph)
        grads = _taylor_grads(graph, ctx) if self.criterion == "taylor" else None
        removed = []
        layers = []
        for group in analysis.groups:
            if any(s and s in n for s in self.skip for n in group.names):
                continue
            scores = [_score(u, analysis, grads) for u in group.units]
            chosen = select_units(group, scores, self.ratio, self.min_units)
            removed.extend(group.units[i] for i in chosen)
            layers.append({"weights": group.names, "units": group.size,
                           "kept": group.size - len(chosen)})
        before_f, before_p = C.flops(graph), C.params(graph)
        out = shrink(graph, removed, analysis)
        ctx.note(groups=len(analysis.groups), layers=layers, criterion=self.criterion,
                 flops_before=before_f, flops_after=C.flops(out),
                 params_before=before_p, params_after=C.params(out))
        return out


def select_units(group: Group, scores: list[float], ratio: float, min_units: int) -> list[int]:
    """Indices of the units to remove: the lowest scores, never emptying an axis."""
    prunable = [i for i, u in enumerate(group.units) if u.sources]
    target = min(math.floor(ratio * len(prunable) + 1e-9),
                 max(0, len(prunable) - max(1, min_units)))
    left = {ax: 0 for ax in group.axes}
    for u in group.units:
        for ax, idx in u.members.items():
            left[ax] += len(idx)
    chosen: list[int] = []
    for i in sorted(prunable, key=lambda i: (scores[i], i)):
        if len(chosen) >= target:
            break
        u = group.units[i]
        if any(left[ax] - len(idx) < 1 for ax, idx in u.members.items()):
            continue
        for ax, idx in u.members.items():
            left[ax] -= len(idx)
        chosen.append(i)
    return sorted(chosen)


def _score(unit, analysis: Analysis, grads: dict[int, np.ndarray] | None) -> float:
    total = 0.0
    for vid, row in unit.sources:
        w = C.const_array(analysis.values[vid])
        assert w is not None
        if grads is None:
            total += float(np.abs(w[row]).sum())
        else:
            g = grads.get(vid)
            total += 0.0 if g is None else abs(float((w[row] * g[row]).sum()))
    return total


def _taylor_grads(graph: Graph, ctx: PassContext) -> dict[int, np.ndarray]:
    """dL/dW for every float const (keyed by its value id); L = CE against the own argmax."""
    import torch

    from ...backends.torch import GraphModule

    module = GraphModule(graph)
    for batch in _batches(graph, list(ctx.calibration or ctx.sample_inputs)):
        out = module(*[torch.from_numpy(np.asarray(a)) for a in batch])
        y = out[0] if isinstance(out, tuple) else out
        if y.dim() >= 2:
            flat = y.reshape(-1, y.shape[-1])
            loss = torch.nn.functional.cross_entropy(flat, flat.argmax(-1).detach())
        else:
            loss = 0.5 * (y ** 2).sum()
        loss.backward()
    grads = {}
    for op in graph.ops:
        i = module._index.get(id(op))
        if i is not None and module.params[i].grad is not None:
            grads[id(op.results[0])] = module.params[i].grad.numpy()
    return grads


def _batches(graph: Graph, batches: list) -> list:
    """The calibration batches, re-cut to the graph's batch size when that is static."""
    lead = graph.inputs[0].type.shape[0] if graph.inputs and graph.inputs[0].type.rank else None
    if not isinstance(lead, int) or all(len(b[0]) == lead for b in batches):
        return batches
    cols = [np.concatenate([np.asarray(b[i]) for b in batches]) for i in range(len(batches[0]))]
    total = len(cols[0])
    reps = -(-lead // total)
    cols = [np.concatenate([c] * reps) if reps > 1 else c for c in cols]
    return [tuple(c[i:i + lead] for c in cols) for i in range(0, len(cols[0]) - lead + 1, lead)]


def shrink(graph: Graph, removed, analysis: Analysis) -> Graph:
    """A new graph with every slice of the `removed` units cut out of consts and shapes."""
    drop: dict[tuple[int, int], set[int]] = {}
    for u in removed:
        for ax, idx in u.members.items():
            drop.setdefault(ax, set()).update(idx)
    kept: dict[int, dict[int, np.ndarray]] = {}
    for (vid, ax), idx in drop.items():
        n = analysis.values[vid].type.shape[ax]
        kept.setdefault(vid, {})[ax] = np.array([i for i in range(n) if i not in idx], np.int64)
    return rebuild(graph, kept)


def rebuild(graph: Graph, kept: dict[int, dict[int, np.ndarray]]) -> Graph:
    """Copy `graph` op by op, slicing consts to `kept[value id][axis]` and re-inferring types."""
    new = Graph(graph.name)
    new.meta = dict(graph.meta)
    env: dict[int, Value] = {}
    for v in graph.inputs:
        env[id(v)] = new.add_input(v.name or f"arg{v.index}", v.type)
    for op in graph.ops:
        res = op.results
        if op.kind == "const":
            arr = op.attrs["value"]
            for ax, idx in sorted(kept.get(id(res[0]), {}).items()):
                arr = np.take(arr, idx, axis=ax)
            attrs = dict(op.attrs, value=_readonly(arr))
            out = new.add("const", loc=op.loc, **attrs)
        else:
            attrs = _shrunk_attrs(op, kept)
            regions = [r.clone() for r in op.regions]
            out = new.add(op.kind, *[env[id(v)] for v in op.inputs], regions=regions,
                          loc=op.loc, **attrs)
        outs = out if isinstance(out, tuple) else (out,)
        for a, b in zip(res, outs, strict=True):
            b.name = a.name
            env[id(a)] = b
    new.set_outputs(*[env[id(v)] for v in graph.outputs])
    return new


def _readonly(arr: np.ndarray) -> np.ndarray:
    if arr.flags.writeable:
        arr = np.ascontiguousarray(arr)
        arr.flags.writeable = False
    return arr


def _shrunk_attrs(op, kept: dict[int, dict[int, np.ndarray]]) -> dict:
    attrs = dict(op.attrs)
    out_kept = kept.get(id(op.results[0]), {}) if op.results else {}
    if op.kind in ("reshape", "expand") and out_kept:
        shape = list(attrs["shape"])
        lead = len(shape) - op.results[0].type.rank
        for ax, idx in out_kept.items():
            j = ax + lead
            if isinstance(shape[j], int) and shape[j] != -1:
                shape[j] = len(idx)
        attrs["shape"] = tuple(shape)
    elif op.kind == "split":
        in_kept = kept.get(id(op.inputs[0]), {})
        d = attrs["dim"] % op.inputs[0].type.rank
        if d in in_kept:
            attrs["sizes"] = tuple(len(kept.get(id(r), {}).get(d, range(r.type.shape[d])))
                                   for r in op.results)
    elif op.kind == "scaled_dot_product_attention" and attrs.get("scale") is None:
        q = op.inputs[0]
        if q.type.rank - 1 in kept.get(id(q), {}):  # head dim shrinks: keep the old scale
            attrs["scale"] = 1.0 / math.sqrt(q.type.shape[-1])
    return attrs
