"""int8 weight range: 7-bit ([-64, 64]) for the AVX2 u8 x s8 kernel, 8-bit elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.passes import Pipeline
from ember.passes.quantize import cost
from ember.passes.quantize.int8 import quantize_weight_int8


@pytest.fixture(scope="module")
def mlp():
    z = ember.zoo.load("digits_mlp")
    g = ember.trace(z.module, z.example_inputs, dynamic_dims=z.dynamic_dims)
    calib = [tuple(np.asarray(a) for a in b) for b in z.calibration]
    return z, g, calib, z.evaluate(lambda *xs: ember.interpret(g, *xs))


def _weights(q):
    return {op.attrs["name"]: op.attrs["value"] for op in q.ops
            if op.kind == "const" and ".weight.q" in op.attrs.get("name", "")}


@pytest.mark.parametrize("bits", [7, 8])
def test_quantize_weight_range_and_error(bits):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 40)).astype(np.float32)
    for sd in ("f32", "f16"):
        q, s = quantize_weight_int8(w, sd, bits)
        qmax = 64 if bits == 7 else 127
        assert np.abs(q).max() == qmax or sd == "f16"
        assert np.abs(q.astype(np.int32)).max() <= qmax
        err = np.abs(q * s.astype(np.float32)[:, None] - w)
        assert np.all(err <= s.astype(np.float32)[:, None] / 2 * 1.001)


@pytest.mark.parametrize("choice,bits", [("int7", 7), ("int8", 8)])
def test_int8_weights_option_is_visible_in_ir_and_report(mlp, choice, bits):
    z, g, calib, acc = mlp
    p = Pipeline.parse(f"quantize{{scheme=int8,int8_weights={choice},force=true,"
                       "show_progress=false}")
    q = p.run(g, calibration=calib)
    notes = p.report.passes[-1].notes
    assert notes["int8_weight_bits"] == bits
    ws = _weights(q)
    assert ws and all(n.endswith(f".weight.q{bits}") for n in ws)
    hi = max(int(np.abs(v.astype(np.int32)).max()) for v in ws.values())
    assert hi <= (64 if bits == 7 else 127) and hi > (32 if bits == 7 else 64)
    assert all(("7-bit" in r["kernel"]) == (bits == 7) for r in notes["layers"])
    assert f".weight.q{bits}" in str(q)  # the IR text says which range
    assert acc - z.evaluate(lambda *xs: ember.interpret(q, *xs)) <= 0.005


def test_auto_asks_the_oracle_then_the_host(monkeypatch, tmp_path):
    class Oracle:
        def __init__(self, bits):
            self.bits = bits

        def key(self):
            return "test"

        def int8_weight_bits(self):
            return self.bits

    monkeypatch.setattr(cost, "_ORACLE", Oracle(7))
    assert cost.int8_weight_bits() == 7
    monkeypatch.setattr(cost, "_ORACLE", Oracle(8))
    assert cost.int8_weight_bits() == 8
    monkeypatch.setattr(cost, "_ORACLE", None)
    for flags, bits in (("fpu sse avx avx2 fma", 7), ("avx2 avx512f avx512_vnni", 8),
                        ("fp asimd", 8)):
        f = tmp_path / f"cpuinfo{bits}{len(flags)}"
        f.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cost._host_int8_weight_bits(str(f)) == bits


def test_compiler_timer_answers_weight_bits_for_the_compile_target():
    """`int8_weights=auto` asks the installed oracle; the TVM timer answers for the resolved
    cpu target: 7 bits exactly where the lowering would pick the AVX2 vpmaddubsw kernel."""
    from ember.backends.tvm.kernels.qgemm import has_feature
    from ember.backends.tvm.layer_timer import TvmLayerTimer
    from ember.backends.tvm.targets import resolve

    t = resolve("cpu").tvm_target()
    want = 7 if has_feature(t, "avx2") and not has_feature(t, "avx512vnni") else 8
    assert TvmLayerTimer().int8_weight_bits() == want
