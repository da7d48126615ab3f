"""dce: unused ops and consts go, whole dead chains in one run; outputs and their inputs stay."""

from __future__ import annotations

import numpy as np

from ember.ir import DType, Graph, TensorType
from ember.ir.ops import SIDE_EFFECT, all_schemas
from ember.passes import Pipeline
from tests.passes.golden import check_pass


def test_dce_removes_dead_chain_and_unused_consts():
    check_pass("dce", """
graph @g(%x: f32[2], %y: f32[2]) -> (f32[2]) {
  %0 = const() {name="unused", value=dense<f32[2]: [1.0, 2.0]>} : f32[2]
  %1 = add(%x, %0) : f32[2]
  %2 = exp(%1) : f32[2]
  %3 = relu(%x) : f32[2]
  %4 = neg(%3) : f32[2]
  return %3
}""", """
graph @g(%x: f32[2], %y: f32[2]) -> (f32[2]) {
  %0 = relu(%x) : f32[2]
  return %0
}""")


def test_dce_keeps_multiple_outputs_and_shared_values():
    check_pass("dce", """
graph @g(%x: f32[2]) -> (f32[2], f32[2]) {
  %0 = relu(%x) : f32[2]
  %1 = neg(%0) : f32[2]
  %2 = exp(%0) : f32[2]
  %3 = abs(%2) : f32[2]
  return %1, %0
}""", """
graph @g(%x: f32[2]) -> (f32[2], f32[2]) {
  %0 = relu(%x) : f32[2]
  %1 = neg(%0) : f32[2]
  return %1, %0
}""")


def test_dce_on_a_long_dead_chain_is_one_sweep_and_reports_counts():
    g = Graph("long")
    x = g.add_input("x", TensorType((4,), DType.f32))
    v = x
    for _ in range(500):
        v = g.add("neg", v)
    g.set_outputs(x)
    p = Pipeline.parse("dce")
    out = p.run(g)
    assert len(out) == 0
    assert p.report.passes[0].rewrites == {"dce:neg": 500}
    assert p.report.passes[0].notes == {"removed": 500}


def test_dce_keeps_side_effect_ops():
    kinds = [s.kind for s in all_schemas() if s.has(SIDE_EFFECT)]
    if not kinds:  # no such op in the catalogue yet: check the rule through a throwaway schema
        from ember.ir.ops.registry import _REGISTRY, define_op

        schema = define_op("test.print", inputs=("x",), traits=(SIDE_EFFECT,))
        schema.infer(lambda x: x)
        schema.reference(lambda x: x)
        try:
            g = Graph("se")
            x = g.add_input("x", TensorType((2,), DType.f32))
            g.add("test.print", x)
            g.add("neg", x)
            g.set_outputs(x)
            out = Pipeline.parse("dce").run(g)
            assert [op.kind for op in out.ops] == ["test.print"]
        finally:
            del _REGISTRY["test.print"]


def test_dce_leaves_input_graph_untouched():
    g = Graph("orig")
    x = g.add_input("x", TensorType((2,), DType.f32))
    g.const(np.zeros(2, np.float32))
    g.set_outputs(x)
    before = str(g)
    Pipeline.parse("dce").run(g)
    assert str(g) == before
