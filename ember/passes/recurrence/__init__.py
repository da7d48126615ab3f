"""Recurrence passes: find loops (rerolling, RNN recognition), analyse them, parallelize them."""

from . import parallel_scan, reroll  # noqa: F401  (register the passes)
