"""Golden IR tests: `check_pass(spec, before, after)` (TVM's Before/Expected, as exact text).

`before` must be written in printed form: it is also checked to round-trip through parse and
print. On a mismatch the failure shows the actual IR ready to paste into the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from ember.ir import Graph, parse
from ember.ir.ops import has_schema
from ember.passes import Pipeline


def normalize(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines() if line.strip())


def requires_ops(*kinds: str):
    """Skip a test until the ops it needs are registered (the catalogue fills in over time)."""
    missing = [k for k in kinds if not has_schema(k)]
    return pytest.mark.skipif(bool(missing), reason=f"ops not registered yet: {missing}")


def _has_all_data(graph: Graph) -> bool:
    return all(isinstance(op.attrs.get("value"), np.ndarray) for op in graph.consts())


def check_pass(spec: str, before: str, after: str, check: bool = True) -> Graph:
    """Parse `before`, run `spec` (verified, numerically checked when the data is inline),
    and compare the printed result with `after`. Returns the result graph."""
    graph = parse(before)
    printed = str(graph)
    if normalize(printed) != normalize(before):
        pytest.fail("the `before` IR does not round-trip through parse/print; write it as:\n"
                    f'"""\n{printed}"""')
    pipeline = Pipeline.parse(spec)
    result = pipeline.run(graph, check=check and _has_all_data(graph))
    actual = str(result)
    if normalize(actual) != normalize(after):
        pytest.fail(f"IR after {spec!r} differs from the expected text. Actual (paste as "
                    f'`after` if it is right):\n"""\n{actual}"""')
    return result
