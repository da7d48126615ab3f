"""Helpers shared by the CPU schedule rules: machine parameters and block surgery.

Why a module of its own: every rule needs the vector width of the target and the same few
producer/consumer inlining loops, and TVM's `llvm_get_vector_width` answers 512 for every x86
mcpu in 0.27 (checked: znver3, x86-64), so the width is derived from the LLVM feature list here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

log = logging.getLogger("ember.backends.tvm.schedules")


@dataclass(frozen=True)
class CpuParams:
    """What the rules need to know about a CPU target."""

    vector_bits: int  # SIMD register width
    vector_regs: int  # architectural SIMD registers
    cores: int

    def lanes(self, dtype: str) -> int:
        bits = tvm.DataType(dtype).bits
        return max(1, self.vector_bits // max(bits, 8))


def cpu_params(target: tvm.target.Target) -> CpuParams:
    """Vector width and register count from the target's mcpu/mattr features."""
    try:
        from tvm.target.codegen import llvm_get_cpu_features

        feats = {str(f) for f in llvm_get_cpu_features(target)}
    except Exception:  # noqa: BLE001 - a target LLVM cannot describe gets the safe default
        feats = set()
    cores = int(target.attrs.get("num-cores", 0) or 0) if "num-cores" in target.attrs else 0
    if "avx512f" in feats:
        return CpuParams(512, 32, cores)
    if "avx2" in feats or "avx" in feats:
        return CpuParams(256, 16, cores)
    triple = str(target.attrs.get("mtriple", "")) if "mtriple" in target.attrs else ""
    if "aarch64" in triple or "neon" in feats:
        return CpuParams(128, 32, cores)
    return CpuParams(128, 16, cores)


def static_extent(sch: s_tir.Schedule, loop: LoopRV) -> int | None:
    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def producer_of(sch: s_tir.Schedule, block: SBlockRV, read_index: int) -> SBlockRV | None:
    """The block that writes the buffer `block` reads at `read_index`, if any."""
    buf = sch.get(block).reads[read_index].source
    for p in sch.get_producers(block):
        if any(w.source.same_as(buf) for w in sch.get(p).writes):
            return p
    return None


def inline_producers(sch: s_tir.Schedule, block: SBlockRV, read_index: int) -> bool:
    """Inline the whole producer chain of one input into `block`; False if a step failed."""
    while (p := producer_of(sch, block, read_index)) is not None:
        try:
            sch.compute_inline(p)
        except Exception:  # noqa: BLE001 - e.g. a reduction producer: it stays a stage
            return False
    return True


def inline_consumers(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """Reverse-inline the epilogue chain (bias, activation, cast, reshape) into `block`.

    Call this before `block` is moved under tiled loops: in TVM 0.27 reverse_compute_inline
    into a block already placed by reverse_compute_at drops that block's boundary predicate
    (seen as out-of-bounds stores on non-multiple shapes).
    """
    while True:
        progressed = False
        for c in sch.get_consumers(block):
            if nests_fastmath(sch, c, [block]):
                continue
            tagged = is_fastmath(sch, c)
            try:
                sch.reverse_compute_inline(c)
                mark_fastmath(sch, tagged, [block])
                progressed = True
            except Exception as e:  # noqa: BLE001 - a consumer that cannot be inlined stays a stage
                log.debug("consumer %s not inlined: %s", sch.get(c).name_hint, type(e).__name__)
        if not progressed:
            return


def inline_epilogue_intermediates(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """Forward-inline the epilogue's intermediate stages so one stage reads the GEMM result.

    reverse_compute_inline needs a single consumer per stage. An epilogue such as
    silu(t) = t * sigmoid(t) or gelu reads an intermediate several times; left alone, that
    intermediate stays a buffer written under the tile loops, which TVM 0.27 rejects ("used
    before its definition"). Inlining the intermediates forward leaves a single reader (the
    output stage), which then reverse-inlines into the tile's write-back as usual.
    """
    changed = True
    while changed:
        changed = False
        for c in sch.get_consumers(block):
            if not sch.get_consumers(c):
                continue  # an output stage: it must stay
            receivers = sch.get_consumers(c)
            if nests_fastmath(sch, c, receivers):
                continue
            tagged = is_fastmath(sch, c)
            try:
                sch.compute_inline(c)
                mark_fastmath(sch, tagged, receivers)
                changed = True
            except Exception as e:  # noqa: BLE001 - a non-injective stage stays
                log.debug("stage %s not forward-inlined: %s", sch.get(c).name_hint,
                          type(e).__name__)


# Block annotation of the stages built on lowering/fastmath.py (set by their lowerings).
FASTMATH = "ember.fastmath"


def _fastmath(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    return FASTMATH in sch.get(block).annotations


def nests_fastmath(sch: s_tir.Schedule, block: SBlockRV, receivers) -> bool:
    """True when inlining fastmath stage `block` into `receivers` nests two fastmath stages.

    Why: TVM's LLVM codegen binds every Let to its simplified value, fully substituted, so the
    cost grows with the product of the nested Let chains: exp(exp(x)) took 8 s to compile,
    GEMM -> exp -> sigmoid -> tanh did not finish in 5 min. Such chains keep a stage each."""
    return _fastmath(sch, block) and any(_fastmath(sch, r) for r in receivers)


def is_fastmath(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    return _fastmath(sch, block)


def mark_fastmath(sch: s_tir.Schedule, was_fastmath: bool, receivers) -> None:
    """After a stage was inlined into `receivers`: if it was a fastmath stage they hold its
    Let chains now, and are fastmath stages themselves."""
    for r in receivers if was_fastmath else ():
        sch.annotate(r, FASTMATH, 1)


def parallel_vectorize(sch: s_tir.Schedule, block: SBlockRV, lanes: int) -> None:
    """The injective default: fuse outer loops in parallel, vectorize the innermost loop.

    Non-multiple extents are fine: TVM scalarizes the predicated tail (checked on 53 and 1003).
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    ext = static_extent(sch, inner)
    if ext is None or ext > lanes:
        _, inner_vec = sch.split(inner, [None, lanes])
        sch.vectorize(inner_vec)
        loops = sch.get_loops(block)[:-1]
    elif ext > 1:
        sch.vectorize(inner)
        loops = loops[:-1]
    else:
        loops = loops[:-1]
    if loops:
        outer = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        sch.parallel(outer)


def is_spatial(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    return all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def block_kinds(sch: s_tir.Schedule, block: SBlockRV) -> str:
    kinds = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kinds.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def schedule_leftover_stages(
    sch: s_tir.Schedule, params: CpuParams, *main_blocks: SBlockRV
) -> None:
    """parallel_vectorize each spatial stage that does not share a loop with `main_blocks`
    (the main kernel's write-back sits under its loops and is scheduled with it)."""
    from tvm.s_tir.dlight.analysis import get_root_block

    taken = [sch.get_sref(lp) for b in main_blocks for lp in sch.get_loops(b)]
    for b in sch.get_child_blocks(get_root_block(sch)):
        loops = sch.get_loops(b)
        if not loops or not is_spatial(sch, b):
            continue
        if any(sch.get_sref(lp).same_as(t) for lp in loops for t in taken):
            continue
        if any(sch.get(lp).kind != tirx.ForKind.SERIAL for lp in loops):
            continue  # already scheduled
        writes = sch.get(b).writes
        dtype = str(writes[0].source.dtype) if writes else "float32"
        parallel_vectorize(sch, b, params.lanes(dtype))

