"""Target detection from mocked /proc/cpuinfo text, the registry, and the ISA compatibility check."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ember.backends.tvm import targets
from ember.backends.tvm.targets import (
    HostFeatures,
    TargetSpec,
    check_compatible,
    choose_mcpu,
    parse_cpuinfo,
    resolve,
)
from ember.errors import EmberError, TargetError


def _cpuinfo(vendor: str, family: int, model: int, flags: str, name: str, cores=((0, 0), (0, 1)),
             threads_per_core: int = 1) -> str:
    blocks, n = [], 0
    for phys, core in cores:
        for _ in range(threads_per_core):
            blocks.append(f"processor\t: {n}\nvendor_id\t: {vendor}\ncpu family\t: {family}\n"
                          f"model\t\t: {model}\nmodel name\t: {name}\nphysical id\t: {phys}\n"
                          f"core id\t\t: {core}\nflags\t\t: {flags}\n")
            n += 1
    return "\n".join(blocks)


BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx f16c movbe"
HASWELL = BASE + " avx2 fma bmi2"
SKX = HASWELL + " avx512f avx512bw avx512cd avx512dq avx512vl"
SPR = SKX + " avx512_vnni avx512_vbmi2 avx512vbmi avx512_bf16 amx_tile amx_int8 amx_bf16"
ZEN3 = HASWELL + " adx sha_ni clzero clwb vaes vpclmulqdq"
ZEN4 = ZEN3 + " avx512f avx512bw avx512cd avx512dq avx512vl avx512_vnni avx512_bf16 avx512vbmi"

CPUS = [
    ("GenuineIntel", 6, 143, SPR, "Intel(R) Xeon(R) Platinum 8480+", "sapphirerapids"),
    ("GenuineIntel", 6, 85, SKX + " avx512_vnni", "Intel(R) Xeon(R) Gold 6248", "cascadelake"),
    ("GenuineIntel", 6, 85, SKX, "Intel(R) Xeon(R) Gold 6148", "skylake-avx512"),
    ("GenuineIntel", 6, 63, HASWELL, "Intel(R) Xeon(R) E5-2680 v3", "haswell"),
    ("AuthenticAMD", 25, 17, ZEN4, "AMD EPYC 9654", "znver4"),
    ("AuthenticAMD", 25, 1, ZEN3, "AMD EPYC 7763", "znver3"),
    ("AuthenticAMD", 23, 49, HASWELL + " adx sha_ni clzero clwb", "AMD EPYC 7742", "znver2"),
    ("GenuineIntel", 6, 23, BASE, "Intel(R) Core(TM)2 Duo", "x86-64"),
]


@pytest.mark.parametrize("vendor,family,model,flags,name,want", CPUS, ids=[c[-1] for c in CPUS])
def test_mcpu_choice_from_cpuinfo(vendor, family, model, flags, name, want):
    host = parse_cpuinfo(_cpuinfo(vendor, family, model, flags, name))
    mcpu, why = choose_mcpu(host)
    assert mcpu == want, why
    assert why  # the description says why it was chosen
    # A library built for the chosen mcpu must be accepted on that very host.
    assert check_compatible({"kind": "llvm", "mcpu": mcpu}, host) is None


def test_physical_cores_count_hyperthreads_once_and_respect_affinity():
    text = _cpuinfo("GenuineIntel", 6, 85, SKX, "Xeon", cores=[(0, 0), (0, 1), (0, 2)],
                    threads_per_core=2)
    assert parse_cpuinfo(text).physical_cores == 3
    assert parse_cpuinfo(text, allowed={0, 1}).physical_cores == 1  # two threads of core 0
    assert parse_cpuinfo(text, allowed={0, 2, 4}).physical_cores == 3


def test_non_x86_host_gets_no_mcpu():
    text = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n"
    host = parse_cpuinfo(text, arch="aarch64")
    assert choose_mcpu(host)[0] is None
    assert "asimd" in host.flags


def test_check_compatible_refuses_missing_isa_and_wrong_arch():
    zen3 = parse_cpuinfo(_cpuinfo("AuthenticAMD", 25, 1, ZEN3, "AMD EPYC 7763"))
    reason = check_compatible({"kind": "llvm", "mcpu": "sapphirerapids"}, zen3)
    assert reason and "avx512f" in reason and "amx_tile" in reason
    assert check_compatible({"kind": "llvm", "mcpu": "znver4"}, zen3)
    assert check_compatible({"kind": "llvm", "mattr": ["+avx512f"]}, zen3)
    assert check_compatible({"kind": "llvm", "mcpu": "haswell", "num-cores": 4}, zen3) is None
    assert check_compatible({"kind": "llvm"}, zen3) is None
    assert "aarch64" in check_compatible({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, zen3)
    assert check_compatible({"kind": "llvm", "mtriple": "x86_64-linux-gnu"}, zen3) is None


def test_resolve_names_dicts_and_unknown_names():
    cpu = resolve("cpu")
    assert isinstance(cpu, TargetSpec) and cpu.target_dict["kind"] == "llvm"
    assert cpu.target_dict["num-cores"] >= 1
    assert cpu.mcpu == cpu.target_dict.get("mcpu")
    assert "mcpu=" in cpu.description and "because" in cpu.description
    assert check_compatible(cpu.target_dict) is None  # the host accepts its own build
    assert "mcpu" not in resolve("cpu-generic").target_dict
    custom = resolve({"kind": "llvm", "mcpu": "haswell"})
    assert custom.mcpu == "haswell" and resolve(custom) is custom
    with pytest.raises(TargetError) as info:
        resolve("tpu-9000")
    assert isinstance(info.value, EmberError)
    for name in targets.TARGETS:
        assert name in str(info.value)


def test_cpu_target_is_accepted_by_tvm():
    tvm = pytest.importorskip("tvm")
    t = resolve("cpu").tvm_target()
    assert isinstance(t, tvm.target.Target) and t.kind.name == "llvm"


def test_targets_module_imports_without_torch_or_tvm():
    code = ("import sys, ember.backends.tvm.targets as t; t.host_features(); "
            "t.check_compatible({'kind': 'llvm', 'mcpu': 'x86-64'}); "
            "bad = [m for m in ('torch', 'tvm') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_host_features_reads_this_machine():
    host = targets.host_features()
    assert isinstance(host, HostFeatures) and host.physical_cores >= 1
