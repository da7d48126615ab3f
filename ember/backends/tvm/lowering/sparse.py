"""TVM lowerings: sparse ops. `sparse.linear_nm` calls the gather-free N:M kernel in
kernels/sparse_nm.py (already scheduled, so the generic CPU rules skip it); x is flattened to
[rows, k] around the call and the result reshaped back."""

from __future__ import annotations

from tvm import relax, tirx

from ..kernels.sparse_nm import nm_linear_func
from . import expr_shape, lowers, tvm_dtype

R = relax.op


@lowers("sparse.linear_nm")
def _(cx, op, x, values, indices, bias, n, m, k):
    xt, out_t = op.inputs[0].type, op.results[0].type
    rows_n = op.inputs[1].type.shape[0]
    x2 = cx.emit(R.reshape(x, (-1, k))) if xt.rank != 2 else x
    flat = expr_shape(x2)[0]
    batch = int(flat) if isinstance(flat, (int, tirx.IntImm)) else tirx.Var("rows", "int64")
    func = nm_linear_func(batch, k, rows_n, n, m, tvm_dtype(xt.dtype), has_bias=bias is not None)
    gv = cx.bb.add_func(func, f"sparse_linear_{n}_{m}")
    args = [x2, values, indices] + ([bias] if bias is not None else [])
    y = cx.emit(relax.call_tir(gv, args, relax.TensorType([flat, rows_n], tvm_dtype(xt.dtype))))
    return R.reshape(y, cx.shape(out_t)) if xt.rank != 2 else y
