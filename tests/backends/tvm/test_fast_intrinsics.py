"""backends/tvm/fast_intrinsics.py: libm exp/erf/tanh/sigmoid calls replaced in every CPU kernel.

The kernels here are what TVM legalizes from Relax ops on a SYMBOLIC batch (the case the
lowering-time fast math cannot take): softmax, GELU (erf), tanh, sigmoid.
"""

import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from ember.backends.tvm.fast_intrinsics import active, fast_intrinsics
from ember.backends.tvm.schedules import apply_cpu_schedules
from ember.backends.tvm.targets import resolve

LIBM = ("expf", "erff", "tanhf")


@tvm.script.ir_module
class Chain:
    @R.function
    def main(x: R.Tensor(("n", 40), "float32")):
        with R.dataflow():
            s = R.nn.softmax(x, axis=-1)
            g = R.nn.gelu(x)
            t = R.tanh(x)
            e = R.exp(x)
            y = R.sigmoid(x)
            out = (s, g, t, e, y)
            R.output(out)
        return out


def _build(fast: bool):
    tgt = resolve("cpu").tvm_target()
    with fast_intrinsics(fast), tgt:
        mod = relax.transform.LegalizeOps()(Chain)
        mod = apply_cpu_schedules(mod, tgt)
        ex = tvm.compile(mod, target=tgt)
    asm = "".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    return ex, {name: asm.count(name) for name in LIBM}


def _reference(x: np.ndarray):
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = np.exp(x64 - np.max(x64, axis=-1, keepdims=True))
        erf = np.vectorize(math.erf)(x64 / math.sqrt(2.0))
        return (shifted / shifted.sum(-1, keepdims=True), 0.5 * x64 * (1.0 + erf), np.tanh(x64),
                np.exp(x64), 1.0 / (1.0 + np.exp(-x64)))


def _run(ex, x: np.ndarray):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return [o.numpy() for o in vm["main"](tvm.runtime.tensor(x))]


@pytest.fixture(scope="module")
def builds():
    return {fast: _build(fast) for fast in (False, True)}


def test_no_libm_calls_left_inside_the_context(builds):
    assert sum(builds[False][1].values()) > 0  # the test sees libm when it is there
    assert builds[True][1] == dict.fromkeys(LIBM, 0)
    assert not active()


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_matches_libm_and_float64(builds, batch):
    rng = np.random.default_rng(batch)
    x = (rng.standard_normal((batch, 40)) * 6).astype(np.float32)
    fast, slow, ref = _run(builds[True][0], x), _run(builds[False][0], x), _reference(x)
    for name, f, s, r in zip(("softmax", "gelu", "tanh", "exp", "sigmoid"), fast, slow, ref):
        np.testing.assert_allclose(f, r, rtol=2e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(f, s, rtol=2e-6, atol=1e-6, err_msg=name)


def test_special_values_as_libm(builds):
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 88.7, 89.0, 100.0, -87.5, -103.0, -104.5,
                -200.0, 1e-30, -1e-30, 9.5, -9.5, 4.5, -4.5]
    x = np.zeros((1, 40), np.float32)
    x[0, :len(specials)] = specials
    fast, slow = _run(builds[True][0], x), _run(builds[False][0], x)
    for name, f, s in zip(("softmax", "gelu", "tanh", "exp", "sigmoid"), fast, slow):
        if name == "softmax":  # the row holds inf and nan: NaN everywhere, both ways
            assert np.isnan(f).all() == np.isnan(s).all(), name
            continue
        np.testing.assert_array_equal(np.isnan(f), np.isnan(s), err_msg=name)
        np.testing.assert_allclose(f[~np.isnan(f)], s[~np.isnan(s)], rtol=4e-6, atol=1e-6,
                                   err_msg=name)


def test_switch_off(monkeypatch):
    monkeypatch.setenv("EMBER_FAST_MATH", "0")
    _, calls = _build(True)
    assert sum(calls.values()) > 0


def test_nesting_is_detected():
    """GRU's n = tanh(x + sigmoid(y) * z): fast math nested in fast math compiled for 34 s (see
    _nests); the rule leaves such a call to TVM, after materialize_nested took out the inner
    ones (below)."""
    from tvm import tirx

    from ember.backends.tvm.fast_intrinsics import _nests

    x, y, z = (tirx.Var(n, "float32x8") for n in "xyz")
    assert _nests(x + tirx.sigmoid(y) * z)
    assert not _nests(x + y * z - tirx.Cast("float32x8", tirx.Broadcast(tirx.IntImm("int32", 3), 8)))
    assert _nests(tirx.Let(x, y, x))


@tvm.script.ir_module
class Gates:
    @R.function
    def main(x: R.Tensor(("n", 32), "float32"), y: R.Tensor(("n", 32), "float32")):
        with R.dataflow():
            out = R.tanh(R.add(x, R.multiply(R.sigmoid(y), R.exp(R.tanh(x)))))
            R.output(out)
        return out


def test_nested_gates_compile_fast_and_match():
    """Three levels of nesting: every call is made fast (no libm left) once the inner ones are
    materialized, the build stays quick, and the values match float64 and TVM's lowering."""
    import time

    tgt = resolve("cpu").tvm_target()
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((5, 32)).astype(np.float32) * 3 for _ in range(2))
    outs, libm, seconds = [], [], []
    for fast in (False, True):
        t0 = time.perf_counter()
        with fast_intrinsics(fast), tgt:
            mod = relax.transform.LegalizeOps()(Gates)
            mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(
                relax.transform.AnnotateTIROpPattern()(mod)))
            ex = tvm.compile(apply_cpu_schedules(mod, tgt), target=tgt)
        seconds.append(time.perf_counter() - t0)
        asm = "".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports]
                      if m.kind == "llvm")
        libm.append(sum(asm.count(name) for name in LIBM))
        vm = relax.VirtualMachine(ex, tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y)).numpy())
    assert libm[0] > 0 and libm[1] == 0, libm
    assert seconds[1] < 20, seconds  # the exponential Let re-expansion took 34 s for one gate
    ref = np.tanh(x + 1.0 / (1.0 + np.exp(-y.astype(np.float64))) * np.exp(np.tanh(x)))
    np.testing.assert_allclose(outs[1], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)


def test_materialize_nested_hoists_innermost_calls_first():
    from tvm import tirx

    from ember.backends.tvm.fast_intrinsics import materialize_nested

    x, y = (tirx.decl_buffer((8,), "float32", n) for n in "xy")
    out = tirx.decl_buffer((8,), "float32", "out")
    i = tirx.Var("i", "int32")
    xi, yi = tirx.BufferLoad(x, [i]), tirx.BufferLoad(y, [i])
    value = tirx.tanh(xi + tirx.sigmoid(yi) * tirx.exp(tirx.tanh(xi)))
    loop = tirx.For(i, 0, 8, tirx.ForKind.SERIAL, tirx.BufferStore(out, value, [i]))
    func = tirx.PrimFunc([x, y, out], loop)
    got = materialize_nested(func).body.body
    stores = [s for s in got.seq if isinstance(s, tirx.BufferStore)]
    # sigmoid(y) and tanh(x) first (innermost), then exp(tmp), then the output store
    assert [str(s.value.op.name) for s in stores[:-1]] == ["tirx.sigmoid", "tirx.tanh",
                                                           "tirx.exp"]
    assert stores[-1].buffer.same_as(out) and str(stores[-1].value.op.name) == "tirx.tanh"
    assert "sigmoid" not in str(stores[-1].value) and "exp" not in str(stores[-1].value)
    plain = tirx.PrimFunc([x, y, out], tirx.For(i, 0, 8, tirx.ForKind.SERIAL,
                                                tirx.BufferStore(out, tirx.tanh(xi), [i])))
    assert materialize_nested(plain).same_as(plain)


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_rnn_gate_kernels_have_no_libm_calls(cell):
    """Through ember's build every gate is vector math and the output matches torch. GRU's
    candidate gate tanh(x + sigmoid(y) * z) nests fast math in fast math (it kept 32 scalar expf
    calls before materialize_nested); LSTM's cell writes c' as an output and reads it back, so
    nothing nests there: it guards the plain path."""
    import re

    import torch

    import ember
    from ember.backends.tvm import build, lower

    torch.manual_seed(0)
    rnn = getattr(torch.nn, cell)(8, 16, batch_first=True).eval()
    x = torch.randn(4, 5, 8)
    graph = ember.trace(_first_output(rnn), (x,))
    ex = build(lower(graph), "cpu")
    asm = "".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    assert not re.findall(r"call\w*\s+(?:expf|tanhf|erff)", asm)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy())).numpy()
    with torch.no_grad():
        want = rnn(x)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _first_output(rnn):
    """`rnn` returning only its output sequence (the traced model's single output)."""
    import torch

    class First(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(x)[0]

    return First().eval()
