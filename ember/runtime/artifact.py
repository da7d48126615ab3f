"""The .ember file: one zip holding the compiled library, its manifest and the final IR.

Layout (every member but the manifest is hashed in the manifest):

    manifest.json        format/ember/TVM versions, target (+ host arch and CPU features it
                         needs), inputs/outputs (names, shapes with symbolic dims, dtypes),
                         pipeline spec + report, compile timings, sha256 of every other member
    lib.so               the TVM-compiled module (VM bytecode + kernels, weights baked in)
    graph.ember.txt      the final IR text, for `ember inspect` and debugging
    params.safetensors   optional: weights kept outside the library

Reading verifies everything that can be verified without running native code (zip integrity,
format version, hashes, host compatibility) so a bad file is refused before `dlopen`. Nothing
here imports torch or TVM: a deployed device reads artifacts with the standard library + numpy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from . import compat

FORMAT_VERSION = 1
"""Bump when a reader of the previous version could misread a new file."""

MANIFEST = "manifest.json"
LIBRARY = "lib.so"
IR_TEXT = "graph.ember.txt"
PARAMS = "params.safetensors"


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the manifest records it: dims are ints or symbol names."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # numpy dtype name, so a reader needs no ember.ir

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> TensorSpec:
        return TensorSpec(str(d["name"]), tuple(d["shape"]), str(d["dtype"]))


@dataclass
class Artifact:
    """A verified .ember file held in memory (libraries are megabytes, not gigabytes)."""

    path: Path
    manifest: dict[str, Any]
    members: dict[str, bytes] = field(repr=False)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest["outputs"]]

    @property
    def ir_text(self) -> str:
        return self.members.get(IR_TEXT, b"").decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_manifest(*, target: Mapping[str, Any], inputs: list[TensorSpec],
                   outputs: list[TensorSpec], pipeline: Mapping[str, Any] | None = None,
                   timings: Mapping[str, float] | None = None, tvm_version: str = "",
                   name: str = "main", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest minus versions and hashes, which `write_artifact` fills in.

    `target` holds `name`, `target` (the TVM target dict), and optionally `arch` and
    `host_features` (what the runtime checks on the loading machine; see `compat`).
    """
    for key in ("name", "target"):
        if key not in target:
            raise ArtifactError(f"manifest target is missing {key!r} (got {sorted(target)})")
    return {
        "name": name,
        "tvm_version": tvm_version,
        "target": dict(target),
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "pipeline": dict(pipeline or {"spec": "", "report": []}),
        "timings": {k: round(float(v), 4) for k, v in (timings or {}).items()},
        **dict(extra or {}),
    }


def write_artifact(path: str | os.PathLike, *, manifest: Mapping[str, Any], lib: bytes | os.PathLike,
                   ir_text: str, params: Mapping[str, Any] | None = None,
               extra_members: Mapping[str, bytes] | None = None) -> Path:
    """Write a .ember file atomically: a temp file beside `path`, then `os.replace`.

    On any failure the temp file is removed and nothing is left at `path` (an existing file
    there is left untouched).
    """
    from .. import __version__

    path = Path(path)
    lib_bytes = lib if isinstance(lib, bytes) else Path(lib).read_bytes()
    members: dict[str, bytes] = {LIBRARY: lib_bytes, IR_TEXT: ir_text.encode()}
    if params:
        members[PARAMS] = _safetensors_bytes(params)
    for name, data in (extra_members or {}).items():  # e.g. cuda/sm_90.fatbin
        if name in members or name == MANIFEST:
            raise ArtifactError(f"artifact member {name!r} is reserved")
        members[name] = bytes(data)
    doc = {"format_version": FORMAT_VERSION, "ember_version": __version__, **dict(manifest),
           "sha256": {name: sha256(data) for name, data in members.items()}}
    try:
        manifest_bytes = json.dumps(doc, indent=1, sort_keys=False, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"manifest for {path} is not plain JSON data: {e}") from None
    if not path.parent.exists():
        raise ArtifactError(f"cannot write {path}: directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, manifest_bytes)
            for name, data in members.items():
                z.writestr(name, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_artifact(path: str | os.PathLike, *, check_target: bool = True) -> Artifact:
    """Read and verify a .ember file: zip, format version, hashes, then host compatibility."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such .ember file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if MANIFEST not in names:
                raise ArtifactError(f"{path}: not an .ember file (no {MANIFEST} inside)")
            manifest = _parse_manifest(path, z.read(MANIFEST))
            check_format(path, manifest)
            members = {n: _read_member(path, z, n) for n in names if n != MANIFEST}
    except (zipfile.BadZipFile, EOFError):
        raise ArtifactError(f"{path}: truncated or not an .ember file (the zip cannot be read); "
                            "copy or re-compile it") from None
    _check_hashes(path, manifest, members)
    if check_target:
        reason = compat.check_host(manifest.get("target", {}))
        if reason:
            raise ArtifactError(f"{path} was compiled for target "
                                f"{manifest['target'].get('name')!r} and cannot run here: "
                                f"{reason}. Re-compile with a target for this machine "
                                "(e.g. --target cpu).")
    return Artifact(path, manifest, members)


def check_format(path: Path, manifest: Mapping[str, Any]) -> None:
    """Refuse files from a newer (or unknown) format with an 'upgrade' message."""
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path}: manifest has no integer format_version; not an .ember file")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{path} was built by ember {manifest.get('ember_version', '?')} "
                            f"with format {version}; this ember reads format {FORMAT_VERSION}; "
                            "upgrade ember to load it")
    if version < 1:
        raise ArtifactError(f"{path}: format version {version} is not supported "
                            f"(this ember reads format {FORMAT_VERSION}); re-compile the model")
    for key in ("inputs", "outputs", "target", "sha256"):
        if key not in manifest:
            raise ArtifactError(f"{path}: manifest is missing {key!r}; the file is damaged")


def _parse_manifest(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: {MANIFEST} is not valid JSON ({e}); the file is damaged")
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: {MANIFEST} is not a JSON object; the file is damaged")
    return doc


def _read_member(path: Path, z: zipfile.ZipFile, name: str) -> bytes:
    try:
        return z.read(name)
    except (zipfile.BadZipFile, zlib.error) as e:  # CRC or deflate error: bytes changed
        raise ArtifactError(f"{path}: member {name!r} is corrupted ({e}); the file was "
                            "modified or damaged") from None


def _check_hashes(path: Path, manifest: Mapping[str, Any], members: Mapping[str, bytes]) -> None:
    expected: Mapping[str, str] = manifest["sha256"]
    for name in sorted(set(expected) | set(members)):
        if name not in members:
            raise ArtifactError(f"{path}: member {name!r} listed in the manifest is missing")
        if name not in expected:
            raise ArtifactError(f"{path}: member {name!r} is not listed in the manifest "
                                "(the file was modified after it was written)")
        if sha256(members[name]) != expected[name]:
            raise ArtifactError(f"{path}: member {name!r} does not match its sha256 in the "
                                "manifest (tampered or damaged); re-compile the model")
    if LIBRARY not in members:
        raise ArtifactError(f"{path}: the artifact has no {LIBRARY}")


def _safetensors_bytes(params: Mapping[str, Any]) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in params.items()})


def rewrite_members(path: str | os.PathLike, out: str | os.PathLike,
                    changes: Mapping[str, bytes | None]) -> None:
    """Copy an artifact replacing (or with None, dropping) members verbatim, hashes untouched.

    A tool for tests and debugging (tamper, downgrade); a real edit should re-write the artifact.
    """
    with zipfile.ZipFile(path) as src:
        data = {n: src.read(n) for n in src.namelist()}
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, value in data.items():
            z.writestr(name, value)
    Path(out).write_bytes(buf.getvalue())
