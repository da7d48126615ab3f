"""exp / tanh / erf / sigmoid in EVERY CPU kernel as vector math, not scalar libm calls.

Why: TVM 0.27's LowerIntrin turns `T.exp` on llvm into `llvm.exp.*`, which LLVM scalarizes into
one `expf` call per lane (`erff` likewise; `tanh` and `sigmoid` are built on exp). The lowerings
that know their shapes build on lowering/fastmath.py directly (softmax, activations on static
shapes, the fused attention kernel), but a kernel TVM legalizes from a Relax op on a symbolic
shape (a dynamic-batch softmax or GELU: FuseTIR cannot take a TE stage emitted at lowering
there, see fastmath.applies), a fused GRU gate or anything else keeps the libm calls.

This module replaces TVM's llvm intrinsic rules for the four float32 ops by fastmath's
expressions (same accuracy contract: exp within ~1 ulp, tanh/erf a few ulp, inf/NaN/overflow
as libm), at the one place every kernel passes through after vectorization. LowerIntrin hands
the rule a vector call (`float32x8`) where the loop was vectorized, so the math stays vector.

The rules are registered once per process but act only inside `fast_intrinsics()` (ember's
build wraps its compile stage in it); outside, a rule defers to TVM's own lowering, so other
TVM users in the process see no change. `EMBER_FAST_MATH=0` turns it off.

A call nested in another's operand (GRU's candidate gate tanh(x + sigmoid(y) * z)) cannot take
the fast rule as it stands (see `_nests`), so `materialize_nested` first computes each inner
call into a one-element stack buffer (a register after LLVM's mem2reg) and the outer call reads
it back: then no operand holds a call and both are fast (digits_gru's cell kernel at batch 64:
20.4 -> 5.1 us; the model 0.227 -> 0.107 ms). It runs at the end of TVM's TIR
pipeline (after vectorization, before LowerIntrin), registered the same way as the rules: once
per process, acting only inside `fast_intrinsics()`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import tvm
import tvm.ir.prim.expr as _prim
from tvm import tirx

from .lowering import fastmath

__all__ = ["active", "fast_intrinsics", "materialize_nested", "register"]

_RULE_LEVEL = 30  # above TVM's own llvm rules (level 10), so ours is the one LowerIntrin finds
_OPS = {"tirx.exp": fastmath.fast_exp, "tirx.tanh": fastmath.fast_tanh,
        "tirx.erf": fastmath.fast_erf, "tirx.sigmoid": fastmath.fast_sigmoid}

_lock = threading.Lock()
_depth = 0  # builds inside fast_intrinsics() now (any thread: codegen may run on workers)
_registered = False


def active() -> bool:
    return _depth > 0


_BINARY = (_prim.BinaryOpExpr, _prim.CmpExpr, _prim.And, _prim.Or)  # fields a, b
_LEAVES = (tirx.Var, tirx.IntImm, tirx.FloatImm, tvm.ir.expr.TensorLoad, tirx.Ramp)


def _operands(e) -> list | None:
    """The sub-expressions of `e` for the node kinds a lowered CPU kernel's float math is built
    of ([] for a leaf); None for any other node (a Let, or one not known here)."""
    if isinstance(e, _LEAVES):
        return []
    if isinstance(e, _BINARY):
        return [e.a, e.b]
    if isinstance(e, (_prim.Not, _prim.BitwiseNot)):
        return [e.a]
    if isinstance(e, (tirx.Cast, tirx.Broadcast)):
        return [e.value]
    if isinstance(e, tirx.Select):
        return [e.condition, e.true_value, e.false_value]
    if isinstance(e, tvm.ir.Call) and isinstance(e.op, tvm.ir.Op):
        return list(e.args)
    return None


def _with_operands(e, ops: list):
    """`e` rebuilt over `ops` (the list `_operands(e)` gave, some replaced); `e` if unchanged."""
    if all(a.same_as(b) for a, b in zip(ops, _operands(e))):
        return e
    if isinstance(e, (_BINARY, _prim.Not, _prim.BitwiseNot)):
        return type(e)(*ops)
    if isinstance(e, tirx.Cast):
        return tirx.Cast(e.ty, ops[0])
    if isinstance(e, tirx.Broadcast):
        return tirx.Broadcast(ops[0], e.lanes)
    if isinstance(e, tirx.Select):
        return tirx.Select(*ops)
    return tvm.ir.Call(e.op, ops, e.attrs, ret_ty=e.ty)


def _nests(e) -> bool:
    """Whether `e` holds another exp/tanh/erf/sigmoid call, a Let, or a node not known here.

    Why the outer call then keeps TVM's lowering: fastmath binds operands with Lets, and TVM's
    LLVM codegen `Analyzer::Bind`s every Let value, substituting earlier bound vars into later
    values, so simplifying a chain re-expands it: exponential in the depth of the chain. One
    fast function compiles in milliseconds; one nested in another's operand (GRU's
    tanh(x + sigmoid(y) * z)) made one kernel take 34 s to compile (flattening the Lets into
    one chain still took 21 s). The inner calls stay fast: LowerIntrin visits them next."""
    ops = _operands(e)
    if ops is None:
        return True  # a Let or an unknown node: assume the worst
    if isinstance(e, tvm.ir.Call) and e.op.name in _OPS:
        return True
    return any(_nests(a) for a in ops)


def _make_rule(op_name: str, fast, previous):
    def rule(call):
        if (_depth > 0 and len(call.args) == 1 and fastmath.supported(call.ty.dtype)
                and not _nests(call.args[0])):
            return fast(call.args[0])
        if previous is not None:  # TVM's own llvm rule
            return previous(call)
        return call  # unchanged: LowerIntrin goes on to the default rules

    rule.__name__ = f"ember_fast_{op_name.split('.')[-1]}"
    return rule


def _is_fast_call(e) -> bool:
    return (isinstance(e, tvm.ir.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name in _OPS
            and len(e.args) == 1 and fastmath.supported(e.ty.dtype))


def _innermost_nested(e, inside: bool = False, found: list | None = None) -> list:
    """The fast-lowerable calls of `e` that sit in another such call's operand and hold none
    themselves (hoisting them removes one level of nesting); nodes `_operands` does not know
    are not searched (left alone, as before)."""
    found = [] if found is None else found
    if _is_fast_call(e) and inside and not _nests(e.args[0]):
        if not any(e.same_as(f) for f in found):  # a subtree TE inlined twice: once
            found.append(e)
        return found
    for a in _operands(e) or []:
        _innermost_nested(a, inside or _is_fast_call(e), found)
    return found


def _replace(e, old, new):
    """`e` with the node `old` (by identity) replaced by `new`; rebuilds only what changed."""
    if e.same_as(old):
        return new
    ops = _operands(e)
    return e if not ops else _with_operands(e, [_replace(a, old, new) for a in ops])


def _materialize_store(store, counter: list[int]):
    """`store` preceded by one local buffer per nested call (innermost first); None if none."""
    value, pre = store.value, []
    while True:
        inner = _innermost_nested(value)
        if not inner:
            break
        for call in inner:
            counter[0] += 1
            # "global": LowerTVMBuiltin keeps a small constant-size global allocation on the
            # stack (an entry-block alloca that LLVM promotes to a register); a "local" one
            # would become a TVMBackendAllocWorkspace call per iteration. Not a Let: the LLVM
            # codegen's analyzer re-simplifies a Let value that holds fast math's own Lets, and
            # binds their variables twice.
            tmp = tirx.decl_buffer((1,), call.ty.dtype, f"ember_fastmath_{counter[0]}",
                                   scope="global")
            zero = [tirx.IntImm("int32", 0)]
            pre += [tirx.AllocBuffer(tmp), tirx.BufferStore(tmp, call, zero)]
            value = _replace(value, call, tirx.BufferLoad(tmp, zero))
    if not pre:
        return None
    return tirx.SeqStmt([*pre, tirx.BufferStore(store.buffer, value, store.indices, store.span)])


def _rewrite(stmt, counter: list[int]):
    """`stmt` with `_materialize_store` applied to every store reached through the statement
    kinds a lowered CPU kernel nests stores in; others are left as they are."""
    if isinstance(stmt, tirx.BufferStore):
        return _materialize_store(stmt, counter) or stmt
    if isinstance(stmt, tirx.SeqStmt):
        parts = [_rewrite(s, counter) for s in stmt.seq]
        return stmt if all(a.same_as(b) for a, b in zip(parts, stmt.seq)) \
            else tirx.SeqStmt(parts, stmt.span)
    if isinstance(stmt, tirx.For):
        body = _rewrite(stmt.body, counter)
        return stmt if body.same_as(stmt.body) else tirx.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
            stmt.annotations, stmt.step, stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        then = _rewrite(stmt.then_case, counter)
        other = None if stmt.else_case is None else _rewrite(stmt.else_case, counter)
        same = then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case))
        return stmt if same else tirx.IfThenElse(stmt.condition, then, other, stmt.span)
    if isinstance(stmt, tirx.AttrStmt):
        body = _rewrite(stmt.body, counter)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(
            stmt.node, stmt.attr_key, stmt.value, body, stmt.span)
    if isinstance(stmt, tirx.While):
        body = _rewrite(stmt.body, counter)
        return stmt if body.same_as(stmt.body) else tirx.While(stmt.condition, body, stmt.span)
    return stmt


def materialize_nested(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with every exp/tanh/erf/sigmoid call that sits in another's operand computed
    into a local temporary first (see the module docstring); `func` itself if none does."""
    body = _rewrite(func.body, [0])
    if body.same_as(func.body):
        return func
    return tirx.PrimFunc(func.params, body, func.ret_type, func.attrs, func.span)


@tvm.tirx.transform.prim_func_pass(opt_level=0, name="EmberMaterializeNestedMath")
def _materialize_pass(func, _mod, _ctx):
    return materialize_nested(func) if _depth > 0 else func


def _wrap_pipeline(factory):
    """TVM's TIR pipeline factory, followed by `_materialize_pass` (before finalization)."""
    def wrapped(**kwargs):
        pipeline, finalize_host, finalize_device = factory(**kwargs)
        return (tvm.transform.Sequential([pipeline, _materialize_pass]), finalize_host,
                finalize_device)

    return wrapped


def register() -> None:
    """Install the rules and the nested-call pass (once per process; idempotent)."""
    global _registered
    with _lock:
        if _registered:
            return
        for op_name, fast in _OPS.items():
            op = tvm.ir.Op.get(op_name)
            previous = op.get_attr("llvm.FLowerIntrinsic")
            tvm.ir.register_op_attr(op_name, "llvm.FLowerIntrinsic",
                                    _make_rule(op_name, fast, previous), level=_RULE_LEVEL)
        pipelines = tvm.tirx.compilation_pipeline.PIPELINE_MAP
        if "s_tir" in pipelines:  # the CPU default (`get_default_tir_pipeline`)
            pipelines["s_tir"] = _wrap_pipeline(pipelines["s_tir"])
        _registered = True


@contextlib.contextmanager
def fast_intrinsics(enabled: bool = True) -> Iterator[None]:
    """Within this block, llvm builds lower float32 exp/tanh/erf/sigmoid to fastmath."""
    global _depth
    enabled = enabled and os.environ.get("EMBER_FAST_MATH", "1") != "0"
    if not enabled:
        yield
        return
    register()
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
