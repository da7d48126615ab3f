"""Activation observers: turn calibration activations into an int8 scale and zero point.

Why three: min-max keeps every outlier representable (safe, coarse), percentile clips the rare
tail (finer steps for the bulk), MSE searches the clipping range that minimizes the
quantize-dequantize error on the observed values (best when the tail is heavy). Observers keep
a bounded reservoir of values, so memory stays flat however many batches are observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import PassError

__all__ = ["Observer", "affine_params", "make_observer", "OBSERVERS"]

QMIN, QMAX = -128, 127  # activations are stored as i8 with an affine zero point


def affine_params(lo: float, hi: float) -> tuple[np.float32, np.int32]:
    """(scale, zero_point) for i8 covering [lo, hi] (the range is widened to include 0, so a
    real 0 -- padding, ReLU zeros -- is exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (QMAX - QMIN)
    if not scale > 0 or not np.isfinite(scale):
        return np.float32(1.0), np.int32(0)
    zp = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return np.float32(scale), np.int32(zp)


def fake_quant(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    q = np.clip(np.round(x / np.float32(scale)) + zp, QMIN, QMAX)
    return ((q - zp) * np.float32(scale)).astype(np.float32)


@dataclass
class Observer:
    """Accumulates min/max and a sample of values; `params()` picks the range."""

    method: str = "minmax"
    percentile: float = 99.99
    max_samples: int = 1 << 16
    lo: float = np.inf
    hi: float = -np.inf
    samples: list[np.ndarray] = field(default_factory=list)
    _count: int = 0
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).reshape(-1)
        if x.size == 0:
            return
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if self.method != "minmax":
            take = min(x.size, max(1, self.max_samples // 8))
            self.samples.append(x if take == x.size else self._rng.choice(x, take, replace=False))
            self._count += take
            if self._count > self.max_samples:  # keep the reservoir bounded
                allv = np.concatenate(self.samples)
                self.samples = [self._rng.choice(allv, self.max_samples, replace=False)]
                self._count = self.max_samples

    def params(self) -> tuple[np.float32, np.int32]:
        if not np.isfinite(self.lo):
            raise PassError("observer saw no values: the calibration data never reached this "
                            "layer")
        if self.method == "minmax" or not self.samples:
            return affine_params(self.lo, self.hi)
        values = np.concatenate(self.samples)
        if self.method == "percentile":
            p = self.percentile
            return affine_params(np.percentile(values, 100 - p), np.percentile(values, p))
        return self._mse(values)

    def _mse(self, values: np.ndarray) -> tuple[np.float32, np.int32]:
        best, best_err = affine_params(self.lo, self.hi), np.inf
        for frac in np.linspace(0.3, 1.0, 15):
            s, z = affine_params(self.lo * frac, self.hi * frac)
            err = float(np.mean((fake_quant(values, s, z) - values) ** 2))
            if err < best_err:
                best, best_err = (s, z), err
        return best


OBSERVERS = ("minmax", "percentile", "mse")


def make_observer(method: str) -> Observer:
    if method not in OBSERVERS:
        raise PassError(f"unknown observer {method!r}; choose one of {', '.join(OBSERVERS)}")
    return Observer(method=method)
