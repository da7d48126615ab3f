"""CPU schedules for the fused TIR kernels of a Relax module (TVM 0.27 schedules nothing on CPU).

    mod = apply_cpu_schedules(mod, target)   # after LegalizeOps/FuseOps/FuseTIR, before compile

Follows dlight: an ordered list of rules; each gets the PrimFunc and returns a schedule or None
("not mine"). The first schedule wins. A rule that raises is logged at debug level and the
function is kept unscheduled, so a scheduling gap costs speed, never correctness.
"""

from __future__ import annotations

import tvm
from tvm import tirx

from . import threads
from .common import CpuParams, cpu_params, log
from .conv2d import Conv2d
from .elementwise import Elementwise
from .matmul import Matmul
from .packed import PackedMatmul, prepack_weights
from .reduction import GenericReduction, RowReduction

# Conv2d first: a stride-1 conv also passes the GEMM trait test (y + ry is one index).
RULES = (PackedMatmul(), Conv2d(), Matmul(), RowReduction(), GenericReduction(), Elementwise())

__all__ = ["RULES", "CpuParams", "apply_cpu_schedules", "cpu_params", "prepack_weights",
           "schedule_func"]


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
            scheduled = threads.choose_threading(func, sch, threads.PARALLEL_MIN_WORK)
            return scheduled.with_attr("tirx.is_scheduled", True), rule.name
    return func, None


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
    if not updates:
        return mod
    mod = mod.clone()  # the caller's module stays as it was
    for gvar, func in updates.items():
        mod.update_func(gvar, func)
    return mod


def _name(func: tirx.PrimFunc) -> str:
    if func.attrs is not None and "global_symbol" in func.attrs:
        return str(func.attrs["global_symbol"])
    return "<private PrimFunc>"
