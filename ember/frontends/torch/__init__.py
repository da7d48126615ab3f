"""torch.nn.Module -> ember graph through torch.export (`ember.trace`).

Layout: `trace.py` (export, decomposition table, inputs, the one UnsupportedOpError),
`importer.py` (the fx graph walk, symbols, locations), `table.py` (ATen -> ember data) and the
`convert_*.py` modules with the converters of the irregular ops, by family.
"""

from __future__ import annotations

from . import convert_control, convert_math, convert_nn, convert_shape  # noqa: F401 (register)
from .table import ATEN_TO_EMBER, ATTRS, CONVERTERS, converts
from .trace import decomposition_table, trace

__all__ = ["ATEN_TO_EMBER", "ATTRS", "CONVERTERS", "converts", "decomposition_table", "trace"]
