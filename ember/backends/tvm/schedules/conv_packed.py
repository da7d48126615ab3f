"""conv2d (NCHW) against a constant weight: im2col tiles times a weight packed at compile time.

Why not the direct NCHW schedule (conv2d.py) for these: it vectorizes the output width, and the
small feature maps of CNN tails are narrower than a vector (digits_cnn's 4x4 maps ran at half
width), and its 8 accumulators, each fed by one scalar weight load, are load-bound. Here the
convolution is a GEMM per image, out[oc, p] = sum_k W[oc, k] * col[k, p], over the flattened
output pixels p = y * OW + x, which is also the contiguous axis of an NCHW output, so:

- `packed_conv2d_func` (called by the conv2d lowering) reads the weight as panels
  Wp[oc // mr, k, oc % mr] packed once with numpy (`pack_conv_weight`, zero-padded to whole
  panels), and builds `col` (padding, stride and dilation resolved there, zero outside the
  image) for a tile of nr pixels at a time;
- `PackedConv2d`, the schedule rule, keeps an mr x nr accumulator tile in registers (nr/lanes
  vectors per weight broadcast), and runs images in parallel: only the batch loop is symbolic in
  a dynamic-batch build, every loop inside it is static.

Groups are an outer loop over weight panels (a depthwise conv is mr = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx
from tvm.s_tir.dlight.analysis import get_root_block

from .common import (
    CpuParams,
    inline_epilogue_intermediates,
    schedule_leftover_stages,
    static_extent,
)

# The register tile is a "global" buffer: TVM 0.27 turns a CPU "local" allocation into a
# TVMBackendAllocWorkspace/Free call pair where it is declared (per tile here), a "global"
# one under 1 KiB into a stack array that LLVM keeps in registers.
TILE_SCOPE = "global"

BLOCK = "T_packed_conv"
ATTR = "ember.packed_conv"  # the ConvShape and ConvTile, to rebuild the kernel for a batch
COL = "conv_col"
PAD = "conv_pad"
MAX_PIXEL_PADDING = 1.5  # padded / real output pixels, beyond which the direct rule is used


@dataclass(frozen=True)
class ConvShape:
    """A conv2d's static geometry (the batch may be symbolic; nothing else may)."""

    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    groups: int

    @property
    def out_hw(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        t, left, b, r = self.padding
        return ((self.height + t + b - dh * (kh - 1) - 1) // sh + 1,
                (self.width + left + r - dw * (kw - 1) - 1) // sw + 1)

    @property
    def pixels(self) -> int:
        oh, ow = self.out_hw
        return oh * ow

    @property
    def group_in(self) -> int:
        return self.in_channels // self.groups

    @property
    def group_out(self) -> int:
        return self.out_channels // self.groups

    @property
    def depth(self) -> int:  # K of the per-group GEMM
        return self.group_in * self.kernel[0] * self.kernel[1]


@dataclass(frozen=True)
class ConvTile:
    mr: int  # output channels per register tile (weight broadcasts)
    nr: int  # output pixels per register tile (a multiple of the vector lanes)

    def panels(self, shape: ConvShape) -> int:
        """Weight panels per group."""
        return -(-shape.group_out // self.mr)

    def padded_pixels(self, shape: ConvShape) -> int:
        """Pixels rounded up to whole tiles and whole output rows: the write-back reads the
        accumulator as [rows, OW], and TVM infers a wrong (too small) column range for a
        tile-padded pixel count that ends mid-row (seen: 5x6 maps wrote 2 columns of 6)."""
        step = math.lcm(self.nr, shape.out_hw[1])
        return -(-shape.pixels // step) * step


def choose_tile(shape: ConvShape, params: CpuParams) -> ConvTile | None:
    """nr: two vectors of pixels when the map has them, else one; mr: as many output channels as
    the registers hold beside nr/lanes accumulators each, preferring a divisor of the group's
    channels (no zero panel rows) down to half that many. None when padding the pixels to
    whole tiles and rows would add over half the work (e.g. a 5x6 map: 30 -> 48 pixels)."""
    lanes = params.lanes("float32")
    for nr in ([2 * lanes] if shape.pixels >= 2 * lanes else []) + [lanes]:
        if ConvTile(1, nr).padded_pixels(shape) <= MAX_PIXEL_PADDING * shape.pixels:
            break
    else:
        return None
    vectors = nr // lanes
    most = max(1, min(8, (params.vector_regs - vectors - 1) // vectors))
    most = min(most, shape.group_out)
    for mr in range(most, max(1, most // 2) - 1, -1):
        if shape.group_out % mr == 0:
            return ConvTile(mr, nr)
    return ConvTile(most, nr)


def pack_conv_weight(w: np.ndarray, shape: ConvShape, tile: ConvTile) -> np.ndarray:
    """OIHW weight -> [groups * panels, K, mr] panels (zero rows past each group's channels)."""
    g, og, k, mr = shape.groups, shape.group_out, shape.depth, tile.mr
    panels = tile.panels(shape)
    flat = w.reshape(g, og, k)
    padded = np.zeros((g, panels * mr, k), w.dtype)
    padded[:, :og] = flat
    packed = padded.reshape(g, panels, mr, k).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(packed.reshape(g * panels, k, mr))


def packed_conv2d_func(batch: int | None, shape: ConvShape, tile: ConvTile,
                       dtype: str) -> tirx.PrimFunc:
    """(X [batch, C, H, W], Wp) -> Y [batch, O, OH, OW] (batch None: symbolic); see the module
    doc for the stages."""
    i64 = lambda v: tirx.IntImm("int64", v)
    (kh, kw), (sh, sw), (dh, dw) = shape.kernel, shape.stride, shape.dilation
    top, left, bottom, right = shape.padding
    oh, ow = shape.out_hw
    h, w = shape.height, shape.width
    mr = tile.mr
    panels, depth = tile.panels(shape), shape.depth
    pad_pixels = tile.padded_pixels(shape)
    gin, gout = shape.group_in, shape.group_out

    # a symbolic batch gets a variable of the kernel's own (the caller's belongs to its Relax
    # function; FuseTIR maps it per call site, which also specializes the batch-1 twin)
    batch = i64(batch) if isinstance(batch, int) else tirx.Var("batch", "int64")
    x = te.placeholder((batch, i64(shape.in_channels), i64(h), i64(w)), dtype, "X")
    wp = te.placeholder((i64(shape.groups * panels), i64(depth), i64(mr)), dtype, "W")
    src = x
    if any(shape.padding):  # a zero-padded copy, so col rows are plain (vector) loads
        hp, wpd = h + top + bottom, w + left + right

        def pad_value(n, c, i, j):
            inside = tirx.all(i >= i64(top), i < i64(top + h), j >= i64(left), j < i64(left + w))
            safe = x[n, c, tirx.max(tirx.min(i - i64(top), i64(h - 1)), i64(0)),
                     tirx.max(tirx.min(j - i64(left), i64(w - 1)), i64(0))]
            return tirx.if_then_else(inside, safe, tirx.const(0, dtype))

        src = te.compute((batch, i64(shape.in_channels), i64(hp), i64(wpd)), pad_value, name=PAD)
    rows = -(-pad_pixels // ow)  # col keeps (row, column): the GEMM's pixel index p is
    # row * OW + column, so a tile of col is contiguous in p, and no div/mod is vectorized

    def col_value(n, g, k, y, xo):
        c, r = k // i64(kh * kw), k % i64(kh * kw)
        ry, rx = r // i64(kw), r % i64(kw)
        yc = tirx.min(y, i64(oh - 1))  # rows past the map repeat the last one
        return src[n, g * i64(gin) + c, yc * i64(sh) + ry * i64(dh), xo * i64(sw) + rx * i64(dw)]

    col = te.compute((batch, i64(shape.groups), i64(depth), i64(rows), i64(ow)), col_value,
                     name=COL)
    k = te.reduce_axis((i64(0), i64(depth)), "k")

    def acc_value(n, cc, p):
        panel = cc // i64(mr)
        return te.sum(wp[panel, k, cc % i64(mr)]
                      * col[n, panel // i64(panels), k, p // i64(ow), p % i64(ow)], axis=k)

    acc = te.compute((batch, i64(shape.groups * panels * mr), i64(pad_pixels)), acc_value,
                     name=BLOCK)

    def out_value(n, o, y, xo):
        cc = o // i64(gout) * i64(panels * mr) + o % i64(gout) if shape.groups > 1 else o
        return acc[n, cc, y * i64(ow) + xo]

    out = te.compute((batch, i64(shape.out_channels), i64(oh), i64(ow)), out_value,
                     name=BLOCK + "_out")
    func = te.create_prim_func([x, wp, out]).without_attr("global_symbol")
    return func.with_attr({"op_pattern": 4, "tirx.noalias": True,
                           ATTR: _encode(shape, tile)})


def _encode(shape: ConvShape, tile: ConvTile) -> list[int]:
    return [shape.in_channels, shape.out_channels, shape.height, shape.width, *shape.kernel,
            *shape.stride, *shape.padding, *shape.dilation, shape.groups, tile.mr, tile.nr]


def _decode(values) -> tuple[ConvShape, ConvTile]:
    v = [int(x) for x in values]
    shape = ConvShape(v[0], v[1], v[2], v[3], (v[4], v[5]), (v[6], v[7]),
                      (v[8], v[9], v[10], v[11]), (v[12], v[13]), v[14])
    return shape, ConvTile(v[15], v[16])


@relax.expr_functor.mutator
class _BatchSpecializer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod
        self.cache: dict = {}

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if call.op != tvm.ir.Op.get("relax.call_tir"):
            return call
        gv, args = call.args
        func = self.mod_[gv] if isinstance(gv, relax.GlobalVar) else None
        if not isinstance(func, tirx.PrimFunc) or func.attrs is None or ATTR not in func.attrs:
            return call
        batch = args.fields[0].ty.shape.values[0]
        if not isinstance(batch, tirx.IntImm) or isinstance(func.params[0].shape[0], tirx.IntImm):
            return call
        key = (gv.name_hint, int(batch))
        if key not in self.cache:
            shape, tile = _decode(func.attrs[ATTR])
            new = packed_conv2d_func(int(batch), shape, tile, str(func.params[0].dtype))
            self.cache[key] = self.builder_.add_func(new, f"{gv.name_hint}_b{int(batch)}")
        return relax.call_tir(self.cache[key], args, call.ty_args[0])


def specialize_batches(mod: tvm.IRModule) -> tvm.IRModule:
    """Give each call of a symbolic-batch packed conv whose batch is static (the batch-1 twin
    of a dynamic-batch model, lower.specialize_batch1) a kernel built for that batch: FuseTIR
    will not fuse a symbolic kernel with the static epilogue that LegalizeOps made there."""
    fixer = _BatchSpecializer(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            fixer.builder_.update_func(gv, fixer.visit_expr(func))
    if not fixer.cache:
        return mod
    return relax.transform.DeadCodeElimination()(fixer.builder_.finalize())


class PackedConv2d:
    """Schedule rule for functions built around a `T_packed_conv` block (plus epilogue)."""

    name = "packed_conv2d"
    # a symbolic batch stays parallel: the batch-1 call has its own static kernel
    # (specialize_batches), and a serial/parallel branch would allocate col per batch
    static_threading_only = True

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, params: CpuParams):
        sch = s_tir.Schedule(func)
        blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(get_root_block(sch))}
        if BLOCK not in blocks or COL not in blocks:
            return None
        blk, col = blocks[BLOCK], blocks[COL]
        mr = int(sch.get(blk).reads[0].source.shape[-1])
        inline_epilogue_intermediates(sch, blk)
        (out,) = sch.get_consumers(blk)
        n, cc, p, k = sch.get_loops(blk)
        nr = _tile_pixels(sch, p, params)
        p0, p1 = sch.split(p, [None, nr])
        c0, c1 = sch.split(cc, [None, mr])
        sch.reorder(n, p0, c0, k, c1, p1)
        tile = sch.cache_write(blk, 0, TILE_SCOPE)
        sch.reverse_compute_at(tile, c0)
        sch.compute_at(col, p0)
        if PAD in blocks:
            sch.compute_at(blocks[PAD], n)
            _vectorize_inner(sch, blocks[PAD], params, skip=1)
        sch.reverse_compute_at(out, n)
        sch.unroll(c1)
        sch.vectorize(p1)
        sch.vectorize(sch.get_loops(tile)[-1])
        _vectorize_inner(sch, col, params, skip=2)
        sch.parallel(n)  # threads.choose_threading drops this where the work is small
        sch.decompose_reduction(blk, k)
        _vectorize_inner(sch, out, params, skip=1)
        schedule_leftover_stages(sch, params, blk, out, tile, col, *(
            [blocks[PAD]] if PAD in blocks else []))
        return sch


def _vectorize_inner(sch: s_tir.Schedule, block, params: CpuParams, skip: int) -> None:
    """Vectorize the innermost loop of `block` (split to the vector width if longer), unless
    it is one of the first `skip` loops (those it was computed at)."""
    loops = sch.get_loops(block)[skip:]
    if not loops:
        return
    last = loops[-1]
    ext = static_extent(sch, last) or 1
    lanes = params.lanes("float32")
    if ext > lanes:
        _, last = sch.split(last, [None, lanes])
    if ext > 1:
        sch.vectorize(last)


def _tile_pixels(sch: s_tir.Schedule, p, params: CpuParams) -> int:
    """nr: the padded pixel axis is a whole number of tiles (choose_tile made it so)."""
    ext = static_extent(sch, p) or 0
    lanes = params.lanes("float32")
    return 2 * lanes if ext % (2 * lanes) == 0 else lanes
