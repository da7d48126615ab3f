"""Fold a reshape copy into the kernel that produces its input: `y = reshape(f(args))` becomes one
`call_tir(f', args)` whose output buffer already has y's shape.

Why: TVM's RewriteDataflowReshape turns a reshape kernel into a zero-copy view only for values
that are not function outputs (a view of a statically planned intermediate would be overwritten
by the next call). A model ending in a flatten/view, or in a permute that only moves size-1 axes
(seq_linear_rnn's [T, 1, d] -> [1, T, d]), therefore pays a copy kernel over its whole output:
256 MiB at T=65536, d=1024, where the linear_scan graph took 2.35x the time of the scan alone;
folded, it takes the scan's time.

The rewrite, for `x = call_tir(f, args, out=S1)` used only by `y = call_tir(r, (x,), out=S2)`:
  * `r` is a copy whose indices flatten to the same offsets (TVM's `has_reshape_pattern`, the
    analysis RewriteDataflowReshape uses; it proves, never guesses), both buffers compact;
  * `f` is a PrimFunc of the module with exactly one compact output buffer;
  * S2 written in f's own shape variables has the same element count as S1 (proved with the
    arithmetic analyzer, so a dynamic batch folds when `n*16*4 == n*64` is provable) and the
    new signature still defines every shape variable the old one did;
then f' is f with its output parameter re-declared with shape S2 and the old S1 buffer kept as
an alias over the same data (`DeclBuffer(old, data=new.data)`): same dtype, both compact row-major
and the same element count, so every store of the body lands on the byte the copy would have
put it on. The alias goes first inside the root block, so the body stays one root block (TVM's
RewriteDataflowReshape runs has_reshape_pattern on it, which requires that). f is cloned, never
mutated (other calls of f keep the original); the unused reshape kernels and originals are
dropped by dead-code elimination. Anything not provable is left alone (packed/extern calls,
strided buffers, a tuple whose item is read twice).

A producer with several outputs (the sequential ctrl.scan loop returns (carry, ys)) folds the
same way when the reshaped value is `x = t[k]`, `t = call_tir(f, args)`: f' declares output k
with y's shape, `t' = call_tir(f', args)`, `y = t'[k]`, and t's other items read from t'. Only
when t is used by item bindings of its block alone and x is its only item k.

When: `fold_output_reshapes` after the schedule stage, just before tvm.compile; the scheduled
loops are kept as they are and only store into renamed memory. Before scheduling it would cost
the schedules: ember's rules (and TVM's schedule state) expect the function body to be the
root block and a written output to be a parameter, so they reject or misread the aliased
kernel and it would run unscheduled. Scheduled kernels of symbolic size no longer prove to be
reshapes (fused `batch * 4` loops, threads.py's serial/parallel switch), hence
`mark_reshape_copies` tags them before the schedule stage. Tested on CPU builds only; nothing
in it is CPU-specific.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm.s_tir
import tvm_ffi
from tvm import relax, sym, tirx
from tvm.tirx.layout import S, TileLayout

from .irmod import with_functions

__all__ = ["RESHAPE_COPY_ATTR", "fold_output_reshapes", "is_reshape_copy",
           "mark_reshape_copies"]

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
RESHAPE_COPY_ATTR = "ember.reshape_copy"


def mark_reshape_copies(mod: tvm.IRModule) -> tvm.IRModule:
    """Reshape-copy kernels tagged with RESHAPE_COPY_ATTR while they are still in legalized form.

    Why: `has_reshape_pattern` proves a copy on the unscheduled loop nest; on a scheduled one
    with a symbolic size (fused `batch * 4` loop, the serial/parallel switch of threads.py) it
    cannot, so a dynamic-batch flatten would not fold. Run just before the schedule stage (after
    tuning records, which hash the kernels: an attribute would change their names)."""
    updates = {gv: f.with_attr(RESHAPE_COPY_ATTR, True) for gv, f in mod.functions_items()
               if isinstance(f, tirx.PrimFunc) and is_reshape_copy(f)}
    return with_functions(mod, updates)


def fold_output_reshapes(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` with every foldable `reshape(call_tir(...))` pair replaced by one call (see module
    docstring); `mod` itself when there is none. Run on the scheduled module, after
    `mark_reshape_copies` ran before the schedules (without it, only the reshapes whose
    scheduled form still proves to be a copy fold: static shapes)."""
    folder = _Folder(mod)
    updates = {}
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            new = folder.fold_function(func)
            if new is not None:
                updates[gv] = new
    if not updates:
        return mod
    for gv, func in updates.items():
        folder.builder.update_func(gv, func)
    mod = relax.transform.Normalize()(folder.builder.get())
    return relax.transform.DeadCodeElimination()(mod)


def is_reshape_copy(func: tirx.PrimFunc) -> bool:
    """A two-buffer PrimFunc that copies its input into its output at the same flat offsets,
    both compact (a reshape, flatten, squeeze, or a permute of size-1 axes); proved now, or
    tagged by `mark_reshape_copies` before scheduling."""
    if len(func.params) != 2 or not all(tirx.is_buffer_var(p) for p in func.params):
        return False
    src, dst = func.params
    if src.dtype != dst.dtype or not (_is_compact(src) and _is_compact(dst)):
        return False
    if func.attrs is not None and bool(func.attrs.get(RESHAPE_COPY_ATTR, False)):
        return True
    try:
        return bool(relax.analysis.has_reshape_pattern(func))
    except Exception:  # noqa: BLE001 - the analysis only reads block-form (legalized) kernels
        return False


@dataclass
class _Site:
    drop: tuple[int, ...]  # binding indices removed (the producer, a tuple-item binding)
    replace: dict[int, relax.VarBinding]  # binding index -> its new binding


class _Folder:
    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.builder = relax.BlockBuilder(mod)  # names new kernels uniquely, shares equal ones

    def fold_function(self, func: relax.Function) -> relax.Function | None:
        body = func.body
        if not isinstance(body, relax.SeqExpr):
            return None
        blocks, changed = [], False
        for block in body.blocks:
            sites = self._sites(block, body)
            if not sites:
                blocks.append(block)
                continue
            changed = True
            drop = {i for s in sites for i in s.drop}
            replace = {i: nb for s in sites for i, nb in s.replace.items()}
            bindings = [replace.get(i, b) for i, b in enumerate(block.bindings) if i not in drop]
            kind = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) \
                else relax.BindingBlock
            blocks.append(kind(bindings, block.span))
        if not changed:
            return None
        return relax.Function(func.params, relax.SeqExpr(blocks, body.body, body.span),
                              func.ret_ty, func.is_pure, func.attrs, func.span)

    def _sites(self, block, seq: relax.SeqExpr) -> list[_Site]:
        bindings = list(block.bindings)
        index = {b.var: i for i, b in enumerate(bindings) if isinstance(b, relax.VarBinding)}
        sites, taken = [], set()
        for ri, b in enumerate(bindings):
            reshape = self._prim_call(b)
            if reshape is None or not is_reshape_copy(reshape[0]):
                continue
            args = reshape[1]
            if len(args) != 1 or args[0] not in index:
                continue
            x = args[0]
            if _used_elsewhere(x, ri, bindings, seq):
                continue
            xi = index[x]
            item = bindings[xi].value
            if isinstance(item, relax.TupleGetItem):  # x = f(...)[k]: one output of several
                site = self._tuple_site(bindings, index, seq, ri, xi, item)
            else:
                site = self._plain_site(bindings, xi, ri, x)
            if site is None or taken & ({ri} | set(site.drop) | set(site.replace)):
                continue  # (a chain of reshapes: one fold per call)
            sites.append(site)
            taken.update({ri} | set(site.drop) | set(site.replace))
        return sites

    def _plain_site(self, bindings, pi: int, ri: int, x) -> _Site | None:
        """y = r(x), x = f(args) with one output: y = f'(args)."""
        producer = self._prim_call(bindings[pi])
        if producer is None:
            return None
        y = bindings[ri].var
        call = self._folded_call(bindings[pi].value, producer, [x.ty], 0, y.ty)
        return None if call is None else _Site((pi,), {ri: relax.VarBinding(y, call)})

    def _tuple_site(self, bindings, index, seq, ri: int, xi: int, item) -> _Site | None:
        """y = r(x), x = t[k], t = f(args) with several outputs (the sequential ctrl.scan
        loop's (carry, ys)): t' = f'(args) whose k-th output has y's shape, y = t'[k], and the
        other items of t read from t'. Only when t is used by item bindings of this block alone
        and x is its only item k."""
        t, k = item.tuple_value, int(item.index)
        if t not in index or not isinstance(t.ty, relax.TupleType):
            return None
        pi = index[t]
        producer = self._prim_call(bindings[pi])
        if producer is None:
            return None
        items = {}
        for i, b in enumerate(bindings):
            if i == pi or t not in relax.analysis.used_vars(b.value):
                continue
            if not isinstance(b.value, relax.TupleGetItem) or not b.value.tuple_value.same_as(t) \
                    or (int(b.value.index) == k and i != xi):
                return None
            items[i] = b
        if _used_outside(t, bindings, seq):
            return None
        y = bindings[ri].var
        fields = list(t.ty.fields)
        call = self._folded_call(bindings[pi].value, producer, fields, k, y.ty)
        if call is None:
            return None
        fields[k] = y.ty
        kind = relax.DataflowVar if isinstance(t, relax.DataflowVar) else relax.Var
        t2 = kind(t.name, relax.TupleType(fields))
        replace = {pi: relax.VarBinding(t2, call), ri: relax.VarBinding(y, relax.TupleGetItem(t2, k))}
        for i, b in items.items():
            if i != xi:
                replace[i] = relax.VarBinding(b.var, relax.TupleGetItem(t2, int(b.value.index)))
        return _Site((xi,), replace)

    def _prim_call(self, binding) -> tuple[tirx.PrimFunc, list] | None:
        """(PrimFunc, args) of a `call_tir` of a module PrimFunc, else None."""
        if not isinstance(binding, relax.VarBinding):
            return None
        call = binding.value
        if not isinstance(call, relax.Call) or not call.op.same_as(_CALL_TIR):
            return None
        gv, args = call.args[0], call.args[1]
        if not isinstance(gv, tvm.ir.GlobalVar) or not isinstance(args, relax.Tuple):
            return None
        func = self.mod[gv] if gv in self.mod.get_global_vars() else None
        if not isinstance(func, tirx.PrimFunc):
            return None
        return func, list(args.fields)

    def _folded_call(self, call: relax.Call, producer, outs: list, k: int,
                     y_ty) -> relax.Call | None:
        """call_tir of f' (f with output k declared with y's shape; `outs`: f's output types)
        returning `outs` with y's type at k."""
        func, args = producer
        if not isinstance(y_ty, relax.TensorType) \
                or not all(isinstance(o, relax.TensorType) for o in outs):
            return None
        new = _with_output_shape(func, args, [_shape(o) for o in outs], k, _shape(y_ty),
                                 y_ty.dtype)
        if new is None:
            return None
        gv = self._add_prim(call.args[0].name_hint, new)
        out_ty = y_ty if len(outs) == 1 else [y_ty if i == k else o for i, o in enumerate(outs)]
        return relax.call_tir(gv, call.args[1], out_ty=out_ty)

    def _add_prim(self, base: str, func: tirx.PrimFunc) -> tvm.ir.GlobalVar:
        if func.attrs is not None and "global_symbol" in func.attrs:
            func = func.without_attr("global_symbol")  # the builder names it
        return self.builder.add_func(func, f"{base}_out")


def _used_elsewhere(x, reshape_index: int, bindings, seq: relax.SeqExpr) -> bool:
    """x appears anywhere but as the reshape's argument: another binding, or any block or the
    result of the function (a DataflowVar cannot leave its block, a plain Var can)."""
    return any(i != reshape_index and x in relax.analysis.used_vars(b.value)
               for i, b in enumerate(bindings)) or _used_outside(x, bindings, seq)


def _used_outside(x, bindings, seq: relax.SeqExpr) -> bool:
    """x is read by another block than the one of `bindings`, or by the function's result."""
    others = [b for blk in seq.blocks for b in blk.bindings if b not in bindings]
    return any(x in relax.analysis.used_vars(b.value) for b in others) \
        or x in relax.analysis.used_vars(seq.body)


def _shape(ty: relax.TensorType) -> list | None:
    shape = ty.shape
    if shape is None or not isinstance(shape, relax.ShapeExpr):
        return None
    return list(shape.values)


def _with_output_shape(func: tirx.PrimFunc, args: list, outs: list, k: int, s2,
                       dtype) -> tirx.PrimFunc | None:
    """`func` whose output buffer k (of len(outs) outputs, Relax shapes `outs`) is declared with
    Relax shape `s2`, the old one aliased over the same data; None unless provably the same
    compact bytes."""
    params = list(func.params)
    if any(o is None for o in outs) or s2 is None or len(params) != len(args) + len(outs):
        return None
    at = len(args) + k
    out = params[at]
    if not tirx.is_buffer_var(out) or str(out.dtype) != str(dtype) or not _is_compact(out):
        return None
    new_shape = _to_prim_shape(params, args, outs, at, s2)
    if new_shape is None:
        return None
    if not sym.Analyzer().can_prove_equal(_product(out.shape), _product(new_shape)):
        return None
    new_out = tirx.decl_buffer(new_shape, out.dtype, out.name, scope=out.scope(),
                               elem_offset=out.elem_offset,
                               data_alignment=out.data_alignment,
                               offset_factor=out.offset_factor,
                               layout=None if out.layout is None else "default")
    new_params = params[:at] + [new_out] + params[at + 1:]
    if not _defined_vars(params) <= _defined_vars(new_params):
        return None  # a shape variable only the old output defined: the call could not bind it
    alias = tirx.DeclBuffer(out, data=tirx.buffer_data(new_out))
    return tirx.PrimFunc(new_params, _prepend(alias, func.body), func.ret_type, func.attrs,
                         func.span)


def _prepend(stmt, body):
    """`stmt; body`, inside the root block when there is one: TVM's analyses of block kernels
    (RewriteDataflowReshape's has_reshape_pattern) require the body to be the root block."""
    if isinstance(body, tvm.s_tir.SBlockRealize):
        b = body.block
        block = tvm.s_tir.SBlock(b.iter_vars, b.reads, b.writes, b.name_hint,
                                 _prepend(stmt, b.body), b.init, b.alloc_buffers,
                                 b.match_buffers, b.annotations, b.span)
        return tvm.s_tir.SBlockRealize(body.iter_values, body.predicate, block, body.span)
    stmts = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]
    return tirx.SeqStmt([stmt, *stmts])


def _to_prim_shape(params, args, outs, at: int, s2) -> list | None:
    """`s2` (Relax shape variables) rewritten in the PrimFunc's own shape variables, matched the
    way call_tir binds them (argument and output shapes to parameter buffer shapes); None if
    some variable of s2 does not appear plainly in the call."""
    binder = sym.Analyzer()
    bound: set = set()
    pairs = [(p, _shape(a.ty) if isinstance(a.ty, relax.TensorType) else None)
             for p, a in zip(params, args) if tirx.is_buffer_var(p)]
    pairs += list(zip(params[len(args):], outs))
    for param, shape in pairs:
        if shape is None or len(shape) != len(param.shape):
            continue
        for rd, pd in zip(shape, param.shape):
            if isinstance(rd, tirx.Var) and rd not in bound:
                binder.bind(rd, pd)
                bound.add(rd)
    prim_vars = [v for p in params for v in _vars_of(p)]
    out_dtype = str(params[at].shape[0].ty) if len(params[at].shape) else "int64"
    result = []
    for d in s2:
        if isinstance(d, tirx.IntImm):
            result.append(tirx.IntImm(out_dtype, int(d)))
            continue
        pd = binder.simplify(d)
        if tirx.analysis.undefined_vars(pd, prim_vars) or str(pd.ty) != out_dtype:
            return None
        result.append(pd)
    return result


def _vars_of(param) -> list:
    if not tirx.is_buffer_var(param):
        return [param]
    return [v for d in param.shape for v in tirx.analysis.undefined_vars(d, [])]


def _defined_vars(params) -> set:
    """Shape variables a call binds: scalar params and plain-variable buffer dims."""
    out = set()
    for p in params:
        if not tirx.is_buffer_var(p):
            out.add(p)
        else:
            out.update(d for d in p.shape if isinstance(d, tirx.Var))
    return out


def _product(shape):
    total = tirx.IntImm(str(shape[0].ty), 1) if len(shape) else 1
    for d in shape:
        total = total * d
    return total


def _is_compact(buf) -> bool:
    """Row-major, no strides or offset: flat offset = the usual mixed-radix index."""
    if len(buf.strides) or not isinstance(buf.elem_offset, tirx.IntImm) \
            or int(buf.elem_offset) != 0:
        return False
    layout = buf.layout
    return layout is None or tvm_ffi.structural_equal(layout, TileLayout(S[tuple(buf.shape)]))
