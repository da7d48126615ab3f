"""canonicalize: identities go (only when types stay equal), shape chains merge, BN folds."""

from __future__ import annotations

import numpy as np
import pytest

from ember.ir import DType, Graph, TensorType, interpret
from ember.passes import Pipeline
from tests.passes.golden import check_pass, requires_ops


def test_arithmetic_identities_removed_when_types_match():
    check_pass("canonicalize", """
graph @g(%x: f32[batch,2]) -> (f32[batch,2]) {
  %0 = const() {value=dense<f32[2]: [0.0, 0.0]>} : f32[2]
  %1 = const() {value=dense<f32[1]: [1.0]>} : f32[1]
  %2 = add(%0, %x) : f32[batch,2]
  %3 = mul(%2, %1) : f32[batch,2]
  %4 = sub(%3, %0) : f32[batch,2]
  %5 = div(%4, %1) : f32[batch,2]
  %6 = cast(%5) {dtype=f32} : f32[batch,2]
  return %6
}""", """
graph @g(%x: f32[batch,2]) -> (f32[batch,2]) {
  return %x
}""")


def test_identities_that_broadcast_or_are_not_identities_stay():
    check_pass("canonicalize", """
graph @g(%x: f32[2]) -> (f32[3,2], f32[2], f32[2]) {
  %0 = const() {value=dense<f32[3,2]: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]>} : f32[3,2]
  %1 = add(%x, %0) : f32[3,2]
  %2 = const() {value=dense<f32[2]: [1.0, 0.0]>} : f32[2]
  %3 = mul(%x, %2) : f32[2]
  %4 = const() {value=dense<f32[1]: [0.0]>} : f32[1]
  %5 = sub(%4, %x) : f32[2]
  return %1, %3, %5
}""", """
graph @g(%x: f32[2]) -> (f32[3,2], f32[2], f32[2]) {
  %0 = const() {value=dense<f32[3,2]: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]>} : f32[3,2]
  %1 = add(%x, %0) : f32[3,2]
  %2 = const() {value=dense<f32[2]: [1.0, 0.0]>} : f32[2]
  %3 = mul(%x, %2) : f32[2]
  %4 = const() {value=dense<f32[1]: [0.0]>} : f32[1]
  %5 = sub(%4, %x) : f32[2]
  return %1, %3, %5
}""")


@requires_ops("permute", "transpose")
def test_permute_chains_compose_and_identities_vanish():
    check_pass("canonicalize", """
graph @g(%x: f32[2,3,4]) -> (f32[4,2,3], f32[2,3,4], f32[2,3,4]) {
  %0 = transpose(%x) {dim0=0, dim1=2} : f32[4,3,2]
  %1 = permute(%0) {dims=[0, 2, 1]} : f32[4,2,3]
  %2 = transpose(%x) {dim0=-1, dim1=1} : f32[2,4,3]
  %3 = transpose(%2) {dim0=1, dim1=2} : f32[2,3,4]
  %4 = permute(%x) {dims=[0, 1, 2]} : f32[2,3,4]
  return %1, %3, %4
}""", """
graph @g(%x: f32[2,3,4]) -> (f32[4,2,3], f32[2,3,4], f32[2,3,4]) {
  %0 = permute(%x) {dims=[2, 0, 1]} : f32[4,2,3]
  return %0, %x, %x
}""")


@requires_ops("reshape", "flatten", "unsqueeze", "squeeze")
def test_reshape_chains_merge_and_noop_reshapes_vanish():
    check_pass("canonicalize", """
graph @g(%x: f32[batch,2,3]) -> (f32[batch,6], f32[batch,2,3], f32[batch,2,3], f32[batch,1,6]) {
  %0 = reshape(%x) {shape=[-1, 3, 2]} : f32[batch,3,2]
  %1 = reshape(%0) {shape=["batch", 6]} : f32[batch,6]
  %2 = flatten(%x) {start_dim=1} : f32[batch,6]
  %3 = reshape(%2) {shape=["batch", 2, 3]} : f32[batch,2,3]
  %4 = unsqueeze(%x) {dim=0} : f32[1,batch,2,3]
  %5 = squeeze(%4) {dims=[0]} : f32[batch,2,3]
  %6 = unsqueeze(%x) {dim=1} : f32[batch,1,2,3]
  %7 = flatten(%6) {start_dim=2} : f32[batch,1,6]
  return %1, %3, %5, %7
}""", """
graph @g(%x: f32[batch,2,3]) -> (f32[batch,6], f32[batch,2,3], f32[batch,2,3], f32[batch,1,6]) {
  %0 = reshape(%x) {shape=["batch", 6]} : f32[batch,6]
  %1 = reshape(%x) {shape=["batch", 1, 6]} : f32[batch,1,6]
  return %0, %x, %x, %1
}""")


_BN_PARAMS = """
  %m = const() {name="bn.running_mean", value=dense<f32[2]: [1.0, 2.0]>} : f32[2]
  %v = const() {name="bn.running_var", value=dense<f32[2]: [4.0, 0.25]>} : f32[2]
  %g = const() {name="bn.weight", value=dense<f32[2]: [1.0, 2.0]>} : f32[2]
  %b = const() {name="bn.bias", value=dense<f32[2]: [0.0, 1.0]>} : f32[2]"""


def _numbered(text: str) -> str:
    """Golden inputs print with numbered values; write params with names, then renumber."""
    for i, name in enumerate(["%m", "%v", "%g", "%b"]):
        text = text.replace(name + " ", f"%{i} ").replace(name + ",", f"%{i},") \
            .replace(name + ")", f"%{i})")
    return text


@requires_ops("conv2d", "batch_norm")
def test_batch_norm_folds_into_conv2d_weights_and_bias():
    # scale = weight / sqrt(var) = [0.5, 4]; W' = W * scale; b' = (b - mean) * scale + bias
    check_pass("canonicalize", _numbered("""
graph @g(%x: f32[n,1,3,3]) -> (f32[n,2,3,3]) {""" + _BN_PARAMS + """
  %4 = const() {name="conv.weight", value=dense<f32[2,1,1,1]: [1.0, 2.0]>} : f32[2,1,1,1]
  %5 = const() {name="conv.bias", value=dense<f32[2]: [3.0, -1.0]>} : f32[2]
  %6 = conv2d(%x, %4, %5) : f32[n,2,3,3]  # conv
  %7 = batch_norm(%6, %m, %v, %g, %b) {eps=0.0} : f32[n,2,3,3]  # bn
  return %7
}"""), """
graph @g(%x: f32[n,1,3,3]) -> (f32[n,2,3,3]) {
  %0 = const() {name="conv.weight", value=dense<f32[2,1,1,1]: [0.5, 8.0]>} : f32[2,1,1,1]  # bn
  %1 = const() {name="conv.bias", value=dense<f32[2]: [1.0, -11.0]>} : f32[2]  # bn
  %2 = conv2d(%x, %0, %1) : f32[n,2,3,3]  # conv
  return %2
}""")


@requires_ops("linear", "batch_norm")
def test_batch_norm_folds_into_linear_without_bias_by_creating_one():
    check_pass("canonicalize", _numbered("""
graph @g(%x: f32[n,3]) -> (f32[n,2]) {""" + _BN_PARAMS + """
  %4 = const() {name="fc.weight", value=dense<f32[2,3]: [1.0, 0.0, -1.0, 2.0, 2.0, 2.0]>} : f32[2,3]
  %5 = linear(%x, %4) : f32[n,2]
  %6 = batch_norm(%5, %m, %v, %g, %b) {eps=0.0} : f32[n,2]
  return %6
}"""), """
graph @g(%x: f32[n,3]) -> (f32[n,2]) {
  %0 = const() {name="fc.weight", value=dense<f32[2,3]: [0.5, 0.0, -0.5, 8.0, 8.0, 8.0]>} : f32[2,3]
  %1 = const() {name="fc.bias", value=dense<f32[2]: [-0.5, -7.0]>} : f32[2]
  %2 = linear(%x, %0, %1) : f32[n,2]
  return %2
}""")


@requires_ops("conv2d", "batch_norm")
def test_batch_norm_after_shared_conv_becomes_mul_add():
    # the conv result has a second user, so its weights cannot absorb the BN
    check_pass("canonicalize", _numbered("""
graph @g(%x: f32[n,1,3,3]) -> (f32[n,2,3,3], f32[n,2,3,3]) {""" + _BN_PARAMS + """
  %4 = const() {value=dense<f32[2,1,1,1]: [1.0, 2.0]>} : f32[2,1,1,1]
  %5 = conv2d(%x, %4) : f32[n,2,3,3]
  %6 = batch_norm(%5, %m, %v, %g, %b) {eps=0.0} : f32[n,2,3,3]
  return %6, %5
}"""), """
graph @g(%x: f32[n,1,3,3]) -> (f32[n,2,3,3], f32[n,2,3,3]) {
  %0 = const() {value=dense<f32[2,1,1,1]: [1.0, 2.0]>} : f32[2,1,1,1]
  %1 = conv2d(%x, %0) : f32[n,2,3,3]
  %2 = const() {name="bn.scale", value=dense<f32[2,1,1]: [0.5, 4.0]>} : f32[2,1,1]
  %3 = const() {name="bn.shift", value=dense<f32[2,1,1]: [-0.5, -7.0]>} : f32[2,1,1]
  %4 = mul(%1, %2) : f32[n,2,3,3]
  %5 = add(%4, %3) : f32[n,2,3,3]
  return %5, %1
}""")


@requires_ops("batch_norm")
def test_batch_norm_with_runtime_statistics_stays():
    check_pass("canonicalize", """
graph @g(%x: f32[n,2], %mean: f32[2]) -> (f32[n,2]) {
  %0 = const() {value=dense<f32[2]: [1.0, 1.0]>} : f32[2]
  %1 = batch_norm(%x, %mean, %0) : f32[n,2]
  return %1
}""", """
graph @g(%x: f32[n,2], %mean: f32[2]) -> (f32[n,2]) {
  %0 = const() {value=dense<f32[2]: [1.0, 1.0]>} : f32[2]
  %1 = batch_norm(%x, %mean, %0) : f32[n,2]
  return %1
}""", check=False)


def _conv_bn_graph(rng, groups: int, with_bias: bool, bn_affine: bool) -> Graph:
    g = Graph("conv_bn")
    x = g.add_input("x", TensorType(("n", 4, 6, 6), DType.f32))
    w = g.const(rng.standard_normal((6, 4 // groups, 3, 3)).astype(np.float32), name="c.weight")
    args = [x, w] + ([g.const(rng.standard_normal(6).astype(np.float32))] if with_bias else [])
    y = g.add("conv2d", *args, padding=(1, 1), groups=groups)
    stats = [rng.standard_normal(6).astype(np.float32) * 3,
             (rng.random(6) * 5 + 0.01).astype(np.float32)]
    if bn_affine:
        stats += [rng.standard_normal(6).astype(np.float32) * 2,
                  rng.standard_normal(6).astype(np.float32)]
    z = g.add("batch_norm", y, *[g.const(s) for s in stats], eps=1e-3)
    g.set_outputs(g.add("relu", z))
    return g


@requires_ops("conv2d", "batch_norm")
@pytest.mark.parametrize("groups, with_bias, bn_affine", [(1, True, True), (2, False, True),
                                                          (1, False, False)])
def test_batch_norm_folding_matches_interpreter_within_tolerance(groups, with_bias, bn_affine):
    rng = np.random.default_rng(groups + 2 * with_bias)
    g = _conv_bn_graph(rng, groups, with_bias, bn_affine)
    p = Pipeline.parse("canonicalize")
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    out = p.run(g, sample_inputs=[x])  # the pipeline asserts the stated tolerance (1e-5)
    assert out.op_counts() == {"const": 2, "conv2d": 1, "relu": 1}
    assert p.report.passes[0].rewrites == {"fold_bn_into_conv_linear": 1}
    want, got = interpret(g, x), interpret(out, x)
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= 1e-5 * scale
    assert p.report.passes[0].step_error <= 1e-5


@requires_ops("conv2d", "batch_norm")
def test_canonicalize_without_batch_norm_option_is_exact_and_leaves_bn():
    g = _conv_bn_graph(np.random.default_rng(0), 1, True, True)
    out = Pipeline.parse("canonicalize{batch_norm=false}").run(g, check=True)
    assert str(out) == str(g)


@pytest.mark.slow
def test_cleanup_on_digits_cnn_folds_every_batch_norm_within_tolerance():
    import ember

    z = ember.zoo.load("digits_cnn")
    g = ember.trace(z.module, z.example_inputs)
    p = Pipeline.parse("fold,dce,cse,canonicalize,dce")
    out = p.run(g, calibration=z.calibration, check=True)  # raises past any pass's tolerance
    assert "batch_norm" in g.op_counts() and "batch_norm" not in out.op_counts()
    canon = p.report.passes[3]
    assert canon.rewrites["fold_bn_into_conv_linear"] == g.op_counts()["batch_norm"]
    assert canon.step_error <= 1e-5 and p.report.passes[-1].max_abs_error < 1e-4


@requires_ops("permute", "reshape")
def test_permute_moving_only_unit_dims_becomes_a_reshape():
    check_pass("canonicalize", """
graph @g(%x: f32[1,T,4], %y: f32[2,1,4]) -> (f32[T,1,4], f32[1,4,2], f32[4,1,2]) {
  %0 = permute(%x) {dims=[1, 0, 2]} : f32[T,1,4]
  %1 = permute(%y) {dims=[1, 2, 0]} : f32[1,4,2]
  %2 = permute(%y) {dims=[2, 1, 0]} : f32[4,1,2]
  return %0, %1, %2
}""", """
graph @g(%x: f32[1,T,4], %y: f32[2,1,4]) -> (f32[T,1,4], f32[1,4,2], f32[4,1,2]) {
  %0 = reshape(%x) {shape=[-1, 1, 4]} : f32[T,1,4]
  %1 = permute(%y) {dims=[1, 2, 0]} : f32[1,4,2]
  %2 = permute(%y) {dims=[2, 1, 0]} : f32[4,1,2]
  return %0, %1, %2
}""")
