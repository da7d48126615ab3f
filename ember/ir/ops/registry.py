"""The op registry: one `OpSchema` per op kind, with its facets attached next to it.

    linear = define_op("linear", inputs=("x", "weight", "bias?"), traits={PURE})
    @linear.infer
    def _(x, weight, bias): ...      # TensorTypes in (None for an absent optional), type(s) out
    @linear.reference
    def _(x, weight, bias): ...      # numpy arrays in, array(s) out
    @linear.examples
    def _(rng): yield [arrays...], {attrs}
    @linear.decompose
    def _(b, op): ...                # b: the Graph, insertion point before `op`; build the
                                     # replacement with b.add(...), return its result Values,
                                     # or None when this instance cannot be decomposed

Inputs: "x" required, "bias?" optional (trailing), "*xs" variadic (last). Attrs are declared as
{name: (type, default)} with REQUIRED for attributes without a default; values must be
immutable (numbers, strings, bools, None, DType, tuples, read-only arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ...errors import EmberError, ShapeError
from ..types import DType, TensorType

# Traits: generic passes key on these instead of on op kinds.
PURE = "pure"  # no side effects: CSE may merge, DCE may drop, fold may evaluate
ELEMENTWISE = "elementwise"
COMMUTATIVE = "commutative"
SHAPE_ONLY = "shape_only"  # moves/reinterprets data without arithmetic
SIDE_EFFECT = "side_effect"
HAS_REGIONS = "has_regions"
NO_FOLD = "no_fold"  # pure, but not worth folding at compile time (e.g. random, huge outputs)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_REGISTRY: dict[str, "OpSchema"] = {}


@dataclass
class OpSchema:
    """Everything ember knows about an op kind, independent of any backend."""

    kind: str
    inputs: tuple[str, ...]
    attrs: dict[str, tuple[Any, Any]]
    traits: frozenset[str]
    num_results: int | None = 1  # None: decided by infer
    doc: str = ""
    _infer: Callable | None = None
    _reference: Callable | None = None
    _decompose: Callable | None = None
    _examples: Callable | None = None
    tolerance: float = 1e-5  # for comparing reference against torch/TVM in registry tests
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- decorators ---------------------------------------------------------------------
    def infer(self, fn: Callable) -> Callable:
        self._infer = fn
        return fn

    def reference(self, fn: Callable) -> Callable:
        self._reference = fn
        return fn

    def decompose(self, fn: Callable) -> Callable:
        self._decompose = fn
        return fn

    def examples(self, fn: Callable) -> Callable:
        self._examples = fn
        return fn

    # ---- queries --------------------------------------------------------------------------
    def has(self, trait: str) -> bool:
        return trait in self.traits

    @property
    def has_decompose(self) -> bool:
        return self._decompose is not None

    def expand(self, graph: Any, op: Any) -> list[Any] | None:
        """Build `op`'s decomposition before it in `graph`; the caller replaces and erases it."""
        if self._decompose is None:
            return None
        with graph.at(before=op):
            out = self._decompose(graph, op)
        return None if out is None else list(out)

    def complete_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Check names, fill defaults, freeze lists into tuples."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ShapeError(f"op {self.kind}: unknown attribute(s) {sorted(unknown)}; "
                             f"it takes {sorted(self.attrs) or 'none'}")
        out: dict[str, Any] = {}
        for name, (_, default) in self.attrs.items():
            if name in attrs:
                out[name] = _freeze(attrs[name])
            elif default is REQUIRED:
                raise ShapeError(f"op {self.kind}: missing required attribute {name!r}")
            else:
                out[name] = default
        return out

    def bind_inputs(self, values: Sequence[Any]) -> list[Any]:
        """Map a positional input list onto the declared inputs (None for absent optionals)."""
        n = len(values)
        fixed = [i for i in self.inputs if not i.startswith("*")]
        variadic = len(fixed) < len(self.inputs)
        required = [i for i in fixed if not i.endswith("?")]
        if n < len(required) or (not variadic and n > len(fixed)):
            raise ShapeError(f"op {self.kind} takes inputs ({', '.join(self.inputs)}), got {n}")
        if variadic:
            return [list(values[len(fixed):])] if not fixed else [*values[: len(fixed)],
                                                                  list(values[len(fixed):])]
        return list(values) + [None] * (len(fixed) - n)

    def infer_types(self, types: Sequence[TensorType], attrs: dict[str, Any],
                    regions: Sequence[Any] = ()) -> list[TensorType]:
        if self._infer is None:
            raise EmberError(f"op {self.kind} has no type inference rule")
        args = self.bind_inputs(list(types))
        kw = dict(attrs)
        if self.has(HAS_REGIONS):
            kw["regions"] = regions
        try:
            out = self._infer(*args, **kw)
        except ShapeError as e:
            raise ShapeError(f"{self.kind}({', '.join(str(t) for t in types)}): {e}") from None
        out_list = list(out) if isinstance(out, (tuple, list)) else [out]
        for t in out_list:
            if not isinstance(t, TensorType):
                raise EmberError(f"infer of {self.kind} returned {t!r}, not a TensorType")
        return out_list

    def run_reference(self, arrays: Sequence[Any], attrs: dict[str, Any],
                      regions: Sequence[Any] = ()) -> list[np.ndarray]:
        if self._reference is None:
            raise EmberError(f"op {self.kind} has no reference implementation")
        args = self.bind_inputs(list(arrays))
        kw = dict(attrs)
        if self.has(HAS_REGIONS):
            kw["regions"] = regions
        out = self._reference(*args, **kw)
        out_list = list(out) if isinstance(out, (tuple, list)) else [out]
        return [np.asarray(o) for o in out_list]

    def iter_examples(self, rng: np.random.Generator) -> Iterator[tuple[list, dict]]:
        if self._examples is None:
            return iter(())
        return iter(self._examples(rng))


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.ndarray):
        if v.flags.writeable:
            v = v.copy()
            v.flags.writeable = False
        return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def define_op(kind: str, inputs: Sequence[str] = (), attrs: dict[str, tuple[Any, Any]] | None = None,
              traits: Sequence[str] = (PURE,), num_results: int | None = 1, doc: str = "",
              tolerance: float = 1e-5) -> OpSchema:
    if kind in _REGISTRY:
        raise EmberError(f"op {kind!r} is defined twice")
    schema = OpSchema(kind, tuple(inputs), dict(attrs or {}), frozenset(traits), num_results, doc,
                      tolerance=tolerance)
    _REGISTRY[kind] = schema
    return schema


def get_schema(kind: str) -> OpSchema:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise EmberError(f"unknown op kind {kind!r}; see ember.ir.ops.all_schemas()") from None


def has_schema(kind: str) -> bool:
    return kind in _REGISTRY


def all_schemas() -> list[OpSchema]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def same_type(t: TensorType) -> TensorType:
    return t


def float_type(t: TensorType, what: str) -> TensorType:
    if not t.dtype.is_float:
        raise ShapeError(f"{what} needs a float tensor, got {t}")
    return t


__all__ = ["OpSchema", "define_op", "get_schema", "has_schema", "all_schemas", "REQUIRED", "PURE",
           "ELEMENTWISE", "COMMUTATIVE", "SHAPE_ONLY", "SIDE_EFFECT", "HAS_REGIONS", "NO_FOLD",
           "DType", "TensorType"]
