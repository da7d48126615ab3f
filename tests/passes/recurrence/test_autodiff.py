"""autodiff.jacobian_graph (forward mode on the IR) and batching.vectorize vs numerics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.errors import UnsupportedOpError
from ember.ir import DType, Graph, TensorType
from ember.ir.interpret import run_graph
from ember.passes.recurrence.autodiff import independent_rows, jacobian_graph
from ember.passes.recurrence.batching import vectorize

F64 = DType.f64
UNARY = ["sigmoid", "tanh", "neg", "exp"]
BINARY = ["add", "sub", "mul"]


def _random_body(draw_ops, batch: int, d: int, seed: int) -> Graph:
    """A random cell h' = f(h, x) over a [batch, d] state from the ops GRU/LSTM/RNN cells use."""
    rng = np.random.default_rng(seed)
    body = Graph("cell")
    h = body.add_input("h", TensorType((batch, d), F64))
    x = body.add_input("x", TensorType((batch, 2 * d), F64))
    w = body.add_input("w", TensorType((2 * d, d), F64))
    x1, x2 = body.add("split", x, dim=1, sizes=(d, d))
    pool = [h, x1, x2]
    for kind, a, b in draw_ops:
        pa, pb = pool[a % len(pool)], pool[b % len(pool)]
        if kind in UNARY:
            v = body.add(kind, pa)
            v = body.add("mul", v, body.const(np.full((), 0.5))) if kind == "exp" else v
        elif kind in BINARY:
            v = body.add(kind, pa, pb)
        elif kind == "linear":
            v = body.add("linear", pa, w, body.const(rng.standard_normal(2 * d) * 0.1))
            v = body.add("split", v, dim=-1, sizes=(d, d))[b % 2]
        else:  # slice + concat: move halves of the features around
            lo = body.add("slice", pa, dim=1, start=0, end=d // 2)
            hi = body.add("slice", pa, dim=1, start=d // 2, end=d)
            v = body.add("concat", hi, lo, dim=-1)
        pool.append(body.add("tanh", v) if kind == "exp" else v)
    body.set_outputs(body.add("add", pool[-1], body.add("mul", h, pool[-1])))
    return body


def _fd_jacobian(body: Graph, ins: list[np.ndarray], eps: float = 1e-6) -> np.ndarray:
    h = ins[0]
    cols = []
    for j in range(h.size):
        e = np.zeros(h.size)
        e[j] = eps
        e = e.reshape(h.shape)
        fp = run_graph(body, [h + e, *ins[1:]])[0]
        fm = run_graph(body, [h - e, *ins[1:]])[0]
        cols.append(((fp - fm) / (2 * eps)).ravel())
    return np.stack(cols, axis=1)  # [n_out, n_in]


_op = st.tuples(st.sampled_from(UNARY + BINARY + ["linear", "roll"]), st.integers(0, 30),
                st.integers(0, 30))


@settings(max_examples=20, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_jacobian_matches_finite_differences(ops, seed):
    batch, d = 2, 4
    body = _random_body(ops, batch, d, seed)
    rng = np.random.default_rng(seed)
    ins = [rng.standard_normal((batch, d)), rng.standard_normal((batch, 2 * d)),
           rng.standard_normal((2 * d, d)) * 0.5]
    fd = _fd_jacobian(body, ins)
    assert independent_rows(body) == 1
    full = run_graph(jacobian_graph(body, "full"), ins)[0]  # [batch, d, d]
    diag = run_graph(jacobian_graph(body, "diag"), ins)[0]  # [batch, d]
    for b in range(batch):
        block = fd[b * d:(b + 1) * d, b * d:(b + 1) * d]
        np.testing.assert_allclose(full[b], block, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(diag[b], np.diag(block), rtol=1e-6, atol=1e-6)
    # rows=0 (no batch assumption) gives the whole [B*d, B*d] Jacobian, off-diagonal zeros incl.
    whole = run_graph(jacobian_graph(body, "full", rows=0), ins)[0]
    np.testing.assert_allclose(whole, fd, rtol=1e-6, atol=1e-6)


def test_rows_that_mix_are_not_treated_as_independent():
    body = Graph("mix")
    h = body.add_input("h", TensorType((3, 2), F64))
    mixed = body.add("sum", h, dims=(0,), keepdim=True)
    body.set_outputs(body.add("tanh", body.add("add", h, mixed)))
    assert independent_rows(body) == 0
    ins = [np.random.default_rng(0).standard_normal((3, 2))]
    got = run_graph(jacobian_graph(body, "full"), ins)[0]
    np.testing.assert_allclose(got, _fd_jacobian(body, ins), rtol=1e-6, atol=1e-6)


def test_unknown_op_is_named():
    body = Graph("odd")
    h = body.add_input("h", TensorType((4,), F64))
    body.set_outputs(body.add("cumsum", h, dim=0))
    with pytest.raises(UnsupportedOpError, match="cumsum"):
        jacobian_graph(body, "full")


def test_vectorize_matches_per_step_evaluation():
    body = _random_body([("linear", 0, 1), ("mul", 3, 1), ("roll", 4, 0), ("sigmoid", 5, 0)],
                        2, 4, 3)
    rng = np.random.default_rng(1)
    steps = 5
    hs, xs = rng.standard_normal((steps, 2, 4)), rng.standard_normal((steps, 2, 8))
    w = rng.standard_normal((8, 4))
    got = run_graph(vectorize(body, [True, True, False], steps), [hs, xs, w])[0]
    want = np.stack([run_graph(body, [hs[t], xs[t], w])[0] for t in range(steps)])
    np.testing.assert_allclose(got, want, rtol=1e-12)
