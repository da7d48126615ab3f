"""Reductions: row reductions (softmax, layer_norm, mean over the last axis) and reductions
whose innermost output axis is contiguous (pooling, column sums, GEMV with a [K, N] weight,
direct convolution).

Row reductions reuse TVM's dlight CPU `Reduction` rule (parallel rows, blocks computed at the
row, vectorized elementwise parts). The second kind moves the reduction loops outside a
vector-wide chunk of the innermost output axis, so every reduction step is one vector FMA into a
register accumulator; optionally a second output axis is unrolled for register reuse (conv2d).
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.cpu import Reduction as _DlightRowReduction

from .common import (
    CpuParams,
    block_kinds,
    inline_consumers,
    is_spatial,
    schedule_leftover_stages,
    static_extent,
)
from .elementwise import inline_spatial

# The register tile is a "global" buffer: TVM 0.27 turns a CPU "local" allocation into a
# TVMBackendAllocWorkspace/Free call pair where it is declared (per tile here), a "global"
# one under 1 KiB into a stack array that LLVM keeps in registers.
TILE_SCOPE = "global"


class RowReduction:
    """softmax / layer_norm / rms_norm: dlight's CPU reduction rule, checked.

    dlight parallelizes the leading spatial loop of the last block and computes every other
    block at it. Its block normalization drops unit iterators, so with a single row (softmax of
    [1, 1000] at batch 1) the "leading spatial" loop is the row's own column axis: max, exp and
    sum ran once per output column, 1000 x the work (5.7 ms for [1, 1000]). Such a schedule
    is replaced by a serial one (each stage at the root, exp / normalize vectorized)."""

    name = "row_reduction"

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, params: CpuParams):
        sch = _DlightRowReduction().apply(func, target, False)
        if sch is None or not _recomputes_reductions(sch):
            return sch
        return _serial_rows(func, params)


def _realizes(stmt):
    """The block realizes of a scheduled body (For / SeqStmt / block nesting)."""
    if isinstance(stmt, s_tir.SBlockRealize):
        yield stmt
        yield from _realizes(stmt.block.body)
    elif isinstance(stmt, tirx.SeqStmt):
        for s in stmt:
            yield from _realizes(s)
    elif isinstance(stmt, tirx.IfThenElse):
        yield from _realizes(stmt.then_case)
        if stmt.else_case is not None:
            yield from _realizes(stmt.else_case)
    elif hasattr(stmt, "body"):
        yield from _realizes(stmt.body)


def _recomputes_reductions(sch: s_tir.Schedule) -> bool:
    """True when a reduction block sits under an outermost loop without depending on it
    (it is computed again for every iteration of that loop)."""
    body = sch.mod["main"].body
    top = body.block.body if isinstance(body, s_tir.SBlockRealize) else body
    for loop in (top if isinstance(top, tirx.SeqStmt) else [top]):
        if not isinstance(loop, tirx.For):
            continue
        for realize in _realizes(loop.body):
            if not any(iv.iter_type == tirx.IterVar.CommReduce for iv in realize.block.iter_vars):
                continue
            free = [v for e in realize.iter_values for v in tirx.analysis.undefined_vars(e)]
            if not any(v.same_as(loop.loop_var) for v in free):
                return True
    return False


def _serial_rows(func: tirx.PrimFunc, params: CpuParams) -> s_tir.Schedule:
    """Each stage on its own at the root: elementwise stages vectorized, reductions unrolled by
    a vector width (a single row has nothing to run in parallel)."""
    sch = s_tir.Schedule(func)
    for blk in sch.get_child_blocks(get_root_block(sch)):
        loops = sch.get_loops(blk)
        if not loops:
            continue
        writes = sch.get(blk).writes
        lanes = params.lanes(str(writes[0].source.dtype) if writes else "float32")
        ext = static_extent(sch, loops[-1])
        if is_spatial(sch, blk):
            if ext is None or ext > lanes:
                sch.vectorize(sch.split(loops[-1], [None, lanes])[1])
            elif ext > 1:
                sch.vectorize(loops[-1])
        elif ext is None or ext > lanes:
            inner = sch.split(loops[-1], [None, lanes])[1]
            sch.annotate(inner, "pragma_auto_unroll_max_step", lanes)
            sch.annotate(inner, "pragma_unroll_explicit", 1)
    return sch


def schedule_vector_reduction(
    sch: s_tir.Schedule, blk, params: CpuParams, unroll_axis: int | None = None, unroll: int = 1
) -> bool:
    """Vectorize the innermost spatial axis of reduction block `blk`; False if not applicable."""
    stmt = sch.get(blk)
    ivs = list(stmt.iter_vars)
    loops = sch.get_loops(blk)
    if len(loops) != len(ivs):
        return False
    spatial = [i for i, iv in enumerate(ivs) if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [i for i, iv in enumerate(ivs) if iv.iter_type == tirx.IterVar.CommReduce]
    if not spatial or not reduce or len(spatial) + len(reduce) != len(ivs):
        return False
    inner = spatial[-1]
    out = stmt.writes[0]
    # the vectorized axis must be the output's contiguous (last) index
    last_index = out.region[-1].min if len(out.region) else None
    if last_index is None or not last_index.same_as(ivs[inner].var):
        return False
    lanes = params.lanes(str(out.source.dtype))
    ext = static_extent(sch, loops[inner])
    if ext is not None and ext < 2:
        return False

    acc = sch.cache_write(blk, 0, TILE_SCOPE)
    inline_consumers(sch, acc)
    loops = sch.get_loops(blk)
    vec = lanes if ext is None or ext >= lanes else ext
    outer_s = [loops[i] for i in spatial[:-1]]
    x0, x1 = sch.split(loops[inner], [None, vec])
    unrolled = []
    if unroll_axis is not None and unroll > 1 and unroll_axis in spatial[:-1]:
        pos = spatial.index(unroll_axis)
        u0, u1 = sch.split(outer_s[pos], [None, unroll])
        outer_s[pos] = u0
        unrolled = [u1]
    sch.reorder(*outer_s, x0, *[loops[i] for i in reduce], *unrolled, x1)
    sch.reverse_compute_at(acc, x0)
    for u in unrolled:
        sch.unroll(u)
    sch.vectorize(x1)
    outer = (sch.fuse(*outer_s) if len(outer_s) > 1 else outer_s[0]) if outer_s else None
    if outer is not None and static_extent(sch, outer) != 1:
        sch.parallel(outer)  # before decompose_reduction: an update block without init cannot
    sch.decompose_reduction(blk, sch.get_loops(blk)[(1 if outer is not None else 0) + 1])
    sch.vectorize(sch.get_loops(acc)[-1])
    return True


def schedule_parallel_rows(sch: s_tir.Schedule, blk) -> bool:
    """Last resort for a reduction block: run its leading spatial loops in parallel."""
    ivs = sch.get(blk).iter_vars
    loops = sch.get_loops(blk)
    lead = []
    for lp, iv in zip(loops, ivs):
        if iv.iter_type != tirx.IterVar.DataPar:
            break
        lead.append(lp)
    if not lead:
        return False
    sch.parallel(sch.fuse(*lead) if len(lead) > 1 else lead[0])
    return True


class GenericReduction:
    """One reduction block plus spatial stages: vectorized-accumulator or parallel-rows schedule."""

    name = "reduction"

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, params: CpuParams):
        sch = s_tir.Schedule(func)
        root = get_root_block(sch)
        blocks = sch.get_child_blocks(root)
        reductions = [b for b in blocks if not is_spatial(sch, b)]
        if len(reductions) != 1 or "O" in block_kinds(sch, reductions[0]):
            return None
        inline_spatial(sch)
        (blk,) = [b for b in sch.get_child_blocks(root) if not is_spatial(sch, b)]
        if not (schedule_vector_reduction(sch, blk, params) or schedule_parallel_rows(sch, blk)):
            return None
        schedule_leftover_stages(sch, params, blk)
        return sch
