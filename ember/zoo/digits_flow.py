"""`digits_flow`: a small rectified-flow generative model of 8x8 digits.

It stands in for diffusion-style workloads: the same velocity network is called many times by a
sampler, so per-call latency matters, and an unrolled `EulerSampler` with a constant t per step
gives a compiler a long graph where the time embeddings can be constant-folded.

Data are flat digit images mapped from [0, 1] to [-1, 1]. Training (in scripts/train_zoo.py) uses
the rectified-flow objective: x0 ~ N(0, I), x1 = data, xt = (1 - t) x0 + t x1, regress v = x1 - x0.

There are no labels to score, so `ZooModel.evaluate(fn)` takes a *sampler*: `fn` maps noise
f32[n, 64] (a fixed seeded draw) to samples in [-1, 1]; the samples are mapped back to [0, 1]
(clipped) and scored by the trained `digits_mlp` classifier as its mean max-softmax confidence.
Real eval digits score about 0.97 by this measure; blurry or off-manifold samples score lower.
`frechet_distance` is the finer measure (Frechet distance of `digits_mlp` penultimate features).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ember.zoo.base import (
    NumpyFn,
    ZooModel,
    call_batched,
    load_weights,
    reference_metric,
)
from ember.zoo.data import EXAMPLE_BATCH, calibration_indices, digits_split

NAME = "digits_flow"
INPUT_NAMES = ("x", "t")
DYNAMIC_DIMS = {"x": {0: "batch"}, "t": {0: "batch"}}
TRAIN_CONFIG = {"steps": 4000, "batch_size": 256, "lr": 2e-3, "weight_decay": 0.0, "ema": 0.999}

DATA_RANGE = (-1.0, 1.0)
SAMPLER_STEPS = 64
EVAL_SAMPLES = 360
EVAL_NOISE_SEED = 1234
TIME_FEATURES = 32


class VelocityNet(nn.Module):
    """(x f32[batch, 64] in [-1, 1], t f32[batch, 1] in [0, 1]) -> velocity f32[batch, 64].

    t is embedded in forward as [sin(t * f), cos(t * f)] for 16 geometric frequencies `freqs`
    (a buffer, saved with the weights), concatenated to x, then a 4-layer SiLU MLP.
    """

    def __init__(self, dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        half = TIME_FEATURES // 2
        freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half))
        self.register_buffer("freqs", freqs)
        self.fc1 = nn.Linear(dim + TIME_FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, hidden)
        self.fc4 = nn.Linear(hidden, dim)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = t * self.freqs
        h = torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)
        h = self.act(self.fc1(h))
        h = self.act(self.fc2(h))
        h = self.act(self.fc3(h))
        return self.fc4(h)


class EulerSampler(nn.Module):
    """noise f32[batch, 64] -> samples f32[batch, 64] by `steps` Euler steps from t=0 to 1.

    A plain Python loop with t a constant per step, so `torch.export` unrolls it into `steps`
    copies of the velocity net.
    """

    def __init__(self, velocity: VelocityNet, steps: int = SAMPLER_STEPS) -> None:
        super().__init__()
        self.velocity = velocity
        self.steps = steps

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        x = noise
        dt = 1.0 / self.steps
        for i in range(self.steps):
            t = torch.full((1, 1), i * dt, dtype=x.dtype, device=x.device).expand(x.shape[0], 1)
            x = x + dt * self.velocity(x, t)
        return x


def to_data_range(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] pixels -> [-1, 1] model space."""
    return (pixels * 2.0 - 1.0).astype(np.float32)


def to_pixels(samples: np.ndarray) -> np.ndarray:
    """[-1, 1] model space -> [0, 1] pixels (clipped), the `digits_mlp` input scale."""
    return np.clip((np.asarray(samples, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)


def eval_noise(n: int = EVAL_SAMPLES, seed: int = EVAL_NOISE_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 64)).astype(np.float32)


def interpolate(data: np.ndarray, seed: int, t: np.ndarray | None = None):
    """Rectified-flow training points (xt, t) for `data`: the inputs the net really sees."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(data.shape).astype(np.float32)
    if t is None:
        t = rng.uniform(0.0, 1.0, size=(data.shape[0], 1)).astype(np.float32)
    xt = ((1.0 - t) * noise + t * data).astype(np.float32)
    return xt, t.astype(np.float32)


def classifier_features(classifier: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """features_fn for `frechet_distance`: `digits_mlp` penultimate features of [-1, 1] samples."""

    def features(samples: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return classifier.features(torch.from_numpy(to_pixels(samples))).numpy()

    return features


def sample_confidence(classifier: nn.Module, samples: np.ndarray) -> float:
    """Mean max-softmax probability `classifier` assigns to [-1, 1] `samples`."""
    with torch.no_grad():
        logits = classifier(torch.from_numpy(to_pixels(samples)))
        return float(torch.softmax(logits, dim=-1).max(dim=-1).values.mean())


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(
    samples_a: np.ndarray,
    samples_b: np.ndarray,
    features_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> float:
    """Frechet distance between Gaussians fit to the features of two sample sets (FID-style).

    `features_fn` maps [n, 64] samples in [-1, 1] to [n, k] features; by default the zoo
    `digits_mlp` penultimate features (`classifier_features`). Lower is better; real eval
    digits vs real train digits give the noise floor.
    """
    if features_fn is None:
        from ember.zoo.digits_mlp import load as load_mlp

        features_fn = classifier_features(load_mlp().module)
    fa = np.asarray(features_fn(samples_a), dtype=np.float64)
    fb = np.asarray(features_fn(samples_b), dtype=np.float64)
    mu_a, mu_b = fa.mean(axis=0), fb.mean(axis=0)
    cov_a, cov_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    # tr sqrtm(A B) = tr sqrtm(A^1/2 B A^1/2), a symmetric PSD matrix: eigh stays exact where
    # scipy.linalg.sqrtm(A @ B) warns and loses accuracy (dead ReLU features make A singular).
    sqrt_a = _psd_sqrt(cov_a)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a), 0.0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)


def build() -> VelocityNet:
    return VelocityNet()


def load() -> ZooModel:
    from ember.zoo.digits_mlp import load as load_mlp

    velocity = build()
    metadata = load_weights(velocity, NAME)
    classifier = load_mlp().module
    split = digits_split()
    x_train, x_eval = to_data_range(split.x_train), to_data_range(split.x_eval)

    example_t = np.linspace(0.1, 0.9, EXAMPLE_BATCH, dtype=np.float32).reshape(-1, 1)
    example_x, example_t = interpolate(x_eval[:EXAMPLE_BATCH], seed=0, t=example_t)
    calibration = [
        interpolate(x_train[idx], seed=100 + i)
        for i, idx in enumerate(calibration_indices(len(x_train)))
    ]
    noise = eval_noise()

    def evaluator(fn: NumpyFn, batch_size: int | None) -> float:
        return sample_confidence(classifier, call_batched(fn, (noise,), batch_size))

    return ZooModel(
        name=NAME,
        module=velocity,
        example_inputs=(torch.from_numpy(example_x), torch.from_numpy(example_t)),
        calibration=calibration,
        train=(x_train, split.y_train),
        eval_data=(x_eval, split.y_eval),
        dynamic_dims=DYNAMIC_DIMS,
        input_names=INPUT_NAMES,
        evaluator=evaluator,
        extras={
            "sampler": EulerSampler(velocity, steps=SAMPLER_STEPS).eval(),
            "classifier": classifier,
            "data_range": DATA_RANGE,
            "features_fn": classifier_features(classifier),
            "eval_noise": noise,
        },
        metric="sample_confidence",
        reference_metric=reference_metric(metadata),
        metadata=metadata,
    )
