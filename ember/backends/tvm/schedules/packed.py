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
    inline_consumers,
    inline_epilogue_intermediates,
    schedule_leftover_stages,
    static_extent,
)

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


def packed_matmul_func(a_shape, k: int, n: int, nr: int, dtype: str) -> tirx.PrimFunc:
    """out[..., j] = sum_k A[..., k] * Wp[j // nr, k, j % nr] for A of shape `a_shape`."""
    a = te.placeholder(list(a_shape), dtype, "A")
    w = te.placeholder((-(-n // nr), k, nr), dtype, "W")
    r = te.reduce_axis((0, k), "k")

    def body(*idx):
        j = idx[-1]
        return te.sum(a[(*idx[:-1], r)] * w[j // nr, r, j % nr], axis=r)

    out = te.compute((*a_shape[:-1], n), body, name=BLOCK)
    func = te.create_prim_func([a, w, out]).without_attr("global_symbol")
    return func.with_attr({"op_pattern": 4, "tirx.noalias": True})


def _match_const_matmul(func: tirx.PrimFunc):
    """(A buffer, B is [K, N] (True) or [N, K] (False)) for a plain legalized x @ B, else None."""
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
    if len(a_idx) != len(c_idx) or not a_idx[-1].same_as(kvar):
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

    def visit_call_(self, call):  # noqa: D102 - relax visitor hook
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
        key = (tuple(str(s) for s in a_buf.shape), k, n, nr)
        if key not in self.cache:
            new_func = packed_matmul_func(a_buf.shape, k, n, nr, "float32")
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
                  if sch.get(b).name_hint.startswith(BLOCK)]
        if len(blocks) != 1:
            return None
        blk = blocks[0]
        stmt = sch.get(blk)
        w_buf = stmt.reads[1].source
        nr = int(w_buf.shape[2])
        k_ext = int(w_buf.shape[1])
        inline_epilogue_intermediates(sch, blk)
        acc = sch.cache_write(blk, 0, "local")
        inline_consumers(sch, acc)
        loops = sch.get_loops(blk)
        rows, j, k = loops[:-2], loops[-2], loops[-1]
        m = (sch.fuse(*rows) if len(rows) > 1 else rows[0]) if rows else None
        m_ext = static_extent(sch, m) if m is not None else 1
        n_ext = static_extent(sch, j) or nr
        lanes = params.lanes("float32")
        vectors = max(1, nr // lanes)
        mr = max(1, min(8, (params.vector_regs - vectors - 1) // vectors))
        if m_ext is not None:
            mr = min(mr, m_ext)
        j0, j1 = sch.split(j, [None, nr])
        if m is not None:
            m0, m1 = sch.split(m, [None, mr])
            sch.reorder(j0, m0, k, m1, j1)
            sch.reverse_compute_at(acc, m0)
            sch.unroll(m1)
            outer = [j0, m0]
        else:
            sch.reorder(j0, k, j1)
            sch.reverse_compute_at(acc, j0)
            outer = [j0]
        sch.vectorize(j1)
        # a symbolic batch counts as large; small static problems stay on one thread
        if m_ext is None or m_ext * n_ext * k_ext >= PARALLEL_MIN_MACS:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
        sch.decompose_reduction(blk, k)
        sch.vectorize(sch.get_loops(acc)[-1])
        schedule_leftover_stages(sch, params, blk)
        return sch
