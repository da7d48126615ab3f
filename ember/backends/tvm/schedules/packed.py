"""GEMM against a constant weight: pack the weight once at compile time, not on every call.

The generic GEMM rule (matmul.py) copies B into contiguous [N/nr, K, nr] panels inside every
call. For inference the weight is a constant, and at batch 1 that copy costs as much memory
traffic as the whole GEMV. `prepack_weights` is a Relax pass that runs after legalization
(before fusion): for every `call_tir(matmul, (x, W))` whose W is a 2-D float constant and whose
x is read row-major, it

- packs W with numpy into panels Wp[j // nr, k, j % nr] (zero-padded to whole panels), and
- replaces the PrimFunc by `T_packed_matmul`: out[..., j] = sum_k x[..., k] * Wp[j//nr, k, j%nr].

Fusion then attaches the epilogue (bias, activation) as usual, and `PackedMatmul`, the schedule
rule for these blocks, runs an mr x nr register tile straight from the panels: no packing, no
padding copy of x. Rows of a symbolic batch that do not fill a whole micro-tile are handled by
the block's predicate (TVM keeps it outside the vector lanes).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx
from tvm.s_tir.dlight.analysis import get_root_block

from .common import (
    CpuParams,
    cpu_params,
    inline_epilogue_intermediates,
    schedule_leftover_stages,
    static_extent,
)

# The register tile is a "global" buffer: TVM 0.27 turns a CPU "local" allocation into a
# TVMBackendAllocWorkspace/Free call pair where it is declared (per tile here), a "global"
# one under 1 KiB into a stack array that LLVM keeps in registers.
TILE_SCOPE = "global"

BLOCK = "T_packed_matmul"
# Below this many multiply-adds per call a kernel runs on one thread: waking the thread pool
# costs more than it saves (measured ~5-20 us per parallel region on a busy 2-core host).
PARALLEL_MIN_MACS = 1 << 18


def panel_width(params: CpuParams, n: int) -> int:
    lanes = params.lanes("float32")
    return 2 * lanes if n >= 2 * lanes else lanes


def pack_weight(w_kn: np.ndarray, nr: int) -> np.ndarray:
    """[K, N] -> [ceil(N/nr), K, nr] panels, zero-padded; the layout `T_packed_matmul` reads."""
    k, n = w_kn.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), w_kn.dtype)
    padded[:, :n] = w_kn
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


def row_tile(params: CpuParams, nr: int, rows: int | None) -> int:
    """Micro-tile height: accumulators (mr x nr/lanes vectors) + B vectors + 1 broadcast fit."""
    vectors = max(1, nr // params.lanes("float32"))
    mr = max(1, min(8, (params.vector_regs - vectors - 1) // vectors))
    return min(mr, rows) if rows is not None else mr


def packed_matmul_func(a_shape, k: int, n: int, nr: int, mr: int, dtype: str) -> tirx.PrimFunc:
    """out[..., r, j] = sum_k A[..., r, k] * Wp[j // nr, k, j % nr] for A of shape `a_shape`.

    The sum goes to `T_packed_matmul`, an accumulator padded to whole mr x nr tiles (rows past
    the end re-read the last row of A), so the schedule's register tile needs no bounds check;
    only the copy into `out` (where the epilogue lands after fusion) is predicated.
    """
    i64 = lambda v: tirx.IntImm("int64", v)
    a = te.placeholder(list(a_shape), dtype, "A")
    panels = -(-n // nr)
    w = te.placeholder((i64(panels), i64(k), i64(nr)), dtype, "W")
    r = te.reduce_axis((i64(0), i64(k)), "k")
    lead, rows = list(a_shape[:-2]), a_shape[-2]
    rows_pad = (rows + i64(mr - 1)) // i64(mr) * i64(mr)
    last = rows - i64(1)

    def body(*idx):
        *b, i, j = idx
        return te.sum(a[(*b, te.min(i, last), r)] * w[j // i64(nr), r, j % i64(nr)], axis=r)

    acc = te.compute((*lead, rows_pad, i64(panels * nr)), body, name=BLOCK)
    out = te.compute((*a_shape[:-1], i64(n)), lambda *idx: acc[idx], name=BLOCK + "_out")
    func = te.create_prim_func([a, w, out]).without_attr("global_symbol")
    return func.with_attr({"op_pattern": 4, "tirx.noalias": True})


def _match_const_matmul(func: tirx.PrimFunc):
    """(A buffer, B is [K, N] (True) or [N, K] (False)) for a plain legalized x @ B, else None."""
    if func.attrs is not None and "tirx.is_scheduled" in func.attrs:
        return None  # a hand-written kernel (e.g. kernels/binary_gemm.py), not a legalized matmul
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(get_root_block(sch))
    if len(blocks) != 1 or len(func.params) != 3:
        return None
    blk = sch.get(blocks[0])
    ivs = list(blk.iter_vars)
    red = [iv.var for iv in ivs if iv.iter_type == tirx.IterVar.CommReduce]
    if len(red) != 1 or len(blk.reads) != 2 or len(blk.writes) != 1 or blk.init is None:
        return None
    kvar = red[0]
    a_buf, b_buf, c_buf = func.params  # TVM 0.27: params are the buffers
    ra, rb, wc = blk.reads[0], blk.reads[1], blk.writes[0]
    if not (ra.source.same_as(a_buf) and rb.source.same_as(b_buf) and wc.source.same_as(c_buf)):
        return None
    if str(c_buf.dtype) != "float32" or str(a_buf.dtype) != "float32" or len(b_buf.shape) != 2:
        return None
    a_idx = [r.min for r in ra.region]
    c_idx = [r.min for r in wc.region]
    b_idx = [r.min for r in rb.region]
    if len(a_idx) != len(c_idx) or len(a_idx) < 2 or not a_idx[-1].same_as(kvar):
        return None
    if not all(x.same_as(y) for x, y in zip(a_idx[:-1], c_idx[:-1])):
        return None
    if any(not isinstance(s, tirx.IntImm) for s in b_buf.shape):
        return None
    if b_idx[0].same_as(kvar) and b_idx[1].same_as(c_idx[-1]):
        kn = True
    elif b_idx[1].same_as(kvar) and b_idx[0].same_as(c_idx[-1]):
        kn = False
    else:
        return None
    # the body must be C += A * B (not e.g. a max-plus product)
    body = blk.body
    if not (isinstance(body, tirx.BufferStore) and isinstance(body.value, tirx.Add)
            and isinstance(body.value.b, tirx.Mul)):
        return None
    return a_buf, kn


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, params: CpuParams):
        super().__init__(mod)
        self.mod_ = mod
        self.params = params
        self.cache: dict = {}
        self.count = 0

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if call.op != tvm.ir.Op.get("relax.call_tir") or len(call.args) != 2:
            return call
        gv, args = call.args
        if not isinstance(gv, relax.GlobalVar) or len(args.fields) != 2:
            return call
        x, w = args.fields
        if not isinstance(w, tvm.ir.expr.Constant):
            return call
        func = self.mod_[gv]
        if not isinstance(func, tirx.PrimFunc):
            return call
        match = _match_const_matmul(func)
        if match is None:
            return call
        a_buf, kn = match
        w_np = w.value.numpy()
        w_kn = w_np if kn else w_np.T
        k, n = w_kn.shape
        nr = panel_width(self.params, n)
        rows = a_buf.shape[-2]
        mr = row_tile(self.params, nr, int(rows) if isinstance(rows, tirx.IntImm) else None)
        key = (tuple(str(s) for s in a_buf.shape), k, n, nr, mr)
        if key not in self.cache:
            new_func = packed_matmul_func(a_buf.shape, k, n, nr, mr, "float32")
            self.cache[key] = self.builder_.add_func(new_func, f"packed_matmul{len(self.cache)}")
        self.count += 1
        packed = relax.const(pack_weight(w_kn, nr))
        return relax.call_tir(self.cache[key], [x, packed], call.ty_args[0])


def prepack_weights(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Rewrite every constant-weight GEMM to read a weight packed now (see the module doc)."""
    if target.kind.name != "llvm":
        return mod
    packer = _Packer(mod, cpu_params(target))
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            packer.builder_.update_func(gv, packer.visit_expr(func))
    if packer.count == 0:
        return mod
    return relax.transform.DeadCodeElimination()(packer.builder_.finalize())


class PackedMatmul:
    """Schedule rule for functions built around a `T_packed_matmul` block (plus epilogue)."""

    name = "packed_matmul"

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, params: CpuParams):
        sch = s_tir.Schedule(func)
        blocks = [b for b in sch.get_child_blocks(get_root_block(sch))
                  if sch.get(b).name_hint == BLOCK]
        if len(blocks) != 1:
            return None
        blk = blocks[0]
        w_buf = sch.get(blk).reads[1].source
        panels, k_ext, nr = (int(x) for x in w_buf.shape)
        # the copy out of the accumulator and the epilogue become one write-back stage
        inline_epilogue_intermediates(sch, blk)
        (out,) = sch.get_consumers(blk)
        sch.set_scope(blk, 0, TILE_SCOPE)
        *lead, i, j, k = sch.get_loops(blk)
        i_ext = static_extent(sch, i)
        # the same mr prepack_weights padded the accumulator to (same target parameters)
        rows_dom = sch.get(out).iter_vars[-2].dom.extent
        mr = row_tile(params, nr, int(rows_dom) if isinstance(rows_dom, tirx.IntImm) else None)
        if i_ext is not None and i_ext % mr:
            return None
        i0, i1 = sch.split(i, [None, mr])
        j0, j1 = sch.split(j, [None, nr])
        rows = static_extent(sch, i0)
        lead_ext = [static_extent(sch, lp) for lp in lead]
        if panels >= 2 * max(2, params.cores) or (rows == 1 and not lead):
            sch.reorder(*lead, j0, i0, k, i1, j1)
            tile_loop, candidates = i0, [*lead, j0]
        else:
            sch.reorder(*lead, i0, j0, k, i1, j1)
            tile_loop, candidates = j0, [*lead, i0]
        sch.reverse_compute_at(out, tile_loop)
        sch.unroll(i1)
        sch.vectorize(j1)
        static = [e for e in lead_ext if e is not None]
        work_known = len(static) == len(lead_ext) and rows is not None
        macs = (rows or 1) * mr * panels * nr * k_ext
        for e in static:
            macs *= e
        if not work_known or macs >= PARALLEL_MIN_MACS:
            sch.parallel(  # before decompose_reduction: TVM refuses it after
                sch.fuse(*candidates) if len(candidates) > 1 else candidates[0])
        sch.decompose_reduction(blk, k)
        out_loops = sch.get_loops(out)[len(candidates) + 1:]
        if out_loops:
            sch.vectorize(out_loops[-1])
        schedule_leftover_stages(sch, params, blk, out)
        return sch
