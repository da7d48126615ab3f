"""Shared by the distill passes: running a sampler loop with a swapped table, calibration noise,
and `LoopModule`, the trainable torch view of a sampler graph whose table is an input.

Why a table input: training needs "one student step from state x at time t" and "v(x, t)" (a
probe row with A=0, B=1, C=0 makes the step return v itself). Both are the same sampler graph fed
different table rows, so training runs through the IR's torch mode without cutting the velocity
network out of the loop body.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...errors import InputError
from ...ir.graph import Graph, Op
from ...ir.types import DType, TensorType
from .recognize import SamplerLoop
from .sampler import COL_C, TABLE_WIDTH


def run_loop(loop: SamplerLoop, noise: np.ndarray, table: np.ndarray | None = None,
             batch: int = 1024) -> np.ndarray:
    """The sampler graph's output on `noise` (torch backend), optionally with another table."""
    from ...backends.torch import run_graph

    consts = {}
    if table is not None:
        consts[id(loop.table_op)] = torch.from_numpy(np.array(table, np.float32, copy=True))
    outs = []
    with torch.no_grad():
        for i in range(0, len(noise), batch):
            x = torch.from_numpy(np.ascontiguousarray(noise[i:i + batch], np.float32))
            outs.append(run_graph(loop.graph, [x], consts)[0].numpy())
    return np.concatenate(outs)


def noise_shape(graph: Graph) -> tuple[int, ...]:
    """The per-sample noise shape (the graph input minus its batch dim)."""
    if len(graph.inputs) != 1:
        raise InputError(f"a sampler graph takes one input (the noise); @{graph.name} takes "
                         f"{len(graph.inputs)}")
    shape = graph.inputs[0].type.shape[1:]
    if not all(isinstance(d, int) for d in shape):
        raise InputError(f"sampler noise {graph.inputs[0].type} has symbolic non-batch dims")
    return tuple(int(d) for d in shape)


def calibration_noise(graph: Graph, calibration, n: int, seed: int) -> np.ndarray:
    """`n` noises: from the calibration set when it holds sampler inputs, else seeded N(0, I)."""
    shape = noise_shape(graph)
    if calibration:
        xs = [np.asarray(c[0], np.float32) for c in calibration
              if len(c) == 1 and np.asarray(c[0]).shape[1:] == shape]
        if xs:
            pool = np.concatenate(xs)
            if len(pool) >= n:
                return pool[:n]
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def require_linear(loop: SamplerLoop, what: str) -> None:
    if any(s == "heun" for s in loop.solvers):
        raise NotImplementedError(f"{what} of a Heun (2 calls per step) sampler is not "
                                  "supported; trace the teacher with a 1-call solver")


class LoopModule(torch.nn.Module):
    """forward(x, rows) = the sampler loop from state x over table `rows`; weights trainable."""

    def __init__(self, loop: SamplerLoop):
        super().__init__()
        from ...backends.torch import GraphModule

        self.loop = loop
        graph = loop.graph.clone()
        k = loop.graph.ops.index(loop.scan)
        scan = graph.ops[k]
        old = scan.inputs[loop.table_index].producer
        rows = graph.add_input("rows", TensorType(("steps", TABLE_WIDTH), DType.f32))
        scan.set_input(loop.table_index, rows)
        if not old.results[0].uses:
            graph.erase(old)
        self.step_graph = graph
        self.gm = GraphModule(graph)

    def forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.gm(x, rows)

    def pairs(self) -> list[tuple[Op, Op]]:
        """(original const, step-graph const) pairs, in graph order (the table excluded)."""
        orig = [op for op in self.loop.graph.ops if op.kind == "const"
                and op is not self.loop.table_op]
        mine = [op for op in self.step_graph.ops if op.kind == "const"]
        if len(orig) != len(mine):
            raise RuntimeError("internal: the step graph's consts no longer align")
        return list(zip(orig, mine))

    def write_back(self) -> int:
        """Copy trained weights into the sampler graph's consts; returns how many changed."""
        self.gm.write_back()
        n = 0
        for a, b in self.pairs():
            if a.attrs["value"] is not b.attrs["value"]:
                a.attrs["value"] = b.attrs["value"]
                n += 1
        return n

    def state(self) -> dict[str, torch.Tensor]:
        return {f"p{i}": p.detach().clone() for i, p in enumerate(self.gm.params)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.gm.params):
                p.copy_(state[f"p{i}"])


def check_one_call_rows(table: np.ndarray, what: str) -> None:
    if np.any(np.abs(np.asarray(table)[:, COL_C]) > 0):
        raise NotImplementedError(f"{what} needs a single-step (Euler/DDIM) teacher table; this "
                                  "one is multistep (dpmpp_2m); trace the teacher with Euler")


def rows_tensor(rows: Sequence | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rows, np.float32, copy=True))
