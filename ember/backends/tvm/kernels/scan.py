"""Chunked parallel linear scan: h_t = a_t * h_{t-1} + b_t over a [T, N] state, on CPU threads.

Why chunked and not Blelloch: on a few CPU cores the work-efficient form is "reduce, carry,
rescan". The time axis is cut into C chunks of L steps and the state into blocks of W lanes:

    1. parallel over (chunk < C-1, block): run the chunk from 0, keep its end value E and the
       product P of its a's  (E, P describe the chunk as one affine map  h -> P*h + E)
    2. serial over chunks (vectorized over the state): carry[c] = P[c-1]*carry[c-1] + E[c-1]
    3. parallel over (chunk, block): re-run the chunk from its carry, writing h

Step 3 recomputes rather than fixing up, so within a chunk the rounding is exactly the
sequential loop's. With C = 1 the kernel is a state-parallel sequential loop (no extra work),
which the cost model prefers whenever the state alone has enough blocks for the cores.
W lanes are vectorized; the state never leaves registers inside a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

__all__ = ["ScanPlan", "plan_scan", "linear_scan_kernel"]


@dataclass(frozen=True)
class ScanPlan:
    """How one [T, N] scan is cut: L steps per chunk (C chunks), W state lanes per block."""

    steps: int
    lanes: int
    chunk: int
    width: int

    @property
    def chunks(self) -> int:
        return max(1, -(-self.steps // self.chunk))

    @property
    def blocks(self) -> int:
        return self.lanes // self.width


def _width(n: int, vector: int = 8, most: int = 64) -> int:
    """Largest block width <= most that divides n, a multiple of the vector when possible."""
    best = 0
    for w in range(vector, most + 1, vector):
        if n % w == 0:
            best = w
    if best:
        return best
    for w in range(min(n, most), 0, -1):
        if n % w == 0:
            return w
    return 1


def plan_scan(steps: int, lanes: int, cores: int, chunk: int | None = None,
              min_chunk: int = 256) -> ScanPlan:
    """Pick W and L: enough parallel (chunk, block) items for the cores, fewest extra passes.

    Time chunking costs a second pass over a and b, so it is used only when the state has
    fewer blocks than cores; `chunk` (steps per chunk) overrides the choice.
    """
    width = _width(lanes, most=64 if lanes >= 64 * cores else 32)
    blocks = lanes // width
    if chunk is None:
        if blocks >= cores or steps < 2 * min_chunk:
            chunk = max(steps, 1)
        else:
            want = -(-4 * cores // blocks)  # chunks so that chunks*blocks >= 4*cores
            chunk = max(min_chunk, -(-steps // want))
    return ScanPlan(steps, lanes, max(1, min(chunk, max(steps, 1))), width)


def linear_scan_kernel(plan: ScanPlan, per_step_a: bool, dtype: str = "float32"
                       ) -> tirx.PrimFunc:
    """PrimFunc (a, b, h0, h): a [T, N] or [1, N], b/h [T, N], h0 [N] (flattened state)."""
    n_steps, n, width, length = plan.steps, plan.lanes, plan.width, plan.chunk
    chunks, blocks = plan.chunks, plan.blocks
    ta = n_steps if per_step_a else 1
    ps = 1 if per_step_a else 0
    head = max(chunks - 1, 1)

    @T.prim_func(private=True)
    def linear_scan(a: T.handle, b: T.handle, h0: T.handle, h: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        A = T.match_buffer(a, (ta, n), dtype)
        B = T.match_buffer(b, (n_steps, n), dtype)
        H0 = T.match_buffer(h0, (n,), dtype)
        H = T.match_buffer(h, (n_steps, n), dtype)
        E = T.alloc_buffer((head, n), dtype)
        P = T.alloc_buffer((head, n), dtype)
        CR = T.alloc_buffer((chunks, n), dtype)
        if chunks > 1:
            for item in T.parallel((chunks - 1) * blocks):
                acc = T.alloc_buffer((width,), dtype, scope="local")
                prod = T.alloc_buffer((width,), dtype, scope="local")
                c = item // blocks
                n0 = item % blocks * width
                for j in T.vectorized(width):
                    acc[j] = T.Cast(dtype, 0)
                    prod[j] = T.Cast(dtype, 1)
                for s in range(length):
                    for j in T.vectorized(width):
                        acc[j] = A[(c * length + s) * ps, n0 + j] * acc[j] \
                            + B[c * length + s, n0 + j]
                        prod[j] = prod[j] * A[(c * length + s) * ps, n0 + j]
                for j in T.vectorized(width):
                    E[c, n0 + j] = acc[j]
                    P[c, n0 + j] = prod[j]
        for j in range(n):
            CR[0, j] = H0[j]
        for c in range(chunks - 1):
            for j in range(n):
                CR[c + 1, j] = P[c, j] * CR[c, j] + E[c, j]
        for item in T.parallel(chunks * blocks):
            acc2 = T.alloc_buffer((width,), dtype, scope="local")
            c2 = item // blocks
            m0 = item % blocks * width
            for j in T.vectorized(width):
                acc2[j] = CR[c2, m0 + j]
            for s in range(T.min(length, n_steps - c2 * length)):
                for j in T.vectorized(width):
                    acc2[j] = A[(c2 * length + s) * ps, m0 + j] * acc2[j] \
                        + B[c2 * length + s, m0 + j]
                    H[c2 * length + s, m0 + j] = acc2[j]

    return linear_scan
