"""prune_nm (compressed format + kernels), prune_magnitude, lowrank and finetune."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.ir import DType, Graph, TensorType
from ember.ir.ops.sparse import compress_nm, decompress_nm


def _mlp():
    z = ember.zoo.load("digits_mlp")
    return z, ember.trace(z.module, z.example_inputs, dynamic_dims=z.dynamic_dims)


def _weights(g, kind="linear"):
    return {op.inputs[1].producer.attrs.get("name"): np.asarray(op.inputs[1].producer.attrs["value"])
            for op in g.ops if op.kind == kind}


def test_compress_nm_keeps_largest_per_group_and_round_trips():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 16)).astype(np.float32)
    vals, idx = compress_nm(w, 2, 4)
    assert vals.shape == idx.shape == (6, 8) and idx.dtype == np.uint8
    dense = decompress_nm(vals, idx, 2, 4, 16)
    groups = dense.reshape(6, 4, 4)
    assert ((groups != 0).sum(-1) == 2).all()
    kept = np.abs(w.reshape(6, 4, 4))
    assert np.allclose(np.sort(np.abs(groups), -1)[..., 2:], np.sort(kept, -1)[..., 2:])


def test_prune_nm_rewrites_linears_and_matches_masked_dense():
    z, g = _mlp()
    pipe = ember.Pipeline.parse("prune_nm{n=2,m=4,skip=[fc3]}")
    out = pipe.run(g)
    kinds = [op.kind for op in out.ops]
    assert kinds.count("sparse.linear_nm") == 2 and kinds.count("linear") == 1
    notes = pipe.report.passes[0].notes
    assert notes["weight_bytes_compressed"] < 0.7 * notes["weight_bytes_dense"]
    # same outputs as the dense graph with the dropped weights zeroed
    dense = g.clone()
    for op in dense.ops:
        if op.kind == "linear" and op.inputs[1].producer.attrs["name"] != "fc3.weight":
            c = op.inputs[1].producer
            c.attrs["value"] = decompress_nm(*compress_nm(c.attrs["value"], 2, 4), 2, 4,
                                             c.attrs["value"].shape[1])
    x = z.calibration[0][0]
    np.testing.assert_allclose(ember.interpret(out, x), ember.interpret(dense, x), atol=1e-4)


@pytest.mark.parametrize("batch", [64, "batch"])
def test_nm_kernel_compiles_and_matches_interpreter(batch):
    rng = np.random.default_rng(1)
    g = Graph("layer")
    x = g.add_input("x", TensorType((batch, 32) if batch == 64 else (batch, 3, 32), DType.f32))
    w = g.const(rng.standard_normal((40, 32)).astype(np.float32), name="fc.weight")
    g.set_outputs(g.add("relu", g.add("linear", x, w)))
    sparse = ember.Pipeline.parse("prune_nm").run(g)
    m = ember.compile(sparse, passes="", progress=False)
    xs = rng.standard_normal((64, 32) if batch == 64 else (64, 3, 32)).astype(np.float32)
    np.testing.assert_allclose(m(xs), ember.interpret(sparse, xs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_magnitude_reaches_sparsity_and_reports_csr(scope):
    _z, g = _mlp()
    pipe = ember.Pipeline.parse(f"prune_magnitude{{sparsity=0.6,scope={scope}}}")
    out = pipe.run(g)
    ws = list(_weights(out).values())
    total = sum(w.size for w in ws)
    zeros = sum(int((w == 0).sum()) for w in ws)
    assert abs(zeros / total - 0.6) < 0.01
    if scope == "layer":
        assert all(abs((w == 0).mean() - 0.6) < 0.01 for w in ws)
    notes = pipe.report.passes[0].notes
    assert notes["faster_kernel"] is False and notes["weight_bytes_csr"] < notes["weight_bytes_dense"]


def test_finetune_keeps_magnitude_zeros_and_distils_from_calibration():
    z, g = _mlp()
    pipe = ember.Pipeline.parse("prune_magnitude{sparsity=0.5},finetune{steps=4,batch_size=16}")
    out = pipe.run(g, calibration=z.calibration[:2])
    before = _weights(ember.Pipeline.parse("prune_magnitude{sparsity=0.5}").run(g))
    after = _weights(out)
    for name, w in after.items():
        np.testing.assert_array_equal(w == 0, before[name] == 0)
        assert not np.array_equal(w, before[name])  # it did train
    notes = pipe.report.passes[1].notes
    assert notes["distilled"] and notes["masked_weights"] == 3


def test_finetune_without_data_or_teacher_says_what_to_give():
    _, g = _mlp()
    with pytest.raises(ember.EmberError, match="zoo=NAME"):
        ember.Pipeline.parse("finetune{steps=1}").run(g)


def test_finetune_trains_nm_values_keeps_indices_and_reports_accuracy():
    _z, g = _mlp()
    pipe = ember.Pipeline.parse("prune_nm,finetune{steps=3,zoo=digits_mlp}")
    out = pipe.run(g)
    nm = [op for op in out.ops if op.kind == "sparse.linear_nm"]
    ref = ember.Pipeline.parse("prune_nm").run(g)
    ref_nm = [op for op in ref.ops if op.kind == "sparse.linear_nm"]
    for a, b in zip(nm, ref_nm):
        np.testing.assert_array_equal(a.inputs[2].producer.attrs["value"],
                                      b.inputs[2].producer.attrs["value"])
    notes = pipe.report.passes[1].notes
    assert 0 <= notes["accuracy_before"] <= 1 and 0 <= notes["accuracy_after"] <= 1


def test_lowrank_ratio_halves_params_and_energy_one_is_exact_on_low_rank_weights():
    _z, g = _mlp()
    pipe = ember.Pipeline.parse("lowrank{rank_ratio=0.5}")
    pipe.run(g)
    notes = pipe.report.passes[0].notes
    assert notes["params_after"] <= 0.52 * notes["params_before"]
    rng = np.random.default_rng(2)
    low = Graph("low")
    x = low.add_input("x", TensorType(("batch", 4, 6, 6), DType.f32))
    w = (rng.standard_normal((16, 2)) @ rng.standard_normal((2, 36))).reshape(16, 4, 3, 3)
    c = low.add("conv2d", x, low.const(w.astype(np.float32), name="c.weight"),
                low.const(np.ones(16, np.float32)), padding=(1, 1))
    low.set_outputs(c)
    out = ember.Pipeline.parse("lowrank{energy=0.9999}").run(low)
    assert [op.kind for op in out.ops].count("conv2d") == 2
    xs = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(ember.interpret(out, xs), ember.interpret(low, xs), atol=1e-3)


def test_lowrank_skips_layers_where_it_saves_nothing():
    _z, g = _mlp()
    pipe = ember.Pipeline.parse("lowrank{energy=1.0}")
    out = pipe.run(g)
    assert str(out) == str(g)
    assert len(pipe.report.passes[0].notes["skipped"]) == 3


def test_lowrank_params_budget_picks_ranks_by_one_energy_threshold():
    _z, g = _mlp()
    pipe = ember.Pipeline.parse("lowrank{params=0.5}")
    out = pipe.run(g)
    notes = pipe.report.passes[0].notes
    from ember.passes.prune import _common as C

    assert C.params(out) == notes["params_after"] <= 0.5 * notes["params_before"]
    assert notes["params_after"] > 0.47 * notes["params_before"]  # the budget is used up
    thr = notes["energy_threshold"]
    for layer in notes["layers"]:  # each keeps just enough of its spectrum for the threshold
        assert layer["energy_kept"] >= thr - 1e-4
    ranks = {layer["layer"]: layer["rank"] for layer in notes["layers"]}
    assert ranks["fc1"] != ranks["fc2"]  # spectra differ, so do the ranks
    # a looser budget keeps more rank and more of every spectrum
    loose = ember.Pipeline.parse("lowrank{params=0.7}")
    loose.run(g)
    assert loose.report.passes[0].notes["energy_threshold"] > thr
    with pytest.raises(ember.EmberError, match="params"):
        ember.Pipeline.parse("lowrank{params=1.5}")
