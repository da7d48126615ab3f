"""Control ops: ctrl.scan text round trip, verification and semantics; GRU/LSTM against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember import ir
from ember.backends.torch import interpret_torch
from ember.errors import ShapeError, VerificationError
from ember.ir import DType, Graph, TensorType

F32 = DType.f32


def _step_body(hidden=4, name="step", big_const=True) -> Graph:
    """h' = tanh(h * w + x + bias); y = relu(h') (one carry, one x slice, one invariant)."""
    body = Graph(name)
    h = body.add_input("h", TensorType(("batch", hidden), F32))
    x = body.add_input("x", TensorType(("batch", hidden), F32))
    w = body.add_input("w", TensorType((hidden,), F32))
    bias = np.linspace(-1, 1, hidden * 5, dtype=np.float32)
    b = body.const(bias[:hidden], name="step.bias")
    if big_const:  # > INLINE_LIMIT elements: travels as a blob in the weights file
        body.const(bias.reshape(5, hidden), name="step.unused")
    new = body.add("tanh", body.add("add", body.add("add", body.add("mul", h, w), x), b),
                   loc="cell.tanh")
    body.set_outputs(new, body.add("relu", new))
    return body


def _scan_graph(reverse=False, body=None) -> Graph:
    g = Graph("rnn")
    h0 = g.add_input("h0", TensorType(("batch", 4), F32))
    xs = g.add_input("xs", TensorType(("seq", "batch", 4), F32))
    w = g.const(np.array([0.5, -0.25, 1.0, 0.75], np.float32), name="w")
    hn, ys = g.add("ctrl.scan", h0, xs, w, regions=[body or _step_body()], num_carry=1, num_xs=1,
                   reverse=reverse, loc="encoder.rnn")
    g.set_outputs(hn, ys)
    return g


def _python_loop(h, xs, reverse=False):
    w = np.array([0.5, -0.25, 1.0, 0.75], np.float32)
    b = np.linspace(-1, 1, 20, dtype=np.float32)[:4]
    ys = [None] * len(xs)
    for t in (reversed(range(len(xs))) if reverse else range(len(xs))):
        h = np.tanh(h * w + xs[t] + b)
        ys[t] = np.maximum(h, 0)
    return h, np.stack(ys)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_text_round_trip_and_semantics(reverse):
    g = _scan_graph(reverse).verify()
    text = str(g)
    assert "ctrl.scan" in text and "graph @step" in text and "# encoder.rnn" in text
    assert ("reverse=true" in text) == reverse
    weights = ir.serialize.graph_weights(g)
    assert len(weights) == 1  # the region's large const is found by walking regions
    g2 = ir.parse(text, weights=weights)
    assert str(g2) == text
    rng = np.random.default_rng(0)
    h0 = rng.standard_normal((3, 4)).astype(np.float32)
    xs = rng.standard_normal((6, 3, 4)).astype(np.float32)
    want_h, want_y = _python_loop(h0, xs, reverse)
    for graph in (g, g2):
        hn, ys = ir.interpret(graph, h0, xs)
        np.testing.assert_allclose(hn, want_h, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ys, want_y, rtol=1e-6, atol=1e-6)
    th, ty = interpret_torch(g, h0, xs)
    np.testing.assert_allclose(th.numpy(), want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ty.numpy(), want_y, rtol=1e-5, atol=1e-6)


def test_scan_save_load_and_clone(tmp_path):
    g = _scan_graph()
    ir.save(g, tmp_path / "g.json")
    loaded = ir.load(tmp_path / "g.json")
    clone = g.clone().verify()
    assert str(loaded) == str(g) == str(clone)
    h0, xs = np.ones((2, 4), np.float32), np.full((3, 2, 4), 0.5, np.float32)
    for a, b in zip(ir.interpret(loaded, h0, xs), ir.interpret(g, h0, xs)):
        np.testing.assert_array_equal(a, b)


def test_nested_scan_round_trip():
    inner = _step_body(name="inner", big_const=False)
    outer = Graph("outer")
    h = outer.add_input("h", TensorType(("batch", 4), F32))
    chunk = outer.add_input("chunk", TensorType(("k", "batch", 4), F32))
    w = outer.add_input("w", TensorType((4,), F32))
    hn, ys = outer.add("ctrl.scan", h, chunk, w, regions=[inner], num_carry=1, num_xs=1)
    outer.set_outputs(hn, ys)
    g = Graph("nested")
    h0 = g.add_input("h0", TensorType(("batch", 4), F32))
    xs = g.add_input("xs", TensorType(("n", "k", "batch", 4), F32))
    w = g.const(np.array([0.5, -0.25, 1.0, 0.75], np.float32))
    g.set_outputs(*g.add("ctrl.scan", h0, xs, w, regions=[outer], num_carry=1, num_xs=1))
    text = str(g.verify())
    assert str(ir.parse(text)) == text
    h0v = np.zeros((2, 4), np.float32)
    xsv = np.random.default_rng(1).standard_normal((3, 2, 2, 4)).astype(np.float32)
    hn_val = ir.interpret(g, h0v, xsv)[0]
    want, _ = _python_loop(h0v, xsv.reshape(6, 2, 4))  # the nesting walks the same 6 steps
    np.testing.assert_allclose(hn_val, want, rtol=1e-6, atol=1e-6)


def _scan_error(body, *types, **attrs) -> str:
    g = Graph()
    vals = [g.add_input(f"a{i}", t) for i, t in enumerate(types)]
    with pytest.raises(ShapeError) as e:
        g.add("ctrl.scan", *vals, regions=[body] if body is not None else [], **attrs)
    return str(e.value)


def test_scan_infer_rejects_mismatched_bodies():
    carry, xs, w = (TensorType(("batch", 4), F32), TensorType(("seq", "batch", 4), F32),
                    TensorType((4,), F32))
    body = _step_body()
    assert "exactly one body region" in _scan_error(None, carry, xs, w, num_carry=1, num_xs=1)
    msg = _scan_error(body, TensorType(("batch", 5), F32), xs, w, num_carry=1, num_xs=1)
    assert "input 0 (carry)" in msg and "f32[batch,5]" in msg
    msg = _scan_error(body, carry, TensorType(("seq", 2, 4), F32), w, num_carry=1, num_xs=1)
    assert "input 1 (x slice)" in msg
    assert "takes 3 inputs" in _scan_error(body, carry, xs, num_carry=1, num_xs=1)
    assert "num_xs >= 1" in _scan_error(body, carry, xs, w, num_carry=1, num_xs=0)
    bad = Graph("bad")  # new carry with the wrong type
    ins = [bad.add_input(n, t) for n, t in zip("hxw", (carry, carry, w))]
    bad.set_outputs(ins[2], ins[0])
    assert "output 0 (new carry)" in _scan_error(bad, carry, xs, w, num_carry=1, num_xs=1)
    two = TensorType(("seq2", 4), F32)
    assert "dim 0 = the step count" in _scan_error(body, carry, xs, two, num_carry=1, num_xs=2)


def test_verify_catches_a_broken_body_and_outer_references():
    g = _scan_graph()
    body = next(op for op in g.ops if op.kind == "ctrl.scan").regions[0]
    body.outputs[0] = body.add("unsqueeze", body.outputs[0], dim=0)  # a pass got a type wrong
    with pytest.raises(VerificationError, match=r"output 0 \(new carry\) is f32\[1,batch,4\]"):
        g.verify()
    g = _scan_graph()
    body = next(op for op in g.ops if op.kind == "ctrl.scan").regions[0]
    outer = g.inputs[0]
    body.set_outputs(body.add("add", outer, body.inputs[1]), body.outputs[1])
    with pytest.raises(VerificationError, match="regions are isolated"):
        g.verify()


def _torch_rnn(cls, inputs, attrs):
    kw = {k: v for k, v in attrs.items() if k != "has_biases"}
    x = inputs[0]
    in_size = x.shape[-1]
    m = cls(in_size, bias=attrs.get("has_biases", True), **kw)
    n_state = 2 if cls is torch.nn.LSTM else 1
    with torch.no_grad():
        for p, a in zip(m._flat_weights, inputs[1 + n_state:], strict=True):
            p.copy_(torch.from_numpy(a))
    states = tuple(torch.from_numpy(s) for s in inputs[1:1 + n_state])
    y, hs = m(torch.from_numpy(x), states if n_state == 2 else states[0])
    hs = hs if isinstance(hs, tuple) else (hs,)
    return [y, *hs]


@pytest.mark.parametrize("kind,cls", [("ctrl.gru", torch.nn.GRU), ("ctrl.lstm", torch.nn.LSTM)])
def test_rnn_reference_matches_torch_modules(kind, cls):
    """The flat weight order must be nn.GRU/nn.LSTM's own (what the frontend sees)."""
    schema = ir.ops.get_schema(kind)
    for inputs, attrs in schema.iter_examples(np.random.default_rng(3)):
        want = _torch_rnn(cls, inputs, attrs)
        got = schema.run_reference(inputs, schema.complete_attrs(attrs))
        for w, o in zip(want, got, strict=True):
            np.testing.assert_allclose(o, w.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_rnn_infer_symbolic_and_errors():
    g = Graph()
    x = g.add_input("x", TensorType(("batch", "seq", 3), F32))
    h0 = g.add_input("h0", TensorType((2, "batch", 4), F32))
    c0 = g.add_input("c0", TensorType((2, "batch", 4), F32))
    params = [g.const(np.zeros(s, np.float32)) for s in ((16, 3), (16, 4), (16,), (16,)) * 2]
    y, hn, cn = g.add("ctrl.lstm", x, h0, c0, *params, hidden_size=4, bidirectional=True,
                      batch_first=True)
    assert str(y.type) == "f32[batch,seq,8]" and hn.type == h0.type and cn.type == c0.type
    with pytest.raises(ShapeError, match=r"weight 1 \(w_hh of layer 0\)"):
        g.add("ctrl.lstm", x, h0, c0, params[0], params[0], *params[2:], hidden_size=4,
              bidirectional=True, batch_first=True)
    with pytest.raises(ShapeError, match="expected 8 weight tensors"):
        g.add("ctrl.lstm", x, h0, c0, *params[:4], hidden_size=4, bidirectional=True,
              batch_first=True)
    with pytest.raises(ShapeError, match="h0 is"):
        g.add("ctrl.gru", x, h0, *params[:4], hidden_size=4, batch_first=True)
    text = str(g)
    assert str(ir.parse(text)) == text


def test_scan_torch_backward_flows_through_steps():
    g = _scan_graph()
    h0 = torch.randn(2, 4, requires_grad=True)
    xs = torch.randn(5, 2, 4, requires_grad=True)
    hn, ys = interpret_torch(g, h0, xs)
    (hn.sum() + ys.sum()).backward()
    assert h0.grad is not None and xs.grad is not None
    assert torch.all(xs.grad[0] != 0)  # the first step influences everything after it
