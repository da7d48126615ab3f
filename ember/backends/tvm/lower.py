"""Lower an ember graph to a Relax IRModule: one function whose params are the graph inputs.

Symbolic dims become int64 TIR variables shared by every tensor that names them (so one build
serves every batch size); weights become Relax constants, baked into the compiled library.
Each op goes through the lowering table (`lowering/<family>.py`); kinds without an entry are
expanded with the registry's `decompose` when it has one. The result types of every lowered op
are checked against ember's inferred types, so a wrong lowering fails here, naming the op,
instead of producing wrong numbers later.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax

from ...errors import EmberError, LoweringError
from ...ir import Graph, Op
from .lowering import LOWERINGS, UNSUPPORTED, LowerContext, tvm_dtype

_ADVICE = ("fix or add its lowering in ember/backends/tvm/lowering/<family>.py (or a `decompose` "
           "in its registry schema); meanwhile the graph still runs with ember.interpret or the "
           "torch backend")


def lower(graph: Graph, name: str = "main", target=None, specialize: bool = True
          ) -> tvm.IRModule:
    """The Relax IRModule for `graph`, with one function `name` (inputs -> tensor or tuple).

    `target` (a name, dict or TargetSpec) is active while lowering, so ops with ISA-specific
    kernels (int8 GEMM, bit-packed GEMM) pick the kernel for that target, not for this host.
    With `specialize`, a graph whose first input has a symbolic leading dim also gets
    `{name}_b1`, the same function with that dim bound to 1 (see `batch1_name`).
    """
    check_lowerable(graph)
    bb = relax.BlockBuilder()
    if target is None:
        lower_into(bb, graph, name)
    else:
        from .targets import resolve

        with resolve(target).tvm_target():
            lower_into(bb, graph, name)
    mod = bb.get()
    if specialize:
        mod = specialize_batch1(mod, graph, name)
    try:
        relax.analysis.well_formed(mod)
    except Exception as e:  # noqa: BLE001 (TVM raises many types; wrapped below)
        raise LoweringError(f"lowering @{graph.name} produced an ill-formed Relax module "
                            f"({short_error(e)}); a symbolic dim used inside the graph may not be "
                            f"bound by any input (input types: {_types(graph.inputs)})") from None
    return mod


def batch1_name(name: str = "main") -> str:
    """The batch-1 specialization of function `name`; the runtime calls it for batch-1 inputs.

    Why: batch 1 is the latency case, and with a symbolic batch every kernel is generic: GEMM
    register tiles are padded to 6 rows (6x the work of a GEMV), intermediates are allocated per
    call, and no schedule can know the work is too small to parallelize. Binding the batch to 1
    makes all of these static (digits_mlp: 10.5 -> 4.8 us per VM call). The constants are shared
    with the generic function; only the kernels are compiled twice.
    """
    return f"{name}_b1"


def specialize_batch1(mod: tvm.IRModule, graph: Graph, name: str = "main") -> tvm.IRModule:
    """Add `batch1_name(name)`: `name` with the first input's leading symbolic dim bound to 1."""
    if not graph.inputs or not graph.inputs[0].type.shape:
        return mod
    dim = graph.inputs[0].type.shape[0]
    if not isinstance(dim, str) or not dim.isidentifier():
        return mod
    try:
        func = mod[name].bind_symbolic_vars({dim: 1})
    except Exception:  # noqa: BLE001 - e.g. the name is ambiguous: no specialization
        return mod
    mod = mod.clone() if hasattr(mod, "clone") else mod
    mod[batch1_name(name)] = func.with_attr("global_symbol", batch1_name(name))
    return mod


def check_lowerable(graph: Graph) -> None:
    """Raise one LoweringError listing every op kind that has neither a lowering nor a decompose."""
    bad: dict[str, list[str]] = {}
    for op in graph.walk():
        if op.kind not in LOWERINGS and not op.schema.has_decompose:
            bad.setdefault(op.kind, []).append(op.loc or "?")
    if not bad:
        return
    lines = []
    for kind, locs in sorted(bad.items()):
        reason = UNSUPPORTED.get(kind, "no TVM lowering and no decompose")
        where = ", ".join(locs[:3]) + (f" (+{len(locs) - 3} more)" if len(locs) > 3 else "")
        lines.append(f"  {kind} x{len(locs)} at {where}: {reason}")
    err = LoweringError(f"@{graph.name} uses op kinds the TVM backend cannot lower:\n"
                        + "\n".join(lines) + f"\nTo proceed: {_ADVICE}.")
    err.ops = {k: UNSUPPORTED.get(k, "no lowering") for k in bad}  # type: ignore[attr-defined]
    raise err


def lower_into(bb: relax.BlockBuilder, graph: Graph, name: str) -> relax.GlobalVar:
    """Add function `name` for `graph` to an existing builder (tests batch many in one module)."""
    cx = LowerContext(bb)
    params = [relax.Var(v.name or f"arg{i}", cx.tensor_type(v.type))
              for i, v in enumerate(graph.inputs)]
    for v in graph.inputs:
        for d in v.type.shape:
            if isinstance(d, str) and not d.isidentifier():
                raise LoweringError(f"input {v.name!r} has compound dim {d!r} ({v.type}); graph "
                                    "inputs need plain symbols (e.g. 'batch') so TVM can bind them")
    with bb.function(name, params):
        with bb.dataflow():
            env: dict[int, Any] = {id(v): p for v, p in zip(graph.inputs, params)}
            lower_ops(cx, graph.ops, env)
            outs = [env[id(v)] for v in graph.outputs]
            result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        return bb.emit_func_output(result)


def lower_ops(cx: LowerContext, ops: list[Op], env: dict[int, Any]) -> None:
    for op in ops:
        outs = lower_op(cx, op, [env[id(v)] for v in op.inputs])
        for r, o in zip(op.results, outs):
            env[id(r)] = o


def lower_op(cx: LowerContext, op: Op, args: list[Any]) -> list[Any]:
    """Emit one op; returns one Relax value per ember result, type-checked."""
    fn = LOWERINGS.get(op.kind)
    if fn is None:
        return _lower_decomposed(cx, op, args)
    try:
        out = fn(cx, op, *op.schema.bind_inputs(args), **op.attrs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        outs = [o if isinstance(o, (relax.Var, tvm.ir.GenericConst)) else cx.emit(o) for o in outs]
    except EmberError as e:
        raise LoweringError(f"{describe(op)}: {e}") from None
    except Exception as e:  # noqa: BLE001 (TVM raises many types; wrapped below)
        raise LoweringError(f"{describe(op)}: TVM rejected the lowering: {short_error(e)}\n"
                            f"To proceed: {_ADVICE}.") from None
    _check_types(op, outs)
    return outs


def _lower_decomposed(cx: LowerContext, op: Op, args: list[Any]) -> list[Any]:
    """Expand `op` with its registry decompose in a scratch graph, then lower the pieces."""
    scratch = Graph(f"{op.kind}_decomposed")
    ins = [scratch.add_input(f"in{i}", v.type) for i, v in enumerate(op.inputs)]
    clone = Op(op.kind, ins, op.attrs, [r.type for r in op.results], op.regions, op.loc)
    scratch.insert(clone)
    with scratch.at(before=clone):
        new = op.schema._decompose(scratch, clone)
    if new is None:
        reason = UNSUPPORTED.get(op.kind, "its decompose does not apply to these types")
        raise LoweringError(f"{describe(op)}: no TVM lowering, and {reason}.\n"
                            f"To proceed: {_ADVICE}.")
    env: dict[int, Any] = {id(v): a for v, a in zip(ins, args)}
    lower_ops(cx, [o for o in scratch.ops if o is not clone], env)
    return [env[id(v)] for v in (new if isinstance(new, (list, tuple)) else [new])]


def _check_types(op: Op, outs: list[Any]) -> None:
    if len(outs) != len(op.results):
        raise LoweringError(f"{describe(op)}: lowering returned {len(outs)} values for "
                            f"{len(op.results)} results")
    for r, o in zip(op.results, outs):
        ty = o.ty
        want = r.type
        got_shape = list(ty.shape) if getattr(ty, "shape", None) is not None else None
        ok = ty.dtype == tvm_dtype(want.dtype) and ty.ndim == want.rank
        if ok and got_shape is not None:
            for g, w in zip(got_shape, want.shape):
                if isinstance(w, int) and isinstance(g, tvm.tirx.IntImm) and int(g) != w:
                    ok = False
        if not ok:
            raise LoweringError(f"{describe(op)}: the lowering produced {ty} but ember infers "
                                f"{want} for result {r.index}; the lowering disagrees with the "
                                f"op's semantics. To proceed: {_ADVICE}.")


def describe(op: Op) -> str:
    loc = f" at {op.loc}" if op.loc else ""
    res = ", ".join(str(r.type) for r in op.results)
    attrs = ", ".join(f"{k}={v!r}" for k, v in op.attrs.items() if k != "value")
    return f"cannot lower {op.kind}{loc} ({_types(op.inputs)}) -> ({res})" + \
        (f" [{attrs}]" if attrs else "")


def _types(values) -> str:
    return ", ".join(str(v.type) for v in values)


def short_error(e: BaseException, limit: int = 300) -> str:
    """The informative part of a TVM error: its last non-trace lines, trimmed."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("File ", "at ", "#", "Traceback", "Stack"))
             and "/project/src/" not in ln[:40]] or lines
    text = " | ".join(lines[-3:])
    return f"{type(e).__name__}: " + (text[:limit] + "..." if len(text) > limit else text)
