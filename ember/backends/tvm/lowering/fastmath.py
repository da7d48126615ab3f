"""Vectorizable exp / sigmoid / tanh / erf for float32 TIR expressions on CPU.

Why: TVM 0.27 lowers `T.exp`, `T.sigmoid`, `T.tanh` (two exps) and `T.erf` on an llvm target to
libm calls (`expf`, `erff`), and LLVM scalarizes a vector call (`llvm.exp.v8f32` becomes 8
`expf` calls), so a softmax over [64, 1000] spent most of its time in 64k libm calls. These
functions build the same math as a few vector FMAs, so a vectorized loop stays vectorized.

What callers get (float32, any lane count; other dtypes fall back to TVM's intrinsic):

- `fast_exp`: Cephes expf (range reduction by ln2 in two parts, degree-6 polynomial), ~1 ulp
  apart from results below 2^-126, which are correct subnormals or 0. The power of two is
  applied in two halves (2^(n//2) * 2^(n - n//2)), so the whole float range is right:
  overflow gives inf (exp(+inf) = inf), underflow gives 0 (exp(-inf) = 0), NaN stays NaN.
- `fast_tanh`, `fast_erf`: Eigen's rational approximations (odd numerator of degree 13 or 13,
  even denominator), clamped where they round to +-1 (a few ulp; NaN stays NaN).
- `fast_sigmoid`: 1 / (1 + exp(-x)), the formula TVM's own sigmoid legalizes to.

Every operand is bound once with `Let`, so the expression stays linear in size when it is
inlined into a consumer. `enabled()` says whether the lowering should use these (CPU targets).
"""

from __future__ import annotations

import tvm
from tvm import tirx

__all__ = ["STAGE_ATTRS", "applies", "enabled", "fast_erf", "fast_exp", "fast_sigmoid", "fast_tanh",
           "supported"]

# te.compute attrs of a stage built on these functions: the CPU schedules do not inline one
# such stage into another (schedules/elementwise.py `_nests_fastmath`: compile time).
STAGE_ATTRS = {"ember.fastmath": 1}

_LOG2E = 1.44269504088896341
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4  # Cody-Waite split: n * hi is exact
# Cephes expf polynomial for exp(r) - 1 - r on [-ln2/2, ln2/2], highest degree first
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)
# Clamp range: exp(-104) rounds to 0 and exp(89) overflows, so the clamp changes no result;
# it keeps n = round(x / ln2) in [-150, 128], whose halves are normal powers of two.
_EXP_LO, _EXP_HI = -104.0, 89.0
_FLUSH_LO = -87.3  # `nonpositive`: below this exp(x) < 2^-126 is flushed to 0 (n >= -126)
# Eigen's generic_fast_tanh_float: tanh(x) = x * P(x^2) / Q(x^2); at 9 it rounds to 1 (these
# coefficients go with Eigen's clamp at 9; at 7.905 they give 1 - 4 ulp)
_TANH_CLAMP = 9.0
_TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
           4.89352455891786e-03)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
           4.89352518554385e-03)
# Eigen's generic_fast_erf_float: erf(x) = x * P(x^2) / Q(x^2) on [-4, 4]; erf(4) rounds to 1
_ERF_CLAMP = 4.0
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def supported(dtype) -> bool:
    """float32 only: f16/bf16 are computed in f32 by their lowerings, f64 keeps libm."""
    dt = tvm.DataType(str(dtype))
    return dt.type_code == tvm.DataTypeCode.FLOAT and dt.bits == 32


def enabled() -> bool:
    """True on CPU (llvm) targets and when no target is set; GPUs keep TVM's intrinsics
    (CUDA's exp is already a fast vector instruction)."""
    target = tvm.target.Target.current(allow_none=True)
    return target is None or target.kind.name == "llvm"


def applies(ttype) -> bool:
    """Whether a lowering should build its op on these functions for an ember TensorType:
    float32, static shape, CPU target.

    Static only: a TE kernel emitted at lowering time on a symbolic shape, fused by FuseTIR
    with a legalized producer (a dynamic-batch linear), fails there ("Inconsistent buffers
    ... mapped to the same relax var"; softplus hit it before these did). Symbolic shapes keep
    the Relax op (libm); the batch-1 specialization of a dynamic model is static."""
    from ....ir import DType

    return ttype.dtype is DType.f32 and ttype.is_static and enabled()


def _expr(x):
    """A PrimExpr (a TE `tensor[i]` is a TensorSlice until it is used)."""
    return x.asobject() if hasattr(x, "asobject") else x


def _dtype(x) -> str:
    return str(x.ty.dtype)


def _const(value: float, dtype: str):
    return tirx.const(value, dtype)  # a Broadcast for a vector dtype


def _int_const(value: int, lanes: int):
    c = tirx.const(value, "int32")
    return c if lanes == 1 else tirx.Broadcast(c, lanes)


def _bind(name: str, value, body_fn):
    """Let name = value in body_fn(var): each operand is evaluated once."""
    var = tirx.Var(name, value.ty)
    return tirx.Let(var, value, body_fn(var))


def _horner(coefs, t, dtype):
    y = _const(coefs[0], dtype)
    for c in coefs[1:]:
        y = y * t + _const(c, dtype)
    return y


def _clamp(x, lo: float, hi: float, dtype: str):
    """x limited to [lo, hi], NaN kept (the compares are false for NaN, so it passes through).
    Selects, not max/min: TVM's float max/min are compare-and-select in an order that drops
    NaN, and tirx.isnan has no vector form (VectorizeLoop scalarizes the whole loop)."""
    above = tirx.Select(x > _const(hi, dtype), _const(hi, dtype), x)
    return tirx.Select(above < _const(lo, dtype), _const(lo, dtype), above)


def fast_exp(x, nonpositive: bool = False):
    """exp(x) for a float32 (or float32xN) expression; see the module docstring.

    `nonpositive`: the caller guarantees x <= 0 or -inf (a softmax shifted by its row max, as
    in kernels/attention.py); results below 2^-126 are flushed to 0, with one power-of-two
    scale and no overflow clamp (3 fewer vector ops; 1-3% of the fused attention kernel).
    NaN inputs then give an unspecified value: such a caller must select them away."""
    x = _expr(x)
    dtype = _dtype(x)
    if not supported(dtype):
        return tirx.exp(x)
    lanes = tvm.DataType(dtype).lanes
    idtype = "int32" if lanes == 1 else f"int32x{lanes}"

    def power_of_two(n):
        return tirx.reinterpret(dtype, (n + _int_const(127, lanes)) << _int_const(23, lanes))

    def scale(n, r):
        y = _horner(_EXP_POLY, r, dtype) * r * r + r + _const(1.0, dtype)
        ni = tirx.Cast(idtype, n)
        if nonpositive:  # n >= -126: one normal power of two
            return y * power_of_two(ni)
        half = ni >> _int_const(1, lanes)  # floor(n / 2): both halves of n in [-75, 64]
        return y * power_of_two(half) * power_of_two(ni - half)  # NaN r: the result is NaN

    def reduce(xc):
        # n from a NaN-free copy (NaN -> lo): converting NaN to int is poison in LLVM
        lo = _FLUSH_LO if nonpositive else _EXP_LO
        finite = tirx.Select(xc > _const(lo, dtype), xc, _const(lo, dtype))
        n = tirx.floor(finite * _const(_LOG2E, dtype) + _const(0.5, dtype))
        return _bind("en", n, lambda nv: _bind(
            "er", xc - nv * _const(_LN2_HI, dtype) - nv * _const(_LN2_LO, dtype),
            lambda r: scale(nv, r)))

    if nonpositive:
        return _bind("ex", x, lambda xv: tirx.Select(
            xv < _const(_FLUSH_LO, dtype), _const(0.0, dtype), reduce(xv)))
    return _bind("ex", x, lambda xv: _bind("exc", _clamp(xv, _EXP_LO, _EXP_HI, dtype), reduce))


def _odd_rational(x, clamp: float, p, q):
    """x * P(x^2) / Q(x^2) with x clamped to [-clamp, clamp], NaN kept."""
    dtype = _dtype(x)
    return _bind("rx", x, lambda xv: _bind("rxc", _clamp(xv, -clamp, clamp, dtype), lambda c: _bind(
        "x2", c * c, lambda x2: c * _horner(p, x2, dtype) / _horner(q, x2, dtype))))


def fast_tanh(x):
    """tanh(x) for a float32 expression (Eigen's rational form, exactly +-1 beyond 9)."""
    x = _expr(x)
    if not supported(_dtype(x)):
        return tirx.tanh(x)
    return _odd_rational(x, _TANH_CLAMP, _TANH_P, _TANH_Q)


def fast_erf(x):
    """erf(x) for a float32 expression (Eigen's rational form on [-4, 4])."""
    x = _expr(x)
    if not supported(_dtype(x)):
        return tirx.erf(x)
    return _odd_rational(x, _ERF_CLAMP, _ERF_P, _ERF_Q)


def fast_sigmoid(x):
    """1 / (1 + exp(-x)) for a float32 expression: 0 at -inf, 1 at +inf, NaN kept."""
    x = _expr(x)
    dtype = _dtype(x)
    if not supported(dtype):
        return tirx.sigmoid(x)
    return _const(1.0, dtype) / (_const(1.0, dtype) + fast_exp(-x))
