"""Named compile targets, host CPU detection, and the runtime's ISA compatibility check.

Why an explicit mcpu: TVM 0.27 silently ignores `mcpu=native` (LLVM falls back to a generic
CPU), so "cpu" reads /proc/cpuinfo and names the CPU LLVM should tune and vectorize for. The
same feature table lets a deployed runtime refuse a library built for instructions its host
lacks (instead of dying with SIGILL). This module imports neither torch nor the TVM compiler
at import time: the runtime imports it on devices that have only the TVM runtime.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import TargetError


@dataclass(frozen=True)
class HostFeatures:
    """What ember knows about the host CPU (from /proc/cpuinfo and the scheduler affinity)."""

    arch: str  # platform.machine(): x86_64, aarch64, ...
    vendor: str = ""  # GenuineIntel, AuthenticAMD, ... ("" when unknown)
    family: int | None = None
    model: int | None = None
    model_name: str = ""
    flags: frozenset[str] = field(default_factory=frozenset)
    physical_cores: int = 1

    def has(self, *flags: str) -> bool:
        return all(f in self.flags for f in flags)


@dataclass(frozen=True)
class TargetSpec:
    """A named target: the TVM target dict plus why it was chosen."""

    name: str
    target_dict: dict[str, Any]
    description: str
    mcpu: str | None = None
    cross_compiler: str | None = None  # e.g. "aarch64-linux-gnu-g++", used by export()
    cross_package: str | None = None  # the Debian package that provides `cross_compiler`

    @property
    def kind(self) -> str:
        return str(self.target_dict.get("kind", "llvm"))

    @property
    def is_cpu(self) -> bool:
        return self.kind in ("llvm", "c")

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "rocm", "vulkan", "metal", "opencl")

    @property
    def is_cross(self) -> bool:
        """Code for another CPU architecture than this host's (needs a cross toolchain)."""
        triple = str(self.target_dict.get("mtriple") or "")
        if not triple:
            return False
        arch = triple.split("-")[0].lower()
        host = host_features().arch.lower()
        return _ARCH_ALIASES.get(arch, arch) != _ARCH_ALIASES.get(host, host)

    def tvm_target(self):
        """The `tvm.target.Target` (imports TVM; call it only where TVM is available)."""
        import tvm

        return tvm.target.Target(dict(self.target_dict))


# ---- host detection -------------------------------------------------------------------------
def parse_cpuinfo(text: str, arch: str = "x86_64", allowed: set[int] | None = None) -> HostFeatures:
    """HostFeatures from /proc/cpuinfo text; `allowed` limits cores to the affinity set."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    procs: list[dict[str, str]] = []
    for b in blocks:
        entry: dict[str, str] = {}
        for line in b.splitlines():
            if ":" in line:
                k, _, v = line.partition(":")
                entry[k.strip().lower()] = v.strip()
        if "processor" in entry:
            procs.append(entry)
    if allowed is not None:
        procs = [p for p in procs if _int(p.get("processor")) in allowed] or procs
    first = procs[0] if procs else {}
    flags = frozenset((first.get("flags") or first.get("features") or "").split())
    cores = {(p.get("physical id", "0"), p.get("core id", p["processor"])) for p in procs}
    return HostFeatures(
        arch=arch, vendor=first.get("vendor_id", ""), family=_int(first.get("cpu family")),
        model=_int(first.get("model")), model_name=first.get("model name", ""), flags=flags,
        physical_cores=max(1, len(cores)))


def _int(v: str | None) -> int | None:
    try:
        return int(v, 0) if v is not None else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=1)
def host_features(path: str = "/proc/cpuinfo") -> HostFeatures:
    """The current host's CPU features and physical cores available to this process."""
    arch = platform.machine()
    try:
        allowed = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = None
    try:
        with open(path) as f:
            return parse_cpuinfo(f.read(), arch, allowed)
    except OSError:
        return HostFeatures(arch=arch, physical_cores=len(allowed) if allowed else os.cpu_count() or 1)


# ---- mcpu choice ------------------------------------------------------------------------------
_AVX2 = ("avx2", "fma")
_AVX512 = ("avx512f", "avx512bw")


def choose_mcpu(f: HostFeatures) -> tuple[str | None, str]:
    """(LLVM mcpu, why) for the host; None means LLVM's default for a non-x86 host."""
    if f.arch not in ("x86_64", "amd64", "AMD64"):
        return None, f"{f.arch} host: no x86 feature detection, LLVM's default CPU"
    fam = f"family {f.family:#x}" if f.family is not None else "unknown family"
    if f.vendor == "GenuineIntel":
        if f.has("amx_tile", *_AVX512):
            return "sapphirerapids", "Intel with AMX tiles and AVX-512"
        if f.has("avx512_vnni", "avx512_vbmi2", *_AVX512):
            return "icelake-server", "Intel with AVX-512 VNNI and VBMI2 (Ice Lake class)"
        if f.has("avx512_vnni", *_AVX512):
            return "cascadelake", "Intel with AVX-512 VNNI (Cascade Lake class)"
        if f.has(*_AVX512):
            return "skylake-avx512", "Intel with AVX-512F/BW (Skylake-SP class)"
        if f.has("avx_vnni", *_AVX2):
            return "alderlake", "Intel with AVX2 and AVX-VNNI (Alder Lake class)"
        if f.has(*_AVX2):
            return "haswell", "Intel with AVX2+FMA (Haswell class)"
    elif f.vendor == "AuthenticAMD":
        if f.has(*_AVX512):
            if f.family is not None and f.family >= 0x1A:
                return "znver5", f"AMD {fam} with AVX-512 (Zen 5)"
            return "znver4", f"AMD {fam} with AVX-512 (Zen 4)"
        if f.has(*_AVX2):
            if f.family == 0x19:
                return "znver3", f"AMD {fam} with AVX2+FMA, no AVX-512 (Zen 3)"
            if f.family == 0x17:
                if (f.model or 0) >= 0x30:
                    return "znver2", f"AMD {fam} model {f.model:#x} with AVX2 (Zen 2)"
                return "znver1", f"AMD {fam} with AVX2 (Zen/Zen+)"
            return "x86-64-v3", f"AMD {fam} with AVX2+FMA (generic x86-64-v3)"
    if f.has("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"):
        return "x86-64-v4", f"{f.vendor or 'unknown vendor'} with AVX-512 (generic x86-64-v4)"
    if f.has(*_AVX2):
        return "x86-64-v3", f"{f.vendor or 'unknown vendor'} with AVX2+FMA (generic x86-64-v3)"
    return "x86-64", "no AVX2/FMA detected: baseline x86-64"


# cpuinfo flags an mcpu's code may use (the ISA extensions LLVM turns on for it). Kept to flags
# every real CPU of that class reports, so a genuine host is never refused.
_HASWELL = frozenset({"avx", "avx2", "fma", "bmi2", "f16c", "movbe"})
_SKX = _HASWELL | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
_ZEN = _HASWELL | {"adx", "sha_ni", "clzero"}
MCPU_FLAGS: dict[str, frozenset[str]] = {
    "x86-64": frozenset(), "generic": frozenset(),
    "x86-64-v2": frozenset({"ssse3", "sse4_1", "sse4_2", "popcnt"}),
    "x86-64-v3": _HASWELL, "haswell": _HASWELL, "alderlake": _HASWELL | {"avx_vnni"},
    "x86-64-v4": _SKX, "skylake-avx512": _SKX, "cascadelake": _SKX | {"avx512_vnni"},
    "icelake-server": _SKX | {"avx512_vnni", "avx512_vbmi2", "avx512vbmi"},
    "sapphirerapids": _SKX | {"avx512_vnni", "avx512_vbmi2", "avx512vbmi", "avx512_bf16",
                              "amx_tile", "amx_int8", "amx_bf16"},
    "znver1": _ZEN, "znver2": _ZEN | {"clwb"}, "znver3": _ZEN | {"clwb", "vaes", "vpclmulqdq"},
    "znver4": _ZEN | _SKX | {"clwb", "vaes", "avx512_vnni", "avx512_bf16", "avx512vbmi"},
    "znver5": _ZEN | _SKX | {"clwb", "vaes", "avx512_vnni", "avx512_bf16", "avx512vbmi"},
}
_MATTR_TO_FLAG = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
                  "avx512fp16": "avx512_fp16", "avx512vbmi2": "avx512_vbmi2", "sha": "sha_ni",
                  "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
                  "avxvnni": "avx_vnni", "neon": "asimd"}
_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "x86-64": "x86_64"}


def check_compatible(target_dict: dict[str, Any], host: HostFeatures | None = None) -> str | None:
    """Why a library built for `target_dict` cannot run on this host, or None if it can.

    Only CPU (llvm) targets are judged; an unknown mcpu is not refused (we cannot tell).
    """
    if str(target_dict.get("kind", "llvm")) != "llvm":
        return None
    host = host or host_features()
    host_arch = _ARCH_ALIASES.get(host.arch.lower(), host.arch.lower())
    triple = str(target_dict.get("mtriple", "") or "")
    if triple:
        arch = triple.split("-")[0].lower()
        arch = _ARCH_ALIASES.get(arch, arch)
        if not (arch == host_arch or (arch.startswith("arm") and host_arch.startswith("arm"))):
            return f"built for {triple} but this host is {host.arch}"
    if host_arch != "x86_64":
        return None
    mcpu = str(target_dict.get("mcpu") or "")
    need = set(MCPU_FLAGS.get(mcpu, frozenset()))
    for attr in target_dict.get("mattr") or ():
        attr = str(attr)
        if attr.startswith("+"):
            name = attr[1:].lower()
            need.add(_MATTR_TO_FLAG.get(name, name.replace("-", "_")))
    missing = sorted(need - host.flags)
    if not missing or not host.flags:
        return None
    return (f"built for mcpu={mcpu or '?'} using {', '.join(missing)}, which this host "
            f"({host.model_name or host.vendor or host.arch}) lacks; rebuild with target "
            "'cpu' on this host or 'cpu-generic'")


# ---- the registry -----------------------------------------------------------------------------
def _cpu(name: str = "cpu") -> TargetSpec:
    host = host_features()
    mcpu, why = choose_mcpu(host)
    target: dict[str, Any] = {"kind": "llvm", "num-cores": host.physical_cores}
    if mcpu:
        target["mcpu"] = mcpu
    desc = (f"host CPU {host.model_name or host.arch}: mcpu={mcpu or 'default'} because {why}; "
            f"num-cores={host.physical_cores} (physical cores in this process's affinity)")
    return TargetSpec(name, target, desc, mcpu)


def _cpu_generic() -> TargetSpec:
    host = host_features()
    return TargetSpec("cpu-generic", {"kind": "llvm", "num-cores": host.physical_cores},
                      "LLVM's default CPU for the host triple (portable, no mcpu tuning)", None)


# ---- edge (cross) targets ---------------------------------------------------------------------
# Each: the LLVM triple and ISA features, plus the Debian cross g++ that links the objects into a
# shared library for that architecture (`scripts/install-cross.sh` installs them all).
_EDGE: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "aarch64": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
                "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu",
                "64-bit Arm (ARMv8-A) Linux with NEON: Raspberry Pi 4/5, Jetson, Graviton"),
    "aarch64-sve": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+sve"]},
                    "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu",
                    ("64-bit Arm Linux with SVE (Graviton 3+, Neoverse V1/V2, A64FX); "
                     "the code traps on cores without SVE")),
    "armv7": ({"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf",
               "mattr": ["+neon", "+vfp4", "+thumb2"], "mfloat-abi": "hard"},
              "arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf",
              ("32-bit ARMv7-A Linux, hard-float ABI, NEON + VFPv4 (Raspberry Pi 2/3 32-bit OS, "
               "Cortex-A7/A9/A15)")),
    "riscv64": ({"kind": "llvm", "mtriple": "riscv64-linux-gnu",
                 "mattr": ["+64bit", "+m", "+a", "+f", "+d", "+c", "+v"], "mabi": "lp64d"},
                "riscv64-linux-gnu-g++", "g++-riscv64-linux-gnu",
                "64-bit RISC-V Linux, RV64GC + the V vector extension (RVV 1.0), lp64d ABI"),
}


def _edge(name: str) -> TargetSpec:
    target, cxx, package, desc = _EDGE[name]
    return TargetSpec(name, dict(target), desc, None, cxx, package)


# ---- CUDA ---------------------------------------------------------------------------------------
CUDA_DEFAULT_ARCH = "sm_80"
"""`cuda` alone means sm_80 (Ampere, A100): it runs on every later GPU through the driver's PTX
JIT. TVM 0.27 would default to sm_50 without a GPU to ask, which CUDA 13's nvcc rejects."""


def cuda(arch: str = CUDA_DEFAULT_ARCH, name: str | None = None) -> TargetSpec:
    """A CUDA target for compute capability `arch` ("sm_90", "90" or "9.0"); host code is x86."""
    raw = arch.strip().lower()
    digits = raw[3:] if raw.startswith("sm_") else raw.replace(".", "")
    suffix = digits[-1] if digits[-1:] in ("a", "f") else ""
    if suffix:
        digits = digits[:-1]
    if not digits.isdigit() or not 50 <= int(digits) < 200:
        raise TargetError(f"CUDA arch {arch!r} is not a compute capability; use e.g. "
                          "'cuda:sm_80' (A100), 'cuda:sm_89' (L4/RTX 40), 'cuda:sm_90' (H100)")
    sm = f"sm_{digits}{suffix}"
    host = _cpu_generic().target_dict
    target = {"kind": "cuda", "arch": sm, "host": host}
    desc = (f"NVIDIA GPU, compute capability {sm} (needs a CUDA driver and a TVM runtime built "
            "with CUDA to run); host code for this machine's CPU")
    return TargetSpec(name or f"cuda:{sm}", target, desc)


# name -> factory (factories, since "cpu" reads the host when resolved). `cuda:sm_XX` names are
# parsed by resolve(); `cuda` alone is CUDA_DEFAULT_ARCH.
TARGETS: dict[str, Callable[[], TargetSpec]] = {
    "cpu": _cpu,
    "cpu-native": lambda: _cpu("cpu-native"),
    "cpu-generic": _cpu_generic,
    "cuda": lambda: cuda(CUDA_DEFAULT_ARCH, "cuda"),
    **{name: functools.partial(_edge, name) for name in _EDGE},
}


def resolve(target: str | dict[str, Any] | TargetSpec) -> TargetSpec:
    """A TargetSpec from a name in TARGETS (or `cuda:sm_XX`), a TVM target dict, or a TargetSpec."""
    if isinstance(target, TargetSpec):
        return target
    if isinstance(target, dict):
        if "kind" not in target:
            raise TargetError(f"target dict {target} has no 'kind' (e.g. {{'kind': 'llvm'}})")
        return TargetSpec("custom", dict(target), f"custom TVM target {target}",
                          target.get("mcpu"))
    if isinstance(target, str) and target in TARGETS:
        return TARGETS[target]()
    if isinstance(target, str) and target.startswith("cuda:"):
        return cuda(target.partition(":")[2])
    raise TargetError(f"unknown target {target!r}; known targets: {', '.join(sorted(TARGETS))}, "
                      "cuda:sm_XX (or pass a TVM target dict such as "
                      "{'kind': 'llvm', 'mcpu': 'haswell'})")
