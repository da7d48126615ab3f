"""Packed-weight conv2d (schedules/conv_packed.py): numerics vs torch through the whole build
(lowering, batch specialization, fusion, the PackedConv2d rule), static and symbolic batch, and
the rule actually applying (a silent fallback would pass as "correct" but slow)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
from tvm import relax

import ember
from ember.backends.tvm.build import build, fused_module
from ember.backends.tvm.lower import batch1_name, lower
from ember.backends.tvm.schedules import cpu_params, schedule_func
from ember.backends.tvm.schedules.conv_packed import ConvShape, choose_tile, pack_conv_weight
from ember.compiler import import_model

TARGET = {"kind": "llvm", "num-cores": 2}  # baseline x86-64: runs anywhere


class ConvBlock(torch.nn.Module):
    def __init__(self, cin, cout, k, stride, padding, dilation, groups, bias):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=padding,
                                    dilation=dilation, groups=groups, bias=bias)

    def forward(self, x, r):
        return torch.relu(self.conv(x)) + r  # epilogue with an extra input: fused write-back


CASES = {  # cin, cout, k, stride, padding, dilation, groups, bias, (h, w)
    "3x3_pad1": (16, 32, 3, 1, 1, 1, 1, True, (8, 8)),
    "small_map": (32, 32, 3, 1, 1, 1, 1, True, (4, 4)),  # 16 pixels: one tile
    "stride2_odd": (3, 10, 3, 2, 0, 1, 1, False, (15, 13)),  # 7x6: pixels, channels off-tile
    "groups": (8, 12, 3, 2, 1, 1, 2, True, (9, 7)),
    "depthwise": (8, 8, 3, 1, 1, 1, 8, True, (6, 10)),
    "dilation": (4, 6, (3, 2), 1, (2, 1), 2, 1, True, (10, 8)),
    "1x1": (16, 24, 1, 1, 0, 1, 1, False, (6, 8)),
    "direct_fallback": (3, 10, 3, 2, 0, 1, 1, False, (11, 13)),  # 5x6: too much tile padding
}


def _compiled(name: str, dynamic: bool, batch: int):
    cin, cout, k, stride, padding, dilation, groups, bias, (h, w) = CASES[name]
    torch.manual_seed(0)
    m = ConvBlock(cin, cout, k, stride, padding, dilation, groups, bias).eval()
    x = torch.randn(batch, cin, h, w)
    with torch.no_grad():
        r = torch.randn_like(m.conv(x))
    dims = {"x": {0: "batch"}, "r": {0: "batch"}} if dynamic else None
    g = import_model(m, (x, r), dims)
    return m, g, (x, r)


def _run(g, inputs, func="main"):
    ex = build(lower(g, target=TARGET), TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm[func](*[tvm.runtime.tensor(t.numpy()) for t in inputs]).numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_static_batch_matches_torch(name):
    m, g, inputs = _compiled(name, dynamic=False, batch=3)
    with torch.no_grad():
        ref = m(*inputs).numpy()
    np.testing.assert_allclose(_run(g, inputs), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["3x3_pad1", "groups", "stride2_odd"])
def test_symbolic_batch_and_batch1_twin_match_torch(name):
    m, g, inputs = _compiled(name, dynamic=True, batch=5)
    ex = build(lower(g, target=TARGET), TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    with torch.no_grad():
        ref = m(*inputs).numpy()
    got = vm["main"](*[tvm.runtime.tensor(t.numpy()) for t in inputs]).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    one = [t[:1] for t in inputs]  # the batch-1 twin has its own static packed kernel
    with torch.no_grad():
        ref1 = m(*one).numpy()
    got1 = vm[batch1_name()](*[tvm.runtime.tensor(t.numpy()) for t in one]).numpy()
    np.testing.assert_allclose(got1, ref1, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dynamic", [False, True])
def test_packed_rule_schedules_every_conv_kernel(dynamic):
    _m, g, _inputs = _compiled("3x3_pad1", dynamic=dynamic, batch=4)
    fused, tgt = fused_module(lower(g, target=TARGET), TARGET)
    rules = {gv.name_hint: schedule_func(f, tgt)[1] for gv, f in fused.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and "conv" in gv.name_hint}
    assert rules and set(rules.values()) == {"packed_conv2d"}, rules
    # the symbolic kernel keeps only the batch loop symbolic; the batch-1 twin is static
    assert len(rules) == (2 if dynamic else 1), rules


def test_weight_panels_layout():
    shape = ConvShape(4, 6, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2)
    tile = choose_tile(shape, cpu_params(tvm.target.Target(TARGET)))
    w = np.arange(6 * 2 * 9, dtype=np.float32).reshape(6, 2, 3, 3)
    packed = pack_conv_weight(w, shape, tile)
    panels = -(-3 // tile.mr)
    assert packed.shape == (2 * panels, 18, tile.mr)
    # output channel o of group g sits at panel g*panels + o//mr, lane o%mr; k = (c, ry, rx)
    for o in range(6):
        g, og = divmod(o, 3)
        np.testing.assert_array_equal(packed[g * panels + og // tile.mr, :, og % tile.mr],
                                      w[o].reshape(-1))


def test_digits_cnn_dynamic_matches_torch():
    z = ember.zoo.load("digits_cnn")
    x = torch.cat([z.example_inputs[0]] * 3)[:7]
    g = import_model(z.module, (x,), z.dynamic_dims)
    with torch.no_grad():
        ref = z.module(x).numpy()
    np.testing.assert_allclose(_run(g, (x,)), ref, rtol=1e-4, atol=1e-4)
