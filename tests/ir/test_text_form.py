"""The IR text form: golden printing, parse/print round trips, and helpful parse errors."""

from __future__ import annotations

import numpy as np
import pytest

from ember.errors import EmberError, ParseError, VerificationError
from ember.ir import DType, ExternalData, Graph, TensorType, interpret, load, parse, save

F32 = DType.f32


def _model() -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", TensorType(("batch", 4), F32))
    w = g.const(np.arange(24, dtype=np.float32).reshape(6, 4) / 8, name="fc.weight")
    b = g.const(np.array([0.5, -1.0, 0.0, 2.0, -0.0, 1e-3], np.float32), name="fc.bias")
    h = g.add("linear", x, w, b, loc="fc")
    a = g.add("gelu", h, approximate="tanh")
    c = g.add("clamp", a, min=-1.5, max=None)
    t = g.add("cast", g.add("gt", c, g.const(np.zeros((1,), np.float32))), dtype=DType.i32)
    g.set_outputs(c, t)
    return g


GOLDEN = """\
graph @mlp(%x: f32[batch,4]) -> (f32[batch,6], i32[batch,6]) {
  %0 = const() {name="fc.weight", value=blob<f32[6,4] "KEY">} : f32[6,4]
  %1 = const() {name="fc.bias", value=dense<f32[6]: [0.5, -1.0, 0.0, 2.0, -0.0, 0.0010000000474974513]>} : f32[6]
  %2 = linear(%x, %0, %1) : f32[batch,6]  # fc
  %3 = gelu(%2) {approximate="tanh"} : f32[batch,6]
  %4 = clamp(%3) {min=-1.5} : f32[batch,6]
  %5 = const() {value=dense<f32[1]: [0.0]>} : f32[1]
  %6 = gt(%4, %5) : bool[batch,6]
  %7 = cast(%6) {dtype=i32} : i32[batch,6]
  return %4, %7
}
"""


def test_golden_print():
    from ember.ir.printer import array_key

    g = _model()
    assert str(g) == GOLDEN.replace("KEY", array_key(g.ops[0].attrs["value"]))


def test_round_trip_text_and_elided_weights():
    g = _model()
    parsed = parse(str(g))
    assert str(parsed) == str(g)
    weight = parsed.ops[0].attrs["value"]
    assert isinstance(weight, ExternalData) and weight.type == TensorType((6, 4), F32)
    with pytest.raises(EmberError, match=r"elided from the IR text; pass weights="):
        interpret(parsed, np.ones((2, 4), np.float32))
    full = parse(str(g), weights={weight.key: g.ops[0].attrs["value"]})
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    for want, got in zip(interpret(g, x), interpret(full, x)):
        np.testing.assert_array_equal(got, want)


def test_save_load_keeps_weights_names_and_locs(tmp_path):
    g = _model()
    save(g, tmp_path / "m.ember")
    back = load(tmp_path / "m.ember")
    assert str(back) == str(g)
    np.testing.assert_array_equal(back.ops[0].attrs["value"], g.ops[0].attrs["value"])
    assert back.ops[2].loc == "fc" and back.ops[0].attrs["name"] == "fc.weight"


def test_special_floats_and_attr_kinds_round_trip():
    g = Graph("special")
    x = g.add_input("x", TensorType((4,), F32))
    c = g.const(np.array([np.nan, np.inf, -np.inf, -0.0], np.float32))
    g.set_outputs(g.add("maximum", x, c), g.add("leaky_relu", x, negative_slope=-2.5e-8))
    text = str(g)
    assert "[nan, inf, -inf, -0.0]" in text and "negative_slope=-2.5e-08" in text
    again = parse(text)
    assert str(again) == text
    np.testing.assert_array_equal(again.ops[0].attrs["value"], c.producer.attrs["value"])
    assert np.signbit(again.ops[0].attrs["value"][3])


_OK = "graph @g(%x: f32[2]) -> (f32[2]) {\n  %0 = relu(%x) : f32[2]\n  return %0\n}\n"


@pytest.mark.parametrize("text, error, message", [
    (_OK.replace("relu", "frobnicate"), ParseError, r"line 2: unknown op kind 'frobnicate'"),
    (_OK.replace("relu(%x)", "relu(%y)"), ParseError, r"line 2: use of undefined value %y"),
    (_OK.replace("%x: f32[2]", "%x: f33[2]"), ParseError,
     r"line 1: expected a tensor type like f32\[batch,64\] \(at 'f33'\)"),
    (_OK.replace("  return %0\n", ""), ParseError, r"expected an op .* or 'return'"),
    (_OK.replace("-> (f32[2])", "-> (f32[3])"), ParseError,
     r"@g returns \(f32\[2\]\) but its signature says \(f32\[3\]\)"),
    (_OK.replace(": f32[2]\n  return", ": f32[3]\n  return").replace("-> (f32[2])", "-> (f32[3])"),
     VerificationError,
     r"relu: stored result types f32\[3\] disagree with inferred f32\[2\]"),
    (_OK.replace("relu(%x)", "relu(%x) {alpha=1}"), ParseError,
     r"op relu: unknown attribute\(s\) \['alpha'\]; it takes none"),
    (_OK.replace("%0 = relu", "%0, %1 = relu"), ParseError, r"relu has 1 results but 2 names"),
    (_OK.replace("return %0", "%0 = neg(%0) : f32[2]\n  return %0"), ParseError,
     r"%0 is defined twice"),
    (_OK + "extra", ParseError, r"trailing text after the graph"),
    (_OK.replace("return %0", "return %0;"), ParseError, r"unexpected character ';'"),
    ("", ParseError, r"expected 'graph'"),
    ("graph @g() -> (f32[2]) {\n  %0 = const() {value=dense<f32[2]: [1.0]>} : f32[2]\n"
     "  return %0\n}", ParseError, r"dense<f32\[2\]> holds 1 values"),
    (_OK.replace("(%x: f32[2])", "(%x: f32[2], %x: f32[2])"), ParseError, r"duplicate input %x"),
])
def test_malformed_text_raises_helpful_errors(text, error, message):
    with pytest.raises(error, match=message):
        parse(text)
