"""Lowerings for control ops. GRU/LSTM unroll over a static sequence length in Relax.

Why unroll: it reuses the fused dense kernels the rest of the model gets, and the input
projection of every step is hoisted into one matmul over the whole sequence, so only the small
[B, H] x [H, G*H] recurrent product and one gate kernel per step remain. The gate kernel takes
the step index as a tensor, so all steps share ONE PrimFunc (digits_gru: 14 s -> 1.2 s of
codegen). A symbolic sequence length cannot be unrolled; run `recognize_rnn` first to get a
`ctrl.scan`. A `ctrl.scan` with a static trip count <= CALL_MAX_STEPS and a dense body (linear,
matmul, ...) calls its body, lowered once as a Relax function, once per step (the body's GEMMs
get the scheduled kernels); any other scan lowers to one TIR loop (kernels/scan_loop.py), which
builds in the same time for any length. `ctrl.linear_scan` lowers to the parallel kernels of
kernels/scan.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax, te, tirx

from ....errors import LoweringError
from . import LowerContext, lowers, static_shape, tvm_dtype

R = relax.op



def _check(op, extra: dict) -> int:
    if extra.get("proj_size"):
        raise LoweringError(f"{op.kind} with proj_size={extra['proj_size']} is not lowered yet")
    x = op.inputs[0].type
    t = x.shape[1] if op.attrs.get("batch_first") else x.shape[0]
    if not isinstance(t, int):
        raise LoweringError(
            f"{op.kind} over symbolic sequence length {t!r} ({x}) cannot be unrolled; trace the "
            "model with a static sequence length, or run the recurrence passes to turn it into a "
            "scan")
    return t


def _rnn(cx: LowerContext, op, x, states: list, params: list, attrs: dict,
         cell: Callable) -> list:
    """Shared layer/direction loop: returns [y, *final states stacked over layers*dirs]."""
    num_layers, bidir = int(attrs.get("num_layers", 1)), bool(attrs.get("bidirectional", False))
    has_b, batch_first = bool(attrs.get("has_biases", True)), bool(attrs.get("batch_first", False))
    seq = _check(op, attrs)
    dirs = 2 if bidir else 1
    per = 4 if has_b else 2
    if len(params) != num_layers * dirs * per:
        raise LoweringError(f"{op.kind}: expected {num_layers * dirs * per} weight tensors for "
                            f"{num_layers} layer(s) x {dirs} direction(s), got {len(params)}")
    inp = cx.emit(R.permute_dims(x, [1, 0, 2])) if batch_first else x
    finals: list[list] = [[] for _ in states]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = (layer * dirs + d) * per
            w_ih, w_hh = params[k], params[k + 1]
            b_ih, b_hh = (params[k + 2], params[k + 3]) if has_b else (None, None)
            gi = cx.emit(R.linear(inp, w_ih, b_ih))  # [T, B, gates*H]: all steps at once
            st = [cx.emit(R.squeeze(R.strided_slice(s, [0], [layer * dirs + d],
                                                    [layer * dirs + d + 1]), [0]))
                  for s in states]
            ys = [None] * seq
            for t in (range(seq - 1, -1, -1) if d else range(seq)):
                gh = cx.emit(R.linear(st[0], w_hh, b_hh))
                # `t` is a tensor argument, so every step calls the same cell kernel (one compile).
                step_t = cx.const(np.array([t]), "int64")
                out = cx.emit_te(cell, gi, gh, *st, step_t, primfunc_name_hint=f"{op.kind[5:]}_cell")
                st = [out] if len(st) == 1 else [cx.emit(relax.TupleGetItem(out, i))
                                                  for i in range(len(st))]
                ys[t] = st[0]
            outs.append(cx.emit(R.stack(ys, axis=0)))
            for f, s in zip(finals, st):
                f.append(s)
        inp = outs[0] if dirs == 1 else cx.emit(R.concat(outs, axis=-1))
    y = cx.emit(R.permute_dims(inp, [1, 0, 2])) if batch_first else inp
    return [y] + [R.stack(f, axis=0) for f in finals]


def _gru_cell(gi, gh, h, t):
    """One GRU step (torch gate order r, z, n) reading step t of the hoisted input projection."""
    b_, hid = h.shape

    def f(b, j):
        r = tirx.sigmoid(gi[t[0], b, j] + gh[b, j])
        z = tirx.sigmoid(gi[t[0], b, j + hid] + gh[b, j + hid])
        n = tirx.tanh(gi[t[0], b, j + 2 * hid] + r * gh[b, j + 2 * hid])
        return n + z * (h[b, j] - n)  # (1 - z) * n + z * h

    return te.compute((b_, hid), f, name="gru_cell")


def _lstm_cell(gi, gh, h, c, t):
    """One LSTM step (torch gate order i, f, g, o); returns (h', c')."""
    b_, hid = h.shape

    def gate(k, b, j):
        return gi[t[0], b, j + k * hid] + gh[b, j + k * hid]

    c_new = te.compute((b_, hid), lambda b, j: tirx.sigmoid(gate(1, b, j)) * c[b, j]
                       + tirx.sigmoid(gate(0, b, j)) * tirx.tanh(gate(2, b, j)), name="lstm_c")
    h_new = te.compute((b_, hid), lambda b, j: tirx.sigmoid(gate(3, b, j)) * tirx.tanh(c_new[b, j]),
                       name="lstm_h")
    return [h_new, c_new]


@lowers("ctrl.gru")
def _(cx, op, x, h0, params, **attrs):
    return _rnn(cx, op, x, [h0], list(params), attrs, _gru_cell)


@lowers("ctrl.lstm")
def _(cx, op, x, h0, c0, params, **attrs):
    return _rnn(cx, op, x, [h0, c0], list(params), attrs, _lstm_cell)


def _flat_rank0(cx, expr, t) -> relax.Expr:
    """Rank-0 tensors travel as [1] (the loop kernel indexes every buffer)."""
    return cx.emit(R.reshape(expr, [1])) if t.rank == 0 else expr


# A static scan of at most this many steps whose body holds a contraction (linear, matmul,
# conv, ...) calls the body as a Relax function once per step (see _scan_calls).
CALL_MAX_STEPS = 256


def scan_strategy(op) -> str:
    """"calls" (body as a Relax function, called per step) or "loop" (one TIR loop)."""
    from ..kernels.scan_loop import LOOP_CHEAP

    steps = op.inputs[op.attrs["num_carry"]].type.shape[0]
    if not isinstance(steps, int) or not 1 <= steps <= CALL_MAX_STEPS:
        return "loop"
    body = op.regions[0]
    return "calls" if any(o.kind not in LOOP_CHEAP for o in body.walk()) else "loop"


@lowers("ctrl.scan")
def _(cx, op, inputs, num_carry, num_xs, reverse):
    if scan_strategy(op) == "calls":
        return _scan_calls(cx, op, list(inputs), num_carry, num_xs, reverse)
    return _scan_loop(cx, op, inputs, num_carry, num_xs, reverse)


def _scan_calls(cx, op, inputs, num_carry, num_xs, reverse):
    """Static short scans with dense bodies: the body becomes ONE private Relax function, called
    once per step from the enclosing function (x_t = take(xs, t): one kernel for every t).

    Why: the body then goes through the normal pipeline (legalize, prepack, fuse, schedule), so
    its GEMMs run the tuned, parallel kernels of any other model, once per step, instead of the
    TIR loop's scalar triple loops (digits_flow sampler: ~100 ms -> a few ms per step). The body
    is compiled once whatever T is; the calls cost a few VM instructions per step. Invariants
    that are Relax constants (the weights) are bound inside the function, so constant-weight
    rewrites (prepack) see them and pack each weight once.
    """
    from ..lower import lower_ops

    body = op.regions[0]
    steps = op.inputs[num_carry].type.shape[0]
    first_inv = num_carry + num_xs
    sub = relax.BlockBuilder(cx.bb.get())  # same module: new PrimFuncs get unique names
    scx = LowerContext(sub)
    env, params, passed = {}, [], []
    for k, v in enumerate(body.inputs):
        if k >= first_inv and isinstance(inputs[k], tvm.ir.GenericConst):
            env[id(v)] = inputs[k]
            continue
        p = relax.Var(f"{v.name or 'in'}_{k}", scx.tensor_type(v.type))
        env[id(v)] = p
        params.append(p)
        passed.append(k)
    with sub.function("scan_body", params, private=True):
        with sub.dataflow():
            lower_ops(scx, body.ops, env)
            out = sub.emit_output(relax.Tuple([env[id(v)] for v in body.outputs]))
        gv = sub.emit_func_output(out)
    have = {g.name_hint for g in cx.bb.get().get_global_vars()}
    for g, f in sub.get().functions_items():
        if g.name_hint not in have:
            cx.bb.update_func(g, f)
    carries = list(inputs[:num_carry])
    ys: list[list] = [[None] * steps for _ in body.outputs[num_carry:]]
    for t in reversed(range(steps)) if reverse else range(steps):
        idx = cx.const(np.array(t, np.int64), "int64")
        now = [*carries, *[_row(cx, x, idx, t) for x in inputs[num_carry:first_inv]],
               *inputs[first_inv:]]
        call = cx.emit(relax.Call(gv, [now[k] for k in passed]))
        outs = [cx.emit(relax.TupleGetItem(call, i)) for i in range(len(body.outputs))]
        carries = outs[:num_carry]
        for j, y in enumerate(outs[num_carry:]):
            ys[j][t] = y
    return [*carries, *[cx.emit(R.stack(col, axis=0)) for col in ys]]


def _row(cx, x, idx, t: int):
    """Step t of a scanned input: sliced here when it is a constant (a sampler's coefficient
    table; FoldConstant would compile and run one kernel per step, ~0.2 s each), else a take."""
    if isinstance(x, tvm.ir.GenericConst):
        return relax.const(x.value.numpy()[t], x.ty.dtype)
    return cx.emit(R.take(x, idx, axis=0, mode="clip"))


def _scan_loop(cx, op, inputs, num_carry, num_xs, reverse):
    """Any other scan: one TIR PrimFunc with a serial step loop (kernels/scan_loop.py)."""
    from ..kernels.scan_loop import scan_loop_kernel

    body = op.regions[0]
    consts = [c.result for c in body.ops if c.kind == "const"]
    func, _ = scan_loop_kernel(body, num_carry, num_xs, reverse, consts)
    steps = op.inputs[num_carry].type.shape[0]
    args = []
    for k, (x, v) in enumerate(zip(inputs, op.inputs)):
        if num_carry <= k < num_carry + num_xs and v.type.rank == 1:
            args.append(cx.emit(R.reshape(x, [cx.dim(steps), 1])))
        else:
            args.append(_flat_rank0(cx, x, v.type))
    for c in consts:
        args.append(_flat_rank0(cx, cx.const(c.producer.attrs["value"], c.type.dtype), c.type))
    outs, finals = [], []
    for k, r in enumerate(op.results):
        shape = cx.shape(r.type)
        if r.type.rank == 0 or (k >= num_carry and r.type.rank == 1):
            shape = shape + [1]
        outs.append(relax.TensorType(shape, tvm_dtype(r.type.dtype)))
    gv = cx.bb.add_func(func, "scan_loop")
    call = cx.emit(relax.call_tir(gv, args, outs))
    for k, r in enumerate(op.results):
        v = call if len(outs) == 1 else cx.emit(relax.TupleGetItem(call, k))
        if r.type.rank == 0 or (k >= num_carry and r.type.rank == 1):
            v = cx.emit(R.reshape(v, cx.shape(r.type)))
        finals.append(v)
    return finals if len(finals) > 1 else finals[0]


def _scan_target(host) -> tuple[int, bool]:
    """(threads, x86) for the linear-scan kernel: the active target's `num-cores` and ISA
    (non-temporal stores are x86 code), else this host's."""
    target = tvm.target.Target.current(allow_none=True)
    if target is None:
        return max(1, host.physical_cores), host.arch == "x86_64"
    if target.kind.name != "llvm":
        return 1, False
    cores = int(target.attrs.get("num-cores", 0) or 0) or max(1, host.physical_cores)
    triple = str(target.attrs.get("mtriple", "") or "")
    return cores, (triple.startswith("x86_64") if triple else host.arch == "x86_64")


@lowers("ctrl.linear_scan")
def _(cx, op, a, b, h0, chunk):
    from ..kernels.scan import linear_scan_kernel, plan_scan
    from ..targets import host_features

    bt = op.inputs[1].type
    shape = static_shape(bt, "ctrl.linear_scan")
    steps, lanes = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    per_step = op.inputs[0].type.rank == bt.rank
    cores, x86 = _scan_target(host_features())
    plan = plan_scan(steps, lanes, cores, chunk or None, per_step_a=per_step, streaming=x86,
                     itemsize=np.dtype(tvm_dtype(bt.dtype)).itemsize)
    # The kernel views a, b, h0 and h flat in place: R.reshape around the call would be
    # legalized into two copies of [T, N], costing as much as the scan itself.
    shapes = tuple(tuple(static_shape(v.type, "ctrl.linear_scan")) for v in op.inputs)
    func = linear_scan_kernel(plan, per_step, tvm_dtype(bt.dtype), shapes)
    gv = cx.bb.add_func(func, "linear_scan")
    return cx.emit(relax.call_tir(gv, [a, b, h0], relax.TensorType(list(shape),
                                                                   tvm_dtype(bt.dtype))))
