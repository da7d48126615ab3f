"""The text form: MLIR-like, one line per op, deterministic numbering, module paths as comments.

    graph @digits_mlp(%x: f32[batch,64]) -> (f32[batch,10]) {
      %0 = const {name="fc1.weight", value=blob<f32[128,64] "3f2a9c0d1b2e4f5a">} : f32[128,64]
      %2 = linear(%x, %0, %1) : f32[batch,128]  # fc1
      %3 = softmax(%2) {dim=-1} : f32[batch,128]
      return %3
    }

Graph inputs print by name; op results are numbered in print order (regions included), so golden
tests compare exact text. Small consts print inline (`dense<...>`); larger ones print a content
hash (`blob<...>`) and travel in the weights file (see serialize.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import numpy as np

from ..errors import EmberError
from .graph import Graph, Op, Value
from .types import DType, TensorType

INLINE_LIMIT = 16  # consts with at most this many elements print their data inline
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def array_key(arr: np.ndarray) -> str:
    """Content hash used to name a const payload in text and in weight files."""
    h = hashlib.sha256()
    h.update(str(arr.dtype).encode() + str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def format_scalar(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    f = float(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def format_attr(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, DType):
        return v.value
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (bool, int, float, np.generic)):
        return format_scalar(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    if isinstance(v, np.ndarray):
        t = TensorType.of(v)
        if v.size <= INLINE_LIMIT:
            body = ", ".join(format_scalar(x) for x in v.reshape(-1).tolist())
            return f"dense<{t}: [{body}]>"
        return f'blob<{t} "{array_key(v)}">'
    if hasattr(v, "type") and hasattr(v, "key"):  # ExternalData placeholder from the parser
        return f'blob<{v.type} "{v.key}">'
    raise EmberError(f"attribute value {v!r} of type {type(v).__name__} has no text form")


class _Namer:
    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.counter = 0
        self.taken: set[str] = set()

    def fresh(self, v: Value) -> str:
        name = f"%{self.counter}"
        self.counter += 1
        self.names[id(v)] = name
        return name

    def named(self, v: Value, hint: str | None) -> str:
        if hint and _IDENT.match(hint) and hint not in self.taken:
            self.taken.add(hint)
            self.names[id(v)] = f"%{hint}"
            return f"%{hint}"
        return self.fresh(v)

    def __getitem__(self, v: Value) -> str:
        try:
            return self.names[id(v)]
        except KeyError:
            return f"%<undefined {v.type}>"


def print_graph(graph: Graph) -> str:
    lines: list[str] = []
    _print_block(graph, _Namer(), lines, "", top=True)
    return "\n".join(lines) + "\n"


def _print_block(graph: Graph, namer: _Namer, lines: list[str], indent: str, top: bool) -> None:
    if top:
        args = ", ".join(f"{namer.named(v, v.name)}: {v.type}" for v in graph.inputs)
    else:
        args = ", ".join(f"{namer.fresh(v)}: {v.type}" for v in graph.inputs)
    outs = ", ".join(str(v.type) for v in graph.outputs)
    lines.append(f"{indent}graph @{graph.name}({args}) -> ({outs}) {{")
    for op in graph.ops:
        _print_op(op, namer, lines, indent + "  ")
    lines.append(f"{indent}  return " + ", ".join(namer[v] for v in graph.outputs))
    lines.append(f"{indent}}}")


def format_op_attrs(op: Op) -> str:
    schema = op.schema
    items = []
    for name, (_, default) in schema.attrs.items():
        value = op.attrs.get(name, default)
        if _same(value, default):
            continue
        items.append(f"{name}={format_attr(value)}")
    return "{" + ", ".join(items) + "}" if items else ""


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is b
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def _print_op(op: Op, namer: _Namer, lines: list[str], indent: str) -> None:
    operands = ", ".join(namer[v] for v in op.inputs)
    results = ", ".join(namer.fresh(r) for r in op.results)
    attrs = format_op_attrs(op)
    types = ", ".join(str(r.type) for r in op.results)
    head = f"{indent}{results} = {op.kind}({operands})"
    if attrs:
        head += " " + attrs
    head += f" : {types}"
    if op.regions:
        head += " {"
    if op.loc:
        head += f"  # {op.loc}"
    lines.append(head)
    if op.regions:
        for region in op.regions:
            _print_block(region, namer, lines, indent + "  ", top=False)
        lines.append(f"{indent}}}")
