"""The .ember file: layout, atomic writes, and every refusal (truncated, tampered, newer, wrong
target) happening before the library is loaded."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import ember
from ember.errors import ArtifactError
from ember.runtime import FORMAT_VERSION, read_artifact, write_artifact
from ember.runtime.artifact import rewrite_members, sha256


def _manifest_of(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("manifest.json"))


def test_layout_and_manifest(tiny_artifact, tiny_lib):
    with zipfile.ZipFile(tiny_artifact) as z:
        assert sorted(z.namelist()) == ["graph.ember.txt", "lib.so", "manifest.json"]
        assert z.read("lib.so") == tiny_lib.lib
    m = _manifest_of(tiny_artifact)
    assert m["format_version"] == FORMAT_VERSION
    assert m["ember_version"] == ember.__version__
    assert m["tvm_version"] == tiny_lib.tvm_version
    assert m["target"]["name"] == "cpu" and m["target"]["target"] == {"kind": "llvm"}
    assert m["inputs"][0] == {"name": "x", "shape": ["batch", 16], "dtype": "float32"}
    assert m["sha256"]["lib.so"] == sha256(tiny_lib.lib)
    assert m["sha256"]["graph.ember.txt"] == sha256(tiny_lib.ir_text.encode())
    art = read_artifact(tiny_artifact)
    assert art.ir_text == tiny_lib.ir_text and [t.name for t in art.outputs] == ["out", "twice"]


def test_params_member_is_hashed(tiny_lib, tmp_path):
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = write_artifact(tmp_path / "p.ember", manifest=tiny_lib.manifest(),
                          lib=tiny_lib.lib, ir_text=tiny_lib.ir_text, params=params)
    art = read_artifact(path)
    from safetensors.numpy import load

    np.testing.assert_array_equal(load(art.members["params.safetensors"])["w"], params["w"])
    assert "params.safetensors" in art.manifest["sha256"]


def test_write_is_atomic_on_failure(tiny_lib, tmp_path):
    bad = tiny_lib.manifest()
    bad["not_json"] = object()
    with pytest.raises(ArtifactError, match="not plain JSON"):
        write_artifact(tmp_path / "bad.ember", manifest=bad, lib=tiny_lib.lib, ir_text="")
    assert list(tmp_path.iterdir()) == []


def test_write_removes_temp_file_when_interrupted(tiny_lib, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("ember.runtime.artifact.os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_artifact(tmp_path / "m.ember", manifest=tiny_lib.manifest(), lib=tiny_lib.lib,
                       ir_text=tiny_lib.ir_text)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_existing_file(tiny_artifact, tiny_lib):
    before = tiny_artifact.read_bytes()
    bad = tiny_lib.manifest()
    bad["x"] = {1, 2}
    with pytest.raises(ArtifactError):
        write_artifact(tiny_artifact, manifest=bad, lib=tiny_lib.lib, ir_text="")
    assert tiny_artifact.read_bytes() == before
    assert len(list(tiny_artifact.parent.iterdir())) == 1


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file_is_refused(tiny_artifact, tmp_path, keep):
    data = tiny_artifact.read_bytes()
    cut = tmp_path / "cut.ember"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ArtifactError, match="truncated or not an .ember file"):
        ember.load(cut)


def test_not_a_zip_and_missing_file(tmp_path):
    junk = tmp_path / "junk.ember"
    junk.write_text("hello")
    with pytest.raises(ArtifactError, match="truncated or not an .ember file"):
        read_artifact(junk)
    with pytest.raises(ArtifactError, match="no such .ember file"):
        read_artifact(tmp_path / "nope.ember")


def test_tampered_library_names_the_member(tiny_artifact, tmp_path):
    lib = bytearray(zipfile.ZipFile(tiny_artifact).read("lib.so"))
    lib[len(lib) // 2] ^= 0xFF
    bad = tmp_path / "bad.ember"
    rewrite_members(tiny_artifact, bad, {"lib.so": bytes(lib)})
    with pytest.raises(ArtifactError, match=r"member 'lib.so' does not match its sha256"):
        ember.load(bad)


def test_tampered_ir_and_extra_or_missing_member(tiny_artifact, tmp_path):
    bad = tmp_path / "bad.ember"
    rewrite_members(tiny_artifact, bad, {"graph.ember.txt": b"graph @evil() {}"})
    with pytest.raises(ArtifactError, match="'graph.ember.txt' does not match"):
        read_artifact(bad)
    rewrite_members(tiny_artifact, bad, {"extra.bin": b"x"})
    with pytest.raises(ArtifactError, match="'extra.bin' is not listed"):
        read_artifact(bad)
    rewrite_members(tiny_artifact, bad, {"lib.so": None})
    with pytest.raises(ArtifactError, match="'lib.so' listed in the manifest is missing"):
        read_artifact(bad)


def test_corrupted_bytes_inside_zip(tiny_artifact, tmp_path):
    # flip a byte inside the stored IR text: the zip's CRC catches it before our hash does
    data = bytearray(tiny_artifact.read_bytes())
    with zipfile.ZipFile(tiny_artifact) as z:
        info = z.getinfo("lib.so")
    data[info.header_offset + 30 + len(info.filename) + 5] ^= 0x55
    bad = tmp_path / "flip.ember"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="lib.so"):
        read_artifact(bad)


def test_newer_format_version_says_upgrade(tiny_artifact, tmp_path):
    m = _manifest_of(tiny_artifact)
    m["format_version"] = FORMAT_VERSION + 1
    m["ember_version"] = "9.9.9"
    bad = tmp_path / "new.ember"
    rewrite_members(tiny_artifact, bad, {"manifest.json": json.dumps(m).encode()})
    with pytest.raises(ArtifactError, match=(rf"built by ember 9.9.9 with format "
                                             rf"{FORMAT_VERSION + 1}; this ember reads format "
                                             rf"{FORMAT_VERSION}; upgrade")):
        ember.load(bad)


def test_manifest_not_json(tiny_artifact, tmp_path):
    bad = tmp_path / "bad.ember"
    rewrite_members(tiny_artifact, bad, {"manifest.json": b"{nope"})
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
        read_artifact(bad)


@pytest.mark.parametrize("override, message", [
    ({"arch": "aarch64", "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}},
     "built for aarch64"),
    ({"host_features": ["avx512f", "no_such_isa_extension"]}, "this CPU lacks"),
    ({"os": "darwin"}, "needs darwin"),
])
def test_wrong_target_is_refused_before_loading(tiny_lib, tmp_path, override, message):
    path = write_artifact(tmp_path / "other.ember", manifest=tiny_lib.manifest(**override),
                          lib=b"not a library: loading it would fail differently", ir_text="")
    with pytest.raises(ArtifactError, match=message) as info:
        ember.load(path)
    assert "Re-compile with a target for this machine" in str(info.value)
    assert read_artifact(path, check_target=False).manifest["target"]["name"] == "cpu"


def test_mcpu_whose_isa_this_host_lacks_is_refused(tiny_lib, tmp_path):
    from ember.runtime.compat import host_cpu_features

    if {"amx_tile", "avx512f"} <= (host_cpu_features() or {"amx_tile", "avx512f"}):
        pytest.skip("this host can run sapphirerapids code")
    target = {"kind": "llvm", "mcpu": "sapphirerapids"}
    path = write_artifact(tmp_path / "spr.ember", lib=tiny_lib.lib, ir_text="",
                          manifest=tiny_lib.manifest(target=target, host_features=[]))
    with pytest.raises(ArtifactError, match="sapphirerapids.*lacks"):
        ember.load(path)


def test_other_tvm_version_is_refused(tiny_lib, tmp_path):
    manifest = tiny_lib.manifest()
    manifest["tvm_version"] = "0.19.0"
    path = write_artifact(tmp_path / "old.ember", manifest=manifest, lib=tiny_lib.lib, ir_text="")
    with pytest.raises(ArtifactError, match="built with TVM 0.19.0"):
        ember.load(path)


def test_broken_library_is_an_artifact_error(tiny_lib, tmp_path):
    path = write_artifact(tmp_path / "broken.ember", manifest=tiny_lib.manifest(),
                          lib=b"\x7fELF garbage", ir_text="")
    with pytest.raises(ArtifactError, match="could not load lib.so"):
        ember.load(path)
