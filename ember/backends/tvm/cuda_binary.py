"""Compile a CUDA build's kernels to a fatbin at compile time, so the artifact carries machine code.

Why: TVM 0.27's codegen stores CUDA C source in the library (fmt "cuda"); its CUDA runtime turns
that into a binary only when the library is *loaded*, through the Python callback
`tvm_callback_cuda_compile` (NVRTC or nvcc). A deployed device then needs a CUDA compiler next to
the runtime. Where nvcc is installed at compile time (no GPU needed: `-arch` is explicit), ember
compiles the source here, stores the fatbin in the artifact with the source's hash, and the
runtime's callback (`ember.runtime.cuda`) hands it back instead of compiling on the device.

    members, record = precompile(executable, target_spec)   # ({} , {"reason": ...}) without nvcc
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
from typing import Any

import tvm

log = logging.getLogger("ember.cuda")

#: fatbin files start with this little-endian magic (0xBA55ED50).
FATBIN_MAGIC = bytes.fromhex("50ed55ba")


def cuda_sources(executable: Any) -> list[str]:
    """CUDA C of every device module under the host library (one per build in practice)."""
    mod = getattr(executable, "mod", executable)
    found, stack = [], [mod]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            found.append(str(m.inspect_source()))
        stack.extend(m.imports)
    return found


def source_hash(code: str | bytes) -> str:
    data = code.encode() if isinstance(code, str) else bytes(code)
    return hashlib.sha256(data).hexdigest()


def find_nvcc() -> str | None:
    """nvcc on PATH, else under CUDA_HOME/CUDA_PATH or /usr/local/cuda."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return None


def gencode(arch: str) -> list[str]:
    """nvcc flags for SASS of `arch` plus its PTX, so later GPUs can JIT the PTX in the driver
    (an sm_80 fatbin then also runs on sm_90). sm_90a-style arch-specific code has no PTX
    forward compatibility, which `ember.runtime.cuda` accounts for."""
    num = arch.removeprefix("sm_")
    return ["-gencode", f"arch=compute_{num},code=[sm_{num},compute_{num}]"]


def fatbin_entries(blob: bytes) -> list[tuple[str, int]]:
    """(kind, sm number) of each entry of a fatbin: ("elf", 90) is SASS, ("ptx", 90) PTX.

    Layout: a 16-byte header (magic, version, header size, payload size), then entries, each
    with a header (kind u16 1=PTX 2=ELF, version u16, header size u32, payload size u64, ...,
    arch u32 at byte 28)."""
    if not blob.startswith(FATBIN_MAGIC) or len(blob) < 16:
        raise ValueError("not a fatbin (bad magic)")
    _, _, head, total = struct.unpack_from("<IHHQ", blob, 0)
    entries, off, end = [], head, min(len(blob), head + total)
    while off + 32 <= end:
        kind, _, entry_head, size = struct.unpack_from("<HHIQ", blob, off)
        (sm,) = struct.unpack_from("<I", blob, off + 28)
        entries.append(({1: "ptx", 2: "elf"}.get(kind, str(kind)), sm))
        off += entry_head + size
    return entries


def member_name(arch: str) -> str:
    return f"cuda/{arch}.fatbin"


def precompile(executable: Any, target: Any, arch: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(artifact members, manifest record) for a CUDA build.

    The record says what the artifact carries: {"arch", "member", "source_sha256", "compiler"},
    or {"arch", "reason"} when no binary could be made (no nvcc here); then the device compiles
    the embedded source at load time (needs NVRTC or nvcc there).
    """
    sources = cuda_sources(executable)
    if len(sources) != 1:
        return {}, {"arch": arch, "reason": f"expected one CUDA device module, found "
                                            f"{len(sources)}"}
    nvcc = find_nvcc()
    if nvcc is None:
        return {}, {"arch": arch, "reason": "nvcc not found at compile time; the device compiles "
                                            "the embedded CUDA source when it loads the artifact"}
    from tvm.support import nvcc as tvm_nvcc

    bindir = os.path.dirname(nvcc)
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = bindir + os.pathsep + old_path  # TVM's helper runs plain "nvcc"
    try:
        with tvm.target.Target(target):
            binary = bytes(tvm_nvcc.compile_cuda(sources[0], target_format="fatbin",
                                                 arch=gencode(arch), compiler="nvcc"))
    except Exception as e:  # noqa: BLE001 - a broken toolkit must not fail the build
        log.warning("nvcc could not compile the CUDA kernels for %s: %s", arch, e)
        return {}, {"arch": arch, "reason": f"nvcc failed: {str(e).strip().splitlines()[-1]}"}
    finally:
        os.environ["PATH"] = old_path
    if not binary.startswith(FATBIN_MAGIC):
        return {}, {"arch": arch, "reason": "nvcc output is not a fatbin"}
    record = {"arch": arch, "member": member_name(arch), "source_sha256": source_hash(sources[0]),
              "compiler": nvcc}
    return {member_name(arch): binary}, record
