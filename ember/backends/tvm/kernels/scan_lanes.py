"""Lane split for h_t = a_t * h_{t-1} + b_t: each thread owns whole cache lines of the state.

Why: the lanes of the state are independent recurrences, so cutting the STATE between threads
(not time) costs no extra work at all: thread k runs the whole time loop over its contiguous
block of lanes, from h0, exactly the sequential loop's arithmetic on those lanes (bitwise the
same result, whatever a and b are: no warm-up rows, no fix-up, no decay condition). The time
split (kernels/scan_warm.py) pays W replayed rows per later thread and a serial check after the
join, which at a 64-lane state is as long as the gain.

Blocks are whole 64-byte cache lines (16 float32 lanes), spread as evenly as the line count
allows, so two threads never write the same line of h (no false sharing) when rows start on a
line. Each thread walks its part of every row: one short contiguous run per row, a constant
stride the prefetchers follow. Within a block the lanes go 8 at a time (one AVX2 register);
lanes past the last full vector of the last block go one at a time. Large h is written with
non-temporal stores, as in the time split (`streaming`, float32 rows of whole vectors).
"""

from __future__ import annotations

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .scan import CACHE_LINE, flat_shapes
from .scan_warm import NT_STORE_IR

__all__ = ["lane_blocks", "lane_scan_kernel", "line_lanes"]

VW = 8  # lanes per vector op (float32: one 256-bit register)
UNROLL_VECTORS = 8  # blocks of up to this many vectors keep their state in registers


def line_lanes(itemsize: int = 4) -> int:
    """State lanes per cache line."""
    return max(1, CACHE_LINE // itemsize)


def lane_blocks(lanes: int, threads: int, itemsize: int = 4) -> tuple[tuple[int, int], ...]:
    """(first lane, width) per thread: whole cache lines, as even as the line count allows
    (the first `lines % threads` threads get one line more); the last block ends at `lanes`.
    Fewer blocks than `threads` when there are fewer lines."""
    line = line_lanes(itemsize)
    lines = -(-lanes // line)
    p = max(1, min(threads, lines))
    q, r = divmod(lines, p)
    out, lo = [], 0
    for k in range(p):
        width = min((q + (k < r)) * line, lanes - lo)
        out.append((lo, width))
        lo += width
    return tuple(out)


def lane_scan_kernel(steps: int, lanes: int, threads: int, per_step_a: bool,
                     streaming: bool = False, dtype: str = "float32",
                     shapes: tuple | None = None) -> tirx.PrimFunc:
    """PrimFunc (a, b, h0, h): a [T, N] or [1, N], b/h [T, N], h0 [N]; one item per block of
    `lane_blocks(lanes, threads)`. `shapes`: the (a, b, h0) shapes passed, viewed flat in place
    (see `linear_scan_kernel`). `streaming`: non-temporal stores (float32, N a multiple of 8)."""
    a_shape, b_shape, h0_shape = flat_shapes(steps, lanes, per_step_a, shapes)
    itemsize = np.dtype(dtype).itemsize
    blocks = lane_blocks(lanes, threads, itemsize)
    n, ta, ps = lanes, (steps if per_step_a else 1), (1 if per_step_a else 0)
    nt = streaming and dtype == "float32" and lanes % VW == 0
    # Items with the same width share one code path (at most three: q+1 lines, q lines, and a
    # shorter last block): (first item, items, width, first lane of the first item).
    groups: list[list[int]] = []
    for k, (lo, width) in enumerate(blocks):
        if groups and groups[-1][2] == width and k < len(blocks) - 1:
            groups[-1][1] += 1
        else:
            groups.append([k, 1, width, lo])
    par = T.parallel if len(blocks) > 1 else T.serial

    def block_macro(width: int):
        nv, tail = divmod(width, VW)
        vloop = T.unroll if nv <= UNROLL_VECTORS else T.serial

        @T.macro
        def run_block(A, B, H0, H, lo):
            acc = T.alloc_buffer((width,), dtype, scope="local")
            for v in vloop(nv):
                acc[T.ramp(v * VW, 1, VW)] = H0[T.ramp(lo + v * VW, 1, VW)]
            for j in range(tail):
                acc[nv * VW + j] = H0[lo + nv * VW + j]
            for s in range(steps):
                for v in vloop(nv):
                    acc[T.ramp(v * VW, 1, VW)] = A[s * ps, T.ramp(lo + v * VW, 1, VW)] \
                        * acc[T.ramp(v * VW, 1, VW)] + B[s, T.ramp(lo + v * VW, 1, VW)]
                    if nt:
                        T.evaluate(T.call_extern("void", "ember_nt_store_f32x8",
                                                 T.address_of(H[s, lo + v * VW]),
                                                 acc[T.ramp(v * VW, 1, VW)]))
                    else:
                        H[s, T.ramp(lo + v * VW, 1, VW)] = acc[T.ramp(v * VW, 1, VW)]
                for j in range(tail):
                    acc[nv * VW + j] = A[s * ps, lo + nv * VW + j] * acc[nv * VW + j] \
                        + B[s, lo + nv * VW + j]
                    H[s, lo + nv * VW + j] = acc[nv * VW + j]
            if nt:
                T.evaluate(T.call_extern("void", "ember_store_fence"))

        return run_block

    # (first item, first lane, width, code) per group; missing groups repeat the last one
    runs = [(g0, lo0, width, block_macro(width)) for g0, _, width, lo0 in groups]
    nruns = len(runs)
    (_, l0, w0, run0), (s1, l1, w1, run1), (s2, l2, w2, run2) = (runs + [runs[-1]] * 2)[:3]

    @T.prim_func(private=True)
    def linear_scan(a: T.handle, b: T.handle, h0: T.handle, h: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        A0 = T.match_buffer(a, a_shape, dtype)
        B0 = T.match_buffer(b, b_shape, dtype)
        H00 = T.match_buffer(h0, h0_shape, dtype)
        Hout = T.match_buffer(h, b_shape, dtype)
        A = T.decl_buffer((ta, n), dtype, data=A0.data)
        B = T.decl_buffer((steps, n), dtype, data=B0.data)
        H0 = T.decl_buffer((n,), dtype, data=H00.data)
        H = T.decl_buffer((steps, n), dtype, data=Hout.data)
        with T.attr(0, "pragma_import_llvm", NT_STORE_IR if nt else ""):
            for item in par(len(blocks)):
                if nruns == 1:
                    run0(A, B, H0, H, l0 + item * w0)
                elif nruns == 2:
                    if item < s1:
                        run0(A, B, H0, H, l0 + item * w0)
                    else:
                        run1(A, B, H0, H, l1 + (item - s1) * w1)
                else:
                    if item < s1:
                        run0(A, B, H0, H, l0 + item * w0)
                    elif item < s2:
                        run1(A, B, H0, H, l1 + (item - s1) * w1)
                    else:
                        run2(A, B, H0, H, l2 + (item - s2) * w2)

    return linear_scan
