"""Cleanup passes: generic, trait-driven, exact (canonicalize's batch-norm folding excepted).

    fold          evaluate pure ops whose inputs are all consts (with the op's numpy reference)
    dce           drop ops nobody reads (SIDE_EFFECT ops stay), in regions too
    cse           merge identical pure ops and identical consts (tied weights stored once)
    canonicalize  algebraic identities, shape-op chains, batch-norm folding
"""

from . import canonicalize, cse, dce, fold  # noqa: F401  (registers the passes)
