"""The zoo loads committed weights, reproduces the recorded metrics and exports cleanly.

Accuracy is checked against weights/accuracy.json so that retraining (or a torch upgrade that
changes numerics) without recommitting both files is caught here, not in a pass's test.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import ember.zoo
from ember.errors import EmberError
from ember.zoo.base import WEIGHTS_DIR, as_numpy_fn

NAMES = ember.zoo.names()
CLASSIFIERS = [n for n in NAMES if n != "digits_flow"]
RECORDED = json.loads((WEIGHTS_DIR / "accuracy.json").read_text())
OUTPUT_WIDTH = {name: 10 for name in CLASSIFIERS} | {"digits_flow": 64}


@pytest.fixture(scope="module")
def zoo() -> dict[str, ember.zoo.ZooModel]:
    return {name: ember.zoo.load(name) for name in NAMES}


def test_names() -> None:
    assert NAMES == [
        "digits_mlp",
        "digits_cnn",
        "digits_vit",
        "digits_gru",
        "seq_linear_rnn",
        "digits_flow",
    ]
    assert set(RECORDED) == set(NAMES)
    for name in NAMES:
        assert (WEIGHTS_DIR / f"{name}.safetensors").exists()


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(EmberError) as info:
        ember.zoo.load("digits_resnet152")
    message = str(info.value)
    assert "digits_resnet152" in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize("name", NAMES)
def test_model_fields(zoo, name: str) -> None:
    z = zoo[name]
    assert z.name == name
    assert not z.module.training
    assert all(p.dtype == torch.float32 for p in z.module.parameters())
    assert all(not p.requires_grad or p.grad is None for p in z.module.parameters())
    assert len(z.example_inputs) == len(z.input_names)
    assert all(x.dtype == torch.float32 and x.shape[0] == 4 for x in z.example_inputs)
    assert set(z.dynamic_dims) <= set(z.input_names)

    with torch.no_grad():
        out = z.module(*z.example_inputs)
    assert out.shape == (4, OUTPUT_WIDTH[name])
    assert torch.isfinite(out).all()

    assert len(z.calibration) == 8
    for batch in z.calibration:
        assert len(batch) == len(z.input_names)
        for array, example in zip(batch, z.example_inputs):
            assert array.dtype == np.float32 and array.shape == (16, *example.shape[1:])

    (x_train, y_train), (x_eval, y_eval) = z.train, z.eval_data
    assert len(x_train) == len(y_train) == 1437
    assert len(x_eval) == len(y_eval) == 360
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert set(np.unique(y_eval)) == set(range(10))
    low, high = z.extras.get("data_range", (0.0, 1.0))
    assert x_train.min() >= low and x_train.max() <= high
    if name != "digits_flow":
        assert z.extras == {}
        assert x_train.shape[1:] == z.example_inputs[0].shape[1:]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_accuracy_matches_record(zoo, name: str) -> None:
    z = zoo[name]
    acc = z.evaluate(as_numpy_fn(z.module))
    assert acc == pytest.approx(RECORDED[name], abs=0.005)
    assert z.reference_metric == pytest.approx(RECORDED[name], abs=1e-6)
    # Static-batch artifacts are fed padded fixed-size batches; the score must not change.
    assert z.evaluate(as_numpy_fn(z.module), batch_size=64) == pytest.approx(acc, abs=1e-9)


def test_evaluate_scores_a_bad_model_low(zoo) -> None:
    z = zoo["digits_mlp"]
    assert z.evaluate(lambda x: np.zeros((x.shape[0], 10), np.float32)) < 0.2


@pytest.fixture(scope="module")
def flow_run(zoo) -> tuple[float, np.ndarray]:
    """One 64-step sampler run through `evaluate` (the slowest thing here), shared by tests."""
    z = zoo["digits_flow"]
    sampler_fn = as_numpy_fn(z.extras["sampler"])
    seen = []

    def recording_sampler(noise: np.ndarray) -> np.ndarray:
        np.testing.assert_array_equal(noise, z.extras["eval_noise"])
        seen.append(sampler_fn(noise))
        return seen[-1]

    score = z.evaluate(recording_sampler)
    return score, seen[0]


def test_flow_sampler_confidence_matches_record(zoo, flow_run) -> None:
    from ember.zoo import digits_flow

    z = zoo["digits_flow"]
    assert z.metric == "sample_confidence"
    sampler = z.extras["sampler"]
    assert isinstance(sampler, digits_flow.EulerSampler) and sampler.steps == 64
    assert sampler.velocity is z.module
    assert z.extras["data_range"] == (-1, 1)
    score, samples = flow_run
    assert samples.shape == (360, 64)
    assert score == pytest.approx(RECORDED["digits_flow"], abs=0.005)
    assert z.reference_metric == pytest.approx(RECORDED["digits_flow"], abs=1e-6)
    # Garbage must score far below the sampler, and real digits above it.
    assert z.evaluate(lambda n: np.clip(n, -1, 1)) < 0.3
    assert z.evaluate(lambda n: np.zeros_like(n)) < 0.3
    real = z.eval_data[0]
    assert digits_flow.sample_confidence(z.extras["classifier"], real) > score


def test_frechet_distance(zoo, flow_run) -> None:
    from ember.zoo.digits_flow import frechet_distance

    z = zoo["digits_flow"]
    features = z.extras["features_fn"]
    real_train, real_eval = z.train[0], z.eval_data[0]
    samples = flow_run[1]
    floor = frechet_distance(real_train, real_eval, features)
    generated = frechet_distance(samples, real_eval, features)
    noise = frechet_distance(np.clip(z.extras["eval_noise"], -1, 1), real_eval, features)
    assert frechet_distance(real_eval, real_eval, features) == pytest.approx(0.0, abs=1e-6)
    assert 0 < floor < generated < noise


def test_loading_does_not_train(monkeypatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("ember.zoo.load must not build an optimizer")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", no_training)
    monkeypatch.setattr(torch.Tensor, "backward", no_training)
    start = time.perf_counter()
    for name in NAMES:
        ember.zoo.load(name)
    assert time.perf_counter() - start < 10.0


def test_load_returns_fresh_modules_and_data() -> None:
    a, b = ember.zoo.load("digits_mlp"), ember.zoo.load("digits_mlp")
    assert a.module is not b.module
    with torch.no_grad():
        a.module.fc1.weight.zero_()
    a.train[0][:] = 0
    assert b.module.fc1.weight.abs().sum() > 0 and b.train[0].sum() > 0


def test_make_seq_linear_rnn() -> None:
    from ember.zoo.seq_linear_rnn import make_seq_linear_rnn

    layer = make_seq_linear_rnn(T=5, d=3, seed=7)
    again = make_seq_linear_rnn(T=5, d=3, seed=7)
    assert torch.equal(layer.a_logit, again.a_logit)
    u = torch.randn(2, 5, 3)
    with torch.no_grad():
        h = layer(u)
    a = torch.sigmoid(layer.a_logit)
    expected = torch.zeros(2, 3)
    for t in range(5):
        expected = a * expected + u[:, t]
        assert torch.allclose(h[:, t], expected)


# nn.GRU re-assigns its _flat_weights list inside forward; torch.export warns, harmlessly.
@pytest.mark.filterwarnings("ignore:The tensor attributes self.gru._flat_weights")
@pytest.mark.parametrize("name", NAMES)
def test_exports_with_dynamic_batch(zoo, name: str) -> None:
    z = zoo[name]
    ep = torch.export.export(z.module, z.example_inputs, dynamic_shapes=z.export_dynamic_shapes())
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    if name == "digits_gru":
        assert "aten.gru.input" in targets
    if name == "digits_vit":
        assert "aten.scaled_dot_product_attention.default" in targets
    # The exported program runs at another batch size and matches eager.
    inputs = tuple(torch.from_numpy(a[:3]) for a in z.calibration[0])
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(*inputs), z.module(*inputs))


def test_sampler_exports_unrolled(zoo) -> None:
    from ember.zoo.digits_flow import EulerSampler

    sampler = EulerSampler(zoo["digits_flow"].module, steps=3).eval()
    noise = torch.from_numpy(zoo["digits_flow"].extras["eval_noise"][:4])
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(sampler, (noise,), dynamic_shapes={"noise": {0: batch}})
    linears = [n for n in ep.graph.nodes if n.target == torch.ops.aten.linear.default]
    assert len(linears) == 3 * 4
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(noise[:2]), sampler(noise[:2]))
