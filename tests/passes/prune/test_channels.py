"""prune_channels: dependency groups, physical shrinking, exactness at ratio 0 and with zeros."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ember
from ember.ir import DType, Graph, TensorType
from ember.passes.prune._groups import analyze
from ember.passes.prune.channels import select_units, shrink


def _zoo_graph(name):
    z = ember.zoo.load(name)
    return z, ember.trace(z.module, z.example_inputs, dynamic_dims=z.dynamic_dims)


def _consumer_zeroed(graph: Graph, removed, analysis) -> Graph:
    """`graph` with the consumer slices (weight input columns) of `removed` units set to zero:
    then the removed channels cannot reach any output, so the pruned graph must match it."""
    g = graph.clone()
    by_id = {id(op.results[0]): op for op in g.ops if op.kind == "const"}
    orig = {id(op.results[0]): op for op in graph.ops if op.kind == "const"}
    new_of = {vid: by_id[id(g_op.results[0])] for vid, g_op in
              zip(orig, [op for op in g.ops if op.kind == "const"])}
    consumer_axes = set()
    for op in graph.ops:
        if op.kind in ("linear", "conv2d") and op.inputs[1].producer.kind == "const":
            consumer_axes.add((id(op.inputs[1]), 1))
    for u in removed:
        for (vid, ax), idx in u.members.items():
            if (vid, ax) in consumer_axes:
                op = new_of[vid]
                arr = np.array(op.attrs["value"])
                sl = [slice(None)] * arr.ndim
                sl[ax] = idx
                arr[tuple(sl)] = 0
                arr.flags.writeable = False
                op.attrs["value"] = arr
    return g


def _prune_all(graph, ratio, rng):
    analysis = analyze(graph)
    removed = []
    for group in analysis.groups:
        scores = list(rng.random(group.size))
        removed += [group.units[i] for i in select_units(group, scores, ratio, 1)]
    return analysis, removed, shrink(graph, removed, analysis)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_vit"])
def test_zoo_prune_shrinks_verifies_and_matches_zeroed_original(name):
    z, g = _zoo_graph(name)
    rng = np.random.default_rng(0)
    analysis, removed, pruned = _prune_all(g, 0.5, rng)
    assert removed
    pruned.verify()
    assert pruned.weight_bytes() < 0.75 * g.weight_bytes()
    x = z.calibration[0][0]
    want = ember.interpret(_consumer_zeroed(g, removed, analysis), x)
    np.testing.assert_allclose(ember.interpret(pruned, x), want, rtol=1e-4, atol=1e-4)


def test_cnn_groups_couple_residual_and_vit_heads_are_units():
    _, cnn = _zoo_graph("digits_cnn")
    names = sorted(tuple(gr.names) for gr in analyze(cnn).groups)
    assert names == [("conv1.weight",), ("conv2.weight", "conv3.weight")]
    _, vit = _zoo_graph("digits_vit")
    heads = [gr for gr in analyze(vit).groups if any("q_proj" in n for n in gr.names)]
    assert len(heads) == 2 and all(gr.size == 4 for gr in heads)  # 4 heads of 8 dims
    unit = heads[0].units[0]
    assert max(len(i) for i in unit.members.values()) == 8  # 8 rows of each projection
    # the residual stream (layer norm over it) and the logits are never pruned
    assert not any("patch_embed" in n or "head" == n.split(".")[0] for gr in analyze(vit).groups
                   for n in gr.names)


def test_vit_pipeline_prunes_heads_physically():
    _z, g = _zoo_graph("digits_vit")
    pipe = ember.Pipeline.parse("prune_channels{ratio=0.5}")
    out = pipe.run(g)
    reshapes = [op.attrs["shape"] for op in out.ops if op.kind == "reshape"
                and len(op.attrs["shape"]) == 4]
    assert reshapes and all(s[2] == 2 and s[3] == 8 for s in reshapes)
    notes = pipe.report.passes[0].notes
    assert notes["flops_after"] <= 0.55 * notes["flops_before"]


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_vit"])
def test_ratio_zero_is_the_original_exactly(name):
    z, g = _zoo_graph(name)
    out = ember.Pipeline.parse("prune_channels{ratio=0}").run(g)
    assert str(out) == str(g)
    x = z.calibration[0][0]
    np.testing.assert_array_equal(ember.interpret(out, x), ember.interpret(g, x))


def test_taylor_needs_calibration_and_ranks_units():
    z, g = _zoo_graph("digits_mlp")
    with pytest.raises(ember.EmberError, match="calibration"):
        ember.Pipeline.parse("prune_channels{criterion=taylor}").run(g)
    out = ember.Pipeline.parse("prune_channels{ratio=0.25,criterion=taylor}").run(
        g, calibration=z.calibration[:2])
    assert out.ops[0].attrs["value"].shape[0] == 96


def test_bad_ratio_is_a_spec_error():
    with pytest.raises(ember.errors.PipelineSpecError, match="ratio"):
        ember.Pipeline.parse("prune_channels{ratio=1.5}")


# ---- random residual / concat graphs ----------------------------------------------------------
@st.composite
def residual_graphs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    g = Graph("rand")
    x = g.add_input("x", TensorType(("batch", 6), DType.f32))

    def linear(v, width):
        w = g.const(rng.standard_normal((width, v.type.shape[-1])).astype(np.float32))
        b = g.const(rng.standard_normal(width).astype(np.float32))
        return g.add("linear", v, w, b)

    vals = [linear(x, draw(st.integers(2, 6)))]
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["linear", "relu", "add", "concat", "mul"]))
        v = vals[draw(st.integers(0, len(vals) - 1))]
        if kind == "linear":
            vals.append(linear(v, draw(st.integers(2, 6))))
        elif kind == "relu":
            vals.append(g.add("relu", v))
        elif kind in ("add", "mul"):  # residual: a branch of the same width
            branch = g.add("relu", linear(v, v.type.shape[-1]))
            vals.append(g.add(kind, v, linear(branch, v.type.shape[-1])))
        else:
            other = vals[draw(st.integers(0, len(vals) - 1))]
            vals.append(g.add("concat", v, other, dim=1))
    head = g.add("concat", *vals[-2:], dim=1) if len(vals) > 1 else vals[-1]
    g.set_outputs(linear(head, 3))
    g.verify()
    return g, rng


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(residual_graphs(), st.floats(0.0, 0.9))
def test_random_graphs_groups_consistent_and_pruning_exact_with_zeros(case, ratio):
    g, rng = case
    analysis = analyze(g)
    for group in analysis.groups:  # units partition every axis of their group
        for vid, ax in group.axes:
            n = analysis.values[vid].type.shape[ax]
            seen = sorted(i for u in group.units for i in u.members.get((vid, ax), []))
            assert seen == list(range(n))
    analysis, removed, pruned = _prune_all(g, ratio, rng)
    pruned.verify()
    x = rng.standard_normal((5, 6)).astype(np.float32)
    want = ember.interpret(_consumer_zeroed(g, removed, analysis), x)
    np.testing.assert_allclose(ember.interpret(pruned, x), want, rtol=1e-4, atol=1e-4)
    if ratio == 0.0:
        assert str(pruned) == str(g)
