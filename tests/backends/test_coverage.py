"""Backend coverage: every registered op kind has, in each backend, an implementation, a
registry `decompose`, or an UNSUPPORTED entry with a reason. A new op fails here until it does."""

from __future__ import annotations

import pytest

from ember.ir.ops import all_schemas

KINDS = {s.kind: s for s in all_schemas()}


def _tvm():
    pytest.importorskip("tvm")
    from ember.backends.tvm.lowering import LOWERINGS, UNSUPPORTED

    return LOWERINGS, UNSUPPORTED


def _torch():
    pytest.importorskip("torch")
    from ember.backends.torch import TORCH_OPS, UNSUPPORTED

    # const is not an op to compute: run_graph materializes its payload directly.
    return {**TORCH_OPS, "const": None}, UNSUPPORTED


@pytest.mark.parametrize("backend", ["tvm", "torch"])
def test_every_kind_is_covered(backend):
    table, unsupported = _tvm() if backend == "tvm" else _torch()
    missing = [k for k, s in KINDS.items()
               if k not in table and not s.has_decompose and k not in unsupported]
    assert not missing, (f"{backend} backend: op kinds with no lowering, no decompose and no "
                         f"UNSUPPORTED reason: {missing}")


@pytest.mark.parametrize("backend", ["tvm", "torch"])
def test_unsupported_entries_are_real_reasons_for_known_kinds(backend):
    table, unsupported = _tvm() if backend == "tvm" else _torch()
    for kind, reason in unsupported.items():
        assert kind in KINDS, f"{backend}: UNSUPPORTED names unknown kind {kind!r}"
        assert isinstance(reason, str) and len(reason) > 15, f"{backend}: {kind}: {reason!r}"
        assert kind not in table, f"{backend}: {kind} is both implemented and UNSUPPORTED"


@pytest.mark.parametrize("backend", ["tvm", "torch"])
def test_no_stale_entries_for_unregistered_kinds(backend):
    table, _ = _tvm() if backend == "tvm" else _torch()
    stale = sorted(k for k in table if k not in KINDS)
    assert not stale, f"{backend} backend implements kinds the registry does not define: {stale}"


def test_every_kind_has_an_onnx_export_entry_or_reason():
    pytest.importorskip("onnx")
    from ember.backends.onnx import EXPORTERS, UNSUPPORTED as ONNX_UNSUPPORTED

    missing = [k for k in KINDS if k not in EXPORTERS and k not in ONNX_UNSUPPORTED]
    assert not missing, f"onnx export: kinds with no exporter and no UNSUPPORTED reason: {missing}"
    for kind, reason in ONNX_UNSUPPORTED.items():
        assert kind in KINDS and len(reason) > 15 and kind not in EXPORTERS, kind
