"""Shape ops that move or reinterpret data without arithmetic (trait SHAPE_ONLY).

reshape, flatten, squeeze, unsqueeze, permute, transpose, expand, tile live here; concat, split,
slice, select, index_select and pad in indexing.py. Symbolic dims follow types.py: an int, a name
("batch") or a canonical product ("4*batch"); a size that cannot be written that way is refused
with a ShapeError rather than guessed.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ...errors import ShapeError
from ..types import Dim, TensorType, mul_dims, normalize_axis
from .registry import PURE, REQUIRED, SHAPE_ONLY, define_op

TRAITS = (PURE, SHAPE_ONLY)


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _factor(d: Dim) -> tuple[int, Counter]:
    """A dim as (integer coefficient, multiset of symbol names)."""
    if isinstance(d, int):
        return d, Counter()
    coef, syms = 1, Counter()
    for part in d.split("*"):
        if part.isdigit():
            coef *= int(part)
        else:
            syms[part] += 1
    return coef, syms


def _unfactor(coef: int, syms: Counter) -> Dim:
    return mul_dims([coef, *sorted(syms.elements())])


def div_dims(total: Dim, part: Dim) -> Dim | None:
    """`total / part` as a dim when it is exact and expressible, else None."""
    (tc, ts), (pc, ps) = _factor(total), _factor(part)
    if pc == 0 or tc % pc or any(ts[s] < n for s, n in ps.items()):
        return None
    return _unfactor(tc // pc, ts - ps)


def add_dims(dims) -> Dim | None:
    """Sum of dims that share their symbols (3 + 4, batch + 2*batch), else None."""
    factors = [_factor(d) for d in dims]
    syms = [s for c, s in factors if c != 0]
    if any(s != syms[0] for s in syms[1:]):
        return None
    return _unfactor(sum(c for c, _ in factors), syms[0] if syms else Counter())


def static_dim(d: Dim, what: str) -> int:
    if not isinstance(d, int):
        raise ShapeError(f"{what} is symbolic ({d!r}); this op needs it static")
    return d


def fresh(x: np.ndarray) -> np.ndarray:
    """Shape ops return fresh arrays, so later in-place numpy code cannot alias inputs."""
    return np.array(x, copy=True, order="C")


# ---- reshape ------------------------------------------------------------------------------
reshape = define_op("reshape", inputs=("x",), attrs={"shape": (tuple, REQUIRED)}, traits=TRAITS,
                    doc="Reinterpret the element order; one -1 is inferred.")


@reshape.infer
def _(x, shape):
    for d in shape:
        if not (isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d >= -1)):
            raise ShapeError(f"bad reshape entry {d!r}; use ints >= 0, one -1, or symbol names")
    if list(shape).count(-1) > 1:
        raise ShapeError(f"reshape target {shape} has more than one -1")
    shape = tuple(mul_dims([d]) if isinstance(d, str) else d for d in shape)
    total = mul_dims(x.shape)
    known = mul_dims([d for d in shape if d != -1])
    if -1 not in shape:
        if total != known:
            raise ShapeError(f"cannot reshape {x} ({total} elements) to {list(shape)} "
                             f"({known} elements)")
        return x.with_shape(shape)
    inferred = div_dims(total, known)
    if inferred is None:
        raise ShapeError(f"cannot infer the -1 in reshape {list(shape)} of {x}: {total} is not "
                         f"a multiple of {known}; give an explicit shape (symbol names allowed)")
    return x.with_shape(inferred if d == -1 else d for d in shape)


def resolve_shape(shape, numel: int) -> tuple[int, ...]:
    """Concrete ints for a reshape target at run time, from the element count alone.

    Works when one entry is unknown (a -1 or any symbol expression) or when every unknown entry
    uses the same single symbol ('batch', '4*batch'). Otherwise the count cannot tell the
    symbols apart and a ShapeError says so.
    """
    unknown = [i for i, d in enumerate(shape) if d == -1 or isinstance(d, str)]
    if len(unknown) <= 1:
        return tuple(-1 if i in unknown else int(d) for i, d in enumerate(shape))
    factors = [_factor(d) for d in shape]
    syms = sum((f[1] for f in factors), Counter())
    if -1 in shape or len(syms) != 1:
        raise ShapeError(f"reshape target {list(shape)} has several unknown dims at run time "
                         f"({', '.join(sorted(syms))}); write at most one of them symbolic "
                         "(or as -1), or use a single symbol")
    (name, power), = syms.items()
    coef = math.prod(c for c, _ in factors)
    value = round((numel / coef) ** (1.0 / power)) if coef else 0
    if coef == 0 or coef * value**power != numel:
        raise ShapeError(f"reshape target {list(shape)} does not fit {numel} elements")
    return tuple(c * value ** s[name] for c, s in factors)


def resolvable(shape) -> bool:
    """Whether `resolve_shape` can evaluate `shape` at run time (see there)."""
    unknown = [d for d in shape if d == -1 or isinstance(d, str)]
    syms = {s for d in unknown if d != -1 for s in _factor(d)[1]}
    return len(unknown) <= 1 or (-1 not in shape and len(syms) == 1)


@reshape.reference
def _(x, shape):
    return fresh(x.reshape(resolve_shape(shape, x.size)))


@reshape.examples
def _(rng):
    yield [rand(rng, (2, 3, 4))], {"shape": (6, 4)}
    yield [rand(rng, (2, 3, 4))], {"shape": (-1,)}
    yield [rand(rng, (2, 12))], {"shape": (2, -1, 3)}
    yield [rand(rng, (4, 8, 8))], {"shape": (4, 8, -1, 2)}
    yield [rand(rng, (1, 1))], {"shape": ()}


# ---- permute / transpose ------------------------------------------------------------------
permute = define_op("permute", inputs=("x",), attrs={"dims": (tuple, REQUIRED)}, traits=TRAITS)


def _perm(dims, rank: int) -> tuple[int, ...]:
    if len(dims) != rank:
        raise ShapeError(f"permute dims {dims} must list each of the {rank} dims once")
    perm = tuple(normalize_axis(d, rank, "permute dim") for d in dims)
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"permute dims {dims} are not a permutation of range({rank})")
    return perm


@permute.infer
def _(x, dims):
    return x.with_shape(x.shape[d] for d in _perm(dims, x.rank))


@permute.reference
def _(x, dims):
    return fresh(np.transpose(x, _perm(dims, x.ndim)))


@permute.examples
def _(rng):
    yield [rand(rng, (2, 3, 4))], {"dims": (2, 0, 1)}
    yield [rand(rng, (2, 3))], {"dims": (-1, 0)}
    yield [rand(rng, (2, 3, 4, 5))], {"dims": (0, 2, 1, 3)}


transpose = define_op("transpose", inputs=("x",), traits=TRAITS,
                      attrs={"dim0": (int, REQUIRED), "dim1": (int, REQUIRED)})


def _swap(rank: int, dim0: int, dim1: int) -> tuple[int, ...]:
    a = normalize_axis(dim0, rank, "transpose dim0")
    b = normalize_axis(dim1, rank, "transpose dim1")
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return tuple(perm)


@transpose.infer
def _(x, dim0, dim1):
    return x.with_shape(x.shape[d] for d in _swap(x.rank, dim0, dim1))


@transpose.reference
def _(x, dim0, dim1):
    return fresh(np.transpose(x, _swap(x.ndim, dim0, dim1)))


@transpose.decompose
def _(b, op):
    return [b.add("permute", op.inputs[0], dims=_swap(op.inputs[0].type.rank, **op.attrs))]


@transpose.examples
def _(rng):
    yield [rand(rng, (2, 3, 4))], {"dim0": 0, "dim1": 2}
    yield [rand(rng, (2, 3))], {"dim0": -1, "dim1": -2}
    yield [rand(rng, (5,))], {"dim0": 0, "dim1": 0}


# ---- flatten / squeeze / unsqueeze --------------------------------------------------------
flatten = define_op("flatten", inputs=("x",), traits=TRAITS,
                    attrs={"start_dim": (int, 0), "end_dim": (int, -1)})


def _flat_shape(x: TensorType, start_dim: int, end_dim: int) -> tuple[Dim, ...]:
    if x.rank == 0:
        return (1,)
    s = normalize_axis(start_dim, x.rank, "flatten start_dim")
    e = normalize_axis(end_dim, x.rank, "flatten end_dim")
    if s > e:
        raise ShapeError(f"flatten start_dim {start_dim} comes after end_dim {end_dim}")
    return x.shape[:s] + (mul_dims(x.shape[s:e + 1]),) + x.shape[e + 1:]


@flatten.infer
def _(x, start_dim, end_dim):
    return x.with_shape(_flat_shape(x, start_dim, end_dim))


@flatten.reference
def _(x, start_dim, end_dim):
    t = _flat_shape(TensorType.of(x), start_dim, end_dim)
    return fresh(x.reshape(t))


@flatten.decompose
def _(b, op):
    shape = op.results[0].type.shape
    if not resolvable(shape):  # e.g. [batch, 8*seq]: keep flatten, which needs no resolving
        return None
    return [b.add("reshape", op.inputs[0], shape=shape)]


@flatten.examples
def _(rng):
    yield [rand(rng, (2, 3, 4))], {}
    yield [rand(rng, (2, 3, 4, 5))], {"start_dim": 1, "end_dim": 2}
    yield [rand(rng, (2, 3, 4))], {"start_dim": 1}
    yield [rand(rng, ())], {}


squeeze = define_op("squeeze", inputs=("x",), attrs={"dims": (tuple, REQUIRED)}, traits=TRAITS,
                    doc="Remove listed size-1 dims (the frontend drops torch's no-op dims).")


def _squeezed(x: TensorType, dims) -> tuple[Dim, ...]:
    axes = {normalize_axis(d, x.rank, "squeeze dim") for d in dims}
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(f"squeeze dim {a} of {x} has size {x.shape[a]}, not 1; only "
                             "size-1 dims can be removed")
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


@squeeze.infer
def _(x, dims):
    return x.with_shape(_squeezed(x, dims))


@squeeze.reference
def _(x, dims):
    return fresh(x.reshape(_squeezed(TensorType.of(x), dims)))


@squeeze.examples
def _(rng):
    yield [rand(rng, (1, 3, 1, 4))], {"dims": (0, 2)}
    yield [rand(rng, (2, 1))], {"dims": (-1,)}
    yield [rand(rng, (2, 3))], {"dims": ()}


unsqueeze = define_op("unsqueeze", inputs=("x",), attrs={"dim": (int, REQUIRED)}, traits=TRAITS)


@unsqueeze.infer
def _(x, dim):
    d = normalize_axis(dim, x.rank + 1, "unsqueeze dim")
    return x.with_shape(x.shape[:d] + (1,) + x.shape[d:])


@unsqueeze.reference
def _(x, dim):
    return fresh(np.expand_dims(x, normalize_axis(dim, x.ndim + 1, "unsqueeze dim")))


@unsqueeze.examples
def _(rng):
    yield [rand(rng, (2, 3))], {"dim": 0}
    yield [rand(rng, (2, 3))], {"dim": -1}
    yield [rand(rng, (2, 3))], {"dim": 1}
    yield [rand(rng, ())], {"dim": 0}


# ---- expand / tile ------------------------------------------------------------------------
expand = define_op("expand", inputs=("x",), attrs={"shape": (tuple, REQUIRED)}, traits=TRAITS,
                   doc="broadcast_to; -1 (or the same symbol) keeps a dim.")


def _expand_shape(x: TensorType, shape) -> tuple[Dim, ...]:
    lead = len(shape) - x.rank
    if lead < 0:
        raise ShapeError(f"expand target {list(shape)} has fewer dims than {x}")
    out: list[Dim] = []
    for i, t in enumerate(shape):
        have = x.shape[i - lead] if i >= lead else None
        if t == -1:
            if have is None:
                raise ShapeError(f"expand: -1 at new leading dim {i} of {list(shape)}")
            out.append(have)
        elif isinstance(t, str) and t != have:
            raise ShapeError(f"expand of {x} to symbolic dim {t!r} at {i}: its size is only "
                             "known at run time from the input, so the input dim must be "
                             f"{t!r} too; broadcast with a binary op instead")
        elif not isinstance(t, (int, str)) or isinstance(t, bool) or (isinstance(t, int) and t < 0):
            raise ShapeError(f"bad expand entry {t!r}; use ints, -1 or the input's symbols")
        elif have is not None and have != 1 and have != t:
            raise ShapeError(f"expand: dim {i - lead} of {x} is {have}, cannot expand to {t}")
        else:
            out.append(t)
    return tuple(out)


@expand.infer
def _(x, shape):
    return x.with_shape(_expand_shape(x, shape))


@expand.reference
def _(x, shape):
    lead = len(shape) - x.ndim  # symbols and -1 always name an input dim (infer checks)
    target = [x.shape[i - lead] if (t == -1 or isinstance(t, str)) else t
              for i, t in enumerate(shape)]
    return fresh(np.broadcast_to(x, target))


@expand.examples
def _(rng):
    yield [rand(rng, (3, 1))], {"shape": (3, 4)}
    yield [rand(rng, (1, 4))], {"shape": (2, 5, 4)}
    yield [rand(rng, (2, 1))], {"shape": (-1, 3)}
    yield [rand(rng, (3,))], {"shape": (3,)}


tile = define_op("tile", inputs=("x",), attrs={"repeats": (tuple, REQUIRED)}, traits=TRAITS,
                 doc="torch Tensor.repeat: len(repeats) >= rank; missing leading dims are 1.")


@tile.infer
def _(x, repeats):
    if len(repeats) < x.rank or any(not isinstance(r, int) or r < 0 for r in repeats):
        raise ShapeError(f"tile repeats {repeats} must be >= 0 ints, at least one per dim of {x}")
    shape = (1,) * (len(repeats) - x.rank) + x.shape
    return x.with_shape(mul_dims([d, r]) for d, r in zip(shape, repeats))


@tile.reference
def _(x, repeats):
    return fresh(np.tile(x, repeats))


@tile.examples
def _(rng):
    yield [rand(rng, (2, 3))], {"repeats": (2, 1)}
    yield [rand(rng, (2, 3))], {"repeats": (3, 1, 2)}
    yield [rand(rng, (4,))], {"repeats": (0,)}
