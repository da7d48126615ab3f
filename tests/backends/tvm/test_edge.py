"""Edge targets: aarch64/armv7/riscv64 artifacts build (file(1) names the right ELF), a missing or
wrong cross toolchain is a clear error, and an aarch64 artifact *runs* under qemu-aarch64 in an
aarch64 sysroot (scripts/edge-sysroot.sh) with only the TVM runtime, matching the x86 result."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.backends.tvm.build import build, export
from ember.backends.tvm.lower import lower
from ember.backends.tvm.remote import stage_runtime
from ember.backends.tvm.targets import TARGETS, resolve
from ember.errors import ArtifactError, BuildError

ROOT = Path(__file__).resolve().parents[3]
SYSROOT = Path(os.environ.get("EMBER_EDGE_SYSROOT", ROOT / ".cache/edge-sysroot/aarch64"))

EXPECTED_ELF = {
    "aarch64": "ELF 64-bit LSB shared object, ARM aarch64",
    "aarch64-sve": "ELF 64-bit LSB shared object, ARM aarch64",
    "armv7": "ELF 32-bit LSB shared object, ARM, EABI5",
    "riscv64": "ELF 64-bit LSB shared object, UCB RISC-V",
}


@pytest.fixture(scope="module")
def mlp():
    return ember.zoo.load("digits_mlp")


def _need_cross(name: str) -> None:
    spec = resolve(name)
    if shutil.which(spec.cross_compiler) is None:
        pytest.skip(f"{spec.cross_compiler} not installed: apt-get install {spec.cross_package} "
                    "(scripts/install-cross.sh)")


def _lib_of(artifact: Path, dest: Path) -> Path:
    with zipfile.ZipFile(artifact) as z:
        return Path(z.extract("lib.so", dest))


def _file(path: Path) -> str:
    if shutil.which("file") is None:
        pytest.skip("file(1) not installed: apt-get install file")
    return subprocess.run(["file", "-b", str(path)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("name", sorted(EXPECTED_ELF))
def test_edge_target_spec(name):
    spec = resolve(name)
    assert name in TARGETS and spec.is_cpu and spec.is_cross and not spec.is_gpu
    assert spec.cross_compiler.endswith("-g++") and spec.cross_package.startswith("g++-")
    assert spec.tvm_target().kind.name == "llvm"  # LLVM accepts the triple and features


@pytest.mark.parametrize("name", sorted(EXPECTED_ELF))
def test_edge_artifact_is_right_elf(name, mlp, tmp_path):
    _need_cross(name)
    out = ember.compile(mlp.module, mlp.example_inputs, target=name, output=tmp_path / "m.ember",
                        progress=False)
    assert EXPECTED_ELF[name] in _file(_lib_of(out, tmp_path))
    # This x86 host refuses it before dlopen, naming the architecture.
    with pytest.raises(ArtifactError, match="built for"):
        ember.load(out)


def test_missing_cross_compiler_names_the_package(mlp, tmp_path):
    spec = dataclasses.replace(resolve("aarch64"), cross_compiler="aarch64-linux-gnu-g++-404")
    ex = build(lower(ember.trace(mlp.module, mlp.example_inputs)),
                         spec)
    with pytest.raises(BuildError, match=r"apt-get install g\+\+-aarch64-linux-gnu"):
        export(ex, tmp_path / "lib.so")
    # The fallback needs no compiler: a tar of aarch64 object files to link on the device.
    tar = export(ex, tmp_path / "lib.tar")
    with tarfile.open(tar) as t:
        objs = [m.name for m in t.getmembers() if m.name.endswith(".o")]
        assert objs
        t.extractall(tmp_path / "objs", filter="data")
    assert "ARM aarch64" in _file(tmp_path / "objs" / objs[0])


def test_wrong_cross_compiler_is_refused(mlp, tmp_path):
    ex = build(lower(ember.trace(mlp.module, mlp.example_inputs)),
                         "armv7")
    with pytest.raises(BuildError, match="makes aarch64 code but target armv7"):
        export(ex, tmp_path / "lib.so", cross_compiler="aarch64-linux-gnu-g++")


# ---- run under qemu ---------------------------------------------------------------------------
def _sysroot() -> Path:
    """The aarch64 sysroot, prepared on first use (needs Debian's mirror and PyPI)."""
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed: apt-get install qemu-user "
                    "(scripts/install-cross.sh)")
    if not (SYSROOT / ".ready").exists():
        try:
            subprocess.run(["bash", str(ROOT / "scripts/edge-sysroot.sh"), str(SYSROOT)],
                           check=True, capture_output=True, text=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            tail = (getattr(e, "stderr", "") or "")[-500:]
            pytest.skip(f"could not prepare the aarch64 sysroot with scripts/edge-sysroot.sh "
                        f"(needs apt and pip access): {tail}")
    return SYSROOT


RUNNER = """
import sys, time, numpy as np
t0 = time.perf_counter()
import ember.runtime
m = ember.runtime.load(sys.argv[1])
t1 = time.perf_counter()
np.save(sys.argv[3], m(np.load(sys.argv[2])))
print(f"load={t1 - t0:.2f}s call={time.perf_counter() - t1:.3f}s")
assert "torch" not in sys.modules and "tvm.relax" not in sys.modules
"""


def test_aarch64_artifact_runs_under_qemu_and_matches_x86(mlp, tmp_path):
    _need_cross("aarch64")
    sysroot = _sysroot()
    arm = ember.compile(mlp.module, mlp.example_inputs, target="aarch64",
                        output=tmp_path / "arm.ember", progress=False)
    x = np.random.default_rng(0).standard_normal(tuple(mlp.example_inputs[0].shape))
    x = x.astype(np.float32)
    want = ember.compile(mlp.module, mlp.example_inputs, target="cpu", progress=False)(x)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "run.py").write_text(RUNNER)
    pkg = stage_runtime(tmp_path / "pkg")  # only the runtime's files, not the repo
    env = dict(os.environ, TVM_USE_RUNTIME_LIB="1",
               PYTHONPATH=f"{sysroot}/opt/ember/site-packages:{pkg}")
    proc = subprocess.run(
        ["qemu-aarch64", "-L", str(sysroot), str(sysroot / "usr/bin/python3.11"),
         str(tmp_path / "run.py"), str(arm), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(tmp_path / "y.npy")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
