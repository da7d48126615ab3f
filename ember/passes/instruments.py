"""What the pipeline records and who may watch it: pass reports and instruments.

The numeric-check helpers (default sample inputs, output comparison) live here too.
Reports are plain data (JSON via `to_dict`) because they travel inside the artifact and are
printed by `ember inspect`. Instruments are TVM-style before/after hooks, so debugging aids are
objects passed to `Pipeline.run(instruments=[...])` rather than global flags:

    PrintAfter("canonicalize")      PrintAfter("all")      DumpDir("ir-dumps/")   TimePasses()
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    from ..ir.graph import Graph
    from .pipeline import Pass, PassContext


@dataclasses.dataclass
class PassReport:
    """One pass's run: time, op/weight deltas, rewrite hits and (with check=True) its error.

    `max_abs_error`/`mean_abs_error` compare with the pipeline's input graph; `step_error` is
    max|after - before| / max(1, max|before|) against the previous stage, the number the pass's
    `tolerance` bounds.
    """

    name: str
    spec: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    verify_seconds: float = 0.0
    ops_before: dict[str, int] = dataclasses.field(default_factory=dict)
    ops_after: dict[str, int] = dataclasses.field(default_factory=dict)
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    rewrites: dict[str, int] = dataclasses.field(default_factory=dict)
    rewrite_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    tolerance: float | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    step_error: float | None = None

    @property
    def op_delta(self) -> dict[str, int]:
        """Per kind, ops after minus ops before (kinds that did not change are left out)."""
        kinds = set(self.ops_before) | set(self.ops_after)
        delta = {k: self.ops_after.get(k, 0) - self.ops_before.get(k, 0) for k in sorted(kinds)}
        return {k: d for k, d in delta.items() if d}

    def add_rewrites(self, stats: Any) -> None:
        hits = stats.hits if hasattr(stats, "hits") else dict(stats)
        for rule, n in hits.items():
            self.rewrites[rule] = self.rewrites.get(rule, 0) + int(n)
        for rule, s in getattr(stats, "seconds", {}).items():
            self.rewrite_seconds[rule] = self.rewrite_seconds.get(rule, 0.0) + float(s)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PassReport:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass
class PipelineReport:
    """Every pass's report in order, plus the pipeline spec and total wall time."""

    spec: str = ""
    passes: list[PassReport] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "seconds": self.seconds,
                "passes": [p.to_dict() for p in self.passes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineReport:
        return cls(data.get("spec", ""), [PassReport.from_dict(p) for p in data.get("passes", [])],
                   data.get("seconds", 0.0))

    def table(self) -> Any:
        """A rich Table: one row per pass."""
        from rich.table import Table

        table = Table(title=f"passes: {self.spec or '(none)'}", title_justify="left")
        for col in ("#", "pass", "ms", "ops", "weights", "changes", "top rewrites", "error"):
            table.add_column(col, justify="right" if col in ("#", "ms") else "left")
        for i, p in enumerate(self.passes, 1):
            n0, n1 = sum(p.ops_before.values()), sum(p.ops_after.values())
            changes = " ".join(f"{k}{d:+d}" for k, d in list(p.op_delta.items())[:4])
            top = sorted(p.rewrites.items(), key=lambda kv: -kv[1])[:3]
            error = "-" if p.max_abs_error is None else f"{p.max_abs_error:.2g}"
            table.add_row(str(i), p.spec, f"{p.seconds * 1e3:.1f}", f"{n0}->{n1}",
                          f"{_bytes(p.weight_bytes_before)}->{_bytes(p.weight_bytes_after)}",
                          changes or "-", ", ".join(f"{k}={v}" for k, v in top) or "-", error)
        return table

    def render(self, width: int = 120) -> str:
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=width, color_system=None, force_terminal=False).print(self.table())
        return buf.getvalue()

    def __str__(self) -> str:
        return self.render()


def compare_outputs(outs: list[list[np.ndarray]], refs: list[list[np.ndarray]]
                    ) -> tuple[float, float, float]:
    """(max abs error, mean abs error, max(1, max |ref|)) over every sample and output.

    NaN matching NaN (and equal infinities) count as equal; a NaN against a number is infinite
    error. A changed output shape raises, since no error number describes it.
    """
    from ..errors import EmberError

    worst, total, count, scale = 0.0, 0.0, 0, 1.0
    for out, ref in zip(outs, refs, strict=True):
        for k, (o, r) in enumerate(zip(out, ref, strict=True)):
            if o.shape != r.shape:
                raise EmberError(f"output {k} changed shape from {list(r.shape)} to "
                                 f"{list(o.shape)}")
            o64, r64 = o.astype(np.float64), r.astype(np.float64)
            same = (o64 == r64) | (np.isnan(o64) & np.isnan(r64))
            with np.errstate(invalid="ignore"):
                diff = np.where(same, 0.0, np.abs(o64 - r64))
            diff = np.where(np.isnan(diff), np.inf, diff)
            if diff.size:
                worst = max(worst, float(diff.max()))
                total += float(diff.sum())
                count += diff.size
            finite = np.abs(r64[np.isfinite(r64)])
            if finite.size:
                scale = max(scale, float(finite.max()))
    return worst, (total / count if count else 0.0), scale


def normalize_samples(graph: Graph, samples: Any, calibration: Any,
                      rng: np.random.Generator, n_calib: int = 2) -> list[tuple[np.ndarray, ...]]:
    """Samples as a list of input tuples; defaults to calibration batches (cut down to static
    dims), else random data.

    `samples` is a list of tuples (one array per graph input); a bare array or a tuple of arrays
    counts as one sample. Random data binds every symbolic dim to 2, floats ~ N(0, 1), ints 0/1.
    """
    if samples is None:
        if calibration is not None and len(calibration):  # cut batches to static dims
            return [tuple(_fit(np.asarray(a), v.type) for a, v in zip(batch, graph.inputs))
                    for batch in list(calibration)[:n_calib]]
        else:
            return [tuple(_random_input(v.type, rng) for v in graph.inputs)]
    if isinstance(samples, np.ndarray) or (
            isinstance(samples, tuple) and all(isinstance(a, np.ndarray) for a in samples)):
        samples = [samples]
    out = []
    for s in samples:
        s = (s,) if isinstance(s, np.ndarray) else tuple(s)
        out.append(tuple(np.asarray(a) for a in s))
    return out


def _fit(arr: np.ndarray, t: Any) -> np.ndarray:
    if arr.ndim != t.rank:
        return arr
    return arr[tuple(slice(0, d) if isinstance(d, int) else slice(None) for d in t.shape)]


def _random_input(t: Any, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(d if isinstance(d, int) else 2 for d in t.shape)
    np_dtype = t.dtype.to_numpy()
    if t.dtype.is_float:
        return rng.standard_normal(shape).astype(np_dtype)
    if np_dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 2, shape).astype(np_dtype)


class Instrument:
    """Hooks around every pass; override the ones you need (all default to doing nothing)."""

    def start(self, graph: Graph, ctx: PassContext) -> None: ...

    def before(self, pass_: Pass, graph: Graph, ctx: PassContext) -> None: ...

    def after(self, pass_: Pass, graph: Graph, report: PassReport) -> None: ...

    def finish(self, graph: Graph, report: PipelineReport) -> None: ...


class PrintAfter(Instrument):
    """Print the IR after the named passes (`"all"` for every pass)."""

    def __init__(self, names: str | Iterable[str] = "all", stream: TextIO | None = None):
        self.names = None if names == "all" else ({names} if isinstance(names, str) else set(names))
        self.stream = stream

    def after(self, pass_: Pass, graph: Graph, report: PassReport) -> None:
        if self.names is None or pass_.name in self.names:
            out = self.stream or sys.stdout
            out.write(f"// ---- IR after {report.spec} ----\n{graph}")


class DumpDir(Instrument):
    """Write `00-input.ember.txt`, then `NN-<pass>.ember.txt` after each pass into `path`.

    `diff 02-fold.ember.txt 03-dce.ember.txt` is then dce's diff.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.index = 0

    def start(self, graph: Graph, ctx: PassContext) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.index = 0
        (self.path / "00-input.ember.txt").write_text(str(graph))

    def after(self, pass_: Pass, graph: Graph, report: PassReport) -> None:
        self.index += 1
        (self.path / f"{self.index:02d}-{pass_.name}.ember.txt").write_text(str(graph))


class TimePasses(Instrument):
    """Print the report table when the pipeline finishes (the CLI's --time-passes)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def finish(self, graph: Graph, report: PipelineReport) -> None:
        (self.stream or sys.stdout).write(report.render())


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f}GiB"


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    return str(v)
