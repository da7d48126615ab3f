"""Walk a torch.fx graph (from torch.export) and build the ember graph, node by node.

The walk never stops at the first unsupported op: an unsupported node is recorded with its
module path and user source line, its results are poisoned (nodes that only depend on poisoned
values are skipped silently), and the caller raises one `UnsupportedOpError` listing everything.
Every converted node's ember type is checked against torch's own metadata, so a converter that
disagrees with torch on a shape or dtype fails loudly at the node that caused it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...errors import EmberError, ShapeError
from ...ir import DType, Graph, TensorType, Value
from ...ir.types import Dim
from .context import (
    DTYPES,
    Problems,
    Symbols,
    SymSize,
    Unsupported,
    module_path,
    original_op,
    torch_dtype,
    where,
)
from .table import ATEN_TO_EMBER, ATTRS, CONVERTERS, IGNORED, target_name


class _Poison:
    """The result of a node that could not be converted."""

    def __repr__(self) -> str:
        return "<unconverted>"


POISON = _Poison()


class LazyConst:
    """A parameter/buffer/constant: becomes a named `const` op at its first use."""

    def __init__(self, tensor: torch.Tensor, name: str):
        self.tensor, self.name = tensor, name
        self.value: Value | None = None

    def get(self, g: Graph) -> Value:
        if self.value is None:
            t = self.tensor.detach()
            if t.dtype not in DTYPES:
                raise Unsupported(f"weight {self.name!r} has dtype {t.dtype}, which ember lacks")
            if t.dtype == torch.bfloat16:
                raise Unsupported(f"weight {self.name!r} is bfloat16; numpy cannot hold it, "
                                  "convert the model with .float() before tracing")
            self.value = g.const(t.cpu().contiguous().numpy(), name=self.name)
        return self.value


class GraphImporter:
    """Converts one fx graph (the program, or a control-flow body) into one ember Graph."""

    def __init__(self, g: Graph, symbols: Symbols, problems: Problems,
                 parent_loc: str | None = None):
        self.g, self.symbols, self.problems = g, symbols, problems
        self.parent_loc = parent_loc
        self.env: dict[torch.fx.Node, Any] = {}
        self.node: torch.fx.Node | None = None
        self.cache: dict[Any, Any] = {}  # per-graph helpers converters share (carriers)

    # ---- the walk -------------------------------------------------------------------------
    def run(self, fx_graph: torch.fx.Graph, bind: Callable[[torch.fx.Node], Any]) -> list[Any]:
        """Convert every node; `bind(placeholder)` supplies inputs. Returns the output values."""
        outputs: list[Any] = []
        for node in fx_graph.nodes:
            if node.op == "placeholder":
                self.env[node] = bind(node)
            elif node.op == "get_attr":
                self.env[node] = self._get_attr(node)
            elif node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                outputs = list(torch.fx.node.map_arg(node.args[0], lambda n: self.env[n]))
            else:
                raise EmberError(f"unexpected fx node {node.op} {node.target}")
        return outputs

    def _get_attr(self, node: torch.fx.Node) -> Any:
        obj: Any = node.graph.owning_module
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor):
            return LazyConst(obj, str(node.target))
        return obj

    def _call(self, node: torch.fx.Node) -> None:
        name = target_name(node.target)
        if name in IGNORED:
            return
        val = node.meta.get("val")
        if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool) and \
                name not in ATEN_TO_EMBER and name not in CONVERTERS:
            self.env[node] = SymSize(val)  # sym_size.int, operator.mul on sizes, ...
            return
        if name == "operator.getitem":
            self.env[node] = self._getitem(node)
            return
        if name not in ATEN_TO_EMBER and name not in CONVERTERS:
            folded = self._fold(node)
            if folded is not None:
                self.env[node] = folded
                return
            origin = original_op(node)
            self.problems.add(name, where(node, self.parent_loc))
            if origin and origin != name:
                self.problems.origins.setdefault(name, set()).add(origin)
            self.env[node] = POISON
            return
        if any(self.env.get(n) is POISON for n in node.all_input_nodes):
            self.env[node] = POISON
            return
        self.node = node
        try:
            args = self._bind(node)
            if name in CONVERTERS:
                out = CONVERTERS[name](self, *args)
            else:
                out = self._one_to_one(name, node, args)
            self._check(node, out)
        except Unsupported as e:
            self.problems.add(name, where(node, self.parent_loc), str(e))
            out = POISON
        except ShapeError as e:  # an ember op refused what the converter built from it
            self.problems.add(name, where(node, self.parent_loc), f"ember: {e}")
            self.problems.type_errors = True
            out = POISON
        self.env[node] = out

    def _fold(self, node: torch.fx.Node) -> Any:
        """Run an op ember lacks on constant inputs with torch, giving consts (None if it can't).

        Masks and tables built in forward (torch.triu(torch.full(...)), ...) need no ember op.
        Random ops are never folded: a frozen sample would change what the model computes.
        """
        target = node.target
        if not isinstance(target, torch._ops.OpOverload) or \
                torch.Tag.nondeterministic_seeded in target.tags:
            return None
        missing = object()

        def concrete(a: Any) -> Any:
            if not isinstance(a, torch.fx.Node):
                return a
            v = self.env.get(a, missing)
            if isinstance(v, LazyConst):
                return v.tensor.detach().clone()
            if isinstance(v, Value) and v.producer is not None and v.producer.kind == "const":
                value = v.producer.attrs["value"]
                if isinstance(value, np.ndarray):
                    return torch.from_numpy(value.copy())
            if isinstance(v, SymSize) and isinstance(self.symbols.dim(v), int):
                return self.symbols.dim(v)
            raise Unsupported("not constant")

        try:
            args = torch.fx.node.map_aggregate(node.args, concrete)
            kwargs = torch.fx.node.map_aggregate(node.kwargs, concrete)
            with torch.no_grad():
                out = target(*args, **kwargs)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if not all(isinstance(o, torch.Tensor) and o.dtype in DTYPES
                       and o.dtype != torch.bfloat16 for o in outs):
                return None
        except Exception:  # noqa: BLE001 (not foldable: report the op as unsupported instead)
            return None
        consts = tuple(self.g.const(o.detach().contiguous().numpy()) for o in outs)
        return consts if isinstance(out, (tuple, list)) else consts[0]

    def _getitem(self, node: torch.fx.Node) -> Any:
        src, index = node.args
        value = self.env[src]
        if value is POISON:
            return POISON
        item = value[index]
        if item is None:
            self.problems.add(target_name(src.target) + f"[{index}]", where(node, self.parent_loc),
                              f"output {index} of {target_name(src.target)} is not supported")
            return POISON
        return item

    def _bind(self, node: torch.fx.Node) -> list[Any]:
        """Schema arguments in order, defaults filled in, fx nodes replaced by their values."""
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            raw = []
            for i, arg in enumerate(target._schema.arguments):
                if i < len(node.args):
                    raw.append(node.args[i])
                elif arg.name in node.kwargs:
                    raw.append(node.kwargs[arg.name])
                else:
                    raw.append(arg.default_value if arg.has_default_value() else None)
        else:
            raw = list(node.args)
        return [self._value(a) for a in raw]

    def _value(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            v = self.env[a]
            if isinstance(v, LazyConst):
                return v.get(self.g)
            if isinstance(v, SymSize):
                return self.symbols.dim(v)
            return v
        if isinstance(a, (list, tuple)):
            return type(a)(self._value(x) for x in a)
        return a

    def _one_to_one(self, name: str, node: torch.fx.Node, args: list[Any]) -> Value:
        from ...ir.ops import get_schema

        kind = ATEN_TO_EMBER[name]
        n_inputs = len([i for i in get_schema(kind).inputs if not i.endswith("?")])
        schema_args = node.target._schema.arguments
        named = {a.name: v for a, v in zip(schema_args, args)}
        attrs = {ember: named[aten] for ember, aten in ATTRS.get(name, {}).items()}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        return self.emit_elementwise(kind, args[:n_inputs], **attrs) if _is_elementwise(kind) \
            else self.emit(kind, *args[:n_inputs], **attrs)

    def _check(self, node: torch.fx.Node, out: Any) -> None:
        val = node.meta.get("val")
        outs = out if isinstance(out, tuple) else (out,)
        vals = val if isinstance(val, (tuple, list)) else (val,)
        for o, v in zip(outs, vals):
            if isinstance(o, Value) and isinstance(v, torch.Tensor):
                want = self.symbols.tensor_type(v)
                if o.type != want:
                    raise EmberError(
                        f"frontend bug: {target_name(node.target)} at {where(node)} became an "
                        f"ember value of type {o.type}, but torch computes {want}; please report "
                        "this with the model")

    # ---- helpers for converters -----------------------------------------------------------
    @property
    def loc(self) -> str | None:
        return (module_path(self.node) if self.node is not None else None) or self.parent_loc

    def emit(self, kind: str, *inputs: Value, **attrs: Any) -> Any:
        """Build an ember op at the current node's module path."""
        for v in inputs:
            if not isinstance(v, Value):
                raise Unsupported(f"{kind}: expected tensor operands, got {v!r}")
        return self.g.add(kind, *inputs, loc=self.loc, **attrs)

    def out_type(self, index: int | None = None) -> TensorType:
        val = self.node.meta.get("val")  # type: ignore[union-attr]
        return self.symbols.tensor_type(val if index is None else val[index])

    def dim(self, d: Any) -> Dim:
        return self.symbols.dim(d)

    def scalar(self, value: Any, dtype: DType) -> Value:
        """A 0-d const of `dtype` (broadcasts against anything)."""
        if isinstance(value, Value):
            return self.cast(value, dtype)
        if isinstance(value, (torch.SymInt, str)):
            raise Unsupported(f"a symbolic size ({value}) used as a tensor value is not supported")
        return self.g.const(np.array(value, dtype=dtype.to_numpy()))

    def cast(self, v: Value, dtype: DType) -> Value:
        return v if v.dtype == dtype else self.emit("cast", v, dtype=dtype)

    def emit_elementwise(self, kind: str, operands: list[Any], **attrs: Any) -> Value:
        """An elementwise op with torch's type promotion made explicit (casts, scalar consts)."""
        out = self.out_type()
        if kind in ("eq", "ne", "lt", "le", "gt", "ge"):
            compute = self.promoted_dtype(operands)
        elif kind in ("logical_and", "logical_or", "logical_not"):
            compute = DType.bool
        else:
            compute = out.dtype
        values = []
        for i, x in enumerate(operands):
            dtype = DType.bool if kind == "where" and i == 0 else compute
            values.append(self.scalar(x, dtype) if not isinstance(x, Value) else self.cast(x, dtype))
        return self.emit(kind, *values, **attrs)

    def promoted_dtype(self, operands: list[Any]) -> DType:
        """torch.result_type of the current node's operands (fake tensors and python scalars)."""
        metas = [a.meta["val"] if isinstance(a, torch.fx.Node) else a
                 for a in self.node.args[: len(operands)]]  # type: ignore[union-attr]
        if len(metas) == 1:
            return torch_dtype(metas[0].dtype)
        return torch_dtype(torch.result_type(metas[0], metas[1]))

    def import_region(self, gm: torch.fx.GraphModule, inputs: list[TensorType],
                      name: str) -> Graph:
        """Convert a control-flow body into an isolated region graph with these input types."""
        region = Graph(name)
        values = [region.add_input(f"arg{i}", t) for i, t in enumerate(inputs)]
        sub = GraphImporter(region, self.symbols, self.problems, parent_loc=self.loc)
        it = iter(values)
        outs = sub.run(gm.graph, lambda node: next(it))
        if any(o is POISON for o in outs):
            raise Unsupported(f"the body of {name} has unsupported ops (listed separately)")
        for o in outs:
            if not isinstance(o, Value):
                raise Unsupported(f"{name} body returns {o!r}, not a tensor")
        region.set_outputs(*outs)
        drop_dead_consts(region)
        return region


def drop_dead_consts(g: Graph) -> None:
    """Erase consts nothing reads (inputs of ops folded away at import time)."""
    outputs = {id(v) for v in g.outputs}
    for op in g.ops:
        if op.kind == "const" and not op.result.uses and id(op.result) not in outputs:
            g.erase(op)


def _is_elementwise(kind: str) -> bool:
    from ...ir.ops import ELEMENTWISE, get_schema

    return get_schema(kind).has(ELEMENTWISE) or kind in ("pow", "where", "remainder")
