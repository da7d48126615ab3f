"""Direct NCHW convolution (conv2d_nchw, group and depthwise forms) and NCHW pooling.

Why direct and not im2col + GEMM: the legalized block reads the padded input with composite
indices (y*stride + ry), which the GEMM normaliser does not accept, and small CNN layers are
short in every dimension. The schedule keeps the padded input as its own parallel stage (an
inlined pad puts a branch in the hot loop), then vectorizes the output width, unrolls a block of
output channels so each loaded input vector feeds several accumulators, keeps the
accumulators in registers across the (rc, ry, rx) loops, and runs (n, channel block, y) in
parallel.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block

from .common import CpuParams, is_spatial, schedule_leftover_stages
from .reduction import schedule_vector_reduction


def _conv_block(sch: s_tir.Schedule):
    blocks = sch.get_child_blocks(get_root_block(sch))
    reductions = [b for b in blocks if not is_spatial(sch, b)]
    if len(reductions) != 1:
        return None
    blk = reductions[0]
    kinds = "".join(
        "S" if iv.iter_type == tirx.IterVar.DataPar else "R" for iv in sch.get(blk).iter_vars
    )
    if kinds not in ("SSSSRRR", "SSSSRR"):  # conv2d / pool2d over NCHW
        return None
    return blk


class Conv2d:
    """NCHW conv2d and pooling; returns None for anything else."""

    name = "conv2d"

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, params: CpuParams):
        sch = s_tir.Schedule(func)
        blk = _conv_block(sch)
        if blk is None:
            return None
        is_conv = len(sch.get(blk).reads) >= 2
        channels = sch.get(blk).iter_vars[1].dom.extent
        unroll = 1
        if is_conv and isinstance(channels, tirx.IntImm):
            unroll = next(u for u in (8, 4, 2, 1) if channels.value % u == 0)
        if not schedule_vector_reduction(sch, blk, params, unroll_axis=1, unroll=unroll):
            return None
        schedule_leftover_stages(sch, params, blk)
        return sch
