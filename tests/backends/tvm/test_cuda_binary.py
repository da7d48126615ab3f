"""CUDA machine code in the artifact: nvcc (where installed) compiles the generated CUDA C to a
fatbin at compile time, the artifact stores it with the source hash, and the runtime's compile
callback hands it back (or compiles, or says what to install). No GPU is needed for any of it."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

import ember
from ember.backends.tvm import cuda_binary
from ember.backends.tvm.build import build
from ember.backends.tvm.lower import lower
from ember.backends.tvm.targets import resolve
from ember.errors import ArtifactError
from ember.runtime import cuda as rt_cuda

needs_nvcc = pytest.mark.skipif(cuda_binary.find_nvcc() is None,
                                reason="nvcc not installed (CUDA toolkit): no fatbin to check")


@pytest.fixture(scope="module")
def cuda_build():
    z = ember.zoo.load("digits_mlp")
    spec = resolve("cuda:sm_90")
    return z, spec, build(lower(ember.trace(z.module, z.example_inputs)), spec)


def test_one_cuda_source_with_the_dense_kernels(cuda_build):
    _, _, ex = cuda_build
    (src,) = cuda_binary.cuda_sources(ex)
    assert src.count('extern "C" __global__') >= 3


@needs_nvcc
def test_precompile_gives_an_sm90_fatbin_keyed_by_source_hash(cuda_build):
    _, spec, ex = cuda_build
    members, record = cuda_binary.precompile(ex, spec.tvm_target(), "sm_90")
    assert "reason" not in record, record
    blob = members[record["member"]]
    assert blob.startswith(cuda_binary.FATBIN_MAGIC)
    (src,) = cuda_binary.cuda_sources(ex)
    assert record["source_sha256"] == hashlib.sha256(src.encode()).hexdigest()


def test_precompile_without_nvcc_says_the_device_compiles(cuda_build, monkeypatch):
    _, spec, ex = cuda_build
    monkeypatch.setattr(cuda_binary, "find_nvcc", lambda: None)
    members, record = cuda_binary.precompile(ex, spec.tvm_target(), "sm_90")
    assert members == {} and "nvcc not found" in record["reason"]


@needs_nvcc
def test_artifact_carries_the_fatbin_and_manifest_record(cuda_build, tmp_path):
    z, _, _ = cuda_build
    path = ember.compile(z.module, z.example_inputs, target="cuda:sm_90",
                         output=tmp_path / "m.ember", progress=False)
    with zipfile.ZipFile(path) as zf:
        import json

        manifest = json.loads(zf.read("manifest.json"))
        record = manifest["cuda_binary"]
        assert record["arch"] == "sm_90" and zf.read(record["member"]).startswith(
            cuda_binary.FATBIN_MAGIC)
        assert record["member"] in manifest["sha256"]  # covered by the integrity check


def test_callback_returns_the_stored_binary_for_the_same_source():
    src = 'extern "C" __global__ void k() {}'
    stored = {hashlib.sha256(src.encode()).hexdigest(): b"FATBIN"}
    compiled = []
    cb = rt_cuda.make_callback(stored, "sm_90", compile_source=lambda c: compiled.append(c) or b"X")
    assert cb(src) == b"FATBIN" and compiled == []
    assert cb(src + " ") == b"X" and compiled == [src + " "]  # other source: compile it


def test_compile_here_without_a_compiler_names_what_to_install(monkeypatch):
    monkeypatch.setattr(rt_cuda.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(rt_cuda.shutil, "which", lambda name: None)
    with pytest.raises(ArtifactError, match="pip install cuda-python.*nvcc"):
        rt_cuda.compile_here('extern "C" __global__ void k() {}')


def test_install_uses_the_binary_only_for_the_matching_arch(monkeypatch):
    import tvm
    import tvm_ffi

    manifest = {"cuda_binary": {"arch": "sm_90", "member": "cuda/sm_90.fatbin",
                                "source_sha256": hashlib.sha256(b"src").hexdigest()}}
    members = {"cuda/sm_90.fatbin": b"BIN"}
    for gpu, uses in (("sm_90", True), ("sm_100", True), ("sm_80", False)):
        monkeypatch.setattr(rt_cuda, "device_arch", lambda _tvm, g=gpu: g)
        monkeypatch.setattr(rt_cuda, "compile_here", lambda code: b"COMPILED")
        plan = rt_cuda.install(tvm, manifest, members)
        assert plan["uses_stored_binary"] is uses
        cb = tvm_ffi.get_global_func(rt_cuda.CALLBACK)
        assert bytes(cb("src")) == (b"BIN" if uses else b"COMPILED")


def test_runs_on_same_or_later_arch_except_arch_specific():
    assert rt_cuda.runs_on("sm_80", "sm_80") and rt_cuda.runs_on("sm_80", "sm_90")
    assert not rt_cuda.runs_on("sm_90", "sm_80")
    assert not rt_cuda.runs_on("sm_90a", "sm_100") and rt_cuda.runs_on("sm_90a", "sm_90a")
    assert rt_cuda.runs_on("sm_90", None) and not rt_cuda.runs_on(None, "sm_90")


@needs_nvcc
def test_fatbin_carries_ptx_for_later_gpus(cuda_build):
    _, spec, ex = cuda_build
    members, record = cuda_binary.precompile(ex, spec.tvm_target(), "sm_90")
    assert sorted(cuda_binary.fatbin_entries(members[record["member"]])) == [("elf", 90),
                                                                              ("ptx", 90)]


def test_force_compile_ignores_the_stored_binary(monkeypatch):
    import tvm

    manifest = {"cuda_binary": {"arch": "sm_90", "member": "cuda/sm_90.fatbin",
                                "source_sha256": hashlib.sha256(b"src").hexdigest()}}
    monkeypatch.setattr(rt_cuda, "device_arch", lambda _tvm: "sm_90")
    monkeypatch.setenv("EMBER_CUDA_FORCE_COMPILE", "1")
    assert rt_cuda.install(tvm, manifest, {"cuda/sm_90.fatbin": b"BIN"})[
        "uses_stored_binary"] is False
    assert rt_cuda.install(tvm, {}, {})["uses_stored_binary"] is False  # no record at all
