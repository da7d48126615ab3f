"""CUDA target without a GPU: names resolve to an explicit arch, codegen produces CUDA C that the
artifact embeds, nvcc (where installed) compiles that source to a cubin, and loading a CUDA
artifact here is a clear ArtifactError. With a GPU (`-m gpu`), zoo models run and match CPU."""

from __future__ import annotations

import shutil
import subprocess
import zipfile

import numpy as np
import pytest

import ember
from ember.backends.tvm.build import build
from ember.backends.tvm.lower import lower
from ember.backends.tvm.targets import CUDA_DEFAULT_ARCH, resolve
from ember.errors import ArtifactError, TargetError


@pytest.mark.parametrize("name,arch", [("cuda", CUDA_DEFAULT_ARCH), ("cuda:sm_90", "sm_90"),
                                       ("cuda:89", "sm_89"), ("cuda:9.0", "sm_90"),
                                       ("cuda:sm_90a", "sm_90a")])
def test_cuda_names_resolve_to_explicit_arch(name, arch):
    spec = resolve(name)
    assert spec.is_gpu and not spec.is_cpu
    assert spec.target_dict["arch"] == arch
    tgt = spec.tvm_target()
    assert tgt.kind.name == "cuda" and str(tgt.attrs["arch"]) == arch
    assert tgt.host.kind.name == "llvm"


@pytest.mark.parametrize("bad", ["cuda:", "cuda:sm_xx", "cuda:sm_20", "cuda:ampere"])
def test_bad_cuda_arch_is_a_target_error(bad):
    with pytest.raises(TargetError, match="compute capability"):
        resolve(bad)


@pytest.fixture(scope="module")
def cuda_build():
    z = ember.zoo.load("digits_mlp")
    ex = build(lower(ember.trace(z.module, z.example_inputs)), "cuda:sm_90")
    return z, ex


def _cuda_source(ex) -> str:
    mods, sources = [ex.mod], []
    while mods:  # the CUDA module hangs under the host (llvm) module
        m = mods.pop()
        if m.kind == "cuda":
            sources.append(m.inspect_source())
        mods.extend(m.imports)
    assert len(sources) == 1, "expected one CUDA device module"
    return sources[0]


def test_cuda_codegen_emits_scheduled_kernels(cuda_build):
    _, ex = cuda_build
    src = _cuda_source(ex)
    assert src.count('extern "C" __global__') >= 3  # three fused dense layers
    assert "threadIdx." in src and "blockIdx." in src  # dlight bound the loops to threads
    assert ex.ember_scheduled and ex.ember_timings["schedule"] > 0


def test_cuda_artifact_embeds_code_and_refuses_to_load_without_gpu(cuda_build, tmp_path):
    z, _ = cuda_build
    path = ember.compile(z.module, z.example_inputs, target="cuda:sm_90",
                         output=tmp_path / "m.ember", progress=False)
    with zipfile.ZipFile(path) as zf:
        lib = zf.read("lib.so")
    assert b"fused_matmul" in lib and b"__global__" in lib  # the generated CUDA is inside
    from ember.runtime.compat import device_unavailable
    from ember.runtime.module import import_tvm

    reason = device_unavailable(import_tvm(), "cuda")
    if reason is None:
        pytest.skip("a CUDA GPU is present: the no-GPU error cannot be exercised")
    with pytest.raises(ArtifactError, match="cuda:sm_90.*cannot run here") as e:
        ember.load(path)
    assert reason in str(e.value)


def test_nvcc_compiles_generated_source_to_cubin(cuda_build, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed (CUDA toolkit): cannot check the generated source")
    _, ex = cuda_build
    (tmp_path / "k.cu").write_text(_cuda_source(ex))
    proc = subprocess.run([nvcc, "-cubin", "-arch=sm_90", "-O3", "-o", str(tmp_path / "k.cubin"),
                           str(tmp_path / "k.cu")], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cubin = (tmp_path / "k.cubin").read_bytes()
    assert cubin[:4] == b"\x7fELF" and b"fused_matmul" in cubin


ZOO = ["digits_mlp", "digits_cnn", "digits_vit", "digits_gru", "seq_linear_rnn", "digits_flow"]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_runs_on_gpu_and_matches_cpu(name, tmp_path):
    from ember.runtime.compat import device_unavailable
    from ember.runtime.module import import_tvm

    reason = device_unavailable(import_tvm(), "cuda")
    if reason:
        pytest.skip(reason)
    z = ember.zoo.load(name)
    inputs = [x.numpy() for x in z.example_inputs]
    gpu = ember.compile(z.module, z.example_inputs, target="cuda", progress=False)
    cpu = ember.compile(z.module, z.example_inputs, target="cpu", progress=False)
    got, want = gpu(*inputs), cpu(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(g, w, atol=1e-3, rtol=1e-3)
