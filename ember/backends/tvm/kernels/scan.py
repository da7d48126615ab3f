"""Parallel linear scan: h_t = a_t * h_{t-1} + b_t over a [T, N] state, on CPU threads.

The recurrence is memory-bound as soon as the state has a few vectors of lanes: it reads b (and
a, when per step) and writes h, one FMA per element. So every item here walks WHOLE rows (the
state vectorized 8 lanes at a time, contiguous streams the prefetchers follow; splitting the
state between cores made each core stream half rows: 1.4-3x slower per element), and
time is what gets cut between cores:

- prefix split (`prefix_scan_kernel`, two cores, >= 32 lanes): thread k replays rows [0, s_k)
  from h0 without writing (its carry-in is then exactly h[s_k - 1]) and writes rows
  [s_k, s_k+1). One pass over h, no barrier, bitwise the sequential loop's result; the
  read-only replay costs ~0.65 of a written row here (REPLAY_COST), so the later thread gets
  fewer rows to write (`prefix_cuts`): at best 2 - 0.65 = 1.35x over one core, about what
  reduce/carry/rescan's extra pass over b allows too, but without its barrier and carry pass.
- reduce / carry / rescan (`linear_scan_kernel`, narrow states and more cores): C chunks of L
  steps; (1) parallel over chunks < C-1: end value E and product P of the a's, h not
  written; (2) serial carries carry[c] = P[c-1]*carry[c-1] + E[c-1]; (3) parallel over chunks:
  re-run each chunk from its carry, writing h once. Within a chunk the rounding is exactly the
  sequential loop's.

Small scans (under SERIAL_BELOW elements) run on the calling thread: waking the pool would cost
more than the scan.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

__all__ = ["ScanPlan", "linear_scan_kernel", "plan_scan", "prefix_cuts", "prefix_scan_kernel"]

VECTOR = 8  # float32 lanes of an AVX2 register
SERIAL_BELOW = 1 << 15  # elements (T*N) under which the scan stays on the calling thread
# Time of a read-only replayed row relative to a written one, measured one thread at a time on
# the Zen 3 host (T 4096..65536 x d 64..1024, time-invariant a: 0.58-0.77); reads dominate.
REPLAY_COST = 0.65
REPLAY_COST_PER_STEP_A = 0.75  # two streams read per row (a and b), one written


@dataclass(frozen=True)
class ScanPlan:
    """How one [T, N] scan is cut: L steps per chunk (C chunks), W state lanes per block; or,
    with `cuts`, one item per thread over rows [cuts[k], cuts[k+1]) (`prefix_scan_kernel`)."""

    steps: int
    lanes: int
    chunk: int
    width: int
    parallel: bool = True
    cuts: tuple[int, ...] = ()

    @property
    def chunks(self) -> int:
        return max(1, -(-self.steps // self.chunk))

    @property
    def blocks(self) -> int:
        return self.lanes // self.width


def plan_scan(steps: int, lanes: int, cores: int, chunk: int | None = None,
              min_chunk: int = 256, per_step_a: bool = True) -> ScanPlan:
    """Whole rows per item (contiguous streams); how time is cut depends on the state width.

    - small scans (< SERIAL_BELOW elements) or one core: one serial item;
    - two cores and a state of >= 32 lanes (memory-bound: the FMA chain is not the limit):
      the prefix split (`prefix_scan_kernel`, balanced by `prefix_cuts` for the bytes a
      read-only row costs relative to a written one);
    - otherwise reduce / carry / rescan over 4 chunks per core (`chunk` sets the chunk length,
      as the op's `chunk` attribute does, and always selects this form).
    """
    steps1 = max(steps, 1)
    parallel = cores > 1 and steps * lanes >= SERIAL_BELOW
    if chunk is None and parallel and cores == 2 and lanes >= 32 and steps >= 2 * min_chunk:
        cuts = prefix_cuts(steps, cores, REPLAY_COST_PER_STEP_A if per_step_a else REPLAY_COST)
        return ScanPlan(steps, lanes, steps1, lanes, True, cuts)
    if chunk is None:
        chunk = steps1 if not parallel or steps < 2 * min_chunk else \
            max(min_chunk, -(-steps // (4 * cores)))
    return ScanPlan(steps, lanes, max(1, min(chunk, steps1)), lanes, parallel)


def _vec(width: int) -> int:
    for v in (VECTOR, 4, 2):
        if width % v == 0:
            return v
    return 1


def linear_scan_kernel(plan: ScanPlan, per_step_a: bool, dtype: str = "float32"
                       ) -> tirx.PrimFunc:
    """PrimFunc (a, b, h0, h): a [T, N] or [1, N], b/h [T, N], h0 [N] (flattened state)."""
    if plan.cuts:
        return prefix_scan_kernel(plan.steps, plan.lanes, plan.cuts, per_step_a, dtype)
    n_steps, n, width, length = plan.steps, plan.lanes, plan.width, plan.chunk
    chunks, blocks = plan.chunks, plan.blocks
    vw = _vec(width)
    nv = width // vw
    ta = n_steps if per_step_a else 1
    ps = 1 if per_step_a else 0
    head = max(chunks - 1, 1)
    par = T.parallel if plan.parallel else T.serial

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
            for item in par((chunks - 1) * blocks):
                acc = T.alloc_buffer((width,), dtype, scope="local")
                prod = T.alloc_buffer((width,), dtype, scope="local")
                c = item // blocks
                n0 = item % blocks * width
                for v in range(nv):
                    for j in T.vectorized(vw):
                        acc[v * vw + j] = T.Cast(dtype, 0)
                        prod[v * vw + j] = T.Cast(dtype, 1)
                for s in range(length):
                    for v in range(nv):
                        for j in T.vectorized(vw):
                            acc[v * vw + j] = A[(c * length + s) * ps, n0 + v * vw + j] \
                                * acc[v * vw + j] + B[c * length + s, n0 + v * vw + j]
                            prod[v * vw + j] = prod[v * vw + j] \
                                * A[(c * length + s) * ps, n0 + v * vw + j]
                for v in range(nv):
                    for j in T.vectorized(vw):
                        E[c, n0 + v * vw + j] = acc[v * vw + j]
                        P[c, n0 + v * vw + j] = prod[v * vw + j]
        for j in range(n):
            CR[0, j] = H0[j]
        for c in range(chunks - 1):
            for j in range(n):
                CR[c + 1, j] = P[c, j] * CR[c, j] + E[c, j]
        for item in par(chunks * blocks):
            acc2 = T.alloc_buffer((width,), dtype, scope="local")
            c2 = item // blocks
            m0 = item % blocks * width
            for v in range(nv):
                for j in T.vectorized(vw):
                    acc2[v * vw + j] = CR[c2, m0 + v * vw + j]
            for s in range(T.min(length, n_steps - c2 * length)):
                for v in range(nv):
                    for j in T.vectorized(vw):
                        acc2[v * vw + j] = A[(c2 * length + s) * ps, m0 + v * vw + j] \
                            * acc2[v * vw + j] + B[c2 * length + s, m0 + v * vw + j]
                        H[c2 * length + s, m0 + v * vw + j] = acc2[v * vw + j]

    return linear_scan


def prefix_cuts(steps: int, cores: int, rho: float) -> tuple[int, ...]:
    """Row cuts 0 = s_0 < s_1 < ... < s_P = T for `prefix_scan_kernel`, balancing the threads:
    thread k replays rows [0, s_k) read-only (cost rho per row, relative to a written row)
    and writes rows [s_k, s_k+1): s_k+1 = s_k + u - rho * s_k, scaled so that s_P = T."""
    raw = [0.0]
    for _ in range(cores):
        raw.append(raw[-1] + 1.0 - rho * raw[-1])
    cuts = [round(steps * r / raw[-1]) for r in raw]
    cuts[-1] = steps
    return tuple(cuts)


def _pick(item, values):
    """values[item] as a TIR expression (a Select chain over the few thread indices)."""
    out = tirx.const(values[-1], "int32")
    for k in range(len(values) - 2, -1, -1):
        out = tirx.Select(item == k, tirx.const(values[k], "int32"), out)
    return out


def prefix_scan_kernel(steps: int, lanes: int, cuts: tuple[int, ...], per_step_a: bool,
                       dtype: str = "float32") -> tirx.PrimFunc:
    """PrimFunc (a, b, h0, h) like `linear_scan_kernel`, one item per thread over whole rows.

    Thread k runs the recurrence from h0 over rows [0, s_k) without writing (its carry-in is
    then exactly h[s_k - 1]), then over rows [s_k, s_k+1) writing h. No second pass over h, no
    barrier between threads, contiguous whole rows per thread (what the prefetchers stream
    best), and bitwise the sequential loop's results. The price is the read-only replay, so
    thread k gets fewer rows to write (`prefix_cuts`).
    """
    n, threads = lanes, len(cuts) - 1
    vw = _vec(n)
    nv = n // vw
    ta = steps if per_step_a else 1
    ps = 1 if per_step_a else 0
    los, his = list(cuts[:-1]), list(cuts[1:])

    @T.prim_func(private=True)
    def linear_scan(a: T.handle, b: T.handle, h0: T.handle, h: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        A = T.match_buffer(a, (ta, n), dtype)
        B = T.match_buffer(b, (steps, n), dtype)
        H0 = T.match_buffer(h0, (n,), dtype)
        H = T.match_buffer(h, (steps, n), dtype)
        for item in T.parallel(threads):
            acc = T.alloc_buffer((n,), dtype, scope="local")
            for v in range(nv):
                for j in T.vectorized(vw):
                    acc[v * vw + j] = H0[v * vw + j]
            for s in range(_pick(item, los)):
                for v in range(nv):
                    for j in T.vectorized(vw):
                        acc[v * vw + j] = A[s * ps, v * vw + j] * acc[v * vw + j] \
                            + B[s, v * vw + j]
            for s in range(_pick(item, his) - _pick(item, los)):
                for v in range(nv):
                    for j in T.vectorized(vw):
                        acc[v * vw + j] = A[(_pick(item, los) + s) * ps, v * vw + j] \
                            * acc[v * vw + j] + B[_pick(item, los) + s, v * vw + j]
                        H[_pick(item, los) + s, v * vw + j] = acc[v * vw + j]

    return linear_scan
