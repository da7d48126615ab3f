"""ONNX export of shape, indexing and reduction kinds. Shape operands become int64
initializers; symbolic dims map to ONNX's 0 (copy the input dim) or 1 (Expand keeps it)."""

from __future__ import annotations

import numpy as np

from ...ir import DType
from ...ir.types import normalize_axis
from .exporter import Emitter, exports


def _target_shape(em: Emitter, x, shape) -> list[int]:
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, int):
            out.append(d)
        elif i < x.type.rank and x.shape[i] == d:
            out.append(0)  # Reshape: 0 copies the input dim
        else:
            out.append(-1)
    if out.count(-1) > 1:
        raise em.fail(f"reshape to {list(shape)} of {x.type}: more than one dim is symbolic "
                      "and not a copy of the input dim")
    return out


@exports("reshape")
def _(em: Emitter, op, names):
    shape = _target_shape(em, op.inputs[0], op.attrs["shape"])
    return em.node("Reshape", [names[0], em.ints(shape, "shape")])


@exports("flatten")
def _(em: Emitter, op, names):
    out = op.results[0].type.shape
    return em.node("Reshape", [names[0], em.ints(_target_shape(em, op.inputs[0], out), "shape")])


@exports("permute")
def _(em: Emitter, op, names):
    rank = op.inputs[0].type.rank
    return em.node("Transpose", names, perm=[normalize_axis(d, rank) for d in op.attrs["dims"]])


@exports("transpose")
def _(em: Emitter, op, names):
    rank = op.inputs[0].type.rank
    perm = list(range(rank))
    a, b = normalize_axis(op.attrs["dim0"], rank), normalize_axis(op.attrs["dim1"], rank)
    perm[a], perm[b] = perm[b], perm[a]
    return em.node("Transpose", names, perm=perm)


@exports("squeeze")
def _(em: Emitter, op, names):
    if not op.attrs["dims"]:
        return em.node("Identity", names)
    return em.node("Squeeze", [names[0], em.ints(op.attrs["dims"], "axes")])


@exports("unsqueeze")
def _(em: Emitter, op, names):
    return em.node("Unsqueeze", [names[0], em.ints([op.attrs["dim"]], "axes")])


@exports("expand")
def _(em: Emitter, op, names):
    shape = [d if isinstance(d, int) and d >= 0 else 1 for d in op.attrs["shape"]]
    return em.node("Expand", [names[0], em.ints(shape, "shape")])


@exports("tile")
def _(em: Emitter, op, names):
    x, reps = op.inputs[0], list(op.attrs["repeats"])
    src = names[0]
    if len(reps) > x.type.rank:  # torch repeat prepends unit dims
        lead = len(reps) - x.type.rank
        src = em.node("Unsqueeze", [src, em.ints(range(lead), "axes")])
    return em.node("Tile", [src, em.ints(reps, "repeats")])


@exports("concat")
def _(em: Emitter, op, names):
    return em.node("Concat", names, axis=op.attrs["dim"])


@exports("split")
def _(em: Emitter, op, names):
    sizes = op.attrs["sizes"]
    return em.node("Split", [names[0], em.ints(sizes, "split")], n_out=len(sizes),
                   axis=op.attrs["dim"]) if len(sizes) > 1 else [em.node("Identity", names)]


@exports("slice")
def _(em: Emitter, op, names):
    a = op.attrs
    ins = [names[0], em.ints([a["start"]], "starts"), em.ints([a["end"]], "ends"),
           em.ints([a["dim"]], "axes"), em.ints([a["step"]], "steps")]
    return em.node("Slice", ins)


@exports("select")
def _(em: Emitter, op, names):
    idx = em.const(np.asarray(op.attrs["index"], np.int64), "index")
    return em.node("Gather", [names[0], idx], axis=op.attrs["dim"])


@exports("index_select")
def _(em: Emitter, op, names):
    return em.node("Gather", names, axis=op.attrs["dim"])


@exports("pad")
def _(em: Emitter, op, names):
    x = op.inputs[0]
    rank, pads = x.type.rank, op.attrs["pads"]
    begin, end = [0] * rank, [0] * rank
    for k in range(len(pads) // 2):
        begin[rank - 1 - k], end[rank - 1 - k] = pads[2 * k], pads[2 * k + 1]
    value = em.const(np.asarray(op.attrs["value"], x.dtype.to_numpy()), "pad_value")
    return em.node("Pad", [names[0], em.ints(begin + end, "pads"), value], mode="constant")


# ---- reductions ---------------------------------------------------------------------------
_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "amax": "ReduceMax", "amin": "ReduceMin",
           "prod": "ReduceProd"}


def _reduce_input(em: Emitter, op, name: str) -> str:
    """ember widens integer sums/products to i64 (torch); ONNX keeps the dtype, so cast first."""
    x, out = op.inputs[0], op.results[0]
    return em.node("Cast", [name], to=7) if out.dtype is DType.i64 and x.dtype is not DType.i64 \
        else name


def _axes(op) -> list[int]:
    rank = op.inputs[0].type.rank
    return [normalize_axis(d, rank) for d in op.attrs["dims"]] or list(range(rank))


def _reduce(onnx_op: str):
    def emit(em: Emitter, op, names):
        src = _reduce_input(em, op, names[0])
        if op.inputs[0].type.rank == 0:
            return em.node("Identity", [src])
        return em.node(onnx_op, [src, em.ints(_axes(op), "axes")],
                       keepdims=int(op.attrs["keepdim"]))
    return emit


for _k, _t in _REDUCE.items():
    exports(_k)(_reduce(_t))


@exports("var")
def _(em: Emitter, op, names):
    x, axes = op.inputs[0], _axes(op)
    n = 1
    for a in axes:
        if not isinstance(x.shape[a], int):
            raise em.fail("variance over a symbolic dim")
        n *= x.shape[a]
    axes_c = em.ints(axes, "axes")
    mu = em.node("ReduceMean", [names[0], axes_c], keepdims=1)
    dev = em.node("Sub", [names[0], mu])
    ss = em.node("ReduceSum", [em.node("Mul", [dev, dev]), axes_c],
                 keepdims=int(op.attrs["keepdim"]))
    denom = em.const(np.asarray(max(n - op.attrs["correction"], 0), x.dtype.to_numpy()), "n")
    return em.node("Div", [ss, denom])


def _arg(onnx_op: str):
    def emit(em: Emitter, op, names):
        return em.node(onnx_op, names, axis=op.attrs["dim"], keepdims=int(op.attrs["keepdim"]))
    return emit


exports("argmax")(_arg("ArgMax"))
exports("argmin")(_arg("ArgMin"))


@exports("cumsum")
def _(em: Emitter, op, names):
    src = _reduce_input(em, op, names[0])
    return em.node("CumSum", [src, em.ints([op.attrs["dim"]], "axis")])
