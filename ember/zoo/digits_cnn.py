"""`digits_cnn`: a small conv/batchnorm/relu network with one residual block.

Built to exercise conv lowering, BN folding and channel pruning: every conv is a plain
conv -> BN -> ReLU stack, and the residual add `h + bn3(conv3(h))` couples conv2's and conv3's
output channels, so a pruning pass must remove the same channels from both (the case that
breaks naive per-layer pruning).
"""

from __future__ import annotations

import torch
from torch import nn

from ember.zoo.base import ZooModel, classifier_zoo_model
from ember.zoo.data import images_nchw

NAME = "digits_cnn"
INPUT_NAMES = ("x",)
DYNAMIC_DIMS = {"x": {0: "batch"}}
TRAIN_CONFIG = {"epochs": 40, "batch_size": 64, "lr": 3e-3, "weight_decay": 1e-4, "shift": True}


class DigitsCNN(nn.Module):
    """x f32[batch, 1, 8, 8] in [0, 1] -> logits f32[batch, 10].

    conv1(1->16) bn relu, conv2(16->32) bn relu, maxpool 2 (8x8 -> 4x4),
    residual block relu(h + bn3(conv3(h))) (32 ch), avgpool 2 (-> 2x2), flatten, fc(128 -> 10).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool1 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.pool2 = nn.AvgPool2d(2)
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        h = self.pool1(x)
        h = torch.relu(h + self.bn3(self.conv3(h)))
        h = self.pool2(h)
        return self.fc(torch.flatten(h, 1))


def build() -> DigitsCNN:
    return DigitsCNN()


preprocess = images_nchw  # flat [n, 64] pixels -> [n, 1, 8, 8]


def load() -> ZooModel:
    return classifier_zoo_model(
        name=NAME,
        module=build(),
        preprocess=preprocess,
        input_names=INPUT_NAMES,
        dynamic_dims=DYNAMIC_DIMS,
    )
