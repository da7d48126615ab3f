"""fold: pure ops on consts become consts; exact, capped in size, regions and NO_FOLD skipped."""

from __future__ import annotations

import numpy as np

from ember.ir import DType, Graph, TensorType, interpret
from ember.passes import Pipeline
from tests.passes.golden import check_pass


def test_fold_chain_of_consts_and_drop_dead_inputs():
    check_pass("fold", """
graph @g(%x: f32[2]) -> (f32[2]) {
  %0 = const() {name="a", value=dense<f32[2]: [1.0, 2.0]>} : f32[2]
  %1 = const() {value=dense<f32[2]: [3.0, 4.0]>} : f32[2]
  %2 = add(%0, %1) : f32[2]
  %3 = neg(%2) : f32[2]
  %4 = mul(%x, %3) : f32[2]  # layer.0
  return %4
}""", """
graph @g(%x: f32[2]) -> (f32[2]) {
  %0 = const() {value=dense<f32[2]: [-4.0, -6.0]>} : f32[2]
  %1 = mul(%x, %0) : f32[2]  # layer.0
  return %1
}""")


def test_fold_keeps_consts_still_used_and_folds_casts_with_their_name():
    check_pass("fold", """
graph @g(%x: f32[2]) -> (f32[2], i32[2]) {
  %0 = const() {name="w", value=dense<f32[2]: [1.5, -2.5]>} : f32[2]
  %1 = cast(%0) {dtype=i32} : i32[2]
  %2 = add(%x, %0) : f32[2]
  return %2, %1
}""", """
graph @g(%x: f32[2]) -> (f32[2], i32[2]) {
  %0 = const() {name="w", value=dense<f32[2]: [1.5, -2.5]>} : f32[2]
  %1 = const() {name="w", value=dense<i32[2]: [1, -2]>} : i32[2]
  %2 = add(%x, %0) : f32[2]
  return %2, %1
}""")


def test_fold_leaves_ops_with_non_const_inputs_and_nan_results_are_values():
    check_pass("fold", """
graph @g(%x: f32[2]) -> (f32[2]) {
  %0 = const() {value=dense<f32[2]: [-1.0, 4.0]>} : f32[2]
  %1 = sqrt(%0) : f32[2]
  %2 = add(%x, %1) : f32[2]
  return %2
}""", """
graph @g(%x: f32[2]) -> (f32[2]) {
  %0 = const() {value=dense<f32[2]: [nan, 2.0]>} : f32[2]
  %1 = add(%x, %0) : f32[2]
  return %1
}""")


def test_fold_respects_max_elements_and_is_exact():
    g = Graph("big")
    x = g.add_input("x", TensorType((64, 64), DType.f32))
    rng = np.random.default_rng(0)
    a = g.const(rng.standard_normal((64, 64)).astype(np.float32), name="a")
    e = g.add("exp", a)
    g.set_outputs(g.add("mul", x, e))
    small = Pipeline.parse("fold{max_elements=100}").run(g)
    assert small.op_counts() == g.op_counts()
    folded = Pipeline.parse("fold").run(g, check=True)
    assert folded.op_counts() == {"const": 1, "mul": 1}
    xs = rng.standard_normal((64, 64)).astype(np.float32)
    np.testing.assert_array_equal(interpret(folded, xs), interpret(g, xs))


def test_fold_reports_what_it_folded():
    g = Graph("r")
    c = g.const(np.ones(3, np.float32))
    g.set_outputs(g.add("relu", g.add("neg", c)))
    p = Pipeline.parse("fold")
    out = p.run(g)
    assert out.op_counts() == {"const": 1}
    report = p.report.passes[0]
    assert report.rewrites == {"fold:neg": 1, "fold:relu": 1}
    assert report.notes["folded"] == 2
    assert report.ops_before == {"const": 1, "neg": 1, "relu": 1}
