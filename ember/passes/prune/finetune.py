"""`finetune`: short recovery training of a (pruned) graph in torch, optionally distilled.

The graph runs as `ember.backends.torch.GraphModule` (float consts become parameters) and the
trained values are written back into its consts, so the graph's structure never changes:
pruned shapes stay pruned, `sparse.linear_nm` trains its stored values only (indices are ints),
and weights that hold exact zeros (from `prune_magnitude`) keep them through a mask re-applied
after every step. Batch-norm running statistics are frozen.

Where the data comes from (first that applies):
  1. `zoo=NAME`: `ember.zoo.load(NAME).train` (inputs and labels); accuracy on the zoo's eval
     split is measured with the reference interpreter before and after and goes in the report.
  2. `ctx.train_data` when the pipeline provides one (an `(inputs, labels)` pair).
  3. the calibration batches, without labels: then `distill=true` is required and the loss is
     the distillation term alone.
With `distill=true` the loss mixes cross entropy on the labels with the KL divergence to the
unpruned graph's logits (the teacher stashed by the first prune pass in `graph.meta`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...errors import PassError
from ...ir.graph import Graph
from ..pipeline import Pass, PassContext, register_pass
from . import _common as C


@register_pass("finetune")
@dataclass(frozen=True)
class Finetune(Pass):
    """Recover accuracy after pruning: a few hundred Adam steps, distilling from the original."""

    steps: int = 300
    lr: float = 2e-3
    batch_size: int = 64
    distill: bool = True
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term (1 - alpha on the labels)
    zoo: str | None = None
    seed: int = 0
    tolerance: ClassVar[float | None] = math.inf  # training changes outputs by design

    def __post_init__(self) -> None:
        C.check_ratio(self.name, "alpha", self.alpha)
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            from ...errors import PipelineSpecError

            raise PipelineSpecError(f"finetune: steps={self.steps} must be >= 0, batch_size="
                                    f"{self.batch_size} >= 1 and lr={self.lr} > 0")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        import torch

        from ...backends.torch import GraphModule

        xs, ys, evaluate = self._data(ctx)
        teacher_graph = graph.meta.get(C.TEACHER_KEY) if self.distill else None
        if ys is None and teacher_graph is None:
            raise PassError("finetune has neither labels nor a teacher: give zoo=NAME (or "
                            "train_data), or run a prune pass before it with distill=true")
        notes: dict[str, Any] = {}
        if evaluate is not None:
            notes["accuracy_before"] = round(evaluate(graph), 5)
        torch.manual_seed(self.seed)
        module = GraphModule(graph)
        masks = _freeze_and_mask(graph, module)
        teacher = GraphModule(teacher_graph, trainable=False) if teacher_graph is not None \
            else None
        batch = _batch_size(graph, self.batch_size)
        opt = torch.optim.Adam([p for p in module.params if p.requires_grad], lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, self.steps))
        rng = np.random.default_rng(self.seed)
        n = len(xs[0])
        losses = []
        with _bar(self.steps) as advance:
            for step in range(self.steps):
                idx = rng.choice(n, size=batch, replace=n < batch)
                inputs = [torch.from_numpy(np.ascontiguousarray(x[idx])) for x in xs]
                logits = _first(module(*inputs))
                loss = self._loss(logits, inputs, teacher,
                                  None if ys is None else torch.from_numpy(ys[idx]).long())
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    for i, m in masks.items():
                        module.params[i].mul_(m)
                losses.append(float(loss.detach()))
                advance(losses[-1])
                ctx.progress(step + 1, self.steps)
        module.write_back()
        notes.update(steps=self.steps, loss_first=round(float(np.mean(losses[:10])), 5)
                     if losses else None,
                     loss_last=round(float(np.mean(losses[-10:])), 5) if losses else None,
                     distilled=teacher is not None, masked_weights=len(masks))
        if evaluate is not None:
            notes["accuracy_after"] = round(evaluate(graph), 5)
        ctx.note(**notes)
        return graph

    def _loss(self, logits, inputs, teacher, labels):
        import torch
        import torch.nn.functional as F

        flat = logits.reshape(-1, logits.shape[-1])
        terms = []
        if labels is not None:
            terms.append((1 - self.alpha if teacher is not None else 1.0,
                          F.cross_entropy(flat, labels.reshape(-1))))
        if teacher is not None:
            with torch.no_grad():
                t = _first(teacher(*inputs)).reshape(flat.shape)
            temp = self.temperature
            kl = F.kl_div(F.log_softmax(flat / temp, -1), F.log_softmax(t / temp, -1),
                          log_target=True, reduction="batchmean") * temp * temp
            terms.append((self.alpha if labels is not None else 1.0, kl))
        return sum(w * t for w, t in terms)

    def _data(self, ctx: PassContext):
        """(inputs list, labels or None, evaluate(graph) or None) from zoo / ctx / calibration."""
        if self.zoo:
            from ... import zoo as zoo_pkg
            from ...ir.interpret import run_graph

            z = zoo_pkg.load(self.zoo)
            x, y = z.train
            xs = list(x) if isinstance(x, (tuple, list)) else [x]

            def evaluate(g: Graph) -> float:
                static = _batch_size(g, 0)  # a static-batch graph is fed that many rows
                return z.evaluate(lambda *a: run_graph(g, list(a))[0], static or None)

            return [np.asarray(a) for a in xs], np.asarray(y), evaluate
        data = getattr(ctx, "train_data", None)
        if data is not None:
            x, y = data
            xs = list(x) if isinstance(x, (tuple, list)) else [x]
            return [np.asarray(a) for a in xs], None if y is None else np.asarray(y), None
        batches = list(ctx.calibration or ctx.sample_inputs or [])
        if not batches:
            raise PassError("finetune needs training data: give zoo=NAME, or calibration "
                            "batches (then it distils from the unpruned graph)")
        xs = [np.concatenate([np.asarray(b[i]) for b in batches]) for i in range(len(batches[0]))]
        return xs, None, None


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _batch_size(graph: Graph, wanted: int) -> int:
    """The graph's own batch when its first input has a static leading dim, else `wanted`."""
    d = graph.inputs[0].type.shape[0] if graph.inputs and graph.inputs[0].type.rank else None
    return d if isinstance(d, int) else wanted


def _freeze_and_mask(graph: Graph, module) -> dict[int, Any]:
    """Freeze batch-norm statistics; return {param index: 0/1 mask} for weights with zeros."""

    masks: dict[int, Any] = {}
    for op in graph.ops:
        if op.kind == "batch_norm":
            for v in op.inputs[1:3]:
                i = module._index.get(id(v.producer)) if v.producer is not None else None
                if i is not None:
                    module.params[i].requires_grad_(False)
        if op.kind in ("linear", "conv2d", "matmul"):
            for v in op.inputs[:2]:
                i = module._index.get(id(v.producer)) if v.producer is not None else None
                if i is None:
                    continue
                w = module.params[i].detach()
                if bool((w == 0).any()):
                    masks[i] = (w != 0).to(w.dtype)
    return masks


class _bar:
    """A rich progress bar on an interactive stderr; silent otherwise (tests, CI logs)."""

    def __init__(self, total: int):
        self.total = total
        self.progress = None

    def __enter__(self):
        if sys.stderr.isatty() and self.total:
            from rich.progress import Progress

            self.progress = Progress(transient=True)
            self.progress.start()
            self.task = self.progress.add_task("finetune", total=self.total)
        return self.advance

    def advance(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=f"finetune loss {loss:.4f}")

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
