"""build's `fold` stage: weight transposes and reshapes become constants with numpy, so Relax's
FoldConstant has no kernel left to build with LLVM (it built one per call: seconds of compile)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
from tvm import relax, tirx

import ember
from ember.backends.tvm.build import fold_layout_constants, legalize_passes

RNG = np.random.default_rng(0)
TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})


def _module(batch):
    """main(x: f32[batch, 6]) = x @ W.T + reshape(b), with W.T and the reshape on constants and
    one transpose of the input, which must stay."""
    w = RNG.standard_normal((4, 6)).astype("float32")
    b = RNG.standard_normal((4,)).astype("float32")
    x = relax.Var("x", relax.TensorType((batch, 6), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            wt = bb.emit(relax.op.permute_dims(relax.const(w), [1, 0]))
            bias = bb.emit(relax.op.reshape(relax.const(b), [1, 4]))
            xt = bb.emit(relax.op.permute_dims(x, [1, 0]))
            y = bb.emit(relax.op.add(relax.op.matmul(relax.op.permute_dims(xt, [1, 0]), wt), bias))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), w, b


def _calls(mod, op_name):
    op = tvm.ir.Op.get(op_name)
    found = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: found.append(e) if isinstance(e, relax.Call) and e.op.same_as(op)
        else None)
    return found


def test_constant_transposes_and_reshapes_become_constants_of_the_same_values():
    mod, w, b = _module(3)
    folded = fold_layout_constants(mod)
    assert len(_calls(mod, "relax.permute_dims")) == 3
    assert len(_calls(folded, "relax.permute_dims")) == 2  # only the input's transposes stay
    assert not _calls(folded, "relax.reshape")
    consts = []
    relax.analysis.post_order_visit(
        folded["main"], lambda e: consts.append(e.value.numpy())
        if isinstance(e, tvm.ir.GenericConst) else None)
    shapes = {c.shape: c for c in consts}
    np.testing.assert_array_equal(shapes[(6, 4)], w.T)
    np.testing.assert_array_equal(shapes[(1, 4)], b.reshape(1, 4))
    assert shapes[(6, 4)].flags.c_contiguous


def test_module_without_foldable_constants_is_returned_unchanged():
    x = relax.Var("x", relax.TensorType((tirx.Var("n", "int64"), 4), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.permute_dims(x, [1, 0]))
        bb.emit_func_output(out)
    mod = bb.get()
    assert fold_layout_constants(mod).same_as(mod)


def test_legalize_builds_no_kernel_to_fold_constants(monkeypatch):
    """FoldConstant evaluates a call on constants by building it with tvm.tirx.build; after the
    fold stage there must be none left (each build cost 30-100 ms)."""
    build_module = importlib.import_module("tvm.tirx.build")
    builds = []
    real = build_module.split_host_device_mods
    monkeypatch.setattr(build_module, "split_host_device_mods",
                        lambda m: builds.append(m) or real(m))
    mod, _, _ = _module(tirx.Var("batch", "int64"))
    with TARGET:
        tvm.transform.Sequential(legalize_passes()[1:])(mod)  # without the fold: LLVM builds
        assert builds, "the spy no longer sees FoldConstant's builds; update this test"
        builds.clear()
        out = tvm.transform.Sequential(legalize_passes())(mod)
    assert builds == []
    assert "metadata" in out["main"].script()  # the folded weights are constants


class _ConvLinear(torch.nn.Module):
    """conv (bias reshaped) -> linear (weight transposed): both folds in one model."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_compiled_model_matches_eager_at_batch_1_and_n(tmp_path):
    torch.manual_seed(0)
    module = _ConvLinear().eval()
    path = ember.compile(module, (torch.randn(2, 1, 5, 5),), output=tmp_path / "m.ember",
                         dynamic_dims={"x": {0: "batch"}}, progress=False)
    model = ember.load(path)
    assert model.manifest["timings"]["build.fold"] >= 0
    _, b1, _ = model._thread_state()
    assert b1 is not None  # batch 1 runs the specialization, other batches `main`
    for batch in (1, 7):
        x = RNG.standard_normal((batch, 1, 5, 5)).astype("float32")
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-5, err_msg=f"batch {batch}")
