"""Step distillation: an N-step sampler loop becomes a K-step one, as compiler passes.

`ember.Sampler` (sampler.py) traces a flow sampler to one `ctrl.scan` whose schedule and solver
are a scanned table; `recognize` finds it (or rerolls an unrolled Euler chain); `steps` searches a
K-step schedule without training (search.py); `distill_steps` trains a K-step student
(progressive.py, reflow.py); metrics.py scores samplers against the teacher.
"""

from __future__ import annotations

from . import distill_steps, search  # noqa: F401  (register the passes)
from .recognize import SamplerLoop, find_sampler, recognize
from .sampler import Sampler, solver_table

__all__ = ["Sampler", "SamplerLoop", "find_sampler", "recognize", "solver_table"]
