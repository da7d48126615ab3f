"""`distill_steps{k=4,method=progressive}` / `distill_steps{k=1,method=reflow}`: trained K-step
students of an N-step sampler loop, written back into the graph's weights.

The pass recognizes the loop, trains through the IR's torch mode (progressive.py, reflow.py),
writes the trained weights back into the graph's consts and replaces the loop's table with the
K-step Euler table, so the result compiles like any other graph and runs K network calls.
k equal to the loop's steps is the identity (nothing to distill).

Training options (defaults sized for `digits_flow`, a few CPU minutes): `iters` is per halving
round for progressive (default 400; the last round gets `final_iters`, default 2 * iters) and the
reflow stage for reflow (default 1000, then `distill_iters`, default 2 * iters, of k-step
distillation); `pool` trajectories / teacher pairs; `ema` weight-EMA decay; `chunks` time points
per batch; `seed` (default: the pipeline's) makes a run reproducible; `checkpoint_dir` resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ...errors import InputError
from ...ir.graph import Graph
from ..pipeline import Pass, PassContext, register_pass
from ._common import noise_shape
from .progressive import TrainConfig, progressive_distill
from .recognize import recognize, set_table
from .reflow import reflow_distill


@register_pass("distill_steps")
@dataclass(frozen=True)
class DistillSteps(Pass):
    """Train a k-step student of a sampler loop (progressive halving or reflow) in place."""

    k: int = 4
    method: Literal["progressive", "reflow"] = "progressive"
    iters: int | None = None
    batch: int = 256
    lr: float = 3e-4
    pool: int = 4096
    ema: float = 0.999
    chunks: int = 4
    final_iters: int | None = None
    distill_iters: int | None = None
    seed: int | None = None
    checkpoint_dir: str | None = None
    progress_bar: bool = True
    # A distilled student's samples differ from the teacher's by design (bounded by the data
    # range: samples in [-1, 1]).
    tolerance: ClassVar[float | None] = 1.0

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        loop = recognize(graph)
        n = loop.steps
        if self.k < 1 or self.k > n:
            raise InputError(f"distill_steps{{k={self.k}}}: k must be in [1, {n}] for this "
                             f"{n}-step sampler")
        if self.k == n:
            ctx.note(teacher_steps=n, identity=True, **loop.facts())
            return graph
        if self.method not in ("progressive", "reflow"):
            raise InputError(f"distill_steps: method={self.method!r}; choose progressive or "
                             "reflow")
        iters = self.iters if self.iters is not None else \
            (400 if self.method == "progressive" else 1000)
        if min(iters, self.batch, self.pool, self.chunks) < 1 or not 0 <= self.ema < 1:
            raise InputError(f"distill_steps: iters={iters}, batch={self.batch}, pool={self.pool}"
                             f" and chunks={self.chunks} must be >= 1 and ema={self.ema} in "
                             "[0, 1)")
        cfg = TrainConfig(iters=iters, batch=self.batch, lr=self.lr, pool=self.pool,
                          seed=ctx.seed if self.seed is None else self.seed,
                          checkpoint_dir=self.checkpoint_dir, progress_bar=self.progress_bar,
                          ema=self.ema, chunks=self.chunks,
                          final_iters=2 * iters if self.final_iters is None else self.final_iters,
                          distill_iters=(2 * iters if self.distill_iters is None
                                         else self.distill_iters))
        train = progressive_distill if self.method == "progressive" else reflow_distill
        table, history = train(loop, self.k, cfg, noise_shape(graph))
        loop = set_table(loop, table)
        graph.meta["sampler"]["distilled"] = {"method": self.method, "teacher_steps": n}
        ctx.note(teacher_steps=n, method=self.method, history=history, **loop.facts())
        return graph
