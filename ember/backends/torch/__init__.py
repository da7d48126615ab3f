"""Run ember graphs with torch ops: the reference's twin for training and for cross-checks.

`TORCH_OPS[kind](*tensors, **attrs)` computes one op with torch; family files fill the table
with `@torch_op("kind")`. `GraphModule(graph)` is an nn.Module whose consts are parameters
(float consts trainable), so passes can fine-tune a graph (pruning recovery, distillation).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...errors import EmberError
from ...ir import Graph
from ...ir.ops import HAS_REGIONS, get_schema

TORCH_OPS: dict[str, Callable[..., Any]] = {}
UNSUPPORTED: dict[str, str] = {}


def torch_op(*kinds: str):
    def register(fn):
        for k in kinds:
            TORCH_OPS[k] = fn
        return fn

    return register


def run_op(kind: str, args: Sequence[Any], attrs: dict[str, Any], regions=()) -> list[torch.Tensor]:
    fn = TORCH_OPS.get(kind)
    if fn is None:
        raise EmberError(f"no torch implementation for op {kind!r}"
                         + (f": {UNSUPPORTED[kind]}" if kind in UNSUPPORTED else ""))
    schema = get_schema(kind)
    bound = schema.bind_inputs(list(args))
    kw = dict(attrs)
    if schema.has(HAS_REGIONS):
        kw["regions"] = regions
    out = fn(*bound, **kw)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def run_graph(graph: Graph, inputs: Sequence[torch.Tensor],
              consts: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Execute `graph` with torch; `consts` overrides const payloads (id(op) -> tensor)."""
    env: dict[int, torch.Tensor] = {id(v): t for v, t in zip(graph.inputs, inputs)}
    for op in graph.ops:
        if op.kind == "const":
            t = consts.get(id(op)) if consts else None
            if t is None:
                t = to_tensor(op.attrs["value"])
            env[id(op.results[0])] = t
            continue
        outs = run_op(op.kind, [env[id(v)] for v in op.inputs], op.attrs, op.regions)
        for r, o in zip(op.results, outs):
            env[id(r)] = o
    return [env[id(v)] for v in graph.outputs]


def to_tensor(value: Any) -> torch.Tensor:
    if hasattr(value, "materialize"):
        value = value.materialize()
    arr = np.asarray(value)
    return torch.from_numpy(np.array(arr, copy=True))


class GraphModule(torch.nn.Module):
    """An nn.Module running an ember graph; float consts become trainable parameters."""

    def __init__(self, graph: Graph, trainable: bool = True):
        super().__init__()
        self.graph = graph
        self.params = torch.nn.ParameterList()
        self._index: dict[int, int] = {}
        for op in graph.ops:
            if op.kind == "const":
                arr = np.asarray(op.attrs["value"])
                if arr.dtype.kind == "f" and arr.size > 1:
                    self._index[id(op)] = len(self.params)
                    self.params.append(torch.nn.Parameter(to_tensor(arr), requires_grad=trainable))

    def forward(self, *inputs: torch.Tensor):
        consts = {k: self.params[i] for k, i in self._index.items()}
        outs = run_graph(self.graph, inputs, consts)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def write_back(self) -> None:
        """Copy trained parameter values into the graph's const ops."""
        for op in self.graph.ops:
            if id(op) in self._index:
                arr = self.params[self._index[id(op)]].detach().cpu().numpy().copy()
                arr.flags.writeable = False
                op.attrs["value"] = arr


def interpret_torch(graph: Graph, *inputs: Any):
    tensors = [x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
               for x in inputs]
    outs = run_graph(graph, tensors)
    return outs[0] if len(outs) == 1 else tuple(outs)


from . import control, core, elementwise, nn, quant, reduce, shape, sparse  # noqa: E402,F401
