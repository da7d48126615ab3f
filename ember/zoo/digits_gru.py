"""`digits_gru`: a recurrent classifier reading the image row by row with `nn.GRU`.

It must stay a real `torch.nn.GRU` (not a hand-written cell): `torch.export` keeps that as one
`aten.gru` op, which is the case the frontend has to import or reject as a whole.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ember.zoo.base import ZooModel, classifier_zoo_model

NAME = "digits_gru"
INPUT_NAMES = ("x",)
DYNAMIC_DIMS = {"x": {0: "batch"}}
TRAIN_CONFIG = {"epochs": 60, "batch_size": 64, "lr": 5e-3, "weight_decay": 1e-4, "shift": False}


class DigitsGRU(nn.Module):
    """x f32[batch, 8, 8] (8 rows as a sequence of 8 features) -> logits f32[batch, 10]."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.gru = nn.GRU(8, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h_n = self.gru(x)
        return self.fc(h_n[-1])


def build() -> DigitsGRU:
    return DigitsGRU()


def preprocess(pixels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat [n, 64] pixels -> [n, 8 rows (time), 8 pixels (features)]."""
    return (np.ascontiguousarray(pixels, dtype=np.float32).reshape(-1, 8, 8),)


def load() -> ZooModel:
    return classifier_zoo_model(
        name=NAME,
        module=build(),
        preprocess=preprocess,
        input_names=INPUT_NAMES,
        dynamic_dims=DYNAMIC_DIMS,
    )
