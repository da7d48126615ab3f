"""The ONNX frontend: names, symbols, errors, and the control ops ember keeps whole."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.errors import ShapeError, UnsupportedOpError
from ember.frontends.onnx import load


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ort(model, *xs):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: x for i, x in zip(s.get_inputs(), xs)})


def test_initializers_names_and_symbols():
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    m = _model([helper.make_node("Gemm", ["x", "fc.weight"], ["h"], name="fc", transB=1),
                helper.make_node("Relu", ["h"], ["y"], name="act")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
               [numpy_helper.from_array(w, "fc.weight")])
    g = load(m)
    assert g.inputs[0].type.shape == ("batch", 4)
    consts = [op for op in g.ops if op.kind == "const"]
    assert consts[0].attrs["name"] == "fc.weight"
    assert {op.loc for op in g.ops if op.kind != "const"} == {"fc", "act"}
    assert g.outputs[0].name == "y"
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(ember.interpret(g, x), _ort(m, x)[0], rtol=1e-5, atol=1e-6)


def test_unsupported_ops_listed_together():
    m = _model([helper.make_node("Unique", ["x"], ["u"], name="u1"),
                helper.make_node("Unique", ["x"], ["v"], name="u2"),
                helper.make_node("NonZero", ["x"], ["n"], name="nz")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
               [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)])
    with pytest.raises(UnsupportedOpError) as e:
        load(m)
    msg = str(e.value)
    assert "Unique" in msg and "NonZero" in msg and "'u1', 'u2'" in msg and "opset 17" in msg
    assert e.value.ops["Unique"]["count"] == 2


def test_shape_inference_mismatch_is_reported():
    m = _model([helper.make_node("Relu", ["x"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    with pytest.raises(ShapeError, match="ONNX shape inference"):
        load(m)


def test_runtime_shape_operand_is_a_clear_error_and_bind_fixes_it():
    m = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="r")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    with pytest.raises(UnsupportedOpError, match="compile time"):
        load(m)
    g = load(m, bind={"s": np.array([3, 2])})
    assert g.outputs[0].type.shape == (3, 2)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_maps_to_ctrl_lstm_and_matches_ort(direction):
    rng = np.random.default_rng(1)
    d, t, b, i, h = (2 if direction == "bidirectional" else 1), 5, 2, 3, 4
    w = (rng.standard_normal((d, 4 * h, i)) * 0.5).astype(np.float32)
    r = (rng.standard_normal((d, 4 * h, h)) * 0.5).astype(np.float32)
    bias = (rng.standard_normal((d, 8 * h)) * 0.5).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh", "yc"], hidden_size=h,
                            direction=direction)
    m = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [t, b, i])],
               [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                for n in ("y", "yh", "yc")],
               [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (bias, "B"))])
    g = load(m)
    assert "ctrl.lstm" in g.op_counts()
    x = rng.standard_normal((t, b, i)).astype(np.float32)
    for got, want in zip(ember.interpret(g, x), _ort(m, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_gru_linear_before_reset_maps_to_ctrl_gru():
    rng = np.random.default_rng(2)
    t, b, i, h = 4, 2, 3, 5
    arrays = {"W": rng.standard_normal((1, 3 * h, i)), "R": rng.standard_normal((1, 3 * h, h)),
              "B": rng.standard_normal((1, 6 * h))}
    node = helper.make_node("GRU", ["x", "W", "R", "B"], ["y", "yh"], hidden_size=h,
                            linear_before_reset=1)
    m = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [t, b, i])],
               [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "yh")],
               [numpy_helper.from_array((a * 0.4).astype(np.float32), n)
                for n, a in arrays.items()])
    g = load(m)
    assert "ctrl.gru" in g.op_counts()
    x = rng.standard_normal((t, b, i)).astype(np.float32)
    for got, want in zip(ember.interpret(g, x), _ort(m, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_scan_maps_to_ctrl_scan_with_captured_outer_value():
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_mid"]),
         helper.make_node("Mul", ["s_mid", "k"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_t"])], "body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [2])])
    node = helper.make_node("Scan", ["s0", "xs"], ["s", "ys"], num_scan_inputs=1, body=body)
    m = _model([node], [helper.make_tensor_value_info("s0", TensorProto.FLOAT, [2]),
                        helper.make_tensor_value_info("xs", TensorProto.FLOAT, [3, 2]),
                        helper.make_tensor_value_info("k", TensorProto.FLOAT, [2])],
               [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]),
                helper.make_tensor_value_info("ys", TensorProto.FLOAT, [3, 2])])
    g = load(m)
    assert "ctrl.scan" in g.op_counts()
    rng = np.random.default_rng(3)
    args = [rng.standard_normal(s).astype(np.float32) for s in ((2,), (3, 2), (2,))]
    for got, want in zip(ember.interpret(g, *args), _ort(m, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
