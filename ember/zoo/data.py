"""The digits data every zoo model is trained and evaluated on.

sklearn ships the 1797 8x8 digit images inside the wheel, so the zoo needs no download and runs
offline in CI. The train/eval split, the calibration batches and the example batch are all fixed
by seeds here, in one place, so the training script, `ember.zoo.load` and the tests all see the
same samples and a recorded accuracy can be reproduced exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SPLIT_SEED = 0
"""`random_state` of the stratified train/eval split; changing it invalidates every weights file."""
EVAL_FRACTION = 0.2
CALIBRATION_SEED = 1
CALIBRATION_BATCHES = 8
CALIBRATION_BATCH_SIZE = 16
EXAMPLE_BATCH = 4
"""Batch size of `ZooModel.example_inputs`: small so traces are cheap, > 1 so batch is not special."""


@dataclass(frozen=True)
class DigitsSplit:
    """Pixels scaled to [0, 1] (raw values are 0..16), flattened to 64 features, float32."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray


@functools.lru_cache(maxsize=1)
def _cached_split() -> DigitsSplit:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(
        x, y, test_size=EVAL_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return DigitsSplit(x_train, y_train, x_eval, y_eval)


def digits_split() -> DigitsSplit:
    """A fresh copy of the fixed split, so callers may modify their arrays in place safely."""
    s = _cached_split()
    return DigitsSplit(s.x_train.copy(), s.y_train.copy(), s.x_eval.copy(), s.y_eval.copy())


def calibration_indices(n_train: int) -> list[np.ndarray]:
    """Row indices into the train split for each calibration batch (disjoint, seeded)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    order = rng.permutation(n_train)[: CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE]
    return [
        order[i * CALIBRATION_BATCH_SIZE : (i + 1) * CALIBRATION_BATCH_SIZE]
        for i in range(CALIBRATION_BATCHES)
    ]


def images_nchw(pixels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat [n, 64] pixels -> NCHW images [n, 1, 8, 8] (the input of the image models)."""
    return (np.ascontiguousarray(pixels, dtype=np.float32).reshape(-1, 1, 8, 8),)
