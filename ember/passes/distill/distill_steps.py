"""`distill_steps{k=4,method=progressive}` / `distill_steps{k=1,method=reflow}`: trained K-step
students of an N-step sampler loop, written back into the graph's weights.

The pass recognizes the loop, trains through the IR's torch mode (progressive.py, reflow.py),
writes the trained weights back into the graph's consts and replaces the loop's table with the
K-step Euler table, so the result compiles like any other graph and runs K network calls.
k equal to the loop's steps is the identity (nothing to distill).
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
    iters: int = 1500
    batch: int = 256
    lr: float = 3e-4
    pool: int = 4096
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
        cfg = TrainConfig(iters=self.iters, batch=self.batch, lr=self.lr, pool=self.pool,
                          seed=ctx.seed if self.seed is None else self.seed,
                          checkpoint_dir=self.checkpoint_dir, progress_bar=self.progress_bar)
        train = progressive_distill if self.method == "progressive" else reflow_distill
        table, history = train(loop, self.k, cfg, noise_shape(graph))
        loop = set_table(loop, table)
        graph.meta["sampler"]["distilled"] = {"method": self.method, "teacher_steps": n}
        ctx.note(teacher_steps=n, method=self.method, history=history, **loop.facts())
        return graph
