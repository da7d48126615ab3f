"""Every cleanup pass works inside region bodies (ctrl.scan), each body its own scope."""

from __future__ import annotations

import numpy as np

from ember.ir import interpret, parse
from tests.passes.golden import check_pass, requires_ops

_SCAN = """
graph @rnn(%h0: f32[batch,2], %xs: f32[seq,batch,2]) -> (f32[batch,2], f32[seq,batch,2]) {
  %0 = const() {name="w", value=dense<f32[2]: [0.5, -0.25]>} : f32[2]
  %1 = const() {name="w2", value=dense<f32[2]: [0.5, -0.25]>} : f32[2]
  %2 = add(%0, %1) : f32[2]
  %3, %4 = ctrl.scan(%h0, %xs, %2) {num_carry=1, num_xs=1} : f32[batch,2], f32[seq,batch,2] {  # rnn
    graph @step(%5: f32[batch,2], %6: f32[batch,2], %7: f32[2]) -> (f32[batch,2], f32[batch,2]) {
      %8 = const() {value=dense<f32[2]: [1.0, 2.0]>} : f32[2]
      %9 = neg(%8) : f32[2]
      %10 = const() {value=dense<f32[2]: [0.0, 0.0]>} : f32[2]
      %11 = mul(%5, %7) : f32[batch,2]
      %12 = mul(%5, %7) : f32[batch,2]
      %13 = add(%11, %12) : f32[batch,2]
      %14 = add(%13, %10) : f32[batch,2]
      %15 = add(%14, %9) : f32[batch,2]
      %16 = exp(%15) : f32[batch,2]
      %17 = tanh(%15) : f32[batch,2]
      return %17, %6
    }
  }
  return %3, %4
}"""


@requires_ops("ctrl.scan")
def test_fold_dce_cse_canonicalize_inside_a_scan_body():
    out = check_pass("fold,dce,cse,canonicalize,dce", _SCAN, """
graph @rnn(%h0: f32[batch,2], %xs: f32[seq,batch,2]) -> (f32[batch,2], f32[seq,batch,2]) {
  %0 = const() {value=dense<f32[2]: [1.0, -0.5]>} : f32[2]
  %1, %2 = ctrl.scan(%h0, %xs, %0) {num_carry=1, num_xs=1} : f32[batch,2], f32[seq,batch,2] {  # rnn
    graph @step(%3: f32[batch,2], %4: f32[batch,2], %5: f32[2]) -> (f32[batch,2], f32[batch,2]) {
      %6 = const() {value=dense<f32[2]: [-1.0, -2.0]>} : f32[2]
      %7 = mul(%3, %5) : f32[batch,2]
      %8 = add(%7, %7) : f32[batch,2]
      %9 = add(%8, %6) : f32[batch,2]
      %10 = tanh(%9) : f32[batch,2]
      return %10, %4
    }
  }
  return %1, %2
}""")
    rng = np.random.default_rng(0)
    h0 = rng.standard_normal((3, 2)).astype(np.float32)
    xs = rng.standard_normal((4, 3, 2)).astype(np.float32)
    for want, got in zip(interpret(parse(_SCAN), h0, xs), interpret(out, h0, xs)):
        np.testing.assert_array_equal(got, want)
