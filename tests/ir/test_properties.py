"""Properties over random registry-built graphs: text round trip, cloning, exact cleanup passes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ember.ir import interpret, parse
from ember.passes import Pipeline, get_pass
from tests.strategies import graph_and_inputs

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _run(graph, inputs):
    with np.errstate(all="ignore"):
        out = interpret(graph, *inputs)
    return list(out) if isinstance(out, tuple) else [out]


@SETTINGS
@given(graph_and_inputs())
def test_print_parse_print_is_identical(case):
    graph, _ = case
    text = str(graph)
    assert str(parse(text)) == text


@SETTINGS
@given(graph_and_inputs())
def test_clone_prints_identically_and_is_independent(case):
    graph, _ = case
    copy = graph.clone()
    assert str(copy) == str(graph)
    assert not {id(op) for op in copy.walk()} & {id(op) for op in graph.walk()}


@pytest.mark.parametrize("name", ["fold", "dce", "cse", "canonicalize"])
@SETTINGS
@given(case=graph_and_inputs())
def test_cleanup_pass_preserves_outputs_and_verifies(name, case):
    graph, inputs = case
    out = Pipeline.parse(name).run(graph)  # verifies after the pass
    want, got = _run(graph, inputs), _run(out, inputs)
    tolerance = get_pass(name).tolerance
    for w, g in zip(want, got, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        if name == "fold":  # the same reference computes it, only earlier
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, equal_nan=True)
        elif tolerance is None:
            np.testing.assert_array_equal(g, w)
        else:  # canonicalize: batch-norm folding rounds differently
            scale = max(1.0, float(np.nanmax(np.abs(w), initial=0.0, where=np.isfinite(w))))
            np.testing.assert_allclose(g, w, rtol=0, atol=tolerance * scale, equal_nan=True)


@SETTINGS
@given(graph_and_inputs(max_ops=8))
def test_cleanup_pipeline_passes_its_own_numeric_check(case):
    graph, inputs = case
    p = Pipeline.parse("fold,dce,cse,canonicalize,dce")
    p.run(graph, sample_inputs=[tuple(inputs)])  # raises PassError past a pass's tolerance
    assert [r.name for r in p.report.passes] == ["fold", "dce", "cse", "canonicalize", "dce"]
    for r in p.report.passes:
        assert r.step_error <= (r.tolerance or 0.0)
