"""Can this machine run an artifact? Architecture, OS and CPU features, checked before dlopen.

An artifact built for `cpu-native` on an AVX-512 machine dies with SIGILL on an AVX2 one; one
built for aarch64 fails in `dlopen` with an unhelpful message. The manifest records what the
code needs (`arch`, `os`, `host_features` in /proc/cpuinfo spelling) and `check_host` compares
that with the loading machine, so the user gets a sentence instead of a crash.

The mcpu-based judgement lives in `ember.backends.tvm.targets.check_compatible` (importable
with only the TVM runtime installed: no torch, no TVM compiler); this module adds what the
manifest itself records, the exact features LLVM enabled, so an mcpu that table does not know
is still checked. Only `features_for_target` touches TVM's compiler, at compile time.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

# LLVM feature name -> /proc/cpuinfo flag, for the ISA extensions that change generated code.
LLVM_TO_CPUINFO = {
    # x86
    "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "avx": "avx",
    "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2",
    "popcnt": "popcnt", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512cd": "avx512cd",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "avx512vbmi": "avx512vbmi",
    "avxvnni": "avx_vnni", "amx-tile": "amx_tile", "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16",
    # aarch64
    "neon": "asimd", "sve": "sve", "sve2": "sve2", "dotprod": "asimddp", "i8mm": "i8mm",
    "fullfp16": "fphp", "bf16": "bf16",
}

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv7l": "armv7",
                 "armv7a": "armv7", "armv7hl": "armv7", "i686": "x86", "i386": "x86"}
_CPU_KINDS = ("llvm", "c")


def normalize_arch(name: str) -> str:
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def host_arch() -> str:
    return normalize_arch(platform.machine())


def triple_arch(triple: str) -> str:
    """'aarch64-linux-gnu' -> 'aarch64'; 'x86_64-conda-linux-gnu' -> 'x86_64'."""
    return normalize_arch(triple.split("-", 1)[0])


@lru_cache(maxsize=1)
def host_cpu_features() -> frozenset[str] | None:
    """CPU flags from /proc/cpuinfo (Linux x86 'flags', aarch64 'Features'); None if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return None


def check_host(target: Mapping[str, Any]) -> str | None:
    """Why this machine cannot run code built for `target` (a manifest's target), or None.

    Only CPU targets are checked here; GPU targets are checked for a device when loading.
    """
    from ..backends.tvm.targets import check_compatible

    tdict = target.get("target") or {}
    if tdict.get("kind", "llvm") not in _CPU_KINDS:
        return None
    reason = check_compatible(dict(tdict))
    if reason:
        return reason
    want_arch = target.get("arch") or (triple_arch(tdict["mtriple"]) if tdict.get("mtriple")
                                       else None)
    if want_arch and normalize_arch(want_arch) != host_arch():
        return f"it was built for {want_arch} CPUs but this machine is {host_arch()}"
    want_os = target.get("os")
    if want_os and not sys.platform.startswith(want_os):
        return f"it needs {want_os} but this machine runs {sys.platform}"
    needed = set(target.get("host_features") or ())
    have = host_cpu_features()
    if needed and have is not None:
        missing = sorted(needed - have)
        if missing:
            return f"this CPU lacks {', '.join(missing)}"
    return None


def device_unavailable(tvm: Any, kind: str) -> str | None:
    """Why this process cannot run code for GPU target kind `kind` (e.g. "cuda"), or None.

    Two different fixes, so two messages: the TVM runtime may lack the device API entirely (the
    PyPI apache-tvm wheel has no CUDA runtime), or it has one but finds no GPU or driver.
    """
    import tvm_ffi

    if tvm_ffi.get_global_func(f"device_api.{kind}", allow_missing=True) is None:
        driver = " (the apache-tvm wheel loads libtvm_runtime_cuda only where the NVIDIA " \
                 "driver's libcuda.so.1 is installed)" if kind == "cuda" else ""
        return (f"this TVM runtime (apache-tvm {tvm.__version__}) has no {kind} device API "
                f"(no device_api.{kind}){driver}; run it on a machine with the GPU and driver")
    try:
        present = bool(tvm.device(kind, 0).exist)
    except Exception as e:  # noqa: BLE001 - a broken driver raises instead of answering
        return f"the {kind} driver failed to answer ({type(e).__name__}: {e})"
    if not present:
        return (f"no {kind} GPU or driver was found (check `nvidia-smi` and the driver install)"
                if kind == "cuda" else f"no {kind} device was found")
    return None


def features_for_target(target_dict: Mapping[str, Any]) -> list[str]:
    """The /proc/cpuinfo flags code built for `target_dict` needs (asks LLVM; compile time only).

    Plain `{"kind": "llvm"}` means generic x86-64/aarch64 code and needs nothing beyond the
    baseline; an `mcpu` or `mattr` adds that CPU's ISA extensions.
    """
    if target_dict.get("kind", "llvm") != "llvm":
        return []
    import tvm
    from tvm.target import codegen

    features = codegen.llvm_get_cpu_features(tvm.target.Target(dict(target_dict)))
    baseline = codegen.llvm_get_cpu_features(tvm.target.Target(
        {k: v for k, v in target_dict.items() if k in ("kind", "mtriple")}))
    extra = {str(f) for f in features} - {str(f) for f in baseline}
    return sorted(LLVM_TO_CPUINFO[f] for f in extra if f in LLVM_TO_CPUINFO)


def _host_os() -> str:
    return "linux" if sys.platform.startswith("linux") else sys.platform


def _triple_os(triple: str) -> str | None:
    return next((name for name in ("linux", "darwin") if name in triple), None)


def target_record(name: str, target_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's `target` entry: name, TVM target dict, arch, os and required features."""
    triple = target_dict.get("mtriple")
    return {
        "name": name,
        "target": dict(target_dict),
        "arch": triple_arch(triple) if triple else host_arch(),
        "os": _triple_os(triple) if triple else _host_os(),
        "host_features": features_for_target(target_dict),
    }
