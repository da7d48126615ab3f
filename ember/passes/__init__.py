"""Graph-to-graph passes and the pipeline that runs them.

    g = Pipeline.parse("fold,dce,cse,canonicalize").run(g, check=True)
    print(pipeline.report.render())           # per pass: time, op/weight deltas, rewrites, error

Writing a pass (one file per pass, named after it, e.g. `passes/prune/nm.py`):

    from dataclasses import dataclass
    from typing import ClassVar, Literal
    from ember.passes.pipeline import Pass, PassContext, register_pass

    @register_pass("prune_nm")                 # the name used in specs, the CLI and reports
    @dataclass(frozen=True)
    class PruneNM(Pass):
        '''One line saying what it does and why (shown by `ember passes`).'''

        pattern: str = "2:4"                   # options: typed dataclass fields with defaults;
        skip: tuple[str, ...] = ()             #   "prune_nm{pattern=1:4,skip=head|embed}"
        mode: Literal["magnitude", "wanda"] = "magnitude"
        tolerance: ClassVar[float | None] = 5e-2   # None = exact (checked with check=True)
        requires: ClassVar[tuple[str, ...]] = ("calibration",)   # see pipeline.REQUIREMENTS

        def run(self, graph, ctx: PassContext):
            ...                                # edit in place (Graph API) or build a new graph
            ctx.note(pruned_weights=12)        # pass-specific facts for the report
            return graph                       # always return the graph

Option types usable from a spec string: int, float, bool, str, Literal[...], `X | None` and
tuples/lists of those (`a|b` or `[a,b]`). `ctx` carries `calibration` (list of input tuples),
`sample_inputs`, `reference_outputs` (the input graph's outputs on them), `rng`/`seed`,
`progress(done, total)`, `note(**facts)` and `record_rewrites(stats)` for `rewrite.rewrite`
results. The pipeline verifies after every pass, so a pass need not verify itself; it wraps any
exception in a `PassError` that saves the pass's input IR for `ember opt` to replay.

Pattern rewrites: `ember.passes.rewrite` (`P`, `Rules`, `rewrite`). A new pass family is a
sub-package whose `__init__` imports its pass modules, plus one name in `_FAMILIES` below.
"""

from __future__ import annotations

import importlib
import importlib.util

from .instruments import DumpDir, Instrument, PassReport, PipelineReport, PrintAfter, TimePasses
from .pipeline import (
    Pass, PassContext, Pipeline, all_passes, get_pass, register_pass, register_requirement,
)
from .rewrite import P, RewriteStats, Rules, rewrite

# Families whose passes register on import; one that is not written yet is skipped.
_FAMILIES = ("cleanup", "quantize", "prune", "distill", "recurrence")
for _family in _FAMILIES:
    if importlib.util.find_spec(f"{__name__}.{_family}") is not None:
        importlib.import_module(f"{__name__}.{_family}")

__all__ = ["Pass", "PassContext", "Pipeline", "register_pass", "register_requirement",
           "get_pass", "all_passes", "PassReport", "PipelineReport", "Instrument", "PrintAfter",
           "DumpDir", "TimePasses", "P", "Rules", "rewrite", "RewriteStats"]
