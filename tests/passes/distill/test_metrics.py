from __future__ import annotations

import zlib

import numpy as np

from ember.passes.distill.metrics import read_png_size, teacher_distance, write_png_grid


def test_teacher_distance():
    a = np.zeros((4, 8), np.float32)
    assert teacher_distance(a, a) == 0.0
    assert abs(teacher_distance(a + 1.0, a) - np.sqrt(8)) < 1e-6


def test_png_grid_is_a_valid_png(tmp_path):
    rows = [np.random.default_rng(i).uniform(-1, 1, (5, 64)) for i in range(2)]
    p = write_png_grid(tmp_path / "grid.png", rows, count=5)
    w, h = read_png_size(p)
    assert (w, h) == (2 + 5 * 34, 2 + 2 * 34)
    data = p.read_bytes()
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    assert len(raw) == h * (w + 1)
