"""cse: identical pure ops and identical consts merge; different attrs, names-only-differ."""

from __future__ import annotations

import numpy as np

from ember.ir import DType, Graph, TensorType
from ember.passes import Pipeline
from tests.passes.golden import check_pass


def test_cse_merges_duplicates_and_commutative_operands_then_cascades():
    check_pass("cse", """
graph @g(%x: f32[2], %y: f32[2]) -> (f32[2]) {
  %0 = add(%x, %y) : f32[2]
  %1 = add(%y, %x) : f32[2]
  %2 = sub(%x, %y) : f32[2]
  %3 = sub(%y, %x) : f32[2]
  %4 = exp(%0) : f32[2]
  %5 = exp(%1) : f32[2]
  %6 = mul(%4, %5) : f32[2]
  %7 = mul(%2, %3) : f32[2]
  %8 = add(%6, %7) : f32[2]
  return %8
}""", """
graph @g(%x: f32[2], %y: f32[2]) -> (f32[2]) {
  %0 = add(%x, %y) : f32[2]
  %1 = sub(%x, %y) : f32[2]
  %2 = sub(%y, %x) : f32[2]
  %3 = exp(%0) : f32[2]
  %4 = mul(%3, %3) : f32[2]
  %5 = mul(%1, %2) : f32[2]
  %6 = add(%4, %5) : f32[2]
  return %6
}""")


def test_cse_keeps_ops_with_different_attrs():
    check_pass("cse", """
graph @g(%x: f32[2]) -> (i32[2], i64[2], i32[2]) {
  %0 = cast(%x) {dtype=i32} : i32[2]
  %1 = cast(%x) {dtype=i64} : i64[2]
  %2 = cast(%x) {dtype=i32} : i32[2]
  return %0, %1, %2
}""", """
graph @g(%x: f32[2]) -> (i32[2], i64[2], i32[2]) {
  %0 = cast(%x) {dtype=i32} : i32[2]
  %1 = cast(%x) {dtype=i64} : i64[2]
  return %0, %1, %0
}""")


def test_cse_merges_duplicate_weights_by_content_not_name():
    g = Graph("tied")
    x = g.add_input("x", TensorType((3, 40), DType.f32))
    w = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32)
    a = g.add("mul", x, g.const(w, name="enc.weight"))
    b = g.add("mul", x, g.const(w.copy(), name="dec.weight"))
    c = g.add("mul", x, g.const(w + 1, name="other"))
    z = g.const(np.zeros((3, 40), np.float32))
    nz = g.const(-np.zeros((3, 40), np.float32))  # -0.0 is not the same bytes: kept apart
    g.set_outputs(g.add("add", g.add("add", a, b), g.add("add", c, g.add("add", z, nz))))
    p = Pipeline.parse("cse")
    out = p.run(g, check=True)
    consts = out.consts()
    assert [op.attrs["name"] for op in consts] == ["enc.weight", "other", None, None]
    assert out.weight_bytes() == g.weight_bytes() - w.nbytes
    assert p.report.passes[0].rewrites == {"cse:const": 1, "cse:mul": 1}
