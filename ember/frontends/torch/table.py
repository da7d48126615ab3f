"""The ATen -> ember table: plain data for 1:1 ops, `@converts` functions for the rest.

A 1:1 entry maps an ATen overload to an ember kind. Its tensor operands are the ATen op's first
arguments, as many as the ember op takes (python scalars become consts of the operation's dtype),
and `ATTRS` names which ATen arguments fill which ember attributes. Anything irregular (several
ember ops, argument checks, tuples of results) is a function registered with `@converts(name)`
in one of the `convert_*.py` modules.

Every ATen op that appears here or in `CONVERTERS` is kept whole by the frontend's decomposition
table (so `linear` stays one `linear`, not `addmm` + `t`); every other op is decomposed to core
ATen first, which is what lets a short table cover most models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ATEN_TO_EMBER: dict[str, str] = {
    # unary elementwise
    "aten.relu.default": "relu",
    "aten.sigmoid.default": "sigmoid",
    "aten.tanh.default": "tanh",
    "aten.silu.default": "silu",
    "aten.exp.default": "exp",
    "aten.log.default": "log",
    "aten.sqrt.default": "sqrt",
    "aten.rsqrt.default": "rsqrt",
    "aten.reciprocal.default": "reciprocal",
    "aten.erf.default": "erf",
    "aten.sin.default": "sin",
    "aten.cos.default": "cos",
    "aten.floor.default": "floor",
    "aten.ceil.default": "ceil",
    "aten.round.default": "round",
    "aten.neg.default": "neg",
    "aten.abs.default": "abs",
    "aten.logical_not.default": "logical_not",
    "aten.gelu.default": "gelu",
    "aten.hardswish.default": "hardswish",
    "aten.hardsigmoid.default": "hardsigmoid",
    "aten.leaky_relu.default": "leaky_relu",
    "aten.softplus.default": "softplus",
    "aten.clamp.default": "clamp",
    "aten.hardtanh.default": "clamp",
    # binary elementwise (tensor or python-scalar operands)
    "aten.mul.Tensor": "mul",
    "aten.mul.Scalar": "mul",
    "aten.maximum.default": "maximum",
    "aten.minimum.default": "minimum",
    "aten.pow.Tensor_Tensor": "pow",
    "aten.pow.Tensor_Scalar": "pow",
    "aten.remainder.Tensor": "remainder",
    "aten.remainder.Scalar": "remainder",
    "aten.eq.Tensor": "eq",
    "aten.eq.Scalar": "eq",
    "aten.ne.Tensor": "ne",
    "aten.ne.Scalar": "ne",
    "aten.lt.Tensor": "lt",
    "aten.lt.Scalar": "lt",
    "aten.le.Tensor": "le",
    "aten.le.Scalar": "le",
    "aten.gt.Tensor": "gt",
    "aten.gt.Scalar": "gt",
    "aten.ge.Tensor": "ge",
    "aten.ge.Scalar": "ge",
    "aten.logical_and.default": "logical_and",
    "aten.logical_or.default": "logical_or",
    "aten.where.self": "where",
    # nn ops whose operands and attributes line up
    "aten.mm.default": "matmul",
    "aten.bmm.default": "matmul",
    "aten.matmul.default": "matmul",
    "aten.embedding.default": "embedding",
    "aten.index_select.default": "index_select",
    "aten.softmax.int": "softmax",
    "aten._softmax.default": "softmax",
    "aten.log_softmax.int": "log_softmax",
    "aten._log_softmax.default": "log_softmax",
    "aten.cumsum.default": "cumsum",
    "aten.permute.default": "permute",
    "aten.transpose.int": "transpose",
    "aten.unsqueeze.default": "unsqueeze",
    "aten.flatten.using_ints": "flatten",
    "aten.repeat.default": "tile",
    "aten.constant_pad_nd.default": "pad",
}

# ember attribute <- ATen argument name, for the 1:1 entries that have attributes.
ATTRS: dict[str, dict[str, str]] = {
    "aten.gelu.default": {"approximate": "approximate"},
    "aten.leaky_relu.default": {"negative_slope": "negative_slope"},
    "aten.softplus.default": {"beta": "beta", "threshold": "threshold"},
    "aten.clamp.default": {"min": "min", "max": "max"},
    "aten.hardtanh.default": {"min": "min_val", "max": "max_val"},
    "aten.index_select.default": {"dim": "dim"},
    "aten.softmax.int": {"dim": "dim"},
    "aten._softmax.default": {"dim": "dim"},
    "aten.log_softmax.int": {"dim": "dim"},
    "aten._log_softmax.default": {"dim": "dim"},
    "aten.cumsum.default": {"dim": "dim"},
    "aten.permute.default": {"dims": "dims"},
    "aten.transpose.int": {"dim0": "dim0", "dim1": "dim1"},
    "aten.unsqueeze.default": {"dim": "dim"},
    "aten.flatten.using_ints": {"start_dim": "start_dim", "end_dim": "end_dim"},
    "aten.repeat.default": {"repeats": "repeats"},
    "aten.constant_pad_nd.default": {"pads": "pad", "value": "value"},
}

# ATen ops that only assert facts about shapes: they produce nothing ember needs.
IGNORED: frozenset[str] = frozenset({
    "aten._assert_scalar.default",
    "aten._assert_tensor_metadata.default",
    "aten.sym_constrain_range_for_size.default",
    "aten.sym_constrain_range.default",
    "aten._assert_async.msg",
    "aten._assert_async.default",
})

Converter = Callable[..., Any]
CONVERTERS: dict[str, Converter] = {}


def converts(*names: str) -> Callable[[Converter], Converter]:
    """Register `fn(cx, *args)` as the converter of these ATen overloads.

    `args` are the ATen schema's arguments in order with defaults filled in: tensors arrive as
    ember `Value`s, SymInts as ember dims (int or symbol string), lists element-wise.
    """

    def register(fn: Converter) -> Converter:
        for name in names:
            if name in CONVERTERS or name in ATEN_TO_EMBER:
                raise ValueError(f"ATen op {name} has two converters")
            CONVERTERS[name] = fn
        return fn

    return register


def is_supported(name: str) -> bool:
    return name in ATEN_TO_EMBER or name in CONVERTERS or name in IGNORED


def target_name(target: Any) -> str:
    """A stable string for an fx call target: 'aten.add.Tensor', 'higher_order.scan', ..."""
    import torch

    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    module = getattr(target, "__module__", None) or "builtins"
    name = getattr(target, "__name__", repr(target))
    if module in ("_operator", "operator"):
        module = "operator"
    return f"{module}.{name}"
