"""Shape ops beyond the registry-wide tests: symbolic dims, run-time resolution, decompositions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember import ir
from ember.backends.torch import interpret_torch
from ember.errors import ShapeError
from ember.ir import DType, Graph, TensorType
from ember.ir.ops.shape import add_dims, div_dims, resolvable, resolve_shape

F32 = DType.f32


def _infer(kind, in_shape, **attrs) -> str:
    g = Graph()
    x = g.add_input("x", TensorType(in_shape, F32))
    out = g.add(kind, x, **attrs)
    return str(out.type) if not isinstance(out, tuple) else ", ".join(str(o.type) for o in out)


@pytest.mark.parametrize("shape,target,want", [
    (("batch", 8, 8), ("batch", 64), "f32[batch,64]"),
    (("batch", 8, 8), (-1, 64), "f32[batch,64]"),
    (("batch", 8, 8), (-1, 8), "f32[8*batch,8]"),
    (("batch", 8, 8), ("batch", -1), "f32[batch,64]"),
    (("batch", "seq", 4), ("batch", -1), "f32[batch,4*seq]"),
    (("batch", "seq", 4), ("seq*batch", 2, 2), "f32[batch*seq,2,2]"),
    ((2, 3, 4), (4, -1), "f32[4,6]"),
])
def test_reshape_infers_symbolic_dims(shape, target, want):
    assert _infer("reshape", shape, shape=target) == want


@pytest.mark.parametrize("shape,target,match", [
    (("batch", 8, 8), (-1, "seq"), "give an explicit shape"),
    (("batch", 8, 8), (3, -1), "give an explicit shape"),
    (("batch", 8, 8), ("batch", 63), "cannot reshape"),
    ((2, 3), (-1, -1), "more than one -1"),
    ((2, 3), (6, -2), "bad reshape entry"),
])
def test_reshape_errors(shape, target, match):
    with pytest.raises(ShapeError, match=match):
        _infer("reshape", shape, shape=target)


def test_dim_algebra():
    assert div_dims("64*batch", 64) == "batch"
    assert div_dims("4*batch*seq", "batch") == "4*seq"
    assert div_dims("batch", 2) is None and div_dims(12, 5) is None
    assert add_dims([3, 4]) == 7 and add_dims(["batch", "2*batch"]) == "3*batch"
    assert add_dims(["batch", 2]) is None


def test_resolve_shape_at_run_time():
    assert resolve_shape(("batch", 64), 5 * 64) == (-1, 64)
    assert resolve_shape(("batch", "4*batch"), 3 * 12) == (3, 12)
    assert resolve_shape((2, -1), 8) == (2, -1)
    assert not resolvable(("batch", "8*seq")) and resolvable(("8*seq",))
    with pytest.raises(ShapeError, match="several unknown dims"):
        resolve_shape(("batch", "seq", 4), 24)


def test_symbolic_reshape_runs_in_numpy_and_torch():
    g = Graph()
    x = g.add_input("x", TensorType(("batch", 8, 8), F32))
    y = g.add("reshape", x, shape=("batch", 64))
    g.set_outputs(g.add("reshape", y, shape=(-1, 8)))
    g2 = ir.parse(str(g))
    assert str(g2) == str(g) and "shape=[\"batch\", 64]" in str(g)
    a = np.arange(3 * 64, dtype=np.float32).reshape(3, 8, 8)
    np.testing.assert_array_equal(ir.interpret(g2, a), a.reshape(24, 8))
    np.testing.assert_array_equal(interpret_torch(g2, a).numpy(), a.reshape(24, 8))


@pytest.mark.parametrize("kind,shape,attrs,want", [
    ("flatten", ("batch", 3, 4), {"start_dim": 1}, "f32[batch,12]"),
    ("flatten", ("batch", "seq", 4), {}, "f32[4*batch*seq]"),
    ("permute", ("batch", 3, 4), {"dims": (2, 0, 1)}, "f32[4,batch,3]"),
    ("transpose", ("batch", 3), {"dim0": 0, "dim1": -1}, "f32[3,batch]"),
    ("unsqueeze", ("batch", 3), {"dim": -1}, "f32[batch,3,1]"),
    ("squeeze", ("batch", 1, 3), {"dims": (1,)}, "f32[batch,3]"),
    ("expand", ("batch", 1), {"shape": (2, -1, 5)}, "f32[2,batch,5]"),
    ("expand", ("batch", 1), {"shape": ("batch", 5)}, "f32[batch,5]"),
    ("tile", ("batch", 3), {"repeats": (2, 1)}, "f32[2*batch,3]"),
    ("slice", ("batch", 6), {"dim": 1, "start": -4, "end": 2**63 - 1, "step": 2}, "f32[batch,2]"),
    ("slice", ("batch", 6), {"dim": 0, "start": 0, "end": 2**63 - 1}, "f32[batch,6]"),
    ("select", ("batch", 6, 2), {"dim": 1, "index": -1}, "f32[batch,2]"),
    ("split", ("batch", 6), {"dim": 1, "sizes": (2, 4)}, "f32[batch,2], f32[batch,4]"),
    ("pad", ("batch", 3, 4), {"pads": (1, 2, 0, 0)}, "f32[batch,3,7]"),
])
def test_shape_ops_keep_symbolic_dims(kind, shape, attrs, want):
    assert _infer(kind, shape, **attrs) == want


@pytest.mark.parametrize("kind,shape,attrs,match", [
    ("squeeze", (2, 3), {"dims": (0,)}, "not 1"),
    ("squeeze", ("batch", 3), {"dims": (0,)}, "not 1"),
    ("permute", (2, 3), {"dims": (0, 0)}, "not a permutation"),
    ("expand", (1, 4), {"shape": ("batch", 4)}, "broadcast with a binary op"),
    ("expand", (3, 4), {"shape": (5, 4)}, "cannot expand"),
    ("slice", ("batch", 4), {"dim": 0, "start": 0, "end": 2}, "depends on the symbol"),
    ("slice", (5,), {"dim": 0, "start": 0, "end": 2, "step": 0}, "step"),
    ("split", (5, 2), {"dim": 0, "sizes": (2, 2)}, "sum to 4"),
    ("split", ("n", 2), {"dim": 0, "sizes": (2, 2)}, "symbolic"),
    ("select", (3,), {"dim": 0, "index": 3}, "out of range"),
    ("pad", ("batch", 3), {"pads": (0, 0, 1, 0)}, "pad only static dims"),
    ("pad", (2, 3), {"pads": (1,)}, "even length"),
    ("flatten", (2, 3, 4), {"start_dim": 2, "end_dim": 1}, "comes after"),
    ("tile", (2, 3), {"repeats": (2,)}, "at least one per dim"),
    ("unsqueeze", (2, 3), {"dim": 3}, "out of range"),
])
def test_shape_op_errors(kind, shape, attrs, match):
    with pytest.raises(ShapeError, match=match):
        _infer(kind, shape, **attrs)


def test_concat_symbolic_and_errors():
    g = Graph()
    a = g.add_input("a", TensorType(("batch", 4), F32))
    b = g.add_input("b", TensorType(("2*batch", 4), F32))
    c = g.add_input("c", TensorType(("batch", 3), F32))
    assert str(g.add("concat", a, b).type) == "f32[3*batch,4]"
    assert str(g.add("concat", a, c, dim=-1).type) == "f32[batch,7]"
    with pytest.raises(ShapeError, match="only the concat dim 1 may differ"):
        g.add("concat", a, b, dim=1)
    with pytest.raises(ShapeError, match="single-symbol size"):
        g.add("concat", a, g.add_input("d", TensorType(("seq", 4), F32)))


def _decompose_all(g: Graph) -> int:
    n = 0
    for op in g.ops:
        if op.schema.has_decompose:
            new = op.schema.expand(g, op)
            if new is not None:
                g.replace_op(op, new)
                n += 1
    return n


@pytest.mark.parametrize("kind,shape,attrs,expect", [
    ("transpose", ("batch", 3, 4), {"dim0": 0, "dim1": 2}, 1),
    ("flatten", ("batch", 3, 4), {"start_dim": 1}, 1),
    ("flatten", (2, 3, 4), {"start_dim": 0, "end_dim": 1}, 1),
    ("flatten", ("batch", "seq", 4), {"start_dim": 1}, 0),  # not resolvable: flatten stays
])
def test_decompositions_preserve_semantics(kind, shape, attrs, expect):
    g = Graph()
    x = g.add_input("x", TensorType(shape, F32))
    g.set_outputs(g.add("relu", g.add(kind, x, **attrs)))
    a = np.random.default_rng(0).standard_normal(
        [d if isinstance(d, int) else 2 for d in shape]).astype(np.float32)
    before = ir.interpret(g, a)
    assert _decompose_all(g) == expect
    g.verify()
    assert kind not in str(g) or expect == 0
    np.testing.assert_array_equal(ir.interpret(g, a), before)


def test_split_round_trips_and_runs():
    g = Graph()
    x = g.add_input("x", TensorType(("batch", 5), F32))
    p, q, r = g.add("split", x, dim=1, sizes=(1, 3, 1))
    g.set_outputs(g.add("concat", r, q, p, dim=1))
    text = str(g.verify())
    assert "%0, %1, %2 = split(%x) {dim=1, sizes=[1, 3, 1]}" in text
    assert str(ir.parse(text)) == text
    a = np.arange(10, dtype=np.float32).reshape(2, 5)
    want = np.concatenate([a[:, 4:], a[:, 1:4], a[:, :1]], axis=1)
    np.testing.assert_array_equal(ir.interpret(g, a), want)
    np.testing.assert_array_equal(interpret_torch(g, torch.from_numpy(a)).numpy(), want)


def test_shape_ops_do_not_alias_inputs():
    """Reference outputs are fresh arrays: in-place numpy code downstream cannot corrupt inputs."""
    a = np.zeros((2, 3), np.float32)
    for kind, attrs in [("reshape", {"shape": (3, 2)}), ("permute", {"dims": (1, 0)}),
                        ("expand", {"shape": (2, 3)}), ("slice", {"dim": 0, "start": 0, "end": 1})]:
        schema = ir.ops.get_schema(kind)
        out = schema.run_reference([a], schema.complete_attrs(attrs))[0]
        assert not np.shares_memory(out, a), kind
