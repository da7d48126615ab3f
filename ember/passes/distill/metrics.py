"""Quality of a few-step sampler against its teacher, and a PNG grid of samples.

- `teacher_distance`: RMS distance to the teacher's output from the same noise (the quantity the
  search minimizes; 0 means the rewrite is exact).
- `frechet_distance` (zoo `digits_flow`): FID-style distance of classifier features to real data.
- `confidence`: the zoo classifier's mean max-softmax on generated samples (real digits ~0.97).
- `write_png_grid`: teacher@N vs student@K rows, written with zlib (no matplotlib needed), so
  `ember inspect` / reports can link it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def teacher_distance(samples: np.ndarray, teacher: np.ndarray) -> float:
    d = np.asarray(samples, np.float64) - np.asarray(teacher, np.float64)
    return float(np.sqrt(np.mean(np.sum(d.reshape(len(d), -1) ** 2, axis=1))))


def quality(samples: np.ndarray, teacher: np.ndarray | None, real: np.ndarray | None,
            features_fn: Callable | None = None, classifier=None) -> dict[str, float]:
    """Every metric that applies: teacher distance, Frechet distance to `real`, confidence."""
    out: dict[str, float] = {}
    if teacher is not None:
        out["teacher_rms"] = teacher_distance(samples, teacher)
    if real is not None:
        from ...zoo.digits_flow import frechet_distance

        out["frechet"] = frechet_distance(samples, real, features_fn)
    if classifier is not None:
        from ...zoo.digits_flow import sample_confidence

        out["confidence"] = sample_confidence(classifier, samples)
    return out


def _png_bytes(image: np.ndarray) -> bytes:
    """8-bit grayscale PNG of a [H, W] uint8 array."""
    h, w = image.shape
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def sample_grid(rows: Sequence[np.ndarray], side: int = 8, scale: int = 4,
                gap: int = 2) -> np.ndarray:
    """Tile rows of flat [-1, 1] side x side images into one uint8 image (one row per sampler)."""
    n = max(len(r) for r in rows)
    cell = side * scale + gap
    img = np.full((len(rows) * cell + gap, n * cell + gap), 255, np.uint8)
    for i, samples in enumerate(rows):
        for j, s in enumerate(samples):
            px = np.clip((np.asarray(s, np.float32).reshape(side, side) + 1.0) / 2.0, 0.0, 1.0)
            tile = np.kron(255.0 * (1.0 - px), np.ones((scale, scale)))  # dark ink on white
            y, x = gap + i * cell, gap + j * cell
            img[y:y + side * scale, x:x + side * scale] = tile.astype(np.uint8)
    return img


def write_png_grid(path: str | Path, rows: Sequence[np.ndarray], count: int = 12) -> Path:
    """PNG with one row of `count` samples per entry of `rows` (e.g. teacher@64, student@4)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(sample_grid([np.asarray(r)[:count] for r in rows])))
    return path


def read_png_size(path: str | Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)
