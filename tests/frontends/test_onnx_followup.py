"""ONNX frontend: Loop -> ctrl.scan (or unrolled), GRU linear_before_reset=0, N-d pooling with
Indices, and the new element types (u16/u64/bf16/float8/sub-byte casts), each against ORT."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.errors import UnsupportedOpError
from ember.frontends.onnx import load

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ort(model, *xs):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: x for i, x in zip(s.get_inputs(), xs)})


def _vi(name, elem=F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _loop_model(body_nodes, trip=4, cond=True, trip_init=True):
    body = helper.make_graph(
        body_nodes, "body",
        [_vi("i", TensorProto.INT64, []), _vi("c_in", TensorProto.BOOL, []), _vi("s_in", F, [3])],
        [_vi("c_out", TensorProto.BOOL, []), _vi("s_out", F, [3]), _vi("y_t", F, [3])])
    node = helper.make_node("Loop", ["M", "cond", "s0"], ["s", "ys"], body=body)
    inits = [numpy_helper.from_array(np.asarray(cond), "cond")]
    inputs = [_vi("s0", F, [3]), _vi("k", F, [3])]
    if trip_init:
        inits.append(numpy_helper.from_array(np.asarray(trip, np.int64), "M"))
    else:
        inputs.append(_vi("M", TensorProto.INT64, []))
    return _model([node], inputs, [_vi("s", F, [3]), _vi("ys", F, [trip, 3])], inits)


_STEP = [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Cast", ["i"], ["i_f"], to=F),
         helper.make_node("Mul", ["s_in", "k"], ["s_k"]),
         helper.make_node("Add", ["s_k", "i_f"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_t"])]


def test_loop_with_constant_trip_count_is_a_scan_and_matches_ort():
    m = _loop_model(_STEP)
    g = load(m)
    assert g.op_counts().get("ctrl.scan") == 1
    rng = np.random.default_rng(0)
    s0, k = (rng.standard_normal(3).astype(np.float32) for _ in range(2))
    for got, want in zip(ember.interpret(g, s0, k), _ort(m, s0, k)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_loop_whose_body_slices_by_the_counter_is_unrolled():
    table = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "table")
    nodes = [helper.make_node("Identity", ["c_in"], ["c_out"]),
             helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(
                 np.asarray([1], np.int64))),
             helper.make_node("Unsqueeze", ["i", "zero_ax"], ["start"]),
             helper.make_node("Add", ["start", "one"], ["end"]),
             helper.make_node("Slice", ["table", "start", "end"], ["row2"]),
             helper.make_node("Squeeze", ["row2", "zero_ax"], ["row"]),
             helper.make_node("Add", ["s_in", "row"], ["s_out"]),
             helper.make_node("Identity", ["s_out"], ["y_t"])]
    m = _loop_model(nodes)
    m.graph.initializer.extend([table, numpy_helper.from_array(np.asarray([0], np.int64),
                                                               "zero_ax")])
    g = load(m)
    assert "ctrl.scan" not in g.op_counts()
    s0, k = np.ones(3, np.float32), np.ones(3, np.float32)
    for got, want in zip(ember.interpret(g, s0, k), _ort(m, s0, k)):
        np.testing.assert_allclose(got, want)


def test_loop_with_runtime_trip_count_or_condition_names_the_case():
    with pytest.raises(UnsupportedOpError, match="trip count"):
        load(_loop_model(_STEP, trip_init=False))
    with pytest.raises(UnsupportedOpError, match="condition"):
        load(_loop_model(_STEP, cond=False))


@pytest.mark.parametrize("direction,layout", [("forward", 0), ("reverse", 0),
                                              ("bidirectional", 0)])  # ORT lacks layout=1;
# ONNX's test_gru_batchwise covers it in the conformance run
def test_gru_default_cell_is_a_scan_and_matches_ort(direction, layout):
    rng = np.random.default_rng(2)
    t, b, i, h = 4, 2, 3, 5
    d = 2 if direction == "bidirectional" else 1
    arrays = {"W": rng.standard_normal((d, 3 * h, i)), "R": rng.standard_normal((d, 3 * h, h)),
              "B": rng.standard_normal((d, 6 * h))}
    xs = (b, t, i) if layout else (t, b, i)
    node = helper.make_node("GRU", ["x", "W", "R", "B"], ["y", "yh"], hidden_size=h,
                            direction=direction, layout=layout)
    m = _model([node], [_vi("x", F, list(xs))], [_vi("y"), _vi("yh")],
               [numpy_helper.from_array((a * 0.4).astype(np.float32), n)
                for n, a in arrays.items()])
    g = load(m)
    assert g.op_counts().get("ctrl.scan") == d and "ctrl.gru" not in g.op_counts()
    x = rng.standard_normal(xs).astype(np.float32)
    for got, want in zip(ember.interpret(g, x), _ort(m, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_maxpool_3d_with_indices_matches_ort():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 3, 2],
                            strides=[1, 2, 2], pads=[0, 1, 1, 1, 0, 0])
    m = _model([node], [_vi("x", F, [1, 2, 4, 5, 6])],
               [_vi("y"), _vi("idx", TensorProto.INT64)])
    g = load(m)
    x = np.random.default_rng(4).standard_normal((1, 2, 4, 5, 6)).astype(np.float32)
    got, want = ember.interpret(g, x), _ort(m, x)
    np.testing.assert_allclose(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("include", [0, 1])
def test_avgpool_asymmetric_dilated_matches_ort(include):
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], dilations=[1, 2],
                            pads=[2, 0, 0, 1], count_include_pad=include)
    m = _model([node], [_vi("x", F, [1, 3, 6, 7])], [_vi("y")], opset=19)
    x = np.random.default_rng(5).standard_normal((1, 3, 6, 7)).astype(np.float32)
    np.testing.assert_allclose(ember.interpret(load(m), x), _ort(m, x)[0], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
def test_3d_pool_with_a_large_dilated_kernel_is_separable_and_matches_onnx(op):
    """A 5x5x5 window is 3 x 5 slices (one 1-D window per dim), not 125: small graphs that
    TVM builds in seconds. (ONNX's reference: ORT disagrees on dilated ceil_mode averages.)"""
    from onnx.reference import ReferenceEvaluator

    extra = {"count_include_pad": 0} if op == "AveragePool" else {}
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[5, 5, 5], dilations=[2, 2, 2],
                            strides=[3, 3, 3], ceil_mode=1, **extra)
    m = _model([node], [_vi("x", F, [1, 2, 16, 16, 16])], [_vi("y")], opset=19)
    g = load(m)
    assert g.op_counts().get("slice", 0) <= 15
    x = np.random.default_rng(6).standard_normal((1, 2, 16, 16, 16)).astype(np.float32)
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(ember.interpret(g, x), want, rtol=1e-5, atol=1e-6)


def test_new_element_types_round_trip_through_cast():
    """u16/u64 arithmetic, bf16 and float8 (saturating) and int4 (wrapping) casts."""
    import ml_dtypes

    x = np.array([-500.0, -9.6, -1.5, 0.3, 7.7, 300.0, np.inf], np.float32)
    for to, want in [(TensorProto.FLOAT8E4M3FN, np.clip(x, -448, 448).astype(
                         ml_dtypes.float8_e4m3fn)),
                     (TensorProto.BFLOAT16, x.astype(ml_dtypes.bfloat16)),
                     (TensorProto.INT4, x[:-1].astype(ml_dtypes.int4).astype(np.int8))]:
        xin = x if to != TensorProto.INT4 else x[:-1]
        m = _model([helper.make_node("Cast", ["x"], ["y"], to=to)], [_vi("x", F, [len(xin)])],
                   [_vi("y", to, [len(xin)])], opset=21)
        got = ember.interpret(load(m), xin)
        assert got.dtype == want.dtype, to
        np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    for elem, dt in [(TensorProto.UINT16, np.uint16), (TensorProto.UINT64, np.uint64)]:
        m = _model([helper.make_node("Mul", ["a", "b"], ["y"])],
                   [_vi("a", elem, [3]), _vi("b", elem, [3])], [_vi("y", elem, [3])])
        a, b = np.array([1, 200, 65535], dt), np.array([3, 300, 1], dt)
        np.testing.assert_array_equal(ember.interpret(load(m), a, b), _ort(m, a, b)[0])
