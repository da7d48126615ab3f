"""What the importer knows besides the graph: dtypes, shape symbols and where a node came from.

Symbols map torch's SymInts (s0, 4*s0) to ember dims ("batch", "4*batch"); locations turn a node's
metadata into the module path and user source line that error messages and `loc` show.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...ir import DType, TensorType
from ...ir.types import Dim, mul_dims

_TORCH_DIR = os.path.dirname(torch.__file__)
_EMBER_FRONTEND_DIR = os.path.dirname(os.path.abspath(__file__))
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<fn>\S+)\n(?P<code>[^\n]*)')

DTYPES: dict[torch.dtype, DType] = {
    torch.float32: DType.f32, torch.float64: DType.f64, torch.float16: DType.f16,
    torch.bfloat16: DType.bf16, torch.int64: DType.i64, torch.int32: DType.i32,
    torch.int16: DType.i16, torch.int8: DType.i8, torch.uint8: DType.u8, torch.bool: DType.bool,
}


class Unsupported(Exception):
    """Raised by a converter for a variant of an op it cannot express (collected, not fatal)."""


@dataclass(frozen=True)
class SymSize:
    """A SymInt-valued node (sym_size, arithmetic on sizes): no ember op, just a dim."""

    value: Any  # torch.SymInt or int


@dataclass
class Problems:
    """Unsupported nodes seen so far: op name -> list of 'where' strings (+ optional reasons)."""

    ops: dict[str, list[str]] = field(default_factory=dict)
    reasons: dict[str, set[str]] = field(default_factory=dict)
    origins: dict[str, set[str]] = field(default_factory=dict)  # ops torch decomposed into it
    type_errors: bool = False  # some ember op rejected its operands (maybe bad example inputs)

    def add(self, name: str, where: str, reason: str | None = None) -> None:
        self.ops.setdefault(name, []).append(where)
        if reason:
            self.reasons.setdefault(name, set()).add(reason)

    def __bool__(self) -> bool:
        return bool(self.ops)


def torch_dtype(dtype: torch.dtype) -> DType:
    if dtype not in DTYPES:
        raise Unsupported(f"dtype {dtype} has no ember equivalent")
    return DTYPES[dtype]


def module_path(node: torch.fx.Node) -> str | None:
    """The innermost nn.Module path that produced `node` ("encoder.0.attn.q_proj"), or None."""
    stack = node.meta.get("nn_module_stack") or {}
    for path, _cls in reversed(list(stack.values())):
        if isinstance(path, str) and not path.startswith("_empty_nn_module_stack"):
            return path or None
    return None


def source_line(node: torch.fx.Node) -> str | None:
    """'file.py:12: code' of the innermost user frame (torch's and ember's own frames skipped)."""
    trace = node.meta.get("stack_trace") or ""
    frames = list(_FRAME.finditer(trace))
    for m in reversed(frames):
        path = os.path.abspath(m["file"])
        if path.startswith((_TORCH_DIR, _EMBER_FRONTEND_DIR)):
            continue
        return f"{m['file']}:{m['line']}: {m['code'].strip()}"
    return None


def original_op(node: torch.fx.Node) -> str | None:
    """The op the user's code called, when torch's decompositions replaced it ('aten.fft_fft')."""
    sources = node.meta.get("from_node") or []
    target = getattr(sources[-1], "target", None) if sources else None
    return str(target) if target else None


def where(node: torch.fx.Node, loc: str | None = None) -> str:
    module = module_path(node) or loc or "<root module>"
    line = source_line(node)
    return f"{module} ({line})" if line else module


class Symbols:
    """torch's shape symbols (s0, s77, ...) -> the user's dim names ("batch")."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def dim(self, d: Any) -> Dim:
        if isinstance(d, SymSize):
            d = d.value
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
            return int(d)
        if isinstance(d, torch.SymInt):
            expr = d.node.expr
            if expr.is_Integer:
                return int(expr)
            return self.expr_dim(expr)
        raise Unsupported(f"expected a size, got {d!r}")

    def expr_dim(self, expr: Any) -> Dim:
        if expr.is_Integer:
            return int(expr)
        if expr.is_Symbol:
            if str(expr) not in self.names:
                raise Unsupported(f"size symbol {expr} is not one of the dynamic dims "
                                  f"given to trace ({self._known()})")
            return self.names[str(expr)]
        if expr.is_Mul:
            coeff, rest = expr.as_coeff_Mul()
            factors = rest.as_ordered_factors()
            if coeff.is_Integer and all(f.is_Symbol for f in factors):
                return mul_dims([int(coeff)] + [self.expr_dim(f) for f in factors])
        raise Unsupported(f"symbolic size {expr} cannot be expressed in ember types (only a dim "
                          f"name or a product like 4*batch is); dims: {self._known()}. Make that "
                          "dim static or reshape with -1")

    def _known(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.names.items()) or "none"

    def tensor_type(self, val: Any) -> TensorType:
        if not isinstance(val, torch.Tensor):
            raise Unsupported(f"expected a tensor, got {type(val).__name__}")
        if val.is_complex():
            raise Unsupported(f"complex tensors ({val.dtype}) are not supported")
        return TensorType(tuple(self.dim(d) for d in val.shape), torch_dtype(val.dtype))
