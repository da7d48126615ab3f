"""The rewrite engine: matching, bindings, commutativity, worklist, dead-op cleanup, loops."""

from __future__ import annotations

import numpy as np
import pytest

from ember.errors import EmberError, RewriteLoopError
from ember.ir import DType, Graph, TensorType
from ember.passes.rewrite import P, Rule, Rules, rewrite

F32 = DType.f32


def _graph() -> tuple[Graph, object]:
    g = Graph("g")
    x = g.add_input("x", TensorType((4,), F32))
    return g, x


def test_const_value_and_commutative_match_on_both_sides():
    g, x = _graph()
    one = g.const(np.ones(4, np.float32))
    a = g.add("mul", one, x)  # const on the left: still matches P("mul", any, const 1)
    b = g.add("mul", a, g.const(np.full(4, 2.0, np.float32)))  # not all ones
    g.set_outputs(b)
    rules = Rules([(P("mul", P.any("x"), P.const(1.0)), lambda b, x: x, "mul_one")])
    stats = rewrite(g, rules)
    assert stats.hits == {"mul_one": 1} and stats.total == 1
    assert [op.kind for op in g.ops] == ["const", "mul"]  # the dead const went with its user
    assert g.ops[1].inputs[0] is x


def test_non_commutative_ops_match_in_order_only():
    g, x = _graph()
    zero = g.const(np.zeros(4, np.float32))
    g.set_outputs(g.add("sub", zero, x))
    assert rewrite(g, Rules([(P("sub", P.any("x"), P.const(0)), lambda b, x: x)])).total == 0


def test_repeated_name_must_bind_the_same_value_and_where_filters():
    g, x = _graph()
    y = g.add("relu", x)
    same = g.add("sub", y, y)
    other = g.add("sub", y, x)
    g.set_outputs(g.add("add", same, other))

    def zeros(b, v):
        return b.const(np.zeros(4, np.float32))

    rules = Rules([(P("sub", P.any("v"), P.any("v")), zeros, "x_minus_x")])
    assert rewrite(g, rules).hits == {"x_minus_x": 1}
    assert g.op_counts() == {"add": 1, "const": 1, "relu": 1, "sub": 1}
    only_inputs = Rules([(P("relu", P.any("v", where=lambda v: v.producer is not None)),
                          lambda b, v: v)])
    assert rewrite(g, only_inputs).total == 0  # relu's operand is a graph input


def test_nested_patterns_kind_sets_and_builder_places_ops_before_root_with_its_loc():
    g, x = _graph()
    a = g.add("neg", g.add("neg", x), loc="blk")
    g.set_outputs(g.add("exp", a))

    def double_neg(b, inner):
        return b.add("abs", inner)  # not an identity, just to see where it goes

    rules = Rules([(P({"neg", "relu"}, P("neg", P.any("inner"))), double_neg, "double_neg")])
    rewrite(g, rules)
    assert [(op.kind, op.loc) for op in g.ops] == [("abs", "blk"), ("exp", None)]


def test_worklist_revisits_users_and_new_ops_until_fixpoint():
    g, x = _graph()
    v = x
    for _ in range(20):
        v = g.add("relu", v)
    g.set_outputs(v)
    rules = Rules([(P("relu", P("relu", P.any("y"), name="inner")), lambda b, y, inner: inner)])
    stats = rewrite(g, rules)
    assert g.op_counts() == {"relu": 1} and stats.total == 19


def test_rule_returning_none_leaves_no_garbage_and_next_rule_is_tried():
    g, x = _graph()
    g.set_outputs(g.add("relu", x))

    def builds_then_declines(b):
        b.add("exp", b.graph.inputs[0])
        return None

    rules = Rules([(P("relu"), builds_then_declines, "declines"),
                   (P("relu", P.any("x")), lambda b, x: b.add("maximum", x, x), "second")])
    stats = rewrite(g, rules)
    assert stats.hits == {"second": 1} and "declines" in stats.seconds
    assert [op.kind for op in g.ops] == ["maximum"]


def test_rules_compose_with_plus_and_keep_order():
    r1 = Rules([(P("relu"), lambda b: None)])
    r2 = Rules([Rule(P("exp"), lambda b: None, "named")])
    both = r1 + r2
    assert len(both) == 2 and [r.label for r in both.rules] == ["relu", "named"]
    assert both.for_kind("exp")[0].label == "named" and both.for_kind("neg") == []


def test_rules_that_undo_each_other_raise_loop_error_naming_them():
    g, x = _graph()
    g.set_outputs(g.add("add", x, g.add("relu", x)))
    swap = Rules([(P("add", P.any("a"), P.any("c")), lambda b, a, c: None, "noop"),
                  (P("relu", P.any("a")), lambda b, a: b.add("relu", b.add("relu", a)),
                   "grow")])
    # 'grow' replaces relu(a) with relu(relu(a)), then matches the new op again, forever
    with pytest.raises(RewriteLoopError,
                       match=r"did not settle after 5 rounds; rules still firing: grow \(\d+x"):
        rewrite(g, swap, max_rounds=5)


def test_type_changing_rule_is_a_bug_reported_by_name():
    g, x = _graph()
    g.set_outputs(g.add("relu", x))
    bad = Rules([(P("relu", P.any("x")), lambda b, x: b.const(np.zeros(3, np.float32)), "bad")])
    with pytest.raises(EmberError, match=r"rule 'bad' replaced relu \(f32\[4\]\) with values "
                                         r"of type \(f32\[3\]\)"):
        rewrite(g, bad)


def test_identity_rewrite_is_not_counted_and_outputs_are_rewired():
    g, x = _graph()
    r = g.add("relu", x)
    g.set_outputs(r, g.add("exp", r))
    rules = Rules([(P("relu", name="out"), lambda b, out: out, "self")])
    assert rewrite(g, rules).total == 0
    rules = Rules([(P("relu", P.any("x")), lambda b, x: x, "drop_relu")])
    rewrite(g, rules)
    assert g.outputs[0] is x and g.ops[0].inputs[0] is x
    g.verify()
