"""Recurrence passes: find loops (rerolling, RNN recognition), analyse them, parallelize them."""

from . import newton, parallel_scan, recognize, reroll  # noqa: F401  (register the passes)
