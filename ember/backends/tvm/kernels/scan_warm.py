"""Warm-start time split for h_t = a_t * h_{t-1} + b_t: parallel, and bitwise the sequential loop.

Why: cutting time between threads needs each thread's carry-in h[s_k - 1]. Replaying every
earlier row for it (the prefix split) costs ~0.65 of a written row per replayed row, capping two
threads at 1.35x. But where |a| < 1 the influence of a state dies out: two runs of the same
recurrence from different states meet after W steps, and in floating point they meet EXACTLY
(once a * (difference) is under half an ulp of h, both fused multiply-adds round to the same
value, and identical states stay identical). So thread k starts from zero at row s_k - W, replays
W rows without writing, then writes rows [s_k, s_k+1) whole (contiguous, vectorized).

Exactness does not rest on that argument: after the join a serial check recomputes row s_k from
the final h[s_k - 1] and compares it bitwise with what thread k wrote; while the rows differ it
keeps recomputing (and rewriting) rows, and it stops at the first row that matches, since from
there on thread k's rows ARE the sequential ones. Where the window was long enough (the usual
case) that is one row per cut; where it was not (|a| near or above 1, NaN, a per-step a that
decays late) the fix-up runs longer, up to a serial rescan of the segment. The result is always
bitwise the sequential loop's, whatever a and b are.

W is taken from the data at run time: with m = max |a| over the lanes (of the only row of a
time-invariant a, or of the middle row of a per-step a, as an estimate), m^W <= 2^-32, i.e. the
dropped state is below 2^-32 of its size; m >= 1 or NaN means W = T (replay from h0, exact).

Large outputs are written with non-temporal stores (`vmovntps`): h is not read back by this
kernel, and a normal store first reads the line it overwrites, so streaming stores move 2 bytes
per byte of h instead of 3 once h no longer fits in the last-level cache.
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.script import tirx as T

from .scan import flat_shapes, vector_lanes

__all__ = ["NT_STORE_IR", "decay_window_bits", "warm_scan_kernel"]

DECAY_BITS = 32  # the dropped state is below 2^-DECAY_BITS of its size after the warm-up
_INT_OF = {"float32": "int32", "float64": "int64", "float16": "int16"}

# Linked into the kernel's LLVM module (`pragma_import_llvm`) and inlined: a 32-byte store that
# bypasses the cache, and the fence that orders such stores before the threads' join.
NT_STORE_IR = """
define void @ember_nt_store_f32x8(ptr %p, <8 x float> %v) #0 {
  store <8 x float> %v, ptr %p, align 32, !nontemporal !0
  ret void
}
declare void @llvm.x86.sse.sfence()
define void @ember_store_fence() #0 {
  call void @llvm.x86.sse.sfence()
  ret void
}
attributes #0 = { alwaysinline nounwind }
!0 = !{i32 1}
"""


def decay_window_bits() -> float:
    """ln(2^DECAY_BITS): W = ceil(this / -ln(max |a|))."""
    return DECAY_BITS * math.log(2.0)


def warm_scan_kernel(steps: int, lanes: int, threads: int, per_step_a: bool, rho: float,
                     full_cuts: tuple[int, ...], streaming: bool = False,
                     dtype: str = "float32", shapes: tuple | None = None) -> tirx.PrimFunc:
    """PrimFunc (a, b, h0, h): a [T, N] or [1, N], b/h [T, N], h0 [N]; `threads` items.

    `rho`: cost of a replayed row relative to a written one (balances the cuts: with window W
    thread k >= 1 replays W rows, so the cuts are s_k = k*c - (k-1)*rho*W, c = (T + (P-1)*rho*W)
    / P). `full_cuts`: the prefix split's cuts, used when W is longer than the first segment.
    `streaming`: non-temporal stores for h (float32, 8-lane rows only). `shapes`: the (a, b, h0)
    shapes passed, viewed flat in place (see `linear_scan_kernel`).
    """
    a_shape, b_shape, h0_shape = flat_shapes(steps, lanes, per_step_a, shapes)
    n, nthr = lanes, threads
    vw = vector_lanes(n)
    nv = n // vw
    ta = steps if per_step_a else 1
    ps = 1 if per_step_a else 0
    # rows of a that set the window: a per-step a is sampled (the fix-up covers the rest)
    probes = sorted({steps * q // 4 for q in (1, 2, 3)}) if per_step_a else [0]
    par = T.parallel if nthr > 1 else T.serial
    itype = _INT_OF[dtype]
    nt = streaming and dtype == "float32" and vw == 8
    bits = decay_window_bits()
    fcuts = [int(c) for c in full_cuts]

    def cut(k, win, warm):
        """Row where thread k starts writing (0 for k = 0, T for k = P)."""
        kf = tirx.Cast("float64", k)
        rw = tirx.const(rho, "float64") * tirx.Cast("float64", win)
        c = (tirx.const(float(steps), "float64") + tirx.const(float(nthr - 1), "float64") * rw) \
            / tirx.const(float(nthr), "float64")
        warm_cut = tirx.Cast("int32", tirx.floor(kf * c - (kf - tirx.const(1.0, "float64")) * rw))
        mid = tirx.Select(warm, tirx.max(tirx.min(warm_cut, steps), 0), _pick(k, fcuts))
        return tirx.Select(k <= 0, tirx.const(0, "int32"),
                           tirx.Select(k >= nthr, tirx.const(steps, "int32"), mid))

    def window(m, bad):
        """W from m = max |a| (float64) and bad = some |a| >= 1 or NaN."""
        w = tirx.ceil(tirx.const(bits, "float64") / (tirx.const(0.0, "float64") - tirx.log(m)))
        w = tirx.Select(w < tirx.const(float(steps), "float64"), w,
                        tirx.const(float(steps), "float64"))
        return tirx.Select(bad > tirx.const(0.0, "float64"), tirx.const(steps, "int32"),
                           tirx.max(tirx.Cast("int32", w), 1))

    def warm_ok(win):
        """The warm cuts hold when W fits before the first cut."""
        return win <= cut(1, win, tirx.const(True, "bool"))

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
        mx = T.alloc_buffer((2,), "float64")
        fx = T.alloc_buffer((n,), dtype)
        flag = T.alloc_buffer((vw,), itype)
        st = T.alloc_buffer((2,), "int32")
        mx[0] = T.float64(0)
        mx[1] = T.float64(0)
        for p in range(len(probes)):
            for j in range(n):
                mx[0] = T.max(mx[0], T.Cast("float64", T.fabs(A[_pick(p, probes), j])))
                mx[1] = T.if_then_else(T.fabs(A[_pick(p, probes), j]) < T.Cast(dtype, 1),
                                       mx[1], T.float64(1))
        win: T.int32 = window(mx[0], mx[1])
        warm: T.bool = warm_ok(win)
        with T.attr(0, "pragma_import_llvm", NT_STORE_IR if nt else ""):
            for item in par(nthr):
                acc = T.alloc_buffer((n,), dtype, scope="local")
                lo: T.int32 = cut(item, win, warm)
                hi: T.int32 = cut(item + 1, win, warm)
                start: T.int32 = T.max(lo - win, 0)
                for v in range(nv):
                    for j in T.vectorized(vw):
                        acc[v * vw + j] = T.if_then_else(start == 0, H0[v * vw + j],
                                                         T.Cast(dtype, 0))
                for s in range(lo - start):
                    for v in range(nv):
                        for j in T.vectorized(vw):
                            acc[v * vw + j] = A[(start + s) * ps, v * vw + j] * acc[v * vw + j] \
                                + B[start + s, v * vw + j]
                for s in range(hi - lo):
                    for v in range(nv):
                        for j in T.vectorized(vw):
                            acc[v * vw + j] = A[(lo + s) * ps, v * vw + j] * acc[v * vw + j] \
                                + B[lo + s, v * vw + j]
                        if nt:
                            T.evaluate(T.call_extern("void", "ember_nt_store_f32x8",
                                                     T.address_of(H[lo + s, v * vw]),
                                                     acc[T.Ramp(v * vw, 1, vw)]))
                        else:
                            for j in T.vectorized(vw):
                                H[lo + s, v * vw + j] = acc[v * vw + j]
                if nt:
                    T.evaluate(T.call_extern("void", "ember_store_fence"))
        # Fix-up, serial, cut by cut in order (cut k checks against the final row s_k - 1):
        # recompute rows from the exact carry until one matches what its thread wrote.
        for k in range(1, nthr):
            if T.max(cut(k, win, warm) - win, 0) > 0:
                for j in range(n):
                    fx[j] = H[cut(k, win, warm) - 1, j]
                st[0] = cut(k, win, warm)
                st[1] = 1
                while st[1] == 1:
                    if st[0] >= cut(k + 1, win, warm):
                        st[1] = 0
                    else:
                        for j in T.vectorized(vw):
                            flag[j] = T.Cast(itype, 0)
                        for v in range(nv):
                            for j in T.vectorized(vw):
                                fx[v * vw + j] = A[st[0] * ps, v * vw + j] * fx[v * vw + j] \
                                    + B[st[0], v * vw + j]
                                flag[j] = flag[j] | (T.reinterpret(itype, fx[v * vw + j])
                                                     ^ T.reinterpret(itype, H[st[0], v * vw + j]))
                                H[st[0], v * vw + j] = fx[v * vw + j]
                        st[1] = 0
                        for j in range(vw):
                            if flag[j] != T.Cast(itype, 0):
                                st[1] = 1
                        st[0] = st[0] + 1

    return linear_scan


def _pick(i, values: list[int]):
    """values[i] as a TIR expression (a Select chain over a few static values)."""
    out = tirx.const(values[-1], "int32")
    for k in range(len(values) - 2, -1, -1):
        out = tirx.Select(i == k, tirx.const(values[k], "int32"), out)
    return out
