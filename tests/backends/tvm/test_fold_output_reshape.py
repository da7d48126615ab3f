"""fold_output_reshape: a reshape (or size-1 permute) at a function's output is folded into the
kernel that produces its input, which then writes the output buffer directly (no copy kernel);
pairs it cannot prove safe are left alone."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
import tvm_ffi
from tvm import relax, s_tir, tirx

import ember
from ember.backends.tvm import lower
from ember.backends.tvm.build import fused_module, relax_pipeline
from ember.backends.tvm.fold_output_reshape import (
    fold_output_reshapes,
    is_reshape_copy,
    mark_reshape_copies,
)
from ember.backends.tvm.schedules import apply_cpu_schedules
from ember.backends.tvm.targets import resolve
from ember.ir import DType, Graph, TensorType

SPEC = resolve("cpu")
RNG = np.random.default_rng(0)
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _scheduled(graph: Graph) -> tuple[tvm.IRModule, object]:
    """The module build() hands to tvm.compile: lowered, legalized, fused, reshape copies
    marked, CPU-scheduled."""
    mod, tgt = fused_module(lower(graph, target=SPEC), SPEC)
    with tgt:
        return apply_cpu_schedules(mark_reshape_copies(mod), tgt), tgt


def _run(mod, tgt, fn: str, *inputs) -> np.ndarray:
    with tgt:
        ex = tvm.compile(mod, target=tgt, relax_pipeline=relax_pipeline(SPEC))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm[fn](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs]).numpy()


def _kernels(mod, fn: str = "main") -> list[tirx.PrimFunc]:
    """The PrimFuncs `fn` calls, in call order."""
    found = []
    relax.analysis.post_order_visit(
        mod[fn], lambda e: found.append(mod[e.args[0]])
        if isinstance(e, relax.Call) and e.op.same_as(_CALL_TIR) else None)
    return found


def _ill_formed(mod) -> set[str]:
    """Names (a fold's `_out` suffix dropped) of the PrimFuncs TVM's verifier rejects."""
    return {re.sub(r"_out\d*$", "", gv.name_hint) for gv, f in mod.functions_items()
            if isinstance(f, tirx.PrimFunc) and not s_tir.analysis.verify_well_formed(f, False)}


def _check(graph: Graph, inputs: tuple, want: np.ndarray, functions=("main",),
           folds: int = 1) -> tuple[tvm.IRModule, tvm.IRModule]:
    """Fold the scheduled module of `graph`; each of `functions` loses `folds` reshape copies;
    folded and unfolded builds agree bit for bit and with `want`."""
    mod, tgt = _scheduled(graph)
    folded = fold_output_reshapes(mod)
    assert _ill_formed(folded) <= _ill_formed(mod)  # (threads.py's serial branch repeats names)
    assert s_tir.analysis.verify_well_formed(fold_output_reshapes(fused_module(
        lower(graph, target=SPEC), SPEC)[0]))  # unscheduled: fully well-formed
    relax.analysis.well_formed(folded)  # raises if not
    for fn in functions:
        before = [k for k in _kernels(mod, fn) if is_reshape_copy(k)]
        after = [k for k in _kernels(folded, fn) if is_reshape_copy(k)]
        assert len(before) - len(after) == folds, fn
        assert len(_kernels(folded, fn)) == len(_kernels(mod, fn)) - folds
        got = _run(folded, tgt, fn, *inputs)
        np.testing.assert_array_equal(got, _run(mod, tgt, fn, *inputs))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return mod, folded


def test_flatten_after_linear_relu_is_written_by_the_fused_kernel():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(),
                                torch.nn.Unflatten(1, (6, 8))).eval()
    x = torch.randn(3, 32)
    graph = ember.trace(model, (x,))
    mod, folded = _check(graph, (x.numpy(),), model(x).detach().numpy())
    last, scheduled = _kernels(folded)[-1], _kernels(mod)[-2]
    assert [int(d) for d in last.params[-1].shape] == [3, 6, 8]  # writes the output shape
    alias, *body = last.body.block.body.seq  # first in the root block
    assert isinstance(alias, tirx.DeclBuffer) and alias.buffer.same_as(scheduled.params[-1])
    assert [int(d) for d in alias.buffer.shape] == [3, 48]
    # the scheduled loops are untouched: they store into the old [3, 48] buffer, now an alias
    assert tvm_ffi.structural_equal(tirx.SeqStmt(body) if len(body) > 1 else body[0],
                                    scheduled.body.block.body, map_free_vars=True)


def _rnn_graph(T: int, d: int):
    from ember.zoo.seq_linear_rnn import make_seq_linear_rnn, scan_graph

    layer = make_seq_linear_rnn(T, d, seed=0).eval()
    return layer, scan_graph(layer, T, d)  # permutes around the scan, as the traced model


@pytest.mark.parametrize("scan", ["parallel_scan", "sequential"])
def test_permute_after_the_scan_folds_into_the_scan_kernel(scan):
    layer, g = _rnn_graph(T=48, d=24)
    if scan == "parallel_scan":
        g = ember.Pipeline.parse("parallel_scan,dce").run(g)
        assert any(op.kind == "ctrl.linear_scan" for op in g.ops)
    u = torch.randn(1, 48, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = layer(u).numpy()
    _, folded = _check(g, (u.numpy(),), want)  # the sequential loop: output 1 of (carry, ys)
    assert [int(d) for d in _kernels(folded)[-1].params[-1].shape] == [1, 48, 24]


def _two_outputs(uses) -> tuple[tvm.IRModule, object]:
    """main(x) = reshape(t[1], (24,)) plus whatever `uses(bb, t)` emits, where t = f(x) is one
    kernel writing (exp(x), tanh(x)); legalized by hand, marked and scheduled."""
    from tvm import te, topi

    x = relax.Var("x", relax.TensorType((4, 6), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            t = bb.emit_te(lambda a: [topi.exp(a), topi.tanh(a)], x, primfunc_name_hint="f")
            y = bb.emit(relax.TupleGetItem(t, 1))
            flat = bb.emit_te(lambda a: te.compute((24,), lambda i: a[i // 6, i % 6]), y,
                              primfunc_name_hint="flat")
            out = bb.emit_output(relax.Tuple([flat, *uses(bb, t, y)]))
        bb.emit_func_output(out)
    tgt = SPEC.tvm_target()
    with tgt:
        return apply_cpu_schedules(mark_reshape_copies(bb.get()), tgt), tgt


def _run_all(mod, tgt, x) -> list[np.ndarray]:
    with tgt:
        ex = tvm.compile(mod, target=tgt, relax_pipeline=relax_pipeline(SPEC))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
    return [got[i].numpy() for i in range(len(got))]


def test_one_output_of_a_multi_output_kernel_folds_the_others_kept():
    mod, tgt = _two_outputs(lambda bb, t, y: [bb.emit(relax.TupleGetItem(t, 0))])
    assert _has_reshape_copy(mod)
    folded = fold_output_reshapes(mod)
    relax.analysis.well_formed(folded)
    kernels = _kernels(folded)
    assert len(kernels) == 1 and not _has_reshape_copy(folded)
    assert [[int(d) for d in p.shape] for p in kernels[0].params] == [[4, 6], [4, 6], [24]]
    x = RNG.standard_normal((4, 6)).astype("float32")
    flat, e = _run_all(folded, tgt, x)
    np.testing.assert_array_equal(flat, _run_all(mod, tgt, x)[0])
    np.testing.assert_allclose(flat, np.tanh(x).reshape(24), rtol=1e-6)
    np.testing.assert_allclose(e, np.exp(x), rtol=1e-6)


@pytest.mark.parametrize("uses", [
    lambda bb, t, y: [y],  # the item itself is also an output
    lambda bb, t, y: [bb.emit(relax.TupleGetItem(t, 1))],  # item 1 read a second time
    lambda bb, t, y: [t],  # the whole tuple is an output
])
def test_a_tuple_item_used_elsewhere_is_left_alone(uses):
    mod, _ = _two_outputs(uses)
    assert _has_reshape_copy(mod)
    assert fold_output_reshapes(mod) is mod


def test_dynamic_batch_folds_in_main_and_main_b1():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Tanh(),
                                torch.nn.Unflatten(1, (4, 6))).eval()
    graph = ember.trace(model, (torch.randn(2, 16),), dynamic_dims={0: {0: "batch"}})
    x5, x1 = torch.randn(5, 16), torch.randn(1, 16)
    mod, _ = _scheduled(graph)
    assert "main_b1" in [gv.name_hint for gv in mod.get_global_vars()]
    _, folded = _check(graph, (x5.numpy(),), model(x5).detach().numpy())
    _check(graph, (x1.numpy(),), model(x1).detach().numpy(), functions=("main_b1",))
    out = _kernels(folded)[-1].params[-1]
    assert len(out.shape) == 3 and isinstance(out.shape[0], tirx.Var)  # [batch, 4, 6]


def _unfused(tail) -> tuple[tvm.IRModule, object]:
    """main(x, y) = (tail(exp(x)), exp(y)), legalized but not fused (FuseOps would fuse the
    tail into exp), marked and scheduled: one exp kernel called twice."""
    from tvm import topi

    x = relax.Var("x", relax.TensorType((4, 6), "float32"))
    y = relax.Var("y", relax.TensorType((4, 6), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, y]):
        with bb.dataflow():
            ex = bb.emit_te(topi.exp, x, primfunc_name_hint="exp")
            ey = bb.emit_te(topi.exp, y, primfunc_name_hint="exp")
            out = bb.emit_output(relax.Tuple([bb.emit(tail(ex)), ey]))
        bb.emit_func_output(out)
    tgt = SPEC.tvm_target()
    with tgt:
        mod = relax.transform.LegalizeOps()(bb.get())
        return apply_cpu_schedules(mark_reshape_copies(mod), tgt), tgt


def test_a_shared_producer_is_cloned_not_changed():
    mod, tgt = _unfused(lambda e: relax.op.reshape(e, (24,)))
    exps = [k for k in _kernels(mod) if not is_reshape_copy(k)]
    assert len(exps) == 2 and exps[0].same_as(exps[1])  # one exp kernel, called for x and y
    folded = fold_output_reshapes(mod)
    kernels = _kernels(folded)
    assert len(kernels) == 2 and not _has_reshape_copy(folded)
    assert sorted(k.same_as(exps[0]) for k in kernels) == [False, True]  # y's call: the original
    xv, yv = RNG.standard_normal((2, 4, 6)).astype("float32")
    with tgt:
        ex = tvm.compile(folded, target=tgt, relax_pipeline=relax_pipeline(SPEC))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv),
                                                      tvm.runtime.tensor(yv))
    np.testing.assert_allclose(got[0].numpy(), np.exp(xv).reshape(24), rtol=1e-6)
    np.testing.assert_allclose(got[1].numpy(), np.exp(yv), rtol=1e-6)


def _has_reshape_copy(mod) -> bool:
    return any(is_reshape_copy(k) for k in _kernels(mod))


def test_reshape_of_a_function_input_is_left_alone():
    g = Graph("flat")
    x = g.add_input("x", TensorType((4, 6), DType.f32))
    g.set_outputs(g.add("reshape", x, shape=(24,)))
    mod, _ = _scheduled(g)
    assert _has_reshape_copy(mod)
    assert fold_output_reshapes(mod) is mod


def test_producer_used_twice_is_left_alone():
    g = Graph("twice")
    x = g.add_input("x", TensorType((4, 6), DType.f32))
    e = g.add("exp", x)
    g.set_outputs(g.add("reshape", e, shape=(24,)), e)
    mod, _ = _scheduled(g)
    assert _has_reshape_copy(mod)
    assert fold_output_reshapes(mod) is mod


def test_a_transpose_that_moves_data_is_not_a_reshape():
    mod, _ = _unfused(lambda e: relax.op.permute_dims(e, (1, 0)))
    assert len(_kernels(mod)) == 3 and not _has_reshape_copy(mod)
    assert fold_output_reshapes(mod) is mod
