"""Build a lowered Relax module for a target, and export it as one shared library.

Why an explicit pipeline: `tvm.compile` on a CPU target runs only the default lowering passes,
so nothing is fused unless we legalize and fuse first. The stages, each timed for the compile
report (`executable.ember_timings`, seconds):

    legalize   Relax ops -> TIR PrimFuncs, op patterns annotated, constants folded
    fuse       FuseOps + FuseTIR: one kernel per fused group
    schedule   ember.backends.tvm.schedules.apply_cpu_schedules (when installed), CPU only
    compile    tvm.compile: VM lowering, TIR passes, LLVM codegen
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import tvm
from tvm import relax

from ...errors import BuildError
from .lower import short_error
from .targets import TargetSpec, resolve

try:  # the CPU schedules package; builds run unscheduled (still fused) without it
    from .schedules import apply_cpu_schedules as _apply_cpu_schedules
except ModuleNotFoundError as e:  # only its absence; a broken schedules package must not hide
    if e.name != f"{__package__}.schedules":
        raise
    _apply_cpu_schedules = None


def legalize_passes() -> list:
    return [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan(),
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant()]


def fuse_passes() -> list:
    return [relax.transform.FuseOps(), relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination()]


def build(mod: tvm.IRModule, target: TargetSpec | str | dict, *, schedule: bool = True):
    """Compile `mod` for `target`; returns the TVM executable with `ember_timings` attached.

    `schedule=False` skips the CPU schedules (to tell a scheduling bug from a lowering bug).
    """
    spec = resolve(target)
    tgt = spec.tvm_target()
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[Any], Any], arg: Any) -> Any:
        t0 = time.perf_counter()
        try:
            with tgt:
                return fn(arg)
        except BuildError:
            raise
        except Exception as e:  # noqa: BLE001 (TVM raises many types; wrapped below)
            raise _build_error(name, e, arg, tgt, spec) from None
        finally:
            timings[name] = time.perf_counter() - t0

    mod = stage("legalize", tvm.transform.Sequential(legalize_passes()), mod)
    mod = stage("fuse", tvm.transform.Sequential(fuse_passes()), mod)
    if schedule and spec.is_cpu and _apply_cpu_schedules is not None:
        mod = stage("schedule", lambda m: _apply_cpu_schedules(m, tgt), mod)
    else:
        timings["schedule"] = 0.0
    ex = stage("compile", lambda m: tvm.compile(m, target=tgt), mod)
    ex.ember_timings = timings
    ex.ember_target = spec
    ex.ember_scheduled = bool(schedule and spec.is_cpu and _apply_cpu_schedules is not None)
    return ex


def export(executable, path: str | os.PathLike, cross_compiler: str | None = None) -> str:
    """Write the executable (VM code, kernels and baked-in weights) as one shared library.

    Load it with only the TVM runtime: `tvm.runtime.load_module(path)` then
    `tvm.runtime.vm.VirtualMachine(lib, tvm.cpu())["main"](*inputs)`.
    """
    spec: TargetSpec | None = getattr(executable, "ember_target", None)
    cc = cross_compiler or (spec.cross_compiler if spec else None)
    path = os.fspath(path)
    t0 = time.perf_counter()
    try:
        if cc:
            from tvm.support import cc as _cc

            executable.export_library(path, fcompile=_cc.cross_compiler(cc))
        else:
            executable.export_library(path)
    except Exception as e:  # noqa: BLE001 (TVM raises many types; wrapped below)
        raise BuildError(f"export to {path} failed{' with ' + cc if cc else ''}: "
                         f"{short_error(e)}; check the disk and, for cross targets, that the "
                         "cross compiler is installed") from None
    timings = getattr(executable, "ember_timings", None)
    if isinstance(timings, dict):
        timings["export"] = time.perf_counter() - t0
    return path


def _build_error(stage: str, e: Exception, mod: Any, tgt, spec: TargetSpec) -> BuildError:
    func = _failing_function(stage, mod, tgt) if isinstance(mod, tvm.IRModule) else None
    where = f" in function {func!r}" if func else ""
    hint = {"schedule": "retry with build(..., schedule=False) to confirm it is a schedule bug",
            "legalize": "an op has no TVM legalization; check its lowering"}.get(
        stage, "set TVM_BACKTRACE=1 for the full TVM trace")
    return BuildError(f"TVM {stage} stage failed{where} for target {spec.name} "
                      f"({spec.target_dict}): {short_error(e)}; {hint}")


def _failing_function(stage: str, mod: tvm.IRModule, tgt) -> str | None:
    """For a failed codegen, compile each PrimFunc alone to name the one that breaks."""
    if stage != "compile":
        return None
    prims = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    failed = []
    for gv, func in prims:
        try:
            tvm.tirx.build(tvm.IRModule({gv: func}), tgt)
        except Exception:  # noqa: BLE001 (any failure marks the function)
            failed.append(gv.name_hint)
    # Every function failing alone means the problem is not one kernel: do not blame one.
    return failed[0] if failed and len(failed) < len(prims) else None
