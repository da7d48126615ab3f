"""`trace(module, example_inputs, dynamic_dims)`: torch.export, decompose, convert, report.

The steps, each named: check the example inputs, export (wrapping torch's errors in InputError),
decompose to core ATen except for the ops ember converts whole, import the graph, and raise one
UnsupportedOpError for everything that could not be converted.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ...errors import InputError, ShapeError, UnsupportedOpError
from ...ir import Graph
from .context import Problems, Symbols
from .importer import POISON, GraphImporter, LazyConst, drop_dead_consts
from .table import ATEN_TO_EMBER, CONVERTERS, is_supported, target_name

DynamicDims = Mapping[Any, Mapping[int, str]]
_TORCH_NOISE = (  # warnings torch emits while exporting ordinary models; not the user's concern
    r".*were assigned during export.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def trace(module: torch.nn.Module, example_inputs: tuple, dynamic_dims: DynamicDims | None = None,
          name: str | None = None) -> Graph:
    """Import `module` into an ember graph through `torch.export`.

    `dynamic_dims` marks symbolic dims: {input name or index: {dim index: "symbol"}}, e.g.
    {"x": {0: "batch"}}; the graph's input types then read f32[batch,64]. The module is traced
    in eval mode (its mode is restored afterwards). Parameters, buffers and constants become
    `const` ops named by their path; each op's `loc` is the module path it came from.
    """
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"trace expects a torch.nn.Module, got {type(module).__name__}")
    names = input_names(module, example_inputs)
    spec = dynamic_shapes(names, example_inputs, dynamic_dims)
    program = export(module, tuple(example_inputs), spec)
    try:
        return import_program(program, names, spec_symbols(names, dynamic_dims),
                              name or snake_case(type(module).__name__))
    except (ShapeError, UnsupportedOpError) as e:
        # torch.export checks shapes but not all dtypes (fake kernels accept i64 into linear);
        # if eager torch rejects the inputs too, the inputs are at fault, not the frontend.
        if isinstance(e, UnsupportedOpError) and not getattr(e, "type_errors", False):
            raise
        eager_failure = _eager_failure(module, tuple(example_inputs))
        if eager_failure is None:
            raise
        raise InputError(f"{type(module).__name__}.forward fails on the example inputs: "
                         f"{eager_failure}\n(ember's type check said: {e})") from e


def input_names(module: torch.nn.Module, example_inputs: Any) -> list[str]:
    """forward()'s argument names for the example inputs, after checking they are tensors."""
    if not isinstance(example_inputs, (tuple, list)):
        raise InputError(f"example_inputs must be a tuple of tensors, e.g. (x,), not "
                         f"{type(example_inputs).__name__}")
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise InputError(f"example_inputs[{i}] is a {type(x).__name__}; every example input "
                             "must be a torch.Tensor (wrap python values with torch.tensor)")
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    required = [p.name for p in positional if p.default is p.empty]
    n = len(example_inputs)
    if n < len(required):
        raise InputError(f"{type(module).__name__}.forward takes ({', '.join(required)}) but "
                         f"{n} example input(s) were given")
    if n > len(positional) and not varargs:
        raise InputError(f"{type(module).__name__}.forward takes at most {len(positional)} "
                         f"inputs ({', '.join(p.name for p in positional)}), got {n}")
    names = [p.name for p in positional[:n]]
    return names + [f"input{i}" for i in range(len(names), n)]


def dynamic_shapes(names: list[str], example_inputs: Any,
                   dynamic_dims: DynamicDims | None) -> tuple | None:
    """torch.export's dynamic_shapes (a tuple in input order), one shared Dim per symbol."""
    if not dynamic_dims:
        return None
    per_input = _dims_by_index(names, dynamic_dims)
    spec = []
    for i, x in enumerate(example_inputs):
        entry = {}
        for axis, symbol in per_input.get(i, {}).items():
            if not isinstance(symbol, str) or not _IDENT.match(symbol):
                raise InputError(f"dynamic dim name {symbol!r} for input {names[i]!r} must be an "
                                 "identifier like 'batch'")
            if not isinstance(axis, int) or not -x.dim() <= axis < x.dim():
                raise InputError(f"dynamic dim {axis!r} of input {names[i]!r} is out of range "
                                 f"for its shape {list(x.shape)}")
            if x.shape[axis] < 2:
                raise InputError(f"input {names[i]!r} has size {x.shape[axis]} in dynamic dim "
                                 f"{axis} ({symbol!r}); torch.export specializes sizes 0 and 1, "
                                 "so give an example with size >= 2 there")
            # Dim.DYNAMIC: torch infers the valid range (x[1:3] needs batch >= 3) and fails if
            # the model forces the dim to one value; inputs sharing a name are unified below.
            entry[axis % x.dim()] = torch.export.Dim.DYNAMIC
        spec.append(entry or None)
    return tuple(spec)


def spec_symbols(names: list[str], dynamic_dims: DynamicDims | None) -> dict[int, dict[int, str]]:
    return _dims_by_index(names, dynamic_dims or {})


def _dims_by_index(names: list[str], dynamic_dims: DynamicDims) -> dict[int, dict[int, str]]:
    out: dict[int, dict[int, str]] = {}
    for key, dims in dynamic_dims.items():
        if isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(names):
                raise InputError(f"dynamic_dims names input {key}, but there are {len(names)}")
            index = key
        elif key in names:
            index = names.index(key)
        else:
            raise InputError(f"dynamic_dims names input {key!r}; the inputs are "
                             f"{', '.join(names)} (or use their indices)")
        if not isinstance(dims, Mapping):
            raise InputError(f"dynamic_dims[{key!r}] must map dim index -> name, e.g. "
                             "{0: 'batch'}")
        out[index] = dict(dims)
    return out


def export(module: torch.nn.Module, example_inputs: tuple, spec: tuple | None):
    """torch.export in eval mode, then decompose everything ember does not convert whole."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    fake_log.setLevel(logging.CRITICAL)  # torch logs every failing fake kernel; we re-raise
    try:
        with warnings.catch_warnings():
            for pattern in _TORCH_NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
            program = torch.export.export(module, example_inputs, dynamic_shapes=spec)
            if not needs_decomposition(program):
                return program  # every op is one ember converts: skip the costly retrace
            return program.run_decompositions(decomposition_table())
    except Exception as e:  # torch raises many types here; all mean "this call cannot trace"
        raise InputError(_export_failure(module, example_inputs, e)) from e
    finally:
        fake_log.setLevel(level)
        for m, training in modes.items():
            m.training = training


def _eager_failure(module: torch.nn.Module, example_inputs: tuple) -> str | None:
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            module(*example_inputs)
    except Exception as e:  # noqa: BLE001 (any failure of the user's forward is the answer)
        return f"{type(e).__name__}: {e}"
    finally:
        for m, training in modes.items():
            m.training = training
    return None


def needs_decomposition(program) -> bool:
    """Whether any op (also in control-flow bodies) is one ember does not convert as it is.

    In-place and other non-functional ops are never in the tables, so a graph without them is
    already functional and converting it directly gives the same result as after decomposing.
    """
    for gm in program.graph_module.modules():
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            name = target_name(node.target)
            if not (is_supported(name) or name == "operator.getitem"
                    or isinstance(node.meta.get("val"), (torch.SymInt, int))):
                return True
    return False


def decomposition_table() -> dict:
    """torch's default decompositions minus every op ember converts whole (linear, sdpa, gru)."""
    return dict(_decomposition_items())


@functools.lru_cache(maxsize=1)
def _decomposition_items() -> tuple:
    table = torch.export.default_decompositions()
    keep = set(ATEN_TO_EMBER) | set(CONVERTERS)
    return tuple((op, fn) for op, fn in table.items() if str(op) not in keep)


def _export_failure(module: torch.nn.Module, example_inputs: tuple, e: Exception) -> str:
    shapes = ", ".join(f"{x.dtype}{list(x.shape)}".replace("torch.", "") for x in example_inputs)
    text = str(e).strip()
    lines = text.splitlines()
    if len(lines) > 25:
        text = "\n".join(lines[:25] + [f"... ({len(lines) - 25} more lines)"])
    hint = ""
    if "specialized it to be a constant" in text:
        hint = ("\nA dim named in dynamic_dims is fixed by the model's code; leave it out of "
                "dynamic_dims or change the code that fixes it.")
    return (f"torch.export could not trace {type(module).__name__} with example inputs "
            f"({shapes}): {type(e).__name__}: {text}{hint}\nCheck that the example inputs have the "
            "shapes and dtypes the model's forward expects, and that forward runs eagerly on them.")


def import_program(program, names: list[str], symbols_spec: dict[int, dict[int, str]],
                   graph_name: str) -> Graph:
    for gm in program.graph_module.modules():  # unused results (e.g. batch-norm stats) go first
        if isinstance(gm, torch.fx.GraphModule):
            gm.graph.eliminate_dead_code()
    g = Graph(graph_name)
    symbols = Symbols()
    problems = Problems()
    sig = program.graph_signature
    placeholders: dict[str, Any] = {}
    user = 0
    for spec in sig.input_specs:
        arg = spec.arg.name
        kind = spec.kind.name
        if kind == "USER_INPUT":
            placeholders[arg] = ("input", user)
            user += 1
        elif kind in ("PARAMETER", "BUFFER"):
            placeholders[arg] = LazyConst(program.state_dict[spec.target] if spec.target in
                                          program.state_dict else program.constants[spec.target],
                                          spec.target)
        elif kind == "CONSTANT_TENSOR":
            placeholders[arg] = LazyConst(program.constants[spec.target], spec.target)
        else:
            problems.add(f"input kind {kind}", arg)
    user_nodes = [n for n in program.graph.nodes if n.op == "placeholder"
                  and isinstance(placeholders.get(n.name), tuple)]
    for i, node in enumerate(user_nodes):
        _bind_symbols(symbols, node.meta["val"], symbols_spec.get(i, {}), names[i])

    def bind(node):
        p = placeholders.get(node.name)
        if isinstance(p, tuple):
            return g.add_input(names[p[1]], symbols.tensor_type(node.meta["val"]))
        return p if p is not None else POISON

    importer = GraphImporter(g, symbols, problems)
    outputs = importer.run(program.graph, bind)
    results = []
    for spec, value in zip(sig.output_specs, outputs):
        if spec.kind.name != "USER_OUTPUT":
            problems.add(f"{spec.kind.name.lower()} of {spec.target}", "forward",
                         "the model mutates state during forward; ember graphs are pure")
        elif isinstance(value, LazyConst):
            results.append(value.get(g))
        else:
            results.append(value)
    if problems:
        raise unsupported_error(graph_name, problems)
    for r in results:
        if r is None or not hasattr(r, "type"):
            raise UnsupportedOpError(f"{graph_name}: forward returns {r!r}; ember graphs return "
                                     "tensors only", {"non-tensor output": ["forward"]})
    g.set_outputs(*results)
    drop_dead_consts(g)
    return g


def _bind_symbols(symbols: Symbols, val: torch.Tensor, dims: dict[int, str], name: str) -> None:
    for axis, symbol in dims.items():
        d = val.shape[axis]
        if not (isinstance(d, torch.SymInt) and d.node.expr.is_Symbol):
            raise InputError(f"dim {axis} of input {name!r} ({symbol!r}) did not stay dynamic "
                             f"in torch.export (it became {d}); the model fixes its size")
        known = symbols.names.setdefault(str(d.node.expr), symbol)
        if known != symbol:
            raise InputError(f"dynamic dims {known!r} and {symbol!r} (input {name!r}) must be "
                             "equal for this model; give them the same name")


def unsupported_error(graph_name: str, problems: Problems) -> UnsupportedOpError:
    total = sum(len(v) for v in problems.ops.values())
    head = f"cannot import {graph_name}: {len(problems.ops)} unsupported op(s), {total} occurrence(s):"
    lines = [head]
    for op, places in sorted(problems.ops.items()):
        reasons = "; ".join(sorted(problems.reasons.get(op, ())))
        if op in problems.origins:
            origin = "decomposed from " + ", ".join(sorted(problems.origins[op]))
            reasons = f"{origin}; {reasons}" if reasons else origin
        lines.append(f"  {op} x{len(places)}" + (f" ({reasons})" if reasons else ""))
        for place in places:
            lines.append(f"    at {place}")
    lines.append("Rewrite these parts with supported torch ops, or add a converter to "
                 "ember/frontends/torch (ATEN_TO_EMBER or @converts).")
    error = UnsupportedOpError("\n".join(lines), {k: list(v) for k, v in problems.ops.items()})
    error.type_errors = problems.type_errors  # type: ignore[attr-defined]
    return error


def snake_case(name: str) -> str:
    """DigitsMLP -> digits_mlp, DigitsViT -> digits_vit, MLPBlock -> mlp_block."""
    words: list[str] = []
    for i, c in enumerate(name):
        prev = name[i - 1] if i else ""
        nxt = name[i + 1] if i + 1 < len(name) else ""
        run = len(re.match(r"[A-Z]*", name[i:]).group())  # type: ignore[union-attr]
        starts = c.isupper() and i > 0 and (
            (not prev.isupper() and (nxt.islower() or run >= 2))
            or (prev.isupper() and nxt.islower()))
        if starts or not words:
            words.append(c)
        else:
            words[-1] += c
    out = "_".join(w.lower() for w in words if w.strip("_")) or "graph"
    out = re.sub(r"[^A-Za-z0-9_]", "_", out)
    return out if not out[0].isdigit() else "g_" + out
