"""Hand the CUDA runtime the kernels' machine code when a CUDA artifact is loaded.

TVM 0.27's CUDA runtime loads a library whose device code is CUDA C (fmt "cuda") by calling the
global `tvm_callback_cuda_compile(code)` and loading the bytes it returns (cubin/fatbin). Ember
registers that callback before loading: if the artifact carries a fatbin compiled for this GPU's
arch from exactly this source (see `ember.backends.tvm.cuda_binary`), it is returned as is;
otherwise the source is compiled here with NVRTC (`cuda-python`) or nvcc, and when neither
exists the error says which to install. Only numpy and the TVM runtime are imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ArtifactError

CALLBACK = "tvm_callback_cuda_compile"


def device_arch(tvm: Any) -> str | None:
    """sm_XY of CUDA device 0, or None when it cannot be asked."""
    try:
        version = str(tvm.device("cuda", 0).compute_version)
    except Exception:  # noqa: BLE001 - no driver / no GPU
        return None
    return "sm_" + version.replace(".", "") if version else None


def runs_on(built: str | None, gpu: str | None) -> bool:
    """Whether a fatbin with SASS + PTX for `built` runs on a `gpu` of that arch: the same
    arch, or a later one through the driver's PTX JIT (not for arch-specific sm_XXa code)."""
    if not built or not gpu:
        return bool(built) and gpu is None  # unknown GPU: try the binary, the driver decides
    if built == gpu:
        return True
    if built.endswith("a"):
        return False
    try:
        return int(gpu.removeprefix("sm_").rstrip("a")) >= int(built.removeprefix("sm_"))
    except ValueError:
        return False


def make_callback(binaries: Mapping[str, bytes], arch: str | None,
                  compile_source: Callable[[str], bytes] | None = None) -> Callable[[str], bytes]:
    """The compile callback: a stored binary when its source hash matches, else a compile.

    `binaries` maps the sha256 of a CUDA source to its fatbin, built for `arch`.
    """
    compile_source = compile_source or compile_here

    def callback(code: str) -> bytes:
        key = hashlib.sha256(str(code).encode()).hexdigest()
        if key in binaries:
            return bytes(binaries[key])
        return compile_source(str(code))

    return callback


def compile_here(code: str) -> bytes:
    """Compile CUDA source for the GPU of this process: NVRTC if importable, else nvcc."""
    if importlib.util.find_spec("cuda") is not None and importlib.util.find_spec("cuda.bindings"):
        mode = "nvrtc"
    elif shutil.which("nvcc"):
        mode = "nvcc"
    else:
        raise ArtifactError(
            "this CUDA artifact carries no binary for this GPU, and no CUDA compiler is here to "
            "compile its kernels: `pip install cuda-python` (NVRTC) or put nvcc on PATH, or "
            "re-compile the artifact with --target cuda:<this GPU's sm_XY> where nvcc is installed")
    from tvm.support import nvcc  # the TVM wheel's helper: same flags TVM itself uses

    fmt = "cubin" if mode == "nvrtc" else "fatbin"
    return bytes(nvcc.compile_cuda(code, target_format=fmt, compiler=mode))


def install(tvm: Any, manifest: Mapping[str, Any], members: Mapping[str, bytes]) -> dict[str, Any]:
    """Register the compile callback for one artifact; returns what it will do (for inspect).

    A binary is used only when it was built for the arch of the GPU present; a mismatch (an
    sm_90 fatbin on an sm_80 card) compiles from source instead of failing in the driver.
    """
    import tvm_ffi

    record = dict(manifest.get("cuda_binary") or {})
    here = device_arch(tvm)
    member = record.get("member")
    use = (member in members and runs_on(record.get("arch"), here)
           and os.environ.get("EMBER_CUDA_FORCE_COMPILE") != "1")
    binaries = {record["source_sha256"]: members[member]} if use else {}
    plan = {"gpu_arch": here, "binary_arch": record.get("arch"), "uses_stored_binary": use}
    tvm_ffi.register_global_func(CALLBACK, make_callback(binaries, here), override=True)
    return plan
