"""The reference interpreter: runs a graph with each op's numpy `reference`.

This is ember's definition of what a graph means; constant folding, passes' numeric checks and
backend tests all compare against it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import EmberError, InputError
from .graph import Graph
from .types import TensorType


def check_inputs(graph: Graph, inputs: Sequence[Any]) -> list[np.ndarray]:
    """Arrays for the graph's inputs, or an InputError naming the input and the mismatch."""
    if len(inputs) != len(graph.inputs):
        names = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
        raise InputError(f"@{graph.name} takes {len(graph.inputs)} inputs ({names}), "
                         f"got {len(inputs)}")
    arrays = []
    bindings: dict[str, int] = {}
    for v, x in zip(graph.inputs, inputs):
        a = np.asarray(x)
        want = v.type
        if a.dtype != want.dtype.to_numpy():
            raise InputError(f"input {v.name!r}: dtype {a.dtype} but the graph expects "
                             f"{want.dtype} ({want})")
        if a.ndim != want.rank:
            raise InputError(f"input {v.name!r}: shape {list(a.shape)} has rank {a.ndim}, "
                             f"expected {want}")
        for i, (got, dim) in enumerate(zip(a.shape, want.shape)):
            if isinstance(dim, int):
                if got != dim:
                    raise InputError(f"input {v.name!r}: dim {i} is {got}, expected {dim} "
                                     f"(shape {list(a.shape)} vs {want})")
            elif "*" not in dim:
                if bindings.setdefault(dim, got) != got:
                    raise InputError(f"input {v.name!r}: symbol {dim!r} is {got} here but "
                                     f"{bindings[dim]} in an earlier input")
        arrays.append(a)
    return arrays


def interpret(graph: Graph, *inputs: Any) -> Any:
    """Run `graph` on numpy inputs; returns one array or a tuple for several outputs."""
    outs = run_graph(graph, check_inputs(graph, inputs))
    return outs[0] if len(outs) == 1 else tuple(outs)


def run_graph(graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    env: dict[int, np.ndarray] = {id(v): a for v, a in zip(graph.inputs, inputs)}
    remaining = _last_uses(graph)
    for op in graph.ops:
        args = [env[id(v)] for v in op.inputs]
        try:
            outs = op.schema.run_reference(args, op.attrs, op.regions)
        except EmberError:
            raise
        except Exception as e:
            shapes = ", ".join(str(TensorType.of(np.asarray(a))) for a in args)
            raise EmberError(f"interpret: {op.kind}({shapes})"
                             f"{' at ' + op.loc if op.loc else ''} failed: {e}") from e
        for r, o in zip(op.results, outs):
            if o.dtype != r.type.dtype.to_numpy():
                o = o.astype(r.type.dtype.to_numpy())
            env[id(r)] = o
        for v in op.inputs:  # free intermediates early: zoo graphs can be wide
            k = id(v)
            remaining[k] -= 1
            if remaining[k] == 0 and v.producer is not None:
                env.pop(k, None)
    return [env[id(v)] for v in graph.outputs]


def _last_uses(graph: Graph) -> dict[int, int]:
    counts: dict[int, int] = {}
    for op in graph.ops:
        for v in op.inputs:
            counts[id(v)] = counts.get(id(v), 0) + 1
    for v in graph.outputs:  # outputs are never freed
        counts[id(v)] = counts.get(id(v), 0) + 1 << 30
    return counts
