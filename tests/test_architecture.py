"""Architecture rules from design.md, enforced: import layers and the module size cap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ember"

# Modules allowed past the soft cap, with the reason. Keep this list short.
SIZE_EXCEPTIONS: dict[str, str] = {}
HARD_CAP = 600


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def _files(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


def _violations(sub: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for f in _files(sub):
        for name in _imports(f):
            if any(name == p or name.startswith(p + ".") for p in forbidden):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    return bad


def test_ir_imports_no_framework_and_no_other_ember_package():
    forbidden = ("torch", "tvm", "onnx", "onnxruntime", "ember.frontends", "ember.passes",
                 "ember.backends", "ember.runtime", "ember.zoo", "ember.compiler", "ember.cli")
    assert not _violations("ir", forbidden)


def test_runtime_imports_neither_frontends_nor_passes_nor_torch():
    forbidden = ("torch", "onnx", "ember.frontends", "ember.passes", "ember.zoo",
                 "ember.compiler", "ember.cli", "ember.backends.torch")
    assert not _violations("runtime", forbidden)


def test_passes_and_frontends_do_not_import_backends_tvm():
    assert not _violations("passes", ("tvm", "ember.backends.tvm", "ember.runtime"))
    assert not _violations("frontends", ("tvm", "ember.backends", "ember.runtime"))


def test_importing_ember_ir_does_not_load_torch_or_tvm():
    code = ("import sys, ember, ember.ir; "
            "bad = [m for m in ('torch', 'tvm', 'onnx') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_module_size_cap():
    big = []
    for f in PKG.rglob("*.py"):
        n = len(f.read_text().splitlines())
        rel = str(f.relative_to(ROOT))
        if n > HARD_CAP and rel not in SIZE_EXCEPTIONS:
            big.append(f"{rel}: {n} lines")
    assert not big, f"modules over {HARD_CAP} lines (split them or justify): {big}"


@pytest.mark.parametrize("path", ["ember/errors.py"])
def test_every_error_derives_from_ember_error(path):
    import ember.errors as errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == errors.__name__:
            assert issubclass(obj, errors.EmberError), name
