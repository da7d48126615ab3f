"""User errors: unsupported ops are reported all at once (op, count, module path, source line);
bad example inputs and bad dynamic_dims raise InputError with an actionable message."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ember
from ember.errors import EmberError, InputError, UnsupportedOpError


class Det(nn.Module):
    def forward(self, x):
        return torch.linalg.det(x[..., :4, :4])  # DET-LINE


class Spectral(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Det()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = torch.fft.fft(x).real  # FFT-LINE-1
        z = torch.fft.fft(self.fc(y)).imag  # FFT-LINE-2
        return self.fc(y + z).relu() * self.inner(x)[:, None, None]


def test_unsupported_ops_are_listed_at_once():
    with pytest.raises(UnsupportedOpError) as info:
        ember.trace(Spectral(), (torch.randn(2, 8, 8),))
    err = info.value
    fft, det = "aten._fft_r2c.default", "aten._linalg_det.default"
    assert set(err.ops) == {fft, det, "aten.view_as_real.default"}
    assert len(err.ops[fft]) == 2 and len(err.ops[det]) == 1
    assert any("FFT-LINE-1" in w for w in err.ops[fft])
    assert any("FFT-LINE-2" in w for w in err.ops[fft])
    (where,) = err.ops[det]
    assert where.startswith("inner ") and "test_torch_errors.py" in where and "DET-LINE" in where
    text = str(err)
    assert f"{fft} x2" in text and f"{det} x1" in text
    assert "aten.fft_fft" in text and "aten.linalg_det" in text  # what the user called
    assert "3 unsupported op(s), 5 occurrence(s)" in text


def test_unsupported_variant_has_a_reason():
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 2, 2)
            self.pool = nn.AvgPool2d(2, divisor_override=3)

        def forward(self, x):
            return self.up(x).sum() + self.pool(x).sum()

    with pytest.raises(UnsupportedOpError) as info:
        ember.trace(Transposed(), (torch.randn(1, 2, 4, 4),))
    text = str(info.value)
    assert "transposed convolution" in text and "up " in text
    assert "divisor_override" in text and "pool" in text


@pytest.mark.parametrize("inputs, message", [
    (torch.randn(2, 8), "tuple of tensors"),
    ((torch.randn(2, 8), 3), "example_inputs[1] is a int"),
    ((), "takes (x)"),
    ((torch.randn(2, 8), torch.randn(2, 8)), "at most 1"),
])
def test_bad_example_inputs(inputs, message):
    with pytest.raises(InputError, match=None) as info:
        ember.trace(nn.Sequential(nn.Linear(8, 4)), inputs) if message != "takes (x)" else \
            ember.trace(_OneArg(), inputs)
    assert message in str(info.value)


class _OneArg(nn.Module):
    def forward(self, x):
        return x * 2


def test_wrong_shape_and_dtype_and_raising_forward():
    linear = nn.Linear(8, 4)
    with pytest.raises(InputError) as info:
        ember.trace(linear, (torch.randn(2, 5),))
    assert "torch.export could not trace Linear" in str(info.value)
    assert "float32[2, 5]" in str(info.value)
    with pytest.raises(InputError) as info:
        ember.trace(linear, (torch.randint(0, 3, (2, 8)),))
    assert "must have the same dtype" in str(info.value)

    class Raises(nn.Module):
        def forward(self, x):
            raise ValueError("x must be normalized first")

    with pytest.raises(InputError, match="x must be normalized first"):
        ember.trace(Raises(), (torch.randn(2),))
    with pytest.raises(InputError, match="nn.Module"):
        ember.trace(lambda x: x, (torch.randn(2),))


def test_bad_dynamic_dims():
    m = _OneArg()
    with pytest.raises(InputError, match="the inputs are x"):
        ember.trace(m, (torch.randn(4, 3),), {"y": {0: "batch"}})
    with pytest.raises(InputError, match="out of range"):
        ember.trace(m, (torch.randn(4, 3),), {"x": {2: "batch"}})
    with pytest.raises(InputError, match="identifier"):
        ember.trace(m, (torch.randn(4, 3),), {"x": {0: "bad name"}})
    with pytest.raises(InputError, match="size >= 2"):
        ember.trace(m, (torch.randn(1, 3),), {"x": {0: "batch"}})


def test_unrepresentable_symbolic_size_is_a_clear_error():
    class Grow(nn.Module):
        def forward(self, x):
            return torch.cat([x, x[:1]])  # batch + 1 rows

    with pytest.raises(EmberError) as info:
        ember.trace(Grow(), (torch.randn(4, 3),), {"x": {0: "batch"}})
    assert "cannot be expressed in ember types" in str(info.value)
    assert "=batch" in str(info.value)


def test_graph_names_and_dynamic_dims_by_index():
    g = ember.trace(_OneArg(), (torch.randn(4, 3),), {0: {0: "n"}})
    assert g.name == "one_arg" and str(g.inputs[0].type) == "f32[n,3]"
    assert ember.trace(_OneArg(), (torch.randn(4, 3),), name="double").name == "double"


def test_snake_case():
    from ember.frontends.torch.trace import snake_case

    assert [snake_case(n) for n in ("DigitsMLP", "DigitsViT", "MLPBlock", "SeqLinearRNN",
                                    "VelocityNet", "Net2D")] == [
        "digits_mlp", "digits_vit", "mlp_block", "seq_linear_rnn", "velocity_net", "net2d"]


def test_module_mode_is_restored():
    m = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train()
    g = ember.trace(m, (torch.randn(4, 3),))
    assert m.training and all(c.training for c in m.modules())
    assert "dropout" not in str(g)


def test_dynamic_dims_that_must_be_equal():
    class Pair(nn.Module):
        def forward(self, x, t):
            return torch.cat([x, t], dim=1)

    pair = Pair()
    inputs = (torch.randn(4, 3), torch.randn(4, 1))
    with pytest.raises(InputError, match="must be equal"):
        ember.trace(pair, inputs, {"x": {0: "batch"}, "t": {0: "n"}})
    g = ember.trace(pair, inputs, {"x": {0: "batch"}, "t": {0: "batch"}})
    assert [str(v.type) for v in g.inputs] == ["f32[batch,3]", "f32[batch,1]"]
