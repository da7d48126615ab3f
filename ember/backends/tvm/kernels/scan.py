"""Linear scan h_t = a_t * h_{t-1} + b_t over a [T, N] state, on CPU threads: which kernel.

The recurrence is memory-bound as soon as the state has a few vectors of lanes: it reads b (and
a, when per step) and writes h, one FMA per element. The kernels:

- time split (kernels/scan_warm.py, the usual parallel plan): each thread writes its own
  contiguous rows (whole rows, 8 lanes a vector: streams the prefetchers follow). Thread k
  starts from zero W rows before its cut, W from the decay of |a| (2^-32 after W steps), and a
  serial fix-up after the join makes every row bitwise the sequential loop's. When |a| does not
  decay (W past the first cut) it replays from h0 instead (the prefix split, exact by
  construction, cuts balanced by `prefix_cuts`). Outputs of STREAM_BYTES or more are written
  with non-temporal stores (2 bytes of traffic per byte of h instead of 3).
- lane split (kernels/scan_lanes.py): thread k owns a block of whole cache lines of the state
  and runs the whole time loop over it: no extra work, bitwise the sequential loop. But the
  threads then share every row, and on the 2-core Zen 3 host each core's prefetchers pull in
  the other core's lines of each row (b fetched twice, lines of h moving between the cores as
  they are written): with blocks of 128 B .. 2 KiB a row (64 .. 1024 lanes on 2 threads) it ran
  at 0.3-1.25x the serial loop where the time split ran at 1.1-2.9x (kernels alone). Only with
  blocks of LANE_BLOCK_BYTES (two 4 KiB pages) or more did it win, so it is used there.
- serial: one item on the calling thread (the warm-start kernel with one thread when h is
  streamed, else the reduce / carry / rescan kernel with one chunk).
- reduce / carry / rescan (`linear_scan_kernel` without cuts; the op's `chunk` attribute asks
  for it): C chunks of L steps; (1) parallel over chunks < C-1: end value E and product P of
  the a's, h not written; (2) serial carries carry[c] = P[c-1]*carry[c-1] + E[c-1]; (3)
  parallel over chunks: re-run each chunk from its carry, writing h once. Within a chunk the
  rounding is exactly the sequential loop's.

The choice (`plan_scan`), with b = N * itemsize / cores the bytes of a row each thread would own:
serial on one core or under SERIAL_BELOW elements (SERIAL_BELOW_PER_STEP_A with a per-step a:
waking the pool and the warm-up would cost more than they save); else the lane split when
b >= LANE_BLOCK_BYTES; else the time split when T >= MIN_SPLIT_STEPS; else serial. Every
threshold is a measurement on the 2-core Zen 3 host (`benchmarks/recurrence.py --kernels`),
quoted where it is set."""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from ....errors import LoweringError

__all__ = ["SPLITS", "ScanPlan", "flat_shapes", "forced_split", "linear_scan_kernel", "plan_scan",
           "prefix_cuts", "vector_lanes"]

VECTOR = 8  # float32 lanes of an AVX2 register
# Elements (T*N) under which the scan stays on the calling thread: waking the pool and the
# time split's warm-up cost more than half the scan. Measured (kernels alone, steady state,
# paired rounds; `benchmarks/recurrence.py --kernels`) on the 2-core host, time split vs
# serial: 2^15 elements (512 x 64, 2048 x 16) 0.44-0.94x; 2^16 (1024 x 64, 4096 x 16)
# mostly 1.1-1.8x (once 0.6x); with a per-step a (a third stream, a longer replay) 2^16 0.65x, 2^17 1.0x,
# 2^18 (4096 x 64) 1.6x.
SERIAL_BELOW = 1 << 16
SERIAL_BELOW_PER_STEP_A = 1 << 18
# Shorter scans are not cut in time: the warm-up window (432 rows for |a| <= 0.95) does not
# fit before the first cut and the split falls back to replaying from h0. T=512: 0.4-0.9x at
# 64 and 128 lanes, 1.1x at 256 and 1024; T=768 x 64: 1.0-1.3x; T=1024: 1.2-1.5x.
MIN_SPLIT_STEPS = 1024
# Time of a read-only replayed row relative to a written one, measured one thread at a time on
# the Zen 3 host (T 4096..65536 x d 64..1024, time-invariant a: 0.58-0.77); reads dominate.
# Narrow states are bound by the FMA latency chain instead, replayed or not.
REPLAY_COST = 0.65
REPLAY_COST_PER_STEP_A = 0.75  # two streams read per row (a and b), one written
NARROW_LANES = 16  # up to here a row is two vectors: the latency chain, not memory, sets speed
# h of this many bytes or more is written with non-temporal stores. Below it, b and h together
# stay within half the 32 MiB L3 and the next kernel reads h from cache: on the Zen 3 host
# streaming lost at 1 MiB (x0.7) and 4 MiB (x0.9) of h, and won at 16 MiB (x1.2-1.7).
STREAM_BYTES = 8 << 20
CACHE_LINE = 64  # bytes (shared with kernels/scan_lanes.py)
# The lane split is used when each thread's block of a row is this many bytes or more (two
# 4 KiB pages: the hardware prefetchers stay within a page, so a core streams in few of the
# other's lines). Lane split / time split vs serial on the 2-core host (kernels alone, steady
# state, paired rounds, a in [0.5, 0.95]): 64 lanes, T 1024..65536: 0.4-1.35x / 0.9-1.7x;
# 1024 lanes, T 512..16384: 0.8-1.25x / 1.0-1.4x; 2048 lanes (4 KiB a thread) T 512..2048:
# 0.7-1.6x / 0.65-1.55x; 4096 lanes (8 KiB) T 128..2048: 1.15-1.6x / 1.05-1.45x, per-step a
# T=512: 1.9x / 1.4x.
LANE_BLOCK_BYTES = 8 << 10
SPLITS = ("serial", "lanes", "time")
_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar("ember_scan_split",
                                                                    default=None)


@dataclass(frozen=True)
class ScanPlan:
    """How one [T, N] scan is cut.

    With `lane_threads`: the lane split (kernels/scan_lanes.py) over that many blocks.
    With `cuts`: the warm-start split (kernels/scan_warm.py), one item per thread over rows
    [cuts[k], cuts[k+1]) when the state does not decay (otherwise the kernel moves the cuts by
    the decay window it measures); `rho` is a replayed row's cost, `streaming` non-temporal
    stores. Without: reduce / carry / rescan, L = `chunk` steps per chunk (C chunks), `width`
    state lanes per block (`parallel` False: one serial item)."""

    steps: int
    lanes: int
    chunk: int
    width: int
    parallel: bool = True
    cuts: tuple[int, ...] = ()
    rho: float = REPLAY_COST
    streaming: bool = False
    lane_threads: int = 0

    @property
    def kind(self) -> str:
        """"lanes", "time" (warm-start split), "serial" or "chunks" (reduce / carry / rescan)."""
        if self.lane_threads:
            return "lanes"
        if self.cuts:
            return "time" if self.parallel else "serial"
        return "chunks" if self.chunk < self.steps else "serial"

    @property
    def chunks(self) -> int:
        return max(1, -(-self.steps // self.chunk))

    @property
    def blocks(self) -> int:
        return self.lanes // self.width

    @property
    def threads(self) -> int:
        """Items of the warm-start split (0 for a reduce / carry / rescan plan)."""
        return len(self.cuts) - 1 if self.cuts else 0


def plan_scan(steps: int, lanes: int, cores: int, chunk: int | None = None, *,
              per_step_a: bool = True, streaming: bool = False, itemsize: int = 4) -> ScanPlan:
    """The kernel for a [T, N] scan on `cores` threads.

    - `chunk` given (the op's attribute): reduce / carry / rescan with that chunk length;
    - small scans (< SERIAL_BELOW elements, SERIAL_BELOW_PER_STEP_A with a per-step a) or one
      core: one serial item (with streaming stores when h is large);
    - each thread's block of a row N * itemsize / cores >= LANE_BLOCK_BYTES: the lane split;
    - T >= MIN_SPLIT_STEPS: the warm-start time split over `cores` threads;
    - otherwise serial.
    `streaming`: the target can take non-temporal stores (x86); they are used for float32 h of
    STREAM_BYTES or more whose rows are whole vectors. Inside `forced_split(kind)` the split is
    that one (benchmarks and tests compare them; the lane split needs two cache lines).
    """
    steps1 = max(steps, 1)
    stream = (streaming and itemsize == 4 and lanes % VECTOR == 0
              and steps * lanes * itemsize >= STREAM_BYTES)
    if chunk is not None:
        parallel = cores > 1 and steps * lanes >= SERIAL_BELOW
        return ScanPlan(steps, lanes, max(1, min(chunk, steps1)), lanes, parallel)
    split = _FORCED.get() or _choose_split(steps, lanes, cores, itemsize, per_step_a)
    if split == "lanes" and cores > 1 and lanes * itemsize > CACHE_LINE:
        return ScanPlan(steps, lanes, steps1, lanes, True, streaming=stream, lane_threads=cores)
    if split != "time" or cores < 2 or steps < 2:
        if stream:
            return ScanPlan(steps, lanes, steps1, lanes, False, (0, steps), streaming=True)
        return ScanPlan(steps, lanes, steps1, lanes, False)
    rho = 1.0 if lanes <= NARROW_LANES else \
        REPLAY_COST_PER_STEP_A if per_step_a else REPLAY_COST
    return ScanPlan(steps, lanes, steps1, lanes, True, prefix_cuts(steps, cores, rho), rho,
                    stream)


def _choose_split(steps: int, lanes: int, cores: int, itemsize: int, per_step_a: bool) -> str:
    """The cost model of the module docstring (measured on the 2-core Zen 3 host)."""
    if cores < 2 or steps * lanes < (SERIAL_BELOW_PER_STEP_A if per_step_a else SERIAL_BELOW):
        return "serial"
    if lanes * itemsize >= cores * LANE_BLOCK_BYTES:
        return "lanes"
    return "time" if steps >= MIN_SPLIT_STEPS else "serial"


@contextlib.contextmanager
def forced_split(kind: str | None):
    """Within the block, `plan_scan` (no `chunk`) uses this split where it can: one of SPLITS,
    or None for its own choice. For benchmarks and tests comparing the kernels."""
    if kind is not None and kind not in SPLITS:
        raise LoweringError(f"ctrl.linear_scan: unknown split {kind!r}; one of {SPLITS}")
    token = _FORCED.set(kind)
    try:
        yield
    finally:
        _FORCED.reset(token)


def flat_shapes(steps: int, lanes: int, per_step_a: bool, shapes: tuple | None) -> tuple:
    """The (a, b, h0) buffer shapes: the caller's, checked against the flat [T, N] view."""
    flat = ((steps if per_step_a else 1, lanes), (steps, lanes), (lanes,))
    if shapes is None:
        return flat
    out = tuple(tuple(int(d) for d in s) for s in shapes)
    for got, want in zip(out, flat):
        if math.prod(got) != math.prod(want):
            raise LoweringError(f"ctrl.linear_scan: buffer of shape {got} is not a view of "
                                f"{want} (T={steps}, state of {lanes} lanes); a must have b's "
                                "shape or one row of it, h0 one row")
    return out


def vector_lanes(width: int) -> int:
    """The widest of 8, 4, 2 lanes that divides `width` (1 if none)."""
    for v in (VECTOR, 4, 2):
        if width % v == 0:
            return v
    return 1


def linear_scan_kernel(plan: ScanPlan, per_step_a: bool, dtype: str = "float32",
                       shapes: tuple | None = None) -> tirx.PrimFunc:
    """PrimFunc (a, b, h0, h): a [T, N] or [1, N], b/h [T, N], h0 [N] (flattened state).

    `shapes`: the (a, b, h0) shapes the caller passes (h has b's shape), when they are not
    those flat ones: the kernel views them flat in place (no reshape kernels around it, which
    LegalizeOps would turn into two copies of [T, N])."""
    a_shape, b_shape, h0_shape = flat_shapes(plan.steps, plan.lanes, per_step_a, shapes)
    if plan.lane_threads:
        from .scan_lanes import lane_scan_kernel

        return lane_scan_kernel(plan.steps, plan.lanes, plan.lane_threads, per_step_a,
                                plan.streaming, dtype, shapes)
    if plan.cuts:
        from .scan_warm import warm_scan_kernel

        return warm_scan_kernel(plan.steps, plan.lanes, plan.threads, per_step_a, plan.rho,
                                plan.cuts, plan.streaming, dtype, shapes)
    n_steps, n, width, length = plan.steps, plan.lanes, plan.width, plan.chunk
    chunks, blocks = plan.chunks, plan.blocks
    vw = vector_lanes(width)
    nv = width // vw
    ta = n_steps if per_step_a else 1
    ps = 1 if per_step_a else 0
    head = max(chunks - 1, 1)
    par = T.parallel if plan.parallel else T.serial

    @T.prim_func(private=True)
    def linear_scan(a: T.handle, b: T.handle, h0: T.handle, h: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        A0 = T.match_buffer(a, a_shape, dtype)
        B0 = T.match_buffer(b, b_shape, dtype)
        H00 = T.match_buffer(h0, h0_shape, dtype)
        Hout = T.match_buffer(h, b_shape, dtype)
        A = T.decl_buffer((ta, n), dtype, data=A0.data)
        B = T.decl_buffer((n_steps, n), dtype, data=B0.data)
        H0 = T.decl_buffer((n,), dtype, data=H00.data)
        H = T.decl_buffer((n_steps, n), dtype, data=Hout.data)
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
    """Row cuts 0 = s_0 <= s_1 <= ... <= s_P = T for the prefix split (the warm-start kernel
    when |a| does not decay), balancing the threads: thread k replays rows [0, s_k) read-only
    (cost rho per row, relative to a written row) and writes rows [s_k, s_k+1):
    s_k+1 = s_k + u - rho * s_k, scaled so that s_P = T."""
    raw = [0.0]
    for _ in range(cores):
        raw.append(raw[-1] + 1.0 - rho * raw[-1])
    cuts = [round(steps * r / raw[-1]) for r in raw]
    cuts[-1] = steps
    return tuple(cuts)
