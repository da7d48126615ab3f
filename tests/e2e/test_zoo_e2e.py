"""End to end: every zoo model -> ember.compile -> .ember -> load in a fresh process without
torch -> the same numbers as torch eager; and a failed compile leaves nothing behind.

Compiling takes seconds per model, so each model is compiled once per module (fixture) and the
artifact is shared by the tests that need it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

import ember
import ember.zoo
from ember.errors import BuildError, EmberError, PipelineSpecError, UnsupportedOpError

ATOL = 1e-4


@pytest.fixture(scope="module", params=ember.zoo.names())
def compiled(request, tmp_path_factory):
    """(zoo model, artifact path) compiled with cleanup passes and a dynamic batch."""
    z = ember.zoo.load(request.param)
    out = tmp_path_factory.mktemp(request.param) / f"{request.param}.ember"
    path = ember.compile(z.module, z.example_inputs, passes="fold,dce,cse,canonicalize",
                         output=out, calibration=z.calibration, dynamic_dims=z.dynamic_dims,
                         progress=False)
    return z, path


def _eager(z, inputs: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return z.module(*[torch.from_numpy(a) for a in inputs]).numpy()


def test_artifact_runs_without_torch_and_matches_eager(compiled, tmp_path):
    z, path = compiled
    batches = {"example": [x.numpy() for x in z.example_inputs],
               "one": [x[:1].numpy() for x in z.example_inputs]}
    for key, inputs in batches.items():
        np.savez(tmp_path / f"in_{key}.npz", *inputs)
    code = textwrap.dedent(f"""
        import sys, numpy as np, ember
        model = ember.load({str(path)!r})
        for key in ("example", "one"):
            data = np.load({str(tmp_path)!r} + f"/in_{{key}}.npz")
            out = model(*[data[f"arr_{{i}}"] for i in range(len(data.files))])
            np.save({str(tmp_path)!r} + f"/out_{{key}}.npy", out)
        assert "torch" not in sys.modules, "loading/running an artifact imported torch"
        print(sorted(m for m in ("ember.frontends", "ember.passes") if m in sys.modules))
    """)
    # TVM_USE_RUNTIME_LIB=1: run as on a device (TVM runtime only, no Relax compiler); the
    # default mode is covered by tests/runtime/test_module.py
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", "the runtime imported compiler packages"
    for key, inputs in batches.items():
        got = np.load(tmp_path / f"out_{key}.npy")
        want = _eager(z, inputs)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0, err_msg=f"{z.name} batch {key}")


def test_manifest_describes_the_model(compiled):
    z, path = compiled
    m = ember.load(path)
    assert m.input_names == list(z.input_names)
    for spec, x in zip(m.inputs, z.example_inputs):
        assert spec.dtype == "float32" and len(spec.shape) == x.ndim
        assert spec.shape[0] == "batch" and list(spec.shape[1:]) == list(x.shape[1:])
    assert m.manifest["pipeline"]["spec"] == "fold,dce,cse,canonicalize"
    assert [p["name"] for p in m.report["passes"]] == ["fold", "dce", "cse", "canonicalize"]
    assert all(p["max_abs_error"] is not None for p in m.report["passes"])  # check=True ran
    assert set(m.manifest["timings"]) >= {"trace", "passes", "lower", "build"}
    assert m.ir_text.startswith("graph @")
    assert m.manifest["target"]["name"] == "cpu"


def test_accuracy_matches_eager(compiled):
    z, path = compiled
    if z.metric != "accuracy":
        pytest.skip(f"{z.name} scores a sampler, not a classifier")
    m = ember.load(path)
    assert abs(z.evaluate(m) - z.evaluate(ember.zoo.as_numpy_fn(z.module))) < 1e-9


# ---- failures leave nothing behind ---------------------------------------------------------
class _Unsupported(torch.nn.Module):
    def forward(self, x):
        return torch.special.erfcx(x) + 1


def test_unsupported_op_writes_nothing(tmp_path):
    with pytest.raises(UnsupportedOpError, match="special_erfcx"):
        ember.compile(_Unsupported(), (torch.randn(2, 3),), output=tmp_path / "m.ember",
                      progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_pass_spec_or_target_writes_nothing(tmp_path):
    z = ember.zoo.load("digits_mlp")
    with pytest.raises(PipelineSpecError, match="unknown pass"):
        ember.compile(z.module, z.example_inputs, passes="fold,nope", output=tmp_path / "m.ember",
                      progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EmberError, match="unknown target 'gpu9000'"):
        ember.compile(z.module, z.example_inputs, target="gpu9000", output=tmp_path / "m.ember",
                      progress=False)
    assert list(tmp_path.iterdir()) == []


def test_build_failure_writes_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    from ember.backends import tvm as backend

    old = tmp_path / "m.ember"
    old.write_bytes(b"previous artifact")

    def failing_build(mod, spec, **kwargs):
        raise BuildError("TVM compile stage failed (injected by the test)")

    monkeypatch.setattr(backend, "build", failing_build)
    z = ember.zoo.load("digits_mlp")
    with pytest.raises(BuildError, match="injected"):
        ember.compile(z.module, z.example_inputs, output=old, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["m.ember"]
    assert old.read_bytes() == b"previous artifact"


class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return torch.tanh(self.fc(x))


def test_compile_without_output_returns_a_loaded_model():
    module, x = _Small(), torch.randn(4, 6)
    m = ember.compile(module, (x,), progress=False)
    np.testing.assert_allclose(m(x.numpy()), module(x).detach().numpy(), atol=ATOL)
    assert m.manifest["inputs"][0]["shape"] == [4, 6]  # no dynamic_dims: static shapes
    with pytest.raises(EmberError, match="dim 0 is 1 but the model was compiled for 4"):
        m(x[:1].numpy())


def test_compile_a_graph_and_reject_other_things(tmp_path):
    module, x = _Small(), torch.randn(4, 6)
    graph = ember.trace(module, (x,), dynamic_dims={"x": {0: "n"}})
    path = ember.compile(graph, output=tmp_path / "g.ember", passes="", progress=False)
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["pipeline"]["spec"] == "" and manifest["name"] == graph.name
    assert manifest["inputs"][0]["shape"] == ["n", 6]
    y = ember.load(path)(x[:2].numpy())
    np.testing.assert_allclose(y, module(x[:2]).detach().numpy(), atol=ATOL)
    with pytest.raises(EmberError, match="compile expects a torch.nn.Module"):
        ember.compile(42, progress=False)
    with pytest.raises(EmberError, match="needs example_inputs"):
        ember.compile(module, progress=False)
