"""TVM's LLVM code generation on several cores: kernels split into parts built in threads.

Why: after ember's own stages, a cold CPU compile spends most of its time in two single-threaded
C++ calls on the one LLVM module that holds every kernel: `tvm.tirx.build` (TIR lowering, LLVM
IR generation and optimisation) and, at export, `write_to_file` (machine-code emission). Both
release the GIL (tvm_ffi's default), so K Python threads, each building and emitting one part
of the kernels, use K cores.

    ex = build_vm(mod, tgt, relax_pipeline, threads)   # == tvm.compile(mod, tgt, ...)
    export_objects(ex, "lib.so")                       # == ex.export_library("lib.so")

The executable is the one `tvm.relax.build` makes (tvm/relax/vm_build.py: Relax pipeline,
VM codegen, TIR build, VMLink), except that the TIR module is built as K LLVM modules: the first
is the VM's `lib`, the others are linked in as extra imports, where the VM looks its kernels up
too. Exported, the K object files go into one .so, so every kernel is found in the library.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tvm
from tvm import relax
from tvm.relax import vm_build

THREADS_ENV = "EMBER_CODEGEN_THREADS"
MIN_FUNCS_PER_PART = 4  # below this a part's fixed cost (an LLVM module, ~30 ms) is not won back
# A kernel's codegen cost (build + emit), in characters of its TVMScript: a fixed part, a part
# per parameter (MakePackedAPI unpacks and checks each buffer), and its text. Least-squares fit
# on the 96 kernels of digits_vit, seq_linear_rnn and digits_gru (r^2 0.66; text alone: 0.40).
FUNC_BASE_COST = 4500
PARAM_COST = 2000


def codegen_threads() -> int:
    """Threads for code generation: $EMBER_CODEGEN_THREADS, else the cores this process may
    use. 1 is the serial path (`tvm.compile`, `export_library`) exactly as before."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def build_vm(mod: tvm.IRModule, tgt: tvm.target.Target, relax_pipeline: Any, threads: int,
             emit_objects: bool = True):
    """`tvm.compile(mod, target=tgt, relax_pipeline=relax_pipeline)` (a CPU LLVM target) with
    the kernels built by `threads` threads. `emit_objects`: each thread also writes its part's
    object file, kept on the executable (`ember_objects`) for `export_objects`."""
    with tgt:
        mod = relax_pipeline(mod)
    attrs = dict(mod.attrs) if mod.attrs else {}
    ext_libs = list(attrs.get("external_mods", []))
    params = dict(attrs.get("const_name_to_constant", {}))
    builder = relax.ExecBuilder()
    mod = vm_build._vmcodegen(builder, mod, "bytecode")
    tir_mod = vm_build._filter_tir(mod)
    parts = [] if tir_mod is None or ext_libs else \
        split_kernels(vm_build._auto_attach_system_lib_prefix(tir_mod, tgt), threads)
    if len(parts) < 2:  # few kernels: what tvm.relax.build does after its pipeline
        return vm_build._vmlink(builder, tgt, tir_mod, ext_libs=ext_libs, params=params)
    workdir = tempfile.TemporaryDirectory(prefix="ember-codegen-") if emit_objects else None
    ctx = tvm.transform.PassContext.current()  # thread-local in TVM: re-entered in each thread

    def build_part(index: int) -> tuple[Any, str | None]:
        with ctx, tgt:
            lib = tvm.tirx.build(parts[index], target=tgt)
        if workdir is None:
            return lib, None
        path = os.path.join(workdir.name, f"lib{index}.o")
        lib.write_to_file(path)
        return lib, path

    with ThreadPoolExecutor(len(parts), thread_name_prefix="ember-codegen") as pool:
        built = list(pool.map(build_part, range(len(parts))))
    libs = [lib for lib, _ in built]
    ex = vm_build.VMExecutable(
        vm_build._ffi_api.VMLink(builder, tgt, libs[0], libs[1:], params))
    if workdir is not None:
        ex.ember_objects = (workdir, [(lib, path) for lib, path in built])
    return ex


def split_kernels(tir_mod: tvm.IRModule, parts: int) -> list[tvm.IRModule]:
    """The PrimFuncs of `tir_mod` in at most `parts` modules of about equal codegen cost
    (`kernel_cost`): largest first onto the lightest part (LPT). One part when there are fewer
    than MIN_FUNCS_PER_PART kernels per part.

    Any split links: the kernels call each other only through the VM, LLVM IR that a kernel
    imports (`pragma_import_llvm`) is inlined and internal to its object, and the globals every
    TVM object defines (`__TVMBackendAllocWorkspace`, ...) are weak.
    """
    funcs = list(tir_mod.functions_items())
    parts = max(1, min(parts, len(funcs) // MIN_FUNCS_PER_PART))
    if parts < 2:
        return [tir_mod]
    costed = sorted(((kernel_cost(f), i) for i, (_, f) in enumerate(funcs)), reverse=True)
    heap = [(0, k, []) for k in range(parts)]
    for cost, i in costed:
        load, k, members = heapq.heappop(heap)
        members.append(funcs[i])
        heapq.heappush(heap, (load + cost, k, members))
    return [tvm.IRModule(dict(members), attrs=tir_mod.attrs)
            for _, _, members in sorted(heap, key=lambda h: h[1])]


def kernel_cost(func: tvm.tirx.PrimFunc) -> int:
    """Estimated build + emit cost of one kernel, in the units of FUNC_BASE_COST."""
    return FUNC_BASE_COST + PARAM_COST * len(func.params) + len(str(func))


def export_objects(executable, path: str) -> bool:
    """`executable.export_library(path)` for a native .so of LLVM kernels, with the object
    files written by parallel threads (or taken from `build_vm`'s threads). False, having done
    nothing, when the executable holds other modules (CUDA, C source): export_library then.

    Reproduces export_library's LLVM case (tvm/runtime/module.py): one object per LLVM module,
    the import tree packed into `devc.o` (ModulePackImportsToLLVM), linked by create_shared.
    """
    from tvm.runtime import _ffi_api as runtime_api
    from tvm.support import cc

    root = executable.mod
    modules = root._collect_dso_modules()
    if not modules or any(m.kind != "llvm" for m in modules):
        return False
    _, emitted = getattr(executable, "ember_objects", (None, []))
    with tempfile.TemporaryDirectory(prefix="ember-export-") as tmp:
        files = [next((p for lib, p in emitted if lib.same_as(m)), None) for m in modules]
        missing = [i for i, f in enumerate(files) if f is None]

        def write(index: int) -> str:
            out = os.path.join(tmp, f"lib{index}.o")
            modules[index].write_to_file(out)
            return out

        if missing:
            with ThreadPoolExecutor(len(missing), thread_name_prefix="ember-emit") as pool:
                for index, out in zip(missing, pool.map(write, missing)):
                    files[index] = out
        last = modules[-1]  # export_library reads these from the last LLVM module it writes
        is_system_lib = bool(last.get_function("__tvm_is_system_module")())
        llvm_target = last.get_function("_get_target_string")()
        prefix = last.get_function("__tvm_get_system_lib_prefix")() or ""
        if root.imports:
            devc = os.path.join(tmp, f"{prefix}devc.o")
            runtime_api.ModulePackImportsToLLVM(root, is_system_lib, llvm_target,
                                                prefix).write_to_file(devc)
            files.append(devc)
        cc.create_shared(path, files)
    return True
