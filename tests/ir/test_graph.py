"""The Graph API keeps use lists, insertion points and types right under edits."""

from __future__ import annotations

import numpy as np
import pytest

import ember.ir as ir
from ember.errors import EmberError, SerializationError, ShapeError, VerificationError
from ember.ir import DType, Graph, TensorType

F32 = DType.f32


def _chain():
    g = Graph("chain")
    x = g.add_input("x", TensorType(("batch", 4), F32))
    one = g.const(np.ones((4,), np.float32), name="bias")
    a = g.add("add", x, one, loc="block.0")
    b = g.add("relu", a)
    g.set_outputs(b)
    return g, x, one, a, b


def test_types_are_inferred_and_uses_tracked():
    g, x, one, a, b = _chain()
    assert a.type == TensorType(("batch", 4), F32)
    assert [u.op.kind for u in x.uses] == ["add"]
    assert a.users == [b.producer]
    g.verify()


def test_insert_before_and_replace_all_uses():
    g, x, one, a, b = _chain()
    with g.at(before=b.producer):
        c = g.add("mul", a, a)
    assert g.replace_all_uses(a, c, exclude=[c.producer]) == 1  # relu's operand only
    assert [op.kind for op in g.ops] == ["const", "add", "mul", "relu"]
    assert b.producer.inputs[0] is c
    g.verify()


def test_erase_refuses_used_ops_and_updates_uses():
    g, x, one, a, b = _chain()
    with pytest.raises(EmberError, match="still used"):
        g.erase(a.producer)
    with g.at(after=a.producer):
        d = g.add("neg", a)
    assert len(a.uses) == 2
    g.erase(d.producer)
    assert len(a.uses) == 1
    g.verify()


def test_erase_during_iteration_is_safe():
    g, x, one, a, b = _chain()
    for i in range(100):
        g.add("neg", x)
    for op in g.ops:
        if op.kind == "neg":
            g.erase(op)
    assert [op.kind for op in g.ops] == ["const", "add", "relu"]


def test_replace_all_uses_rejects_type_change():
    g, x, one, a, b = _chain()
    other = g.const(np.ones((3,), np.float32))
    with pytest.raises(ShapeError):
        g.replace_all_uses(a, other)


def test_clone_is_deep_and_prints_identically():
    g, *_ = _chain()
    c = g.clone()
    assert str(c) == str(g)
    assert c.ops[0] is not g.ops[0]
    c.verify()


def test_verifier_catches_hand_edited_type_with_context():
    g, x, one, a, b = _chain()
    a.type = TensorType(("batch", 5), F32)
    with pytest.raises(VerificationError) as e:
        g.verify()
    msg = str(e.value)
    assert "add (block.0)" in msg and ">>" in msg and "f32[batch,5]" in msg


def test_verifier_catches_use_before_def():
    g, x, one, a, b = _chain()
    g.move_before(b.producer, g.ops[0])
    with pytest.raises(VerificationError, match="not defined before"):
        g.verify()


def test_unknown_attr_and_missing_attr_are_shape_errors():
    g, x, *_ = _chain()
    with pytest.raises(ShapeError, match="unknown attribute"):
        g.add("relu", x, alpha=1.0)
    with pytest.raises(ShapeError, match="missing required attribute 'dtype'"):
        g.add("cast", x)


def test_type_str_and_symbols():
    t = TensorType(("batch", 8, 8), F32)
    assert str(t) == "f32[batch,8,8]" and t.symbols == {"batch"} and not t.is_static
    assert TensorType((2, 3), DType.i8).nbytes() == 6
    with pytest.raises(ShapeError):
        TensorType((-1,), F32)


def test_save_load_round_trip(tmp_path):
    g, *_ = _chain()
    big = g.const(np.arange(64, dtype=np.float32).reshape(16, 4), name="w")
    g.set_outputs(g.outputs[0], big)
    ir.save(g, tmp_path / "g.json")
    h = ir.load(tmp_path / "g.json")
    assert str(h) == str(g)
    np.testing.assert_array_equal(ir.interpret(h, np.zeros((2, 4), np.float32))[1],
                                  np.arange(64, dtype=np.float32).reshape(16, 4))
    assert not any(p.suffix == ".tmp" for p in tmp_path.iterdir())


def test_parsed_blob_without_weights_refuses_to_compute():
    g, *_ = _chain()
    big = g.const(np.arange(64, dtype=np.float32).reshape(16, 4))
    g.set_outputs(big)
    h = ir.parse(str(g))
    assert str(h) == str(g)
    with pytest.raises(EmberError, match="elided"):
        ir.interpret(h, np.zeros((1, 4), np.float32))
    with pytest.raises(SerializationError):
        ir.save(h, "/tmp/never-written.json")


def test_interpret_checks_inputs():
    g, *_ = _chain()
    from ember.errors import InputError

    with pytest.raises(InputError, match="dim 1 is 5"):
        ir.interpret(g, np.zeros((2, 5), np.float32))
    with pytest.raises(InputError, match="dtype float64"):
        ir.interpret(g, np.zeros((2, 4)))
    with pytest.raises(InputError, match="takes 1 inputs"):
        ir.interpret(g)
