"""Injective functions (fused elementwise chains, broadcasts, transposes, reshapes, padding).

Inline every stage it can into the last one, then run the outer loops in parallel and the
innermost loop as vectors. TVM's default CPU pipeline would leave them single-threaded scalar.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block

from .common import (
    CpuParams,
    is_fastmath,
    is_spatial,
    mark_fastmath,
    nests_fastmath,
    parallel_vectorize,
)


def _output_dtype(sch: s_tir.Schedule, block) -> str:
    writes = sch.get(block).writes
    return str(writes[0].source.dtype) if writes else "float32"


def inline_spatial(sch: s_tir.Schedule, keep_last: bool = True) -> list:
    """Inline spatial blocks into their consumers (or producers) until nothing changes."""
    root = get_root_block(sch)
    changed = True
    while changed:
        changed = False
        blocks = sch.get_child_blocks(root)
        for b in blocks[:-1] if keep_last else blocks:
            if not is_spatial(sch, b):
                continue
            tagged = is_fastmath(sch, b)
            for op, receivers in ((sch.compute_inline, sch.get_consumers(b)),
                                  (sch.reverse_compute_inline, sch.get_producers(b))):
                if nests_fastmath(sch, b, receivers):
                    continue  # see common.nests_fastmath: compile time
                changed = _try(op, b)
                if changed:
                    mark_fastmath(sch, tagged, receivers)
                    break
            if changed:
                break
    return sch.get_child_blocks(root)


def _try(op, block) -> bool:
    try:
        op(block)
    except Exception:  # noqa: BLE001 - not inlinable this way: the caller tries another
        return False
    return True


class Elementwise:
    """Every block spatial: inline, then parallel outer + vectorized inner per remaining stage."""

    name = "elementwise"

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, params: CpuParams):
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(get_root_block(sch))
        if not blocks or not all(is_spatial(sch, b) for b in blocks):
            return None
        if any(not sch.get_loops(b) for b in blocks):
            return None  # scalar functions: nothing to gain
        for b in inline_spatial(sch):
            parallel_vectorize(sch, b, params.lanes(_output_dtype(sch, b)))
        return sch
