"""Build a lowered Relax module for a target, and export it as one shared library.

Why an explicit pipeline: `tvm.compile` on a CPU target runs only the default lowering passes,
so nothing is fused unless we legalize and fuse first. The stages, each timed for the compile
report (`executable.ember_timings`, seconds):

    fold       weight layout ops (transpose/reshape of a constant) evaluated with numpy
    legalize   Relax ops -> TIR PrimFuncs, op patterns annotated, other constants folded
    fuse       FuseOps + FuseTIR: one kernel per fused group
    mark_reshapes  reshape-copy kernels tagged while their loops still prove it
    schedule   CPU: ember.backends.tvm.schedules.apply_cpu_schedules (when installed);
               GPU: dlight's default GPU rules (every kernel needs a thread binding on a GPU)
    fold_reshape   CPU: a reshape copy of a single-use kernel result (a function output, where
               TVM keeps the copy) folded into the producer (fold_output_reshape.py)
    compile    tvm.compile: VM lowering, TIR passes, LLVM (+ CUDA) codegen; on CPU the kernels'
               LLVM code and object files by one thread per core (parallel_codegen.py), and
               float32 exp/tanh/erf/sigmoid as vector math (fast_intrinsics.py)

Cross targets (aarch64, armv7, riscv64) compile here and link with the Debian cross g++ named by
the TargetSpec; `export(ex, "m.tar")` writes the object files instead when no cross g++ exists.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax

from ...errors import BuildError
from .fast_intrinsics import fast_intrinsics
from .fold_output_reshape import fold_output_reshapes, mark_reshape_copies
from .irmod import with_functions
from .lower import short_error
from .parallel_codegen import build_vm, codegen_threads, export_objects
from .targets import TargetSpec, resolve

try:  # the CPU schedules package; builds run unscheduled (still fused) without it
    from .schedules import apply_cpu_schedules as _apply_cpu_schedules
    from .schedules import prepack_weights as _prepack_weights
except ModuleNotFoundError as e:  # only its absence; a broken schedules package must not hide
    if e.name != f"{__package__}.schedules":
        raise
    _apply_cpu_schedules = _prepack_weights = None


def legalize_passes() -> list:
    """The passes of build's `fold` and `legalize` stages, in order."""
    return [fold_layout_constants_pass(), *tvm_legalize_passes()]


def tvm_legalize_passes() -> list:
    return [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan(),
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant()]


def fold_layout_constants_pass() -> tvm.transform.Pass:
    """`fold_layout_constants` as a module pass (runs first in `legalize_passes`)."""
    return tvm.transform.module_pass(lambda mod, _ctx: fold_layout_constants(mod), opt_level=0,
                                     name="EmberFoldLayoutConstants")


def fold_layout_constants(mod: tvm.IRModule) -> tvm.IRModule:
    """`permute_dims` and static `reshape` of a constant replaced by the constant they make.

    Why: lowerings emit weight transposes (linear: W.T) and bias reshapes (conv), and Relax's
    FoldConstant evaluates each by building its legalized kernel with LLVM, one build per
    call: 28 builds, 1.5-2 s of digits_vit's compile (main and main_b1 each have one per
    weight). A numpy transpose or reshape of the same data gives the same bytes in microseconds.
    """
    folder = _LayoutConstantFolder(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            folder.builder_.update_func(gv, folder.visit_expr(func))
    return folder.builder_.get() if folder.folded else mod


_PERMUTE_DIMS = tvm.ir.Op.get("relax.permute_dims")
_RESHAPE = tvm.ir.Op.get("relax.reshape")


@relax.expr_functor.mutator
class _LayoutConstantFolder(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.folded = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = self.visit_expr_post_order(call)
        is_permute = call.op.same_as(_PERMUTE_DIMS)
        if not (is_permute or call.op.same_as(_RESHAPE)) \
                or not isinstance(call.args[0], tvm.ir.GenericConst):
            return call
        data = call.args[0].value.numpy()
        if is_permute:
            axes = call.attrs.axes
            folded = data.transpose(None if axes is None else [int(a) for a in axes])
        else:
            shape = call.args[1]
            if not isinstance(shape, relax.ShapeExpr) \
                    or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
                return call  # a symbolic or computed shape: left to LegalizeOps
            folded = data.reshape([int(d) for d in shape.values])
        self.folded += 1
        return relax.const(np.ascontiguousarray(folded), str(data.dtype))


def fuse_passes() -> list:
    return [relax.transform.FuseOps(), relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination()]


def build(mod: tvm.IRModule, target: TargetSpec | str | dict, *, schedule: bool = True,
          records: str | os.PathLike | None = None, exportable: bool = True):
    """Compile `mod` for `target`; returns the TVM executable with `ember_timings` attached.

    `schedule=False` skips the CPU schedules (to tell a scheduling bug from a lowering bug).
    `records`: a tuning-records directory (see tune.py); kernels with a winning record get the
    tuned schedule, the others ember's rules (`ex.ember_tuning` says how many were applied).
    `exportable=False`: the executable only runs in this process (e.g. layer timing), so the
    codegen threads do not write object files for `export`.
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

    mod = stage("fold", fold_layout_constants, mod)
    mod = stage("legalize", tvm.transform.Sequential(tvm_legalize_passes()), mod)
    cpu_scheduled = schedule and spec.is_cpu and _apply_cpu_schedules is not None
    if cpu_scheduled:  # constant GEMM weights packed once here, not inside every call
        mod = stage("prepack", lambda m: _prepack_weights(m, tgt), mod)
    mod = stage("fuse", tvm.transform.Sequential(fuse_passes()), mod)
    tuning = None
    if records is not None and cpu_scheduled:  # tuned kernels first; ember's rules skip them
        from .tune import apply_records

        mod, tuning = stage("records", lambda m: apply_records(m, tgt, records), mod)
    mod = stage("mark_reshapes", mark_reshape_copies, mod)  # proven before schedules fuse loops
    scheduled = False
    if spec.is_gpu:  # not optional: an unscheduled kernel has no thread binding on a GPU
        mod = stage("schedule", gpu_schedule_pass(), mod)
        scheduled = True
    elif cpu_scheduled:
        mod = stage("schedule", lambda m: _apply_cpu_schedules(m, tgt), mod)
        scheduled = True
    else:
        timings["schedule"] = 0.0
    if spec.is_cpu:  # an output reshape copy becomes its producer writing the output shape
        mod = stage("fold_reshape", fold_output_reshapes, mod)
    with fast_intrinsics(spec.is_cpu):  # exp/tanh/erf/sigmoid as vector math, not libm calls
        ex = stage("compile", lambda m: compile_vm(m, spec, tgt, exportable), mod)
    ex.ember_timings = timings
    ex.ember_target = spec
    ex.ember_scheduled = scheduled
    ex.ember_tuning = tuning
    return ex


def compile_vm(mod: tvm.IRModule, spec: TargetSpec, tgt, exportable: bool = True):
    """tvm.compile with ember's Relax pipeline; on a CPU target with several cores the kernels'
    LLVM code is generated (and their object files emitted) by one thread per core, see
    parallel_codegen.py ($EMBER_CODEGEN_THREADS=1: tvm.compile in one thread)."""
    threads = codegen_threads()
    if spec.kind == "llvm" and threads > 1:  # objects only for a native .so (export_objects)
        return build_vm(mod, tgt, relax_pipeline(spec), threads,
                        emit_objects=exportable and not spec.is_cross)
    return tvm.compile(mod, target=tgt, relax_pipeline=relax_pipeline(spec))


def relax_pipeline(spec: TargetSpec):
    """tvm.compile's default Relax pipeline; on CPU followed by `_noalias_shape_funcs`.

    Why: VMShapeLower adds a `shape_func` PrimFunc to a module with symbolic shapes, without
    `tirx.noalias`. With one such function in the module, the LLVM codegen left every kernel's
    buffers may-alias (no `_compute_` function with noalias arguments), so register-tiled
    accumulators were stored back after every FMA: a dynamic-batch digits_cnn ran its convs
    2.5x slower than the static build of the same kernels.
    """
    if not spec.is_cpu:
        return "default"
    return tvm.transform.Sequential([relax.get_pipeline("default"), _noalias_shape_funcs()])


def _noalias_shape_funcs():
    @tvm.transform.module_pass(opt_level=0, name="NoaliasShapeFuncs")
    def mark(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions_items():
            if (isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None
                    and func.attrs.get("tirx.is_host_func", False)
                    and "tirx.noalias" not in func.attrs and len(func.params) <= 1):
                updates[gv] = func.with_attr("tirx.noalias", True)  # one buffer: no alias
        return with_functions(mod, updates)

    return mark


def fused_module(mod: tvm.IRModule, target: TargetSpec | str | dict) -> tuple[tvm.IRModule, Any]:
    """The module as `build` hands it to the schedules (legalized, prepacked, fused), and the
    TVM target: the kernels that tuning measures."""
    spec = resolve(target)
    tgt = spec.tvm_target()
    with tgt:
        mod = tvm.transform.Sequential(legalize_passes())(mod)
        if spec.is_cpu and _prepack_weights is not None:
            mod = _prepack_weights(mod, tgt)
        mod = tvm.transform.Sequential(fuse_passes())(mod)
    return mod, tgt


def gpu_schedule_pass():
    """dlight's GPU rules, most specific first (tvm.compile's CUDA pipeline would apply the same
    ones; running them here times them as their own stage and keeps legalize/fuse ours)."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                   dl.gpu.GeneralReduction(), dl.gpu.Fallback())


def export(executable, path: str | os.PathLike, cross_compiler: str | None = None) -> str:
    """Write the executable (VM code, kernels and baked-in weights) as one shared library.

    Load it with only the TVM runtime: `tvm.runtime.load_module(path)` then
    `tvm.runtime.vm.VirtualMachine(lib, tvm.cpu())["main"](*inputs)`.
    A path ending in `.tar` writes the object files instead (no compiler needed, so it works for
    cross targets without the cross toolchain): link them on the device with
    `g++ -shared -o lib.so *.o`.
    """
    spec: TargetSpec | None = getattr(executable, "ember_target", None)
    cc = cross_compiler or (spec.cross_compiler if spec else None)
    path = os.fspath(path)
    if path.endswith(".tar"):
        cc = None
    elif cc:
        check_cross_compiler(cc, spec)
    t0 = time.perf_counter()
    try:
        if cc:
            from tvm.support import cc as _cc

            executable.export_library(path, fcompile=_cc.cross_compiler(cc))
        elif path.endswith(".tar") or codegen_threads() < 2 \
                or not export_objects(executable, path):  # objects written in parallel
            executable.export_library(path)
    except Exception as e:  # noqa: BLE001 (TVM raises many types; wrapped below)
        raise BuildError(f"export to {path} failed{' with ' + cc if cc else ''}: "
                         f"{short_error(e)}; check the disk and, for cross targets, that the "
                         "cross compiler is installed") from None
    timings = getattr(executable, "ember_timings", None)
    if isinstance(timings, dict):
        timings["export"] = time.perf_counter() - t0
    return path


def check_cross_compiler(cc: str, spec: TargetSpec | None = None) -> str:
    """The path of cross compiler `cc`; a BuildError naming the package to install if missing."""
    package = (spec.cross_package if spec else None) or _package_for(cc)
    name = spec.name if spec else "this target"
    triple = str(spec.target_dict.get("mtriple") or "") if spec else ""
    tool_arch = _arch_family(os.path.basename(cc))
    if triple and tool_arch and tool_arch != _arch_family(triple):
        raise BuildError(f"cross compiler {cc!r} makes {tool_arch} code but target {name} is "
                         f"{triple}; use {spec.cross_compiler or 'a matching g++'} "
                         f"(`apt-get install {package}`)")
    found = shutil.which(cc)
    if found:
        return found
    raise BuildError(f"cross compiler {cc!r} for target {name} is not installed; install it with "
                     f"`apt-get install {package}` (or run scripts/install-cross.sh), or export "
                     "the object files with ember.backends.tvm.export(executable, 'model.tar') "
                     "and link them on the device with `g++ -shared -o lib.so *.o`")


def _arch_family(name: str) -> str | None:
    """'aarch64-linux-gnu-g++' -> 'aarch64', 'armv7a-linux-gnueabihf' -> 'arm'; None if no
    triple prefix (a plain 'g++' or a wrapper script says nothing about its target)."""
    head = name.split("-", 1)[0].lower() if "-" in name else ""
    if head in ("aarch64", "arm64"):
        return "aarch64"
    if head.startswith("arm"):
        return "arm"
    if head.startswith("riscv") or head in ("x86_64", "i686", "powerpc64le"):
        return head
    return None


def _package_for(cc: str) -> str:
    """'aarch64-linux-gnu-g++' -> 'g++-aarch64-linux-gnu' (Debian's naming of cross g++)."""
    for tool in ("g++", "gcc", "c++"):
        if cc.endswith("-" + tool):
            return f"{tool}-{cc[: -len(tool) - 1]}"
    return f"the package that provides {cc}"


def _build_error(stage: str, e: Exception, mod: Any, tgt, spec: TargetSpec) -> BuildError:
    func = _failing_function(stage, mod, tgt) if isinstance(mod, tvm.IRModule) else None
    where = f" in function {func!r}" if func else ""
    hint = {"schedule": "retry with build(..., schedule=False) to confirm it is a schedule bug",
            "legalize": "an op has no TVM legalization; check its lowering"}.get(
        stage, "set TVM_BACKTRACE=1 for the full TVM trace")
    return BuildError(f"TVM {stage} stage failed{where} for target {spec.name} "
                      f"({spec.target_dict}): {short_error(e)}; {hint}")


def _failing_function(stage: str, mod: tvm.IRModule, tgt) -> str | None:
    """For a failed codegen, compile each PrimFunc alone to name the one that breaks.

    Each gets the `global_symbol` the Relax pipeline would attach (AttachGlobalSymbol): without
    it MakePackedAPI leaves the function private and every kernel fails alone."""
    if stage != "compile":
        return None
    prims = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    failed = []
    for gv, func in prims:
        if "global_symbol" not in (func.attrs or {}):
            func = func.with_attr("global_symbol", gv.name_hint)
        try:
            tvm.tirx.build(tvm.IRModule({gv: func}), tgt)
        except Exception:  # noqa: BLE001 (any failure marks the function)
            failed.append(gv.name_hint)
    # Every function failing alone means the problem is not one kernel: do not blame one.
    return failed[0] if failed and len(failed) < len(prims) else None
