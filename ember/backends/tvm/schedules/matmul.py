"""GEMM rule: dense, matmul and batch matmul (any transpose), with a fused epilogue.

The kernel follows BLIS. The block is first normalised to C[s, i, j] += A[s, i, k] * B[s, j, k]
(dlight's reindex + index maps, so `x @ W`, `x @ W.T`, batched and broadcast forms all take one
path), then:

- pad_einsum rounds i up to the micro-tile height `mr` and j to its width `nr`;
- B is packed per call into panels [s, j/nr, k, nr] and A into [s, i/mr, k, mr] (a packed panel
  is one contiguous stream; unpacked 1024-wide rows alias in L1/L2: 33 -> 83 GFLOP/s here);
- an mr x nr register tile (6 x 16 fp32 on AVX2: 12 ymm accumulators, 2 loads + 6 broadcasts per
  k) accumulates over the whole k loop in a "local" buffer that LLVM keeps in registers;
- row blocks of `mc` rows run outside the column panels, so an A block stays in L2 while B
  panels stream; the (batch, row block, column panel) loops are fused and run in parallel;
- the epilogue (bias, activation, ...) is inlined into the tile's write-back.

Packing B costs one pass over the weight per call; for batch-1 inference that is as much
memory traffic as the GEMV itself. A constant weight could be packed once at compile time
by a relax-level layout transform that FoldConstant folds; that is not done here (see the report).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.matmul import get_index_map

from .common import (
    CpuParams,
    block_kinds,
    inline_consumers,
    inline_epilogue_intermediates,
    inline_producers,
    is_spatial,
    parallel_vectorize,
    schedule_leftover_stages,
)

# The register tile is a "global" buffer: TVM 0.27 turns a CPU "local" allocation into a
# TVMBackendAllocWorkspace/Free call pair where it is declared (per tile here), a "global"
# one under 1 KiB into a stack array that LLVM keeps in registers.
TILE_SCOPE = "global"


@dataclass(frozen=True)
class GemmTiles:
    mr: int  # micro-tile rows (register blocking)
    nr: int  # micro-tile columns (a multiple of the vector lanes)
    mc_tiles: int  # micro-tiles per row block (mc = mr * mc_tiles)


def choose_tiles(params: CpuParams, dtype: str, m: int | None, n: int | None) -> GemmTiles:
    """Register tile for the target: 2 vectors wide, as many rows as the registers allow."""
    lanes = params.lanes(dtype)
    vectors = 2 if (n is None or n > lanes) else 1
    nr = lanes * vectors
    # accumulators + 2 B vectors + 1 broadcast must fit the register file
    mr = max(1, min(8, (params.vector_regs - vectors - 1) // vectors))
    if m is not None:
        mr = min(mr, m)
    return GemmTiles(mr=mr, nr=nr, mc_tiles=8)


def _main_gemm_block(sch: s_tir.Schedule):
    """The single reduction block when the function is a GEMM plus spatial stages, else None."""
    blocks = sch.get_child_blocks(get_root_block(sch))
    reductions = [b for b in blocks if not is_spatial(sch, b)]
    if len(reductions) != 1:
        return None
    blk = reductions[0]
    stmt = sch.get(blk)
    if len(stmt.reads) != 2 or len(stmt.writes) != 1 or "O" in block_kinds(sch, blk):
        return None
    if not str(stmt.writes[0].source.dtype).startswith("float"):
        return None  # integer GEMMs (quantized) are scheduled by their own kernels
    if get_index_map(stmt) is None:
        return None
    return blk


def _same_extent(a, b) -> bool:
    if isinstance(a, tirx.IntImm) and isinstance(b, tirx.IntImm):
        return int(a.value) == int(b.value)
    return a.same_as(b)


def _extent(block: tirx.SBlock, axis: int) -> int | None:
    ext = block.iter_vars[axis].dom.extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def _pack(sch: s_tir.Schedule, blk, read_index: int, tile: int, lanes: int):
    """Copy operand `read_index` ([s, x, k] after normalisation) into panels [s, x/tile, k, tile]."""
    pack = sch.cache_read(blk, read_index, "global")
    sch.transform_layout(pack, ("write", 0), lambda s, x, k: (s, x // tile, k, x % tile))
    inline_producers(sch, pack, 0)
    s, x, k = sch.get_loops(pack)
    x0, x1 = sch.split(x, [None, tile])
    sch.reorder(s, x0, k, x1)
    if tile % lanes == 0:
        sch.vectorize(x1)
    else:
        sch.unroll(x1)
    sch.parallel(sch.fuse(s, x0))
    return pack


class Matmul:
    """dlight-style rule: returns a Schedule, or None when the function is not a float GEMM."""

    name = "matmul"

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, params: CpuParams):
        sch = s_tir.Schedule(func)
        blk = _main_gemm_block(sch)
        if blk is None:
            return None
        dtype = str(sch.get(blk).writes[0].source.dtype)
        lanes = params.lanes(dtype)
        inline_epilogue_intermediates(sch, blk)

        # 1. normalise to C[s, i, j] += A[s, i, k] * B[s, j, k]
        read_a = sch.reindex(blk, ("read", 0))
        read_b = sch.reindex(blk, ("read", 1))
        write_c = sch.reindex(blk, ("write", 0))
        block_map, a_map, b_map, c_map = get_index_map(sch.get(blk))
        sch.transform_layout(read_a, ("write", 0), a_map)
        sch.transform_layout(read_b, ("write", 0), b_map)
        sch.transform_layout(write_c, ("read", 0), c_map)
        sch.transform_block_layout(blk, block_map)
        m, n = _extent(sch.get(blk), 1), _extent(sch.get(blk), 2)
        tiles = choose_tiles(params, dtype, m, n)

        # 2. pad to whole micro-tiles, pack both operands into contiguous panels
        before = [iv.dom.extent for iv in sch.get(blk).iter_vars]
        sch.pad_einsum(blk, [1, tiles.mr, tiles.nr, 1])
        after = [iv.dom.extent for iv in sch.get(blk).iter_vars]
        was_padded = any(not _same_extent(x, y) for x, y in zip(before, after))
        _pack(sch, blk, 1, tiles.nr, lanes)
        _pack(sch, blk, 0, tiles.mr, lanes)

        # 3. register tile; epilogue first (see inline_consumers), padded output stays a stage
        acc = sch.cache_write(blk, 0, TILE_SCOPE)
        if was_padded:  # the un-padding copy keeps the epilogue; the tile writes whole tiles
            (unpad,) = sch.get_consumers(acc)
            inline_consumers(sch, unpad)
            parallel_vectorize(sch, unpad, lanes)
        else:
            inline_consumers(sch, acc)
        s, i, j, k = sch.get_loops(blk)
        i0, i1 = sch.split(i, [None, tiles.mr])
        ic, i0 = sch.split(i0, [None, tiles.mc_tiles])
        j0, j1 = sch.split(j, [None, tiles.nr])
        sch.reorder(s, ic, j0, i0, k, i1, j1)
        sch.reverse_compute_at(acc, i0)
        sch.unroll(i1)
        sch.vectorize(j1)
        sch.parallel(sch.fuse(s, ic, j0))
        sch.decompose_reduction(blk, k)
        sch.vectorize(sch.get_loops(acc)[-1])

        # 4. whatever spatial stage is left (e.g. a producer that would not inline)
        schedule_leftover_stages(sch, params, blk)
        return sch
