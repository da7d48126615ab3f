"""The full-Jacobian (DEER) Newton update: the dense linear recurrence, solved sequentially.

One Newton update solves H_t = J_t H_{t-1} + (F_t - J_t P_t) for all t, with J_t an m x m
matrix per independent row. Written as H_t = F_t + J_t (H_{t-1} - P_t), one pass over t is
O(T m^2): the same work as one pass of the sequential loop's recurrent product. The parallel
(Hillis-Steele) matrix scan of `affine_scan` would cost O(T m^3 log T) to spread over cores; on
the few cores this backend targets that never pays, so the time loop stays serial and the rows
(batch) are the parallel axis.
"""

from __future__ import annotations

import math

from tvm import relax, tirx
from tvm.script import tirx as T

from ....errors import LoweringError
from ....ir import TensorType

__all__ = ["check_full_jacobian", "dense_update", "dense_update_kernel", "tangent_first"]


def _rows_m(jac: TensorType) -> tuple[int, int]:
    return math.prod(jac.shape[1:-2]), jac.shape[-1]


def check_full_jacobian(jac: TensorType, h: TensorType) -> None:
    """The Jacobian must be static [T, *rows, m, m] with rows * m = the state's size."""
    if not jac.is_static or not h.is_static:
        raise LoweringError(f"ctrl.newton_scan (jacobian=full): Jacobian {jac} and state {h} "
                            "need static shapes for the dense update kernel")
    rows, m = _rows_m(jac)
    if rows * m != math.prod(h.shape):
        raise LoweringError(f"ctrl.newton_scan (jacobian=full): Jacobian {jac} does not tile "
                            f"the state {h} (rows {rows} x m {m} != {math.prod(h.shape)})")


def dense_update_kernel(steps: int, rows: int, m: int, dtype: str = "float32"
                        ) -> tirx.PrimFunc:
    """PrimFunc (jt [T,m,R,m], prev [T,R,m], f [T,R,m], h0 [R,m], h [T,R,m]).

    `jt[t, k, r, i]` = dh'_i/dh_k of row r: the Jacobian with the tangent index first, the
    layout autodiff builds it in (one tangent per state component), so no transpose pass is
    needed and the product is a sum of columns, h += J[:, k] * d[k], contiguous in i and
    vectorized. Rows (the batch) run on the thread pool only when the work pays for waking it.
    """
    from ..schedules.threads import PARALLEL_MIN_WORK

    lanes = next((v for v in (8, 4, 2) if m % v == 0), 1)
    nv = m // lanes
    par = T.parallel if rows > 1 and steps * rows * m * m >= PARALLEL_MIN_WORK else T.serial

    @T.prim_func(private=True)
    def newton_dense_update(j: T.handle, p: T.handle, f: T.handle, h0: T.handle, h: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        JT = T.match_buffer(j, (steps, m, rows, m), dtype)
        P = T.match_buffer(p, (steps, rows, m), dtype)
        F = T.match_buffer(f, (steps, rows, m), dtype)
        H0 = T.match_buffer(h0, (rows, m), dtype)
        H = T.match_buffer(h, (steps, rows, m), dtype)
        for r in par(rows):
            d = T.alloc_buffer((m,), dtype, scope="local")
            acc = T.alloc_buffer((m,), dtype, scope="local")
            for i in range(m):
                d[i] = H0[r, i] - P[0, r, i]
            for t in range(steps):
                for u in range(nv):
                    for v in T.vectorized(lanes):
                        acc[u * lanes + v] = F[t, r, u * lanes + v]
                for k in range(m):
                    for u in range(nv):
                        for v in T.vectorized(lanes):
                            acc[u * lanes + v] = acc[u * lanes + v] \
                                + JT[t, k, r, u * lanes + v] * d[k]
                for u in range(nv):
                    for v in T.vectorized(lanes):
                        H[t, r, u * lanes + v] = acc[u * lanes + v]
                if t + 1 < steps:
                    for i in range(m):
                        d[i] = acc[i] - P[t + 1, r, i]

    return newton_dense_update


def tangent_first(region) -> tuple[list, object] | None:
    """When the Jacobian region ends by permuting [T, m, *rows, m] to [T, *rows, m, m] (as
    autodiff builds it), the region's ops without that permute and the value before it."""
    last = region.ops[-1] if region.ops else None
    out = region.outputs[0]
    n = out.type.rank
    if last is None or last.kind != "permute" or last.results[0] is not out or \
            tuple(last.attrs["dims"]) != (0, *range(2, n), 1):
        return None
    return region.ops[:-1], last.inputs[0]


def dense_update(scx, jac, prev, f, h0, h_type: TensorType, tangent_first: bool):
    """Emit the update for Relax values jac ([T,*rows,m,m], or [T,m,*rows,m] when
    `tangent_first`), prev/f [T,*S], h0 [*S] -> H [T,*S]."""
    from ..lowering import tvm_dtype

    shape = [int(d) for d in jac.ty.shape]
    if not tangent_first:  # [T, *rows, i, k] -> [T, k, *rows, i]
        n = len(shape)
        jac = scx.emit(relax.op.permute_dims(jac, [0, n - 1, *range(1, n - 1)]))
        shape = [shape[0], shape[-1], *shape[1:-1]]
    steps, rows, m = shape[0], math.prod(shape[2:-1]), shape[-1]
    dt = tvm_dtype(h_type.dtype)
    gv = scx.bb.add_func(dense_update_kernel(steps, rows, m, dt), "newton_dense_update")
    args = [scx.emit(relax.op.reshape(jac, [steps, m, rows, m])),
            scx.emit(relax.op.reshape(prev, [steps, rows, m])),
            scx.emit(relax.op.reshape(f, [steps, rows, m])),
            scx.emit(relax.op.reshape(h0, [rows, m]))]
    out = scx.emit(relax.call_tir(gv, args, relax.TensorType([steps, rows, m], dt)))
    return scx.emit(relax.op.reshape(out, [steps, *h_type.shape]))
