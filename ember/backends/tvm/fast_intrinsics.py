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

__all__ = ["active", "fast_intrinsics", "register"]

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


def _nests(e) -> bool:
    """Whether `e` holds another exp/tanh/erf/sigmoid call, a Let, or a node not known here.

    Why the outer call then keeps TVM's lowering: fastmath binds operands with Lets, and TVM's
    LLVM codegen `Analyzer::Bind`s every Let value, substituting earlier bound vars into later
    values, so simplifying a chain re-expands it: exponential in the depth of the chain. One
    fast function compiles in milliseconds; one nested in another's operand (GRU's
    tanh(x + sigmoid(y) * z)) made one kernel take 34 s to compile (flattening the Lets into
    one chain still took 21 s). The inner calls stay fast: LowerIntrin visits them next."""
    if isinstance(e, _LEAVES):
        return False
    if isinstance(e, _BINARY):
        return _nests(e.a) or _nests(e.b)
    if isinstance(e, (_prim.Not, _prim.BitwiseNot)):
        return _nests(e.a)
    if isinstance(e, (tirx.Cast, tirx.Broadcast)):
        return _nests(e.value)
    if isinstance(e, tirx.Select):
        return _nests(e.condition) or _nests(e.true_value) or _nests(e.false_value)
    if isinstance(e, tvm.ir.Call) and isinstance(e.op, tvm.ir.Op):
        return e.op.name in _OPS or any(_nests(a) for a in e.args)
    return True  # a Let or an unknown node: assume the worst


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


def register() -> None:
    """Install the rules (once per process; idempotent)."""
    global _registered
    with _lock:
        if _registered:
            return
        for op_name, fast in _OPS.items():
            op = tvm.ir.Op.get(op_name)
            previous = op.get_attr("llvm.FLowerIntrinsic")
            tvm.ir.register_op_attr(op_name, "llvm.FLowerIntrinsic",
                                    _make_rule(op_name, fast, previous), level=_RULE_LEVEL)
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
