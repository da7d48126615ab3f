"""Fused attention on CPU: softmax(q @ k^T * scale + mask) @ v without the [.., L, S] scores.

The composite lowering (matmul, scale, softmax, matmul) writes the score tensor to memory and
reads it back three times, pays one kernel launch (and several parallel launches) per step, and
its softmax calls libm `expf` once per element (LLVM scalarizes `llvm.exp.v8f32`). Here one
parallel item owns 8 queries of one (batch, head) and keeps everything in registers / L1:

- queries in lanes: the item's 8 query rows, scaled, are transposed into QT[E, 8]; a score
  vector for key j is sum_e broadcast(k[j, e]) * QT[e, :] (E FMAs, no transposed K, no
  horizontal sums), so the row softmax of 8 queries is 8-lane vertical max / exp / sum;
- flash-style over key blocks of KEY_BLOCK keys (the score tile [KEY_BLOCK, 8] stays in L1 for
  any sequence length): running max m, running sum l and the [8, Ev] output accumulator are
  rescaled by exp(m_old - m_new) when a block raises the max;
- exp is lowering/fastmath.py's Cephes polynomial on float32x8 (1 ulp; 0 below -87.3, so
  -inf -> 0);
- p @ v: for each key, its probability for each of the 8 queries times the value row, Ev
  lanes at a time, into 8 row accumulators.

Semantics follow torch's SDPA (and ember's reference): a row whose every key is masked
(all -inf) gives 0 (its max stays -inf, so nothing is added and l = 0); the shift used for a
row is its max, or 0 while that max is -inf (so a finite but huge negative additive mask, e.g.
finfo.min, still gives a softmax, as torch does). Causal is torch's top-left aligned mask
(key j <= query i). Padded query lanes (L not a multiple of 8) compute on zeros and are not
stored.

Small work runs serially (one pool launch costs more than the work at batch 1, see
schedules/threads.py); a symbolic batch gets both loops behind a runtime test of its size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

__all__ = ["AttentionPlan", "MaskPlan", "attention_kernel", "attention_work"]

LANES = 8  # float32 lanes of an AVX2 register: the queries one item owns
# keys per score tile: [28, 8] f32 = 896 B, under TVM's stack-alloca limit (< 1 KiB; a 32-key
# tile went to the workspace allocator: 8 x 256 x 256 x 64 took 5.1 ms vs 3.5 ms, one thread)
KEY_BLOCK = 28
KEYS_AT_ONCE = 4  # score vectors computed together (independent FMA chains)
NEG_INF = float("-inf")
# The item's tiles are declared "global": TVM 0.27 lowers any CPU "local" allocation to a
# TVMBackendAllocWorkspace/Free call pair per item (8 tiles per item), a "global" one under
# 1 KiB to a stack array.
SCRATCH = "global"


@dataclass(frozen=True)
class MaskPlan:
    """An explicit mask flattened to [batch, rows, cols]: rows is 1 or L, cols 1 or S.

    `terms` map the flat (batch, head, ...) index n of the output to the mask's flat batch
    index: sum of (n // divisor % modulus) * stride (modulus None: no modulo needed).
    `batch` is None when the mask's leading dim is symbolic.
    """

    additive: bool
    batch: int | None
    rows: int
    cols: int
    terms: tuple[tuple[int, int | None, int], ...] = ()


@dataclass(frozen=True)
class AttentionPlan:
    """Static sizes of one fused attention; `batch` None = symbolic flat batch."""

    batch: int | None
    q_len: int
    kv_len: int
    head_dim: int
    v_dim: int
    scale: float
    causal: bool = False
    mask: MaskPlan | None = None
    heads_inner: int = 0  # H > 0: q/k/v come as [N/H, L, H, E] (before a heads transpose)

    @property
    def query_tiles(self) -> int:
        return -(-self.q_len // LANES)

    @property
    def key_block(self) -> int:
        return min(self.kv_len, KEY_BLOCK)

    @property
    def key_blocks(self) -> int:
        return -(-self.kv_len // self.key_block)


def attention_work(plan: AttentionPlan, batch: int) -> int:
    """Multiply-adds and element writes for `batch` flat rows (the measure threads.py uses)."""
    per_item = LANES * plan.kv_len * (plan.head_dim + plan.v_dim + 4)
    return batch * plan.query_tiles * per_item


def _ramp(base, width: int):
    return T.ramp(base, 1, width) if width > 1 else base


def _bcast(value, width: int):
    return T.broadcast(value, width) if width > 1 else value


def _vec_width(n: int) -> int:
    for w in (LANES, 4, 2):
        if n % w == 0:
            return w
    return 1


def fast_exp(x):
    """exp of a float32x8 whose lanes are <= 0 or -inf (0 below -87.3): lowering/fastmath.py's
    polynomial, the variant without the overflow clamp. Imported here, not at the top: the
    lowering package imports this module."""
    from ..lowering.fastmath import fast_exp as shared_fast_exp

    return shared_fast_exp(x, nonpositive=True)


@functools.lru_cache(maxsize=64)  # TVMScript parsing costs ~0.2-0.5 s; layers repeat shapes
def attention_kernel(plan: AttentionPlan, parallel: bool | None) -> tirx.PrimFunc:
    """PrimFunc (q [N, L, E], k [N, S, E], v [N, S, Ev], [mask [Nm * Lm * Sm]], out [N, L, Ev]).

    `parallel`: True / False picks the loop; None (symbolic batch) puts both behind
    `if N * work < threshold` (see `threads.PARALLEL_MIN_WORK`)."""
    from ..schedules.threads import PARALLEL_MIN_WORK

    ln, s, e, ev = plan.q_len, plan.kv_len, plan.head_dim, plan.v_dim
    qt, kb, nkb = plan.query_tiles, plan.key_block, plan.key_blocks
    group = KEYS_AT_ONCE if e > 16 else 1  # short chains overlap anyway; no padded keys
    kb4 = -(-kb // group) * group
    w = LANES
    vw = _vec_width(ev)
    nv = ev // vw
    scale = float(plan.scale)
    mask = plan.mask
    causal = plan.causal
    per_batch_work = attention_work(plan, 1)
    r8 = T.ramp(0, 1, w)
    unroll_e = T.unroll if e <= 64 else T.serial
    fneg = T.broadcast(T.float32(NEG_INF), w)
    fzero = T.broadcast(T.float32(0.0), w)

    def blocks(l0):
        """Key blocks an item visits: causal items stop at the block of their last query."""
        if causal:
            return T.min(nkb, T.min(l0 + (w - 1), ln - 1) // kb + 1)
        return nkb

    def at(X, b, row, col):
        """X[b, row, col] of a flat [N, rows, cols] input, or its [N/H, rows, H, cols] form."""
        if plan.heads_inner:
            return X[b // plan.heads_inner, row, b % plan.heads_inner, col]
        return X[b, row, col]

    def mask_batch(b):
        idx = 0
        for div, mod, stride in mask.terms:
            t = b // div if div != 1 else b
            if mod is not None:
                t = t % mod
            idx = idx + t * stride
        return idx

    def masked(score, M, b, l0, j):
        """The 8 scores of key j for queries l0..l0+7 with the causal / explicit mask."""
        rows = T.min(tirx.Ramp(l0, 1, w), T.broadcast(l0 * 0 + (ln - 1), w))
        if causal:
            return T.Select(T.broadcast(j, w) <= rows, score, fneg)
        if mask is None:
            return score
        base = mask_batch(b) * (mask.rows * mask.cols) + (j if mask.cols > 1 else 0)
        if mask.rows > 1:  # a gather: the 8 queries' rows of key j
            vals = M[T.broadcast(base, w) + rows * T.broadcast(l0 * 0 + mask.cols, w)]
        else:
            vals = M[T.broadcast(base, w)]
        if mask.additive:
            return score + vals
        return T.Select(vals, score, fneg)

    @T.macro
    def item_body(Q, K, V, M, O, it):
        b = T.meta_var(it // qt)
        l0 = T.meta_var(it % qt * w)
        qtile = T.alloc_buffer((e, w), "float32", scope=SCRATCH)
        st = T.alloc_buffer((kb4, w), "float32", scope=SCRATCH)
        mx = T.alloc_buffer((w,), "float32", scope=SCRATCH)
        mnew = T.alloc_buffer((w,), "float32", scope=SCRATCH)
        corr = T.alloc_buffer((w,), "float32", scope=SCRATCH)
        shift = T.alloc_buffer((w,), "float32", scope=SCRATCH)
        lsum = T.alloc_buffer((w,), "float32", scope=SCRATCH)
        acc = T.alloc_buffer((w, ev), "float32", scope=SCRATCH)
        for ee in range(e):
            for i in T.vectorized(w):
                qtile[ee, i] = T.if_then_else(l0 + i < ln,
                                              at(Q, b, T.min(l0 + i, ln - 1), ee)
                                              * T.float32(scale),
                                              T.float32(0.0))
        mx[r8] = fneg
        lsum[r8] = fzero
        for i in range(w):
            for v in T.unroll(nv):
                acc[i, _ramp(v * vw, vw)] = _bcast(T.float32(0.0), vw)
        for blk in range(blocks(l0)):
            nj = T.meta_var(T.min(kb, s - blk * kb))
            # scores, KEYS_AT_ONCE keys at a time: independent FMA chains share each QT load;
            # keys past S read row S-1 (in bounds) and their rows are never used
            for jg in range((nj + group - 1) // group):
                for t in T.unroll(group):
                    st[jg * group + t, r8] = fzero
                for ee in unroll_e(e):
                    for t in T.unroll(group):
                        st[jg * group + t, r8] = st[jg * group + t, r8] \
                            + T.broadcast(at(K, b, T.min(blk * kb + jg * group + t, s - 1),
                                             ee), w) * qtile[ee, r8]
                for t in T.unroll(group):
                    st[jg * group + t, r8] = masked(
                        st[jg * group + t, r8], M, b, l0,
                        T.min(blk * kb + jg * group + t, s - 1))
            mnew[r8] = mx[r8]
            for j in range(nj):
                mnew[r8] = T.max(mnew[r8], st[j, r8])
            corr[r8] = T.Select(mx[r8] == fneg, fzero, fast_exp(mx[r8] - mnew[r8]))
            shift[r8] = T.Select(mnew[r8] == fneg, fzero, mnew[r8])
            mx[r8] = mnew[r8]
            lsum[r8] = lsum[r8] * corr[r8]
            for j in range(nj):
                st[j, r8] = fast_exp(st[j, r8] - shift[r8])
                lsum[r8] = lsum[r8] + st[j, r8]
            # p @ v one Ev chunk at a time: its 8 query accumulators stay in registers
            for v in range(nv):
                if nkb > 1:
                    for i in T.unroll(w):
                        acc[i, _ramp(v * vw, vw)] = acc[i, _ramp(v * vw, vw)] \
                            * _bcast(corr[i], vw)
                for j in range(nj):
                    for i in T.unroll(w):
                        acc[i, _ramp(v * vw, vw)] = acc[i, _ramp(v * vw, vw)] \
                            + _bcast(st[j, i], vw) * at(V, b, blk * kb + j, _ramp(v * vw, vw))
        for i in range(w):
            if l0 + i < ln:
                for v in T.unroll(nv):
                    O[b, l0 + i, _ramp(v * vw, vw)] = acc[i, _ramp(v * vw, vw)] * _bcast(
                        T.Select(lsum[i] == T.float32(0.0), T.float32(0.0),
                                 T.float32(1.0) / lsum[i]), vw)

    hi = plan.heads_inner
    if hi:  # [B, L, H, E] inputs: B (a var when symbolic) binds from q's shape, N = B * H
        outer = tirx.Var("b", "int64") if plan.batch is None else plan.batch // hi
        nb = outer * hi
        q_shape, k_shape, v_shape = ((outer, n, hi, d) for n, d in ((ln, e), (s, e), (s, ev)))
    else:
        nb = tirx.Var("n", "int64") if plan.batch is None else plan.batch
        q_shape, k_shape, v_shape = (nb, ln, e), (nb, s, e), (nb, s, ev)

    @T.macro
    def all_items(Q, K, V, M, O):
        if parallel is None:
            if nb * per_batch_work < PARALLEL_MIN_WORK:
                for it in T.serial(nb * qt):
                    item_body(Q, K, V, M, O, it)
            else:
                for it in T.parallel(nb * qt):
                    item_body(Q, K, V, M, O, it)
        elif parallel:
            for it in T.parallel(nb * qt):
                item_body(Q, K, V, M, O, it)
        else:
            for it in T.serial(nb * qt):
                item_body(Q, K, V, M, O, it)

    if mask is None:
        @T.prim_func(private=True)
        def attention(q: T.handle, k: T.handle, v: T.handle, o: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            Q = T.match_buffer(q, q_shape, "float32")
            K = T.match_buffer(k, k_shape, "float32")
            V = T.match_buffer(v, v_shape, "float32")
            O = T.match_buffer(o, (nb, ln, ev), "float32")
            all_items(Q, K, V, None, O)

        return attention

    # flat [batch * rows * cols]: a TIR vector access may only be vector in its last index
    m_len = tirx.Var("nm", "int64") if mask.batch is None else \
        mask.batch * mask.rows * mask.cols
    mdtype = "float32" if mask.additive else "bool"

    @T.prim_func(private=True)
    def attention_masked(q: T.handle, k: T.handle, v: T.handle, m: T.handle, o: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        Q = T.match_buffer(q, q_shape, "float32")
        K = T.match_buffer(k, k_shape, "float32")
        V = T.match_buffer(v, v_shape, "float32")
        M = T.match_buffer(m, (m_len,), mdtype)
        O = T.match_buffer(o, (nb, ln, ev), "float32")
        all_items(Q, K, V, M, O)

    return attention_masked
