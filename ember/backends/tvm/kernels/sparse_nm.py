"""N:M sparse linear kernel for CPUs (AVX2/AVX-512/NEON alike): gather-free over the batch.

    out[b, r] = sum_s values[r, s] * x[b, (s // n) * m + indices[r, s]] + bias[r]

A gather over k would need one indexed load per FMA. Instead x is transposed once per call to
xT [k, B], so for each stored weight (r, s) the kernel broadcasts the scalar value and streams one
contiguous row xT[col(r, s), b0:b0+T] into T accumulators: the index only picks *which* row
(one address computation per T FMAs), and all loads are plain vector loads. Work is n/m of the
dense GEMM. Rows r run in parallel; each tile of T batch columns stays in registers for the
whole reduction (`cache_write` into a local buffer). The function is returned already scheduled,
so the generic CPU schedule rules leave it alone.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import s_tir, te, tirx

# The register tile is a "global" buffer: TVM 0.27 turns a CPU "local" allocation into a
# TVMBackendAllocWorkspace/Free call pair where it is declared (per tile here), a "global"
# one under 1 KiB into a stack array that LLVM keeps in registers.
TILE_SCOPE = "global"

TILE = 32  # batch columns per register tile: 4 AVX2 / 2 AVX-512 vectors of f32


def nm_linear_func(batch: Any, k: int, rows: int, n: int, m: int, dtype: str = "float32",
                   has_bias: bool = True, tile: int = TILE) -> tirx.PrimFunc:
    """A scheduled PrimFunc (x[B, k], values[rows, S], indices[rows, S] u8, bias?) -> out[B, rows]."""
    stored = k // m * n
    x = te.placeholder((batch, k), dtype, name="x")
    values = te.placeholder((rows, stored), dtype, name="values")
    indices = te.placeholder((rows, stored), "uint8", name="indices")
    bias = te.placeholder((rows,), dtype, name="bias") if has_bias else None
    xt = te.compute((k, batch), lambda c, b: x[b, c], name="xT")
    s = te.reduce_axis((0, stored), name="s")

    def col(r, s_):
        return (s_ // n) * m + indices[r, s_].astype("int32")

    acc = te.compute((rows, batch), lambda r, b: te.sum(values[r, s] * xt[col(r, s), b], axis=s),
                     name="accT")
    if bias is not None:
        out = te.compute((batch, rows), lambda b, r: acc[r, b] + bias[r], name="out")
        args = [x, values, indices, bias, out]
    else:
        out = te.compute((batch, rows), lambda b, r: acc[r, b], name="out")
        args = [x, values, indices, out]
    # add_func names it; opaque: FuseOps must not merge it (its buffers are laid out by hand)
    func = te.create_prim_func(args).without_attr("global_symbol").with_attr("op_pattern", 8)
    try:
        func = _schedule(func, tile, isinstance(batch, int) and batch % tile == 0)
    except Exception:  # noqa: BLE001 - an unscheduled kernel is slow, never wrong
        return func
    return func.with_attr("tirx.is_scheduled", True)


def _schedule(func: tirx.PrimFunc, tile: int, exact: bool) -> tirx.PrimFunc:
    sch = s_tir.Schedule(func)
    blk = sch.get_sblock("accT")
    r, b, s = sch.get_loops(blk)
    bo, bi = sch.split(b, factors=[None, tile])
    sch.reorder(r, bo, s, bi)
    local = sch.cache_write(blk, 0, TILE_SCOPE)
    sch.reverse_compute_at(local, bo)
    sch.parallel(r if exact else sch.fuse(r, bo))
    if exact:
        sch.vectorize(bi)
        sch.vectorize(sch.get_loops(local)[-1])
    init = sch.decompose_reduction(blk, s)
    if exact:
        sch.vectorize(sch.get_loops(init)[-1])
    xt = sch.get_sblock("xT")
    c, _bx = sch.get_loops(xt)
    sch.parallel(c)
    out = sch.get_sblock("out")
    ob, _orow = sch.get_loops(out)
    sch.parallel(ob)
    return sch.mod["main"]


def build_standalone(batch: int, k: int, rows: int, n: int, m: int, target: Any):
    """Compile the kernel alone (for benchmarks): returns a tvm runtime Module."""
    func = nm_linear_func(batch, k, rows, n, m).with_attr("global_symbol", "nm_linear")
    return tvm.compile(tvm.IRModule({"nm_linear": func}), target=target)
