"""The TVM lowering table: op kind -> a function that emits Relax for one ember op.

Family files fill `LOWERINGS` with `@lowers("kind")`. A lowering is called as
`fn(cx, op, *inputs, **op.attrs)`: `cx` is the `LowerContext` (the BlockBuilder plus shape
helpers), `op` the ember op (its result types tell static shapes), `inputs` the Relax values
bound like the schema's inputs (None for an absent optional, a list for a variadic). It returns
one Relax expression, or a list for a multi-result op. Kinds that cannot lower yet go in
`UNSUPPORTED` with the reason, so the coverage test and users see why.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax, tirx

from ....errors import LoweringError
from ....ir import DType, TensorType

LOWERINGS: dict[str, Callable[..., Any]] = {}
UNSUPPORTED: dict[str, str] = {}

# ember dtype -> TVM dtype. Sub-byte ints are stored widened (as numpy holds them), so the
# compiled function keeps the interpreter's storage contract; packed kernels come later.
_TVM_DTYPE = {
    DType.f64: "float64", DType.f32: "float32", DType.f16: "float16", DType.bf16: "bfloat16",
    DType.i64: "int64", DType.i32: "int32", DType.i16: "int16", DType.i8: "int8",
    DType.u8: "uint8", DType.i4: "int8", DType.u4: "uint8", DType.u32: "uint32",
    DType.bool: "bool", DType.u16: "uint16", DType.u64: "uint64", DType.i2: "int8",
    DType.u2: "uint8", DType.f8e4m3fn: "float8_e4m3fn", DType.f8e4m3fnuz: "float8_e4m3fnuz",
    DType.f8e5m2: "float8_e5m2", DType.f8e5m2fnuz: "float8_e5m2fnuz",
    DType.f8e8m0: "float8_e8m0fnu", DType.f4e2m1: "float4_e2m1fn",
}


def lowers(*kinds: str) -> Callable[[Callable], Callable]:
    """Register one lowering function for each of `kinds`."""

    def register(fn: Callable) -> Callable:
        for k in kinds:
            if k in LOWERINGS:
                raise LoweringError(f"TVM lowering for {k!r} is registered twice")
            LOWERINGS[k] = fn
        return fn

    return register


def tvm_dtype(dtype: DType) -> str:
    return _TVM_DTYPE[dtype]


class LowerContext:
    """What a lowering function needs: the builder and symbolic dims shared across the function."""

    def __init__(self, bb: relax.BlockBuilder, symbols: dict[str, tirx.Var] | None = None):
        self.bb = bb
        self.symbols: dict[str, tirx.Var] = symbols if symbols is not None else {}

    # ---- emission -----------------------------------------------------------------------
    def emit(self, expr: relax.Expr) -> relax.Expr:
        return self.bb.emit(expr)

    def emit_te(self, fn: Callable, *args: Any, **kwargs: Any) -> relax.Expr:
        return self.bb.emit_te(fn, *args, **kwargs)

    # ---- shapes ---------------------------------------------------------------------------
    def symbol(self, name: str) -> tirx.Var:
        """The int64 variable for a symbolic dim (created once per function, shared by all)."""
        if name not in self.symbols:
            self.symbols[name] = tirx.Var(name, "int64")
        return self.symbols[name]

    def dim(self, d: int | str) -> Any:
        """An ember dim as a TVM value: ints stay ints, symbols/expressions become PrimExprs."""
        if isinstance(d, (int, np.integer)):
            return int(d)
        return _dim_expr(d, self)

    def shape(self, t: TensorType | Sequence[int | str]) -> list[Any]:
        dims = t.shape if isinstance(t, TensorType) else t
        return [self.dim(d) for d in dims]

    def tensor_type(self, t: TensorType) -> relax.TensorType:
        return relax.TensorType(self.shape(t), tvm_dtype(t.dtype))

    # ---- constants ------------------------------------------------------------------------
    def const(self, value: Any, dtype: DType | str) -> tvm.ir.GenericConst:
        """A Relax constant (baked into the library) holding `value` as `dtype`."""
        dt = tvm_dtype(dtype) if isinstance(dtype, DType) else dtype
        return relax.const(np.asarray(value).astype(dt), dt)


def isnan(x: relax.Expr, dtype: DType) -> relax.Expr:
    """Relax isnan; TVM legalizes no isnan for bfloat16, which is tested as f32 (exact)."""
    if dtype is DType.bf16:
        x = relax.op.astype(x, "float32")
    return relax.op.isnan(x)


def static_shape(t: TensorType, what: str) -> tuple[int, ...]:
    """Shape of `t` when every dim is an int, or a LoweringError saying which case this is."""
    if not t.is_static:
        raise LoweringError(f"{what} needs a static shape here, got {t}; give the model static "
                            "sizes for this dim (e.g. trace without a dynamic dim for it)")
    return t.shape  # type: ignore[return-value]


def expr_shape(expr: relax.Expr) -> list[Any]:
    """The (possibly symbolic) shape of an emitted Relax tensor."""
    return list(expr.ty.shape)


def _dim_expr(text: str, cx: LowerContext) -> Any:
    """Parse a symbolic dim ("batch", "4*batch", "seq+1") into a TIR expression of int64 vars."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise LoweringError(f"cannot read symbolic dim {text!r}") from None

    def conv(node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            return cx.symbol(node.id)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return tirx.const(node.value, "int64")
        if isinstance(node, ast.BinOp):
            a, b = conv(node.left), conv(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: tirx.floordiv(a, b), ast.Mod: lambda: tirx.floormod(a, b)}
            if type(node.op) in ops:
                return ops[type(node.op)]()
        raise LoweringError(f"cannot read symbolic dim {text!r}: only names, ints and + - * // %")

    return conv(tree)


from . import attention, control, core, elementwise, newton, nn, quant, reduce, shape, sparse  # noqa: F401  (fill the table)
