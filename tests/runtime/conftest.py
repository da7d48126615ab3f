"""A tiny hand-built Relax model, so runtime tests need neither the frontend nor the passes.

    main(x: f32[batch,16], y: f32[batch,8]) -> (relu(x @ W.T) + y, x * 2)

Two inputs sharing a symbolic dim and two outputs exercise every input check and tuple outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ember.runtime import TensorSpec, build_manifest, write_artifact
from ember.runtime.compat import target_record


@dataclass
class TinyLib:
    lib: bytes
    weight: np.ndarray
    tvm_version: str

    ir_text: str = ""

    def reference(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.maximum(x @ self.weight.T, 0) + y, x * 2

    def manifest(self, **target_overrides) -> dict:
        """The manifest of this model compiled for `cpu`, with target fields overridden."""
        target = {**target_record("cpu", {"kind": "llvm"}), **target_overrides}
        return build_manifest(target=target, inputs=INPUTS, outputs=OUTPUTS,
                              pipeline={"spec": "fold", "report": {"spec": "fold", "passes": []}},
                              timings={"build": 1.0}, tvm_version=self.tvm_version, name="tiny")


INPUTS = [TensorSpec("x", ("batch", 16), "float32"), TensorSpec("y", ("batch", 8), "float32")]
OUTPUTS = [TensorSpec("out", ("batch", 8), "float32"), TensorSpec("twice", ("batch", 16), "float32")]
IR_TEXT = "graph @tiny(%x: f32[batch,16], %y: f32[batch,8]) -> (f32[batch,8], f32[batch,16]) {}\n"


@pytest.fixture(scope="session")
def tiny_lib(tmp_path_factory) -> TinyLib:
    import tvm
    from tvm import relax, tirx

    weight = np.random.default_rng(0).standard_normal((8, 16)).astype("float32")
    bb = relax.BlockBuilder()
    n = tirx.Var("batch", "int64")
    x = relax.Var("x", relax.TensorType((n, 16), "float32"))
    y = relax.Var("y", relax.TensorType((n, 8), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(np.ascontiguousarray(weight.T))))
            out = bb.emit(relax.op.add(relax.op.nn.relu(h), y))
            twice = bb.emit(relax.op.multiply(x, relax.const(np.float32(2.0))))
            gv = bb.emit_output(relax.Tuple([out, twice]))
        bb.emit_func_output(gv)
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        mod = relax.get_pipeline("zero")(bb.get())
    path = tmp_path_factory.mktemp("tiny") / "tiny.so"
    tvm.compile(mod, target=target).export_library(str(path))
    return TinyLib(path.read_bytes(), weight, tvm.__version__, IR_TEXT)


@pytest.fixture
def tiny_artifact(tiny_lib, tmp_path) -> Path:
    return write_artifact(tmp_path / "tiny.ember", manifest=tiny_lib.manifest(),
                          lib=tiny_lib.lib, ir_text=IR_TEXT)
