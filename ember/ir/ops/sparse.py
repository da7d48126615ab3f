"""Op family: sparse weights in compressed formats.

`sparse.linear_nm(x, values, indices, bias?){n, m, k}` is a linear layer whose weight [N, k] is
N:M sparse (at most n non-zeros in every aligned group of m along k) and is stored compressed:
`values` [N, k*n/m] are the kept weights in order, `indices` [N, k*n/m] (u8) the position of each
inside its group (0..m-1, ascending). Weight bytes drop to n/m of dense plus one byte per value
for the indices (2-bit packing would make it n/m * (1 + 1/16); not done yet). The helpers
`compress_nm` / `decompress_nm` convert between the dense and compressed forms.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..types import DType, TensorType
from .registry import REQUIRED, define_op


def compress_nm(weight: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the n largest-magnitude entries of every group of m along the last axis.

    Returns (values [N, K*n/m] in weight's dtype, indices [N, K*n/m] u8, ascending per group).
    """
    rows, k = weight.shape
    if k % m:
        raise ShapeError(f"N:M compression needs K={k} divisible by m={m}")
    groups = weight.reshape(rows, k // m, m)
    order = np.argsort(-np.abs(groups), axis=-1, kind="stable")[..., :n]
    idx = np.sort(order, axis=-1)
    vals = np.take_along_axis(groups, idx, axis=-1)
    return (np.ascontiguousarray(vals.reshape(rows, -1)),
            np.ascontiguousarray(idx.reshape(rows, -1).astype(np.uint8)))


def decompress_nm(values: np.ndarray, indices: np.ndarray, n: int, m: int, k: int) -> np.ndarray:
    """The dense [N, k] weight that (values, indices) encode."""
    rows = values.shape[0]
    dense = np.zeros((rows, k // m, m), dtype=values.dtype)
    np.put_along_axis(dense, indices.reshape(rows, k // m, n).astype(np.int64),
                      values.reshape(rows, k // m, n), axis=-1)
    return dense.reshape(rows, k)


linear_nm = define_op(
    "sparse.linear_nm", inputs=("x", "values", "indices", "bias?"),
    attrs={"n": (int, REQUIRED), "m": (int, REQUIRED), "k": (int, REQUIRED)}, tolerance=1e-4,
    doc="x @ W.T + bias with W [N, k] N:M sparse, stored as values + in-group indices.")


@linear_nm.infer
def _(x, values, indices, bias, n, m, k):
    if not (0 < n <= m) or k % m:
        raise ShapeError(f"needs 0 < n <= m and k divisible by m, got n={n} m={m} k={k}")
    if not x.dtype.is_float or values.dtype != x.dtype:
        raise ShapeError(f"x and values must share a float dtype, got {x} and {values}")
    if indices.dtype != DType.u8:
        raise ShapeError(f"indices must be u8 (in-group positions), got {indices}")
    if values.rank != 2 or indices.shape != values.shape:
        raise ShapeError(f"values and indices must both be [N, k*n/m], got {values}, {indices}")
    rows, stored = values.shape
    if stored != k // m * n:
        raise ShapeError(f"values has {stored} per row but k={k} at {n}:{m} stores {k // m * n}")
    if x.rank < 1 or x.shape[-1] != k:
        raise ShapeError(f"x must end in k={k}, got {x}")
    if bias is not None and bias.shape != (rows,):
        raise ShapeError(f"bias must be [{rows}], got {bias}")
    return TensorType(x.shape[:-1] + (rows,), x.dtype)


@linear_nm.reference
def _(x, values, indices, bias, n, m, k):
    w = decompress_nm(values, indices, n, m, k).astype(np.float64)
    out = x.astype(np.float64) @ w.T
    if bias is not None:
        out = out + bias
    return out.astype(x.dtype)


@linear_nm.examples
def _(rng):
    for (n, m), xshape, rows, bias in (((2, 4), (5, 16), 8, True), ((1, 4), (2, 3, 8), 3, False),
                                       ((2, 8), (4, 16), 6, True)):
        w = rng.standard_normal((rows, xshape[-1])).astype(np.float32)
        vals, idx = compress_nm(w, n, m)
        args = [rng.standard_normal(xshape).astype(np.float32), vals, idx]
        if bias:
            args.append(rng.standard_normal(rows).astype(np.float32))
        yield args, {"n": n, "m": m, "k": xshape[-1]}
