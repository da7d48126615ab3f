"""Calibration: run the float graph on calibration batches and observe chosen activations.

Why through the reference interpreter: it is the ground truth every backend matches, needs no
compiler, and by temporarily adding the watched values as extra graph outputs it returns them
without any hook machinery. A rich progress bar shows the batches (long calibrations on 2 cores
take a while); pass `progress=False` to silence it (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...ir.graph import Graph, Value
from ...ir.interpret import check_inputs, run_graph

__all__ = ["collect", "observe"]


def collect(graph: Graph, values: Sequence[Value], calibration: Sequence[tuple],
            limit: int, on_batch: Callable[[int, int], None] | None = None,
            show: bool = True) -> list[list[np.ndarray]]:
    """For each batch (at most `limit` batches, or rows when a batch holds several), the
    arrays of `values`; `on_batch(done, total)` is called after each."""
    batches = _take(calibration, limit)
    saved = list(graph.outputs)
    graph.set_outputs(*saved, *values)
    out: list[list[np.ndarray]] = []
    try:
        with _bar(len(batches), show) as advance:
            for i, batch in enumerate(batches):
                with np.errstate(all="ignore"):
                    res = run_graph(graph, check_inputs(graph, list(batch)))
                out.append(res[len(saved):])
                advance()
                if on_batch is not None:
                    on_batch(i + 1, len(batches))
    finally:
        graph.set_outputs(*saved)
    return out


def observe(graph: Graph, values: Sequence[Value], calibration: Sequence[tuple], limit: int,
            make: Callable[[], object], on_batch=None, show: bool = True) -> list:
    """One observer per value, fed with every calibration batch."""
    observers = [make() for _ in values]
    for arrays in collect(graph, values, calibration, limit, on_batch, show):
        for obs, arr in zip(observers, arrays):
            obs.observe(arr)  # type: ignore[attr-defined]
    return observers


def _take(calibration: Sequence[tuple], limit: int) -> list[tuple]:
    """Batches until `limit` samples (leading dim) are covered; at least one batch."""
    out, seen = [], 0
    for batch in calibration:
        if out and seen >= limit:
            break
        out.append(tuple(np.asarray(a) for a in batch))
        first = out[-1][0] if out[-1] else None
        seen += int(first.shape[0]) if first is not None and first.ndim else 1
    return out


class _bar:
    """A rich progress bar when stderr is a terminal and `show`; otherwise silent."""

    def __init__(self, total: int, show: bool):
        self.total, self.show, self.progress = total, show, None

    def __enter__(self):
        import sys

        if self.show and sys.stderr.isatty():
            from rich.progress import Progress

            self.progress = Progress(transient=True)
            self.progress.start()
            task = self.progress.add_task("calibrating", total=self.total)
            return lambda: self.progress.advance(task)  # type: ignore[union-attr]
        return lambda: None

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False
