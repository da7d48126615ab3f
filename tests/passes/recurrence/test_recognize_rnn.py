"""recognize_rnn: ctrl.gru / ctrl.lstm -> ctrl.scan with the cell written out in registry ops."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ember
from ember.backends.tvm import build, lower
from ember.ir import DType, Graph, TensorType

F32 = DType.f32


def _rnn_graph(kind: str, rng, steps=5, batch=3, in_size=4, hid=6, **attrs) -> tuple:
    layers, dirs = attrs.get("num_layers", 1), 2 if attrs.get("bidirectional") else 1
    gates = 3 if kind == "ctrl.gru" else 4
    g = Graph(kind[5:])
    shape = (batch, steps, in_size) if attrs.get("batch_first") else (steps, batch, in_size)
    x = g.add_input("x", TensorType(shape, F32))
    nstate = 1 if kind == "ctrl.gru" else 2
    states = [g.add_input(f"s{k}", TensorType((layers * dirs, batch, hid), F32))
              for k in range(nstate)]
    params = []
    for layer in range(layers):
        for _ in range(dirs):
            shapes = [(gates * hid, in_size if layer == 0 else dirs * hid), (gates * hid, hid)]
            if attrs.get("has_biases", True):
                shapes += [(gates * hid,), (gates * hid,)]
            params += [g.const((rng.standard_normal(s) * 0.4).astype(np.float32)) for s in shapes]
    res = g.add(kind, x, *states, *params, hidden_size=hid, **attrs)
    g.set_outputs(*res)
    ins = [rng.standard_normal(shape).astype(np.float32)] + \
        [rng.standard_normal((layers * dirs, batch, hid)).astype(np.float32) * 0.5
         for _ in range(nstate)]
    return g, ins


CASES = [{}, {"batch_first": True}, {"num_layers": 2}, {"bidirectional": True},
         {"num_layers": 2, "bidirectional": True, "has_biases": False, "batch_first": True}]


@pytest.mark.parametrize("kind", ["ctrl.gru", "ctrl.lstm"])
@pytest.mark.parametrize("attrs", CASES, ids=lambda a: ",".join(a) or "plain")
def test_recognized_scan_matches_interpreter(kind, attrs):
    rng = np.random.default_rng(len(attrs))
    g, ins = _rnn_graph(kind, rng, **attrs)
    want = ember.interpret(g, *ins)
    out = ember.Pipeline.parse("recognize_rnn,dce").run(g.clone(), check=True,
                                                        sample_inputs=[tuple(ins)])
    kinds = out.op_counts()
    assert kind not in kinds
    layers, dirs = attrs.get("num_layers", 1), 2 if attrs.get("bidirectional") else 1
    assert kinds["ctrl.scan"] == layers * dirs
    body_kinds = {op.kind for op in next(o for o in out.ops if o.kind == "ctrl.scan").regions[0].ops}
    assert body_kinds <= {"linear", "split", "add", "mul", "sub", "sigmoid", "tanh", "const"}
    got = ember.interpret(out, *ins)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)


def test_digits_gru_recognized_and_compiled_by_sequential_loop():
    z = ember.zoo.load("digits_gru")
    g = ember.trace(z.module, z.example_inputs)
    assert g.op_counts()["ctrl.gru"] == 1
    x = z.example_inputs[0].numpy()
    want = ember.interpret(g, x)
    out = ember.Pipeline.parse("recognize_rnn,dce").run(g.clone())
    assert "ctrl.gru" not in out.op_counts() and out.op_counts()["ctrl.scan"] == 1
    # batch_first: the scanned input is time-major (permuted before the loop)
    scan = next(o for o in out.ops if o.kind == "ctrl.scan")
    assert scan.inputs[1].type.shape[0] == x.shape[1]
    np.testing.assert_allclose(ember.interpret(out, x), want, rtol=1e-5, atol=1e-6)
    vm = relax.VirtualMachine(build(lower(out), "cpu"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
