"""Every zoo model traces, verifies, round-trips through the text form and matches torch eager
(at the traced batch size and, with the dynamic batch dim, at another one)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import ember
import ember.zoo
from ember.ir.serialize import graph_weights

TOL = 1e-4


@functools.cache
def _traced(name: str):
    z = ember.zoo.load(name)
    return z, ember.trace(z.module, z.example_inputs, z.dynamic_dims)


def _eager(module, arrays):
    with torch.no_grad():
        return module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)).numpy()


@pytest.mark.parametrize("name", ember.zoo.names())
def test_zoo_traces_verifies_and_matches_eager(name):
    z, g = _traced(name)
    g.verify()
    assert [v.name for v in g.inputs] == list(z.input_names)
    arrays = [x.numpy() for x in z.example_inputs]
    got = ember.interpret(g, *arrays)
    assert np.abs(got - _eager(z.module, arrays)).max() <= TOL


@pytest.mark.parametrize("name", ember.zoo.names())
def test_zoo_dynamic_batch(name):
    z, g = _traced(name)
    for v in g.inputs:
        for axis, symbol in z.dynamic_dims.get(v.name, {}).items():
            assert v.type.shape[axis] == symbol
    batch = [a[:7] for a in z.calibration[0]]  # 7 real rows, traced with 4
    assert batch[0].shape[0] == 7 != z.example_inputs[0].shape[0]
    got = ember.interpret(g, *batch)
    assert got.shape[0] == 7
    assert np.abs(got - _eager(z.module, batch)).max() <= TOL


@pytest.mark.parametrize("name", ember.zoo.names())
def test_zoo_text_round_trip(name):
    _, g = _traced(name)
    text = str(g)
    again = ember.ir.parse(text, weights=graph_weights(g))
    assert str(again) == text
    again.verify()


@pytest.mark.parametrize("name", ember.zoo.names())
def test_zoo_weights_are_named_consts(name):
    z, g = _traced(name)
    state = z.module.state_dict()
    named = {op.attrs["name"]: op.attrs["value"] for op in g.consts() if op.attrs.get("name")}
    assert named, "no named weights"
    for path, value in named.items():
        assert path in state, path
        np.testing.assert_array_equal(value, state[path].numpy())
    # every parameter the forward reads is there (num_batches_tracked is never read)
    used = {k for k in state if not k.endswith("num_batches_tracked")}
    assert used == set(named)


def test_zoo_locations_and_names():
    _, g = _traced("digits_vit")
    assert g.name == "digits_vit"
    locs = {op.loc for op in g.walk()}
    assert {"blocks.0.attn.q_proj", "blocks.1.mlp.fc2", "head", "blocks.0.ln1"} <= locs
    kinds = g.op_counts()
    assert kinds["scaled_dot_product_attention"] == 2
    assert kinds["linear"] == 2 * 6 + 2  # q,k,v,out,fc1,fc2 per block + patch_embed + head
    assert "matmul" not in kinds and "softmax" not in kinds  # kept whole, not decomposed
    _, cnn = _traced("digits_cnn")
    counts = cnn.op_counts()
    assert counts["conv2d"] == 3 and counts["batch_norm"] == 3
    assert {"bn1.running_mean", "bn3.running_var"} <= {op.attrs.get("name") for op in cnn.consts()}


def test_zoo_gru_is_one_op():
    _, g = _traced("digits_gru")
    counts = g.op_counts()
    assert counts["ctrl.gru"] == 1
    gru = next(op for op in g.ops if op.kind == "ctrl.gru")
    assert gru.attrs["hidden_size"] == 32 and gru.attrs["batch_first"] is True
    assert [v.producer.attrs.get("name") for v in gru.inputs[2:]] == [
        "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0"]
    assert sum(counts.values()) < 20  # nothing unrolled


def test_buffers_attributes_and_literals_become_named_consts():
    class Consts(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.tensor([2.0, 3.0]), persistent=False)
            self.offset = torch.tensor([0.5, -0.5])  # a plain tensor attribute

        def forward(self, x):
            return x * self.scale + self.offset + torch.tensor([1.0, 1.0])

    module = Consts()
    x = torch.randn(3, 2)
    g = ember.trace(module, (x,))
    names = {op.attrs.get("name") for op in g.consts()}
    assert {"scale", "offset"} <= names and len(g.consts()) == 3
    np.testing.assert_allclose(ember.interpret(g, x.numpy()), module(x).numpy(), atol=1e-6)
