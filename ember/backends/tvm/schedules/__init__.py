"""CPU schedules for the fused TIR kernels of a Relax module (TVM 0.27 schedules nothing on CPU).

    mod = apply_cpu_schedules(mod, target)   # after LegalizeOps/FuseOps/FuseTIR, before compile

Follows dlight: an ordered list of rules; each gets the PrimFunc and returns a schedule or None
("not mine"). The first schedule wins. A rule that raises is logged at debug level and the
function is kept unscheduled, so a scheduling gap costs speed, never correctness.
"""

from __future__ import annotations

import tvm
from tvm import tirx

from ..irmod import with_functions
from . import threads
from .common import CpuParams, cpu_params, log
from .conv2d import Conv2d
from .conv_packed import PackedConv2d, specialize_batches
from .elementwise import Elementwise
from .matmul import Matmul
from .packed import PackedMatmul
from .packed import prepack_weights as _prepack_matmul_weights
from .reduction import GenericReduction, RowReduction

# Conv2d before Matmul: a stride-1 conv also passes the GEMM trait test (y + ry is one index).
# PackedConv2d takes the convs the conv2d lowering built on a packed constant weight.
RULES = (PackedMatmul(), PackedConv2d(), Conv2d(), Matmul(), RowReduction(), GenericReduction(),
         Elementwise())

__all__ = ["RULES", "CpuParams", "apply_cpu_schedules", "cpu_params", "prepack_weights",
           "schedule_func"]


def prepack_weights(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """After legalization: constant GEMM weights packed (packed.py); packed convs (their
    weights were packed by the conv2d lowering) rebuilt for the static batches they are called
    with (conv_packed.py)."""
    if target.kind.name == "llvm":
        mod = specialize_batches(mod)
    return _prepack_matmul_weights(mod, target)


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False))


def schedule_func(
    func: tirx.PrimFunc, target: tvm.target.Target, params: CpuParams | None = None
) -> tuple[tirx.PrimFunc, str | None]:
    """(scheduled function, rule name), or (func, None) when no rule applied or all failed."""
    params = params or cpu_params(target)
    for rule in RULES:
        try:
            sch = rule.apply(func, target, params)
        except Exception as e:  # noqa: BLE001 - any failure means: keep the function as it was
            log.debug("schedule rule %s failed on %s: %s", rule.name, _name(func), e)
            continue
        if sch is not None:  # small work runs serially (see threads.py)
            scheduled = _threaded(rule, func, sch)
            return scheduled.with_attr("tirx.is_scheduled", True), rule.name
    return func, None


def _threaded(rule, func: tirx.PrimFunc, sch) -> tirx.PrimFunc:
    """threads.choose_threading, except for a rule that opts out of its run-time serial branch
    (`static_threading_only`) on a symbolic-size kernel: the branch's two bodies share the
    root-allocated intermediates, so TVM allocates them for the whole batch, not per image
    (packed conv: a batch-sized im2col buffer, 2x slower at batch 64)."""
    if getattr(rule, "static_threading_only", False):
        work = threads.block_work(func)
        if work is None or not isinstance(work, tirx.IntImm):
            return sch.mod["main"]
    return threads.choose_threading(func, sch, threads.PARALLEL_MIN_WORK)


def apply_cpu_schedules(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Schedule every PrimFunc a rule recognizes; other functions are returned unchanged."""
    if target.kind.name != "llvm":
        return mod
    params = cpu_params(target)
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
            continue
        new_func, rule = schedule_func(func, target, params)
        if rule is not None:
            updates[gvar] = new_func
            log.debug("scheduled %s with %s", gvar.name_hint, rule)
    return with_functions(mod, updates)


def _name(func: tirx.PrimFunc) -> str:
    if func.attrs is not None and "global_symbol" in func.attrs:
        return str(func.attrs["global_symbol"])
    return "<private PrimFunc>"
