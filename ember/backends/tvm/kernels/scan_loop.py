"""Sequential `ctrl.scan` as ONE TIR PrimFunc: a serial loop over steps around the body.

Why a generated loop and not unrolling: unrolled steps make code size and compile time grow
with T (T=65536 would never build); one loop compiles once for any T. The body region is
translated op by op into TVMScript text (a loop nest per op writing a scratch buffer that is
allocated once, outside the step loop), then parsed. This is the baseline every recurrence
rewrite is measured and checked against; it supports the ops recurrent cells use (elementwise,
linear/matmul, select/slice/split, reshape/unsqueeze/permute, concat). Any other body op raises
a LoweringError naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import tvm
from tvm import tirx

from ....errors import LoweringError
from ....ir.graph import Graph, Value

__all__ = ["LOOP_CHEAP", "scan_loop_kernel"]

_BIN = {"add": "({} + {})", "sub": "({} - {})", "mul": "({} * {})", "div": "({} / {})",
        "maximum": "T.max({}, {})", "minimum": "T.min({}, {})", "pow": "T.pow({}, {})",
        "eq": "({} == {})", "ne": "({} != {})", "lt": "({} < {})", "le": "({} <= {})",
        "gt": "({} > {})", "ge": "({} >= {})", "logical_and": "T.And({}, {})",
        "logical_or": "T.Or({}, {})"}
_UN = {"neg": "(-{})", "abs": "T.fabs({})", "sigmoid": "T.sigmoid({})", "tanh": "T.tanh({})",
       "exp": "T.exp({})", "log": "T.log({})", "sqrt": "T.sqrt({})", "rsqrt": "T.rsqrt({})",
       "erf": "T.erf({})", "sin": "T.sin({})", "cos": "T.cos({})", "floor": "T.floor({})",
       "ceil": "T.ceil({})", "round": "T.round({})", "logical_not": "T.Not({})",
       "relu": "T.max({}, T.Cast('{dt}', 0))", "reciprocal": "(T.Cast('{dt}', 1) / {})",
       "silu": "({0} * T.sigmoid({0}))"}
_DT = {"f32": "float32", "f64": "float64", "f16": "float16", "i64": "int64", "i32": "int32",
       "i8": "int8", "u8": "uint8", "bool": "bool"}

_MOVES = ("select", "slice", "split", "reshape", "unsqueeze", "squeeze", "flatten", "expand",
          "permute", "concat")
# Body ops the loop computes as well as a scheduled kernel would (no contraction): a body made
# only of these stays ONE loop at any length; anything else (linear, matmul, ...) is better off
# as per-step calls of scheduled kernels when the trip count allows it (lowering/control.py).
LOOP_CHEAP = frozenset({*_BIN, *_UN, "where", "cast", "const", *_MOVES})


def _dt(v: Value) -> str:
    try:
        return _DT[str(v.type.dtype)]
    except KeyError:
        raise LoweringError(f"ctrl.scan body value of dtype {v.type.dtype} is not lowered by the "
                            "sequential scan loop") from None


def _dims(v: Value) -> list[str]:
    out = []
    for d in v.type.shape:
        if isinstance(d, int):
            out.append(str(d))
        elif str(d).isidentifier():
            out.append(str(d))
        else:
            raise LoweringError(f"ctrl.scan body dim {d!r} ({v.type}): only ints and plain "
                                "symbols are lowered by the sequential scan loop")
    return out


@dataclass
class _Gen:
    """Text emitter: `refs` maps a body value to a load template `Buf[{idx}]`."""

    lines: list[str] = field(default_factory=list)
    refs: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (buffer, prefix)
    counter: int = 0

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}{self.counter}"

    def load(self, v: Value, idx: list[str]) -> str:
        buf, prefix = self.refs[id(v)]
        inner = ", ".join(idx) if idx else "0"
        return f"{buf}[{prefix}{inner}]"

    def nest(self, shape: list[str], depth: int) -> tuple[list[str], str]:
        """Open loops over `shape` (at least one, for 0-d) and return index names + indent."""
        names = [self.fresh("i") for _ in shape] or [self.fresh("i")]
        ext = shape or ["1"]
        for k, (n, e) in enumerate(zip(names, ext)):
            self.lines.append("    " * (depth + k) + f"for {n} in range({e}):")
        return (names if shape else []), "    " * (depth + len(ext))


def _bcast(idx: list[str], out: Value, v: Value) -> list[str]:
    """Right-aligned numpy broadcasting: size-1 dims of `v` read index 0."""
    r = v.type.rank
    tail = idx[len(idx) - r:] if r else []
    return ["0" if v.type.shape[k] == 1 and out.type.shape[len(idx) - r + k] != 1 else i
            for k, i in enumerate(tail)]


def _unflat(flat: str, shape: list[str]) -> list[str]:
    out, stride = [], "1"
    for d in reversed(shape):
        out.append(f"(({flat}) // ({stride})) % ({d})")
        stride = f"{stride} * {d}"
    return list(reversed(out)) or []


def _emit_op(g: _Gen, op, depth: int) -> None:
    kind, outs = op.kind, op.results
    res = outs[0]
    shape = _dims(res)
    if kind in _BIN or kind in _UN or kind == "where":
        idx, ind = g.nest(shape, depth)
        args = [g.load(v, _bcast(idx, res, v)) for v in op.inputs]
        dt = _dt(op.inputs[-1])
        if kind == "where":
            expr = f"T.if_then_else({args[0]}, {args[1]}, {args[2]})"
        elif kind in _BIN:
            expr = _BIN[kind].format(*args)
        else:
            expr = _UN[kind].format(args[0], dt=dt)
        g.lines.append(ind + f"{g.load(res, idx)} = {expr}")
    elif kind == "cast":
        idx, ind = g.nest(shape, depth)
        g.lines.append(ind + f"{g.load(res, idx)} = T.Cast('{_dt(res)}', "
                       f"{g.load(op.inputs[0], idx)})")
    elif kind in ("linear", "matmul"):
        _emit_matmul(g, op, shape, depth)
    elif kind in ("select", "slice", "split"):
        x = op.inputs[0]
        dim = op.attrs["dim"] % x.type.rank
        starts = _split_starts(op) if kind == "split" else None
        for j, r in enumerate(outs):
            idx, ind = g.nest(_dims(r), depth)
            if kind == "select":
                src = idx[:dim] + [str(op.attrs["index"] % x.type.shape[dim])] + idx[dim:]
            elif kind == "slice":
                start = _norm_start(op, x.type.shape[dim])
                src = idx[:dim] + [f"{start} + {idx[dim]} * {op.attrs['step']}"] + idx[dim + 1:]
            else:
                src = idx[:dim] + [f"{starts[j]} + {idx[dim]}"] + idx[dim + 1:]
            g.lines.append(ind + f"{g.load(r, idx)} = {g.load(x, src)}")
    elif kind in ("reshape", "unsqueeze", "squeeze", "flatten", "expand"):
        x = op.inputs[0]
        idx, ind = g.nest(shape, depth)
        if kind == "expand":
            src = _bcast(idx, res, x)
        else:
            flat = " + ".join(f"{i} * ({'*'.join(shape[k + 1:]) or '1'})"
                              for k, i in enumerate(idx)) or "0"
            src = _unflat(flat, _dims(x))
        g.lines.append(ind + f"{g.load(res, idx)} = {g.load(x, src)}")
    elif kind == "permute":
        x, dims = op.inputs[0], op.attrs["dims"]
        idx, ind = g.nest(shape, depth)
        src = [""] * len(dims)
        for k, d in enumerate(dims):
            src[d % len(dims)] = idx[k]
        g.lines.append(ind + f"{g.load(res, idx)} = {g.load(x, src)}")
    elif kind == "concat":
        dim = op.attrs["dim"] % res.type.rank
        off = 0
        for x in op.inputs:
            xs = _dims(x)
            idx, ind = g.nest(xs, depth)
            dst = idx[:dim] + [f"{off} + {idx[dim]}"] + idx[dim + 1:]
            g.lines.append(ind + f"{g.load(res, dst)} = {g.load(x, idx)}")
            off = f"{off} + {xs[dim]}"
    else:
        raise LoweringError(f"ctrl.scan body op {kind} ({', '.join(str(v.type) for v in outs)})"
                            " is not supported by the sequential scan loop; run the recurrence "
                            "passes (parallel_scan) or keep this model on the torch backend")


def _norm_start(op, size) -> int:
    start = op.attrs["start"]
    return start + size if start < 0 else start


def _split_starts(op) -> list[int]:
    starts, acc = [], 0
    for s in op.attrs["sizes"]:
        starts.append(acc)
        acc += s
    return starts


def _emit_matmul(g: _Gen, op, shape: list[str], depth: int) -> None:
    res = op.result
    x, w = op.inputs[0], op.inputs[1]
    dt = _dt(res)
    if op.kind == "linear":
        k_ext = _dims(x)[-1]
        idx, ind = g.nest(shape, depth)
        a_idx, w_idx = idx[:-1] + ["k"], [idx[-1], "k"]
    else:
        if w.type.rank != 2 or x.type.rank not in (1, 2):
            raise LoweringError(f"ctrl.scan body matmul {x.type} @ {w.type}: only [M,K] or [K] "
                                "times [K,N] is lowered by the sequential scan loop")
        k_ext = _dims(w)[0]
        idx, ind = g.nest(shape, depth)
        a_idx, w_idx = idx[:-1] + ["k"], ["k", idx[-1]]
    acc = g.load(res, idx)
    g.lines.append(ind + f"{acc} = T.Cast('{dt}', 0)")
    g.lines.append(ind + f"for k in range({k_ext}):")
    g.lines.append(ind + f"    {acc} = {acc} + {g.load(x, a_idx)} * {g.load(w, w_idx)}")
    if op.kind == "linear" and len(op.inputs) > 2 and op.inputs[2] is not None:
        g.lines.append(ind + f"{acc} = {acc} + {g.load(op.inputs[2], [idx[-1]])}")


def scan_loop_kernel(body: Graph, num_carry: int, num_xs: int, reverse: bool,
                     consts: list[Value]) -> tuple[tirx.PrimFunc, list[str]]:
    """PrimFunc(inits..., xs..., invariants..., consts..., final carries..., ys...).

    `consts` are the body's const results (passed in as buffers, in this order). Returns the
    function and the symbolic dim names it binds (the caller's shapes must use the same).
    """
    ins = body.inputs
    carries, xs, invs = ins[:num_carry], ins[num_carry:num_carry + num_xs], ins[num_carry + num_xs:]
    g = _Gen()
    params, decl, syms = [], [], []

    def note_syms(v: Value, extra: list[str] = ()) -> list[str]:
        dims = [*extra, *_dims(v)]
        for d in dims:
            if not d.isdigit() and d not in syms and d.isidentifier():
                syms.append(d)
        return dims

    steps = "1"
    if xs:
        steps = str(body.parent.inputs[num_carry].type.shape[0]) if body.parent else "Tn"
    steps_sym = steps if not steps.isdigit() else None

    def arg(name: str, dims: list[str], dt: str) -> None:
        params.append(f"{name}_h: T.handle")
        decl.append(f"    {name} = T.match_buffer({name}_h, ({', '.join(dims or ['1'])},), "
                    f"'{dt}')")

    for k, v in enumerate(carries):
        arg(f"C{k}", note_syms(v), _dt(v))
    for k, v in enumerate(xs):
        arg(f"X{k}", note_syms(v, [steps]), _dt(v))
        g.refs[id(v)] = (f"X{k}", "tt, ")
    for k, v in enumerate(invs):
        arg(f"V{k}", note_syms(v), _dt(v))
        g.refs[id(v)] = (f"V{k}", "")
    for k, v in enumerate(consts):
        arg(f"K{k}", note_syms(v), _dt(v))
        g.refs[id(v)] = (f"K{k}", "")
    for k, v in enumerate(body.outputs[:num_carry]):
        arg(f"O{k}", note_syms(carries[k]), _dt(carries[k]))
    for k, v in enumerate(body.outputs[num_carry:]):
        arg(f"Y{k}", note_syms(v, [steps]), _dt(v))
    if steps_sym and steps_sym not in syms:
        syms.append(steps_sym)
    lines = ["@T.prim_func(private=True)", f"def scan_loop({', '.join(params)}):",
             "    T.func_attr({'tirx.noalias': True})"]
    lines += [f"    {s} = T.int64()" for s in syms] + decl
    for k, v in enumerate(carries):
        lines.append(f"    S{k} = T.alloc_buffer(({', '.join(_dims(v) or ['1'])},), '{_dt(v)}')")
        g.refs[id(v)] = (f"S{k}", "")
    consts_ids = {id(c) for c in consts}
    for op in body.ops:
        if op.kind == "const":
            continue
        for r in op.results:
            name = g.fresh("R")
            lines.append(f"    {name} = T.alloc_buffer(({', '.join(_dims(r) or ['1'])},), "
                         f"'{_dt(r)}')")
            g.refs[id(r)] = (name, "")
    for k, v in enumerate(carries):  # state <- initial carries
        idx, ind = g.nest(_dims(v), 1)
        g.lines.append(ind + f"S{k}[{', '.join(idx) or '0'}] = C{k}[{', '.join(idx) or '0'}]")
    g.lines.append(f"    for t in range({steps}):")
    g.lines.append(f"        tt = {steps} - 1 - t" if reverse else "        tt = t")
    for op in body.ops:
        if op.kind != "const":
            _emit_op(g, op, 2)
    news = body.outputs[:num_carry]
    staged = []
    for k, v in enumerate(news):  # values that are body inputs go through a temp first
        if v.producer is None or id(v) in consts_ids:
            tmp = g.fresh("N")
            lines.append(f"    {tmp} = T.alloc_buffer(({', '.join(_dims(v) or ['1'])},), "
                         f"'{_dt(v)}')")
            idx, ind = g.nest(_dims(v), 2)
            g.lines.append(ind + f"{tmp}[{', '.join(idx) or '0'}] = {g.load(v, idx)}")
            staged.append((k, tmp))
        else:
            staged.append((k, None))
    for j, y in enumerate(body.outputs[num_carry:]):  # ys read the state before the update
        idx, ind = g.nest(_dims(y), 2)
        g.lines.append(ind + f"Y{j}[tt, {', '.join(idx) or '0'}] = {g.load(y, idx)}")
    for k, tmp in staged:
        v = news[k]
        idx, ind = g.nest(_dims(v), 2)
        src = f"{tmp}[{', '.join(idx) or '0'}]" if tmp else g.load(v, idx)
        g.lines.append(ind + f"S{k}[{', '.join(idx) or '0'}] = {src}")
    for k, v in enumerate(carries):
        idx, ind = g.nest(_dims(v), 1)
        g.lines.append(ind + f"O{k}[{', '.join(idx) or '0'}] = S{k}[{', '.join(idx) or '0'}]")
    src = "\n".join(lines + g.lines)
    try:
        func = tvm.script.from_source(src, extra_vars={"T": _tscript()})
    except Exception as e:  # noqa: BLE001 (TVMScript parse errors have many types)
        raise LoweringError(f"ctrl.scan sequential loop: generated TIR did not parse ({e})\n"
                            f"{src}") from None
    if isinstance(func, tvm.IRModule):
        func = func[func.get_global_vars()[0]]
    return func, syms


def _tscript():
    from tvm.script import tirx as T

    return T


def num_elements(shape) -> int:
    return math.prod(int(d) for d in shape)
