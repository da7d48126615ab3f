"""Quantization passes: `quantize{scheme=...}` and the `smooth_quant` pre-pass.

Importing this package registers them. Modules: observers/calibrate (activation ranges),
int8/int4/binary/ternary/residual/partial (one scheme each), mixed (sensitivity-guided plan),
report (per-layer SQNR rows), quantize (the pass), smooth (SmoothQuant).
"""

from __future__ import annotations

from . import quantize, smooth  # noqa: F401  (register the passes)
from .quantize import Quantize
from .smooth import SmoothQuant

__all__ = ["Quantize", "SmoothQuant"]
