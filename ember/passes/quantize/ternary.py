"""Ternary weights {-a, 0, +a} per output channel, stored as two binary bases.

Threshold delta = 0.7 * mean|w| (TWN's approximation of the optimal threshold); a = mean of
|w| above it. Two +-1 planes with equal scales a/2 encode it exactly: (+,+) -> a, (-,-) -> -a,
(+,-) -> 0, so ternary runs on the binary kernels at 2 bits per weight (1/16 of fp32).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ternary_bases"]


def ternary_bases(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signs [2, N, K] +-1, scales [2, N]) with sum_b scales*signs = ternary(w)."""
    w = np.asarray(w, np.float32)
    delta = 0.7 * np.abs(w).mean(axis=1, keepdims=True)
    mask = np.abs(w) > delta
    cnt = np.maximum(mask.sum(axis=1), 1)
    a = (np.abs(w) * mask).sum(axis=1) / cnt
    t = np.where(mask, np.sign(w), 0.0)
    s1 = np.where(t >= 0, 1.0, -1.0)  # 0 -> (+1, -1)
    s2 = np.where(t > 0, 1.0, -1.0)
    half = (a / 2).astype(np.float32)
    return np.stack([s1, s2]).astype(np.float32), np.stack([half, half])
