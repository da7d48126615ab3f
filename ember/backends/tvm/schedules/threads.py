"""Run a kernel on one thread when its work is too small to pay for waking TVM's thread pool.

Why: every `parallel` loop compiles to a TVMBackendParallelLaunch that wakes the pool whatever
the loop's size. At batch 1 that launch costs more than the work (digits_mlp b1: 3 tiny GEMMs,
44 us with the pool vs 10 us serial on a loaded 2-core host; idle, a few us per launch).

How: the rule schedules the function as usual; its trace is replayed without the `Parallel`
instructions to get the serial twin. The work (multiply-adds and element writes: the sum over
the unscheduled blocks of the product of their iteration extents) decides:

- static extents: the cheaper version is picked now;
- symbolic extents (a dynamic batch): both bodies go into one PrimFunc behind
  `if work < threshold`. This is where a serial/parallel switch failed before in TVM 0.27: the
  serial copy re-defines the parallel one's loop and block variables ("defined more than
  once"; `ConvertSSA` renames them), its root-block buffers (ConvertSSA leaves those: "pad_temp
  has duplicate definitions"; they are hoisted, once, into a new root block) and the body must
  stay a block realize ("func->body->IsInstance<SBlockRealizeNode>" fails on a bare if).
"""

from __future__ import annotations

import tvm
import tvm.sym
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.schedule import Trace

from .common import log

# Below this many block iterations (multiply-adds + element writes) a kernel runs serially.
# On the 2-core Zen 3 host shared by several users (load 6-10) a pool launch cost tens of us:
# digits_cnn's 16->32 conv at batch 1 (295k multiply-adds) took 19 us serial vs 45 us parallel,
# digits_mlp b1 10 vs 44 us. Idle, a launch costs a few us, so kernels just below this size lose
# at most that much; everything at batch 64 that matters (GEMMs, convs) stays parallel.
PARALLEL_MIN_WORK = 1 << 19


def block_work(func: tirx.PrimFunc) -> tirx.PrimExpr | None:
    """Sum over the root's child blocks (and their nested blocks) of the iteration-space size."""
    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(get_root_block(sch))
    except Exception:  # noqa: BLE001 - e.g. no single root block: no estimate
        return None
    total = tirx.IntImm("int64", 0)
    for b in blocks:
        size = tirx.IntImm("int64", 1)
        for lp in sch.get_loops(b):
            ext = sch.get(lp).extent
            size = size * tirx.Cast("int64", ext)
        total = total + size
    return tvm.sym.Analyzer().simplify(total)


def _strip_root_allocs(body):
    """(the root block realize without its alloc_buffers, those buffers)."""
    if not isinstance(body, s_tir.SBlockRealize):
        raise TypeError("scheduled function has no root block")
    blk = body.block
    bare = s_tir.SBlock(blk.iter_vars, blk.reads, blk.writes, blk.name_hint, blk.body, blk.init,
                        [], blk.match_buffers, blk.annotations)
    return s_tir.SBlockRealize(body.iter_values, body.predicate, bare), list(blk.alloc_buffers)


def has_parallel(sch: s_tir.Schedule) -> bool:
    return any(inst.kind.name == "Parallel" for inst in sch.trace.insts)


def serial_twin(func: tirx.PrimFunc, sch: s_tir.Schedule
                ) -> tuple[tirx.PrimFunc, s_tir.Schedule] | None:
    """`sch` replayed on `func` without its Parallel instructions, and that schedule (None if
    the replay fails)."""
    trace = sch.trace
    insts = [i for i in trace.insts if i.kind.name != "Parallel"]
    decisions = {i: d for i, d in trace.decisions.items() if i.kind.name != "Parallel"}
    try:
        twin = s_tir.Schedule(func)
        Trace(insts, decisions).apply_to_schedule(twin, remove_postproc=False)
    except Exception as e:  # noqa: BLE001 - keep the parallel schedule
        log.debug("serial replay failed: %s", e)
        return None
    return twin.mod["main"], twin


def _renew_shared_buffers(twin: s_tir.Schedule, shared: list) -> None:
    """Give the serial twin its own objects for the root buffers it shares with the parallel
    schedule (both replay the same function, so its intermediates are the same Buffer objects).

    Why: a buffer used in both branches of the runtime `if` can only be allocated above the
    `if`, so TIR's allocation planner cannot move it under the per-item loop and shrink it: a
    softmax row buffer, an im2col tile became batch-sized (packed conv: 2x slower at batch 64).
    An identity transform_layout is the schedule primitive that re-creates a buffer (new data
    var, same shape and accesses); each branch then gets its own allocation."""
    for buf in shared:
        for blk, index in _writers(twin, buf):
            try:
                twin.transform_layout(blk, ("write", index), lambda *i: list(i))
            except Exception as e:  # noqa: BLE001 - that buffer stays shared (hoisted)
                log.debug("buffer %s not renewed: %s", buf.name, e)
            break


def _writers(sch: s_tir.Schedule, buf) -> list:
    """(block RV, write index) of the blocks of `sch` that write `buf`."""
    found = []

    def walk(stmt):
        if isinstance(stmt, s_tir.SBlockRealize):
            for i, region in enumerate(stmt.block.writes):
                if region.source.same_as(buf) and stmt.block.name_hint != "root":
                    found.append((stmt.block.name_hint, i))
            walk(stmt.block.body)
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt:
                walk(s)
        elif isinstance(stmt, tirx.IfThenElse):
            walk(stmt.then_case)
            if stmt.else_case is not None:
                walk(stmt.else_case)
        elif hasattr(stmt, "body"):
            walk(stmt.body)

    walk(sch.mod["main"].body)
    return [(sch.get_sblock(name), i) for name, i in found]


def choose_threading(func: tirx.PrimFunc, sch: s_tir.Schedule,
                     threshold: int = PARALLEL_MIN_WORK) -> tirx.PrimFunc:
    """The scheduled function, serial when its work is small (a runtime branch if symbolic)."""
    parallel = sch.mod["main"]
    if threshold <= 0 or not has_parallel(sch):
        return parallel
    try:
        return _choose(func, sch, parallel, threshold)
    except Exception as e:  # noqa: BLE001 - any failure: the parallel schedule, as before
        log.debug("threading choice failed: %s", e)
        return parallel


def _choose(func, sch, parallel, threshold: int) -> tirx.PrimFunc:
    work = block_work(func)
    if work is None:
        return parallel
    if isinstance(work, tirx.IntImm) and work.value >= threshold:
        return parallel
    twin = serial_twin(func, sch)
    if twin is None:
        return parallel
    serial, twin_sch = twin
    if isinstance(work, tirx.IntImm):
        return serial
    if any(not p.same_as(q) for p, q in zip(serial.params, parallel.params)):
        return parallel  # the branches must read the same parameters
    par_body, par_allocs = _strip_root_allocs(parallel.body)
    _renew_shared_buffers(twin_sch, [b for b in _strip_root_allocs(serial.body)[1]
                                     if any(b.same_as(a) for a in par_allocs)])
    serial = twin_sch.mod["main"]
    ser_body, ser_allocs = _strip_root_allocs(serial.body)
    branch = tirx.IfThenElse(work < tirx.IntImm("int64", threshold), ser_body, par_body)
    # TIR passes want a root block as the body; it allocates the buffers of both branches
    # (hoisted: a buffer allocated in both would be defined twice, which ConvertSSA won't fix;
    # the serial branch's own copies are moved down again by the allocation planner)
    allocs = list(par_allocs)
    allocs += [b for b in ser_allocs if not any(b.same_as(a) for a in par_allocs)]
    root = s_tir.SBlock([], [], [], "root", branch, alloc_buffers=allocs)
    both = parallel.with_body(s_tir.SBlockRealize([], True, root))
    return tirx.transform.ConvertSSA()(tvm.IRModule({"main": both}))["main"]
