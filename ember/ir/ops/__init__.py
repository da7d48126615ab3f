"""Op registry and the op catalogue, one module per family.

Importing this package registers every op. A new family module needs one import line here.
"""

from .registry import (  # noqa: F401
    COMMUTATIVE, ELEMENTWISE, HAS_REGIONS, NO_FOLD, PURE, REQUIRED, SHAPE_ONLY, SIDE_EFFECT,
    OpSchema, all_schemas, define_op, get_schema, has_schema,
)
# importing the family modules registers their ops
from . import (  # noqa: F401,E402
    attention, control, core, elementwise, indexing, nn, parallel_scan, quant, quant_lowbit,
    reduce, shape, sparse,
)
