"""The pass pipeline: the `Pass` base, the pass registry, the spec parser and `Pipeline.run`.

`Pipeline.parse("fold,dce,quantize{scheme=int8,calib=128}")` builds pass instances from their
dataclass fields (xDSL's `from_spec`), so the same string works on the CLI and in Python. `run`
verifies after every pass, times it, records op-count/weight deltas and rewrite hits in a
`PassReport`, optionally checks numerics against the input graph, and turns any failure into a
`PassError` that says how to reproduce it. Option strings are converted in `options.py`;
reports and instruments live in `instruments.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tempfile
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import EmberError, PassError, PipelineSpecError
from ..ir.graph import Graph
from ..ir.interpret import check_inputs, run_graph
from ..ir.verify import verify as verify_graph
from .instruments import (
    Instrument, PassReport, PipelineReport, compare_outputs, normalize_samples,
)
from .options import (
    convert_option, describe_options, format_option, options_equal, split_top_level,
)

__all__ = ["Pass", "PassContext", "Pipeline", "register_pass", "register_requirement",
           "get_pass", "all_passes", "PassReport", "PipelineReport"]


class Pass:
    """Base of every pass. Subclass it as a frozen dataclass whose fields are the options.

    Class attributes: `name` (set by `@register_pass`), `tolerance` (None = the pass must not
    change any output bit; a float bounds max|after - before| / max(1, max|before|)) and
    `requires` (names in `REQUIREMENTS`, checked before `run`).
    """

    name: ClassVar[str] = "<unregistered>"
    tolerance: ClassVar[float | None] = None
    requires: ClassVar[tuple[str, ...]] = ()

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        raise NotImplementedError(f"pass {self.name} does not implement run(graph, ctx)")

    def options(self) -> dict[str, Any]:
        """Every option and its value (defaults included)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def spec(self) -> str:
        """The pipeline-string form of this instance; options at their default are left out."""
        changed = []
        fields: tuple[dataclasses.Field[Any], ...] = \
            dataclasses.fields(self) if dataclasses.is_dataclass(self) else ()
        for f in fields:
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            if not options_equal(value, default):
                changed.append(f"{f.name}={format_option(value)}")
        return self.name + ("{" + ",".join(changed) + "}" if changed else "")

    def __str__(self) -> str:
        return self.spec()

    @classmethod
    def from_options(cls, raw: dict[str, str]) -> Pass:
        """Build an instance from option strings, converting each by its field's type."""
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, text in raw.items():
            if key not in fields:
                raise PipelineSpecError(f"pass {cls.name!r} has no option {key!r}; "
                                        f"{describe_options(cls)}")
            values[key] = convert_option(text, hints[key], f"{cls.name}{{{key}=...}}")
        try:
            return cls(**values)
        except EmberError:
            raise
        except (TypeError, ValueError) as e:
            raise PipelineSpecError(f"pass {cls.name!r}: {e}; {describe_options(cls)}") from None


_PASSES: dict[str, type[Pass]] = {}


def register_pass(name: str) -> Callable[[type[Pass]], type[Pass]]:
    """Class decorator: make a dataclass `Pass` subclass available under `name` in pipelines."""

    def deco(cls: type[Pass]) -> type[Pass]:
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise EmberError(f"@register_pass({name!r}) needs a Pass subclass, got {cls!r}")
        if not dataclasses.is_dataclass(cls):
            raise EmberError(f"pass {name!r} ({cls.__name__}) must be a @dataclass(frozen=True)")
        if name in _PASSES and _PASSES[name].__qualname__ != cls.__qualname__:
            raise EmberError(f"pass name {name!r} is registered twice "
                             f"({_PASSES[name].__qualname__} and {cls.__qualname__})")
        cls.name = name
        _PASSES[name] = cls
        return cls

    return deco


def get_pass(name: str) -> type[Pass]:
    if name not in _PASSES:
        close = difflib.get_close_matches(name, list(_PASSES), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise PipelineSpecError(f"unknown pass {name!r}{hint}; known passes: "
                                f"{', '.join(sorted(_PASSES)) or 'none'}")
    return _PASSES[name]


def all_passes() -> dict[str, type[Pass]]:
    return dict(sorted(_PASSES.items()))


# ---- requirements: named preconditions a pass can list in `requires` ----------------------
def _static_shapes(graph: Graph, ctx: PassContext) -> str | None:
    symbolic = [f"{v.name}: {v.type}" for v in graph.inputs if not v.type.is_static]
    return f"needs static shapes but inputs {', '.join(symbolic)} have symbolic dims" if symbolic \
        else None


REQUIREMENTS: dict[str, Callable[[Graph, PassContext], str | None]] = {
    "static_shapes": _static_shapes,
    "calibration": lambda g, ctx: None if ctx.calibration is not None and len(ctx.calibration)
    else "needs calibration data: pass calibration=[(x, ...), ...] to Pipeline.run",
    "sample_inputs": lambda g, ctx: None if ctx.sample_inputs else
    "needs sample inputs: pass sample_inputs= (or calibration=) to Pipeline.run",
}


def register_requirement(name: str, check: Callable[[Graph, PassContext], str | None]) -> None:
    """Add a precondition: `check` returns None when met, else a sentence saying what is missing."""
    REQUIREMENTS[name] = check


@dataclasses.dataclass
class PassContext:
    """What a pass may read besides the graph; `current` is the report of the running pass.

    `progress_callback(what, done, total)` hears from the pipeline before each pass
    (what = the pass name, done = passes finished, total = passes in the pipeline) and from a
    long pass through `ctx.progress(done, total)` (what = that pass's name, its own units).
    """

    report: PipelineReport
    calibration: Sequence[tuple[np.ndarray, ...]] | None = None
    sample_inputs: list[tuple[np.ndarray, ...]] = dataclasses.field(default_factory=list)
    reference_outputs: list[list[np.ndarray]] = dataclasses.field(default_factory=list)
    progress_callback: Callable[[str, int, int], None] | None = None
    seed: int = 0
    rng: np.random.Generator = dataclasses.field(default_factory=lambda: np.random.default_rng(0))
    current: PassReport | None = None

    def record_rewrites(self, stats: Any) -> None:
        """Add a `RewriteStats` (or a {rule: hits} dict) to the running pass's report."""
        if self.current is not None:
            self.current.add_rewrites(stats)

    def note(self, **values: Any) -> None:
        """Pass-specific facts for the report (e.g. folded=12); keep values JSON-friendly."""
        if self.current is not None:
            self.current.notes.update(values)

    def progress(self, done: int, total: int) -> None:
        if self.progress_callback is not None and self.current is not None:
            self.progress_callback(self.current.name, done, total)


class Pipeline:
    """An ordered list of pass instances; `str(pipeline)` is its spec string."""

    def __init__(self, passes: Iterable[Pass | str | type[Pass]] = ()):
        items: list[Pass] = []
        for p in passes:
            if isinstance(p, str):
                items.extend(Pipeline.parse(p).passes)
            elif isinstance(p, Pass):
                items.append(p)
            elif isinstance(p, type) and issubclass(p, Pass):
                items.append(p())
            else:
                raise PipelineSpecError(f"Pipeline items are Pass instances or spec strings, "
                                        f"got {p!r}")
        self.passes: tuple[Pass, ...] = tuple(items)
        self.report: PipelineReport | None = None

    @classmethod
    def parse(cls, spec: str) -> Pipeline:
        passes = []
        for item in split_top_level(spec, ","):
            m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*(?:\{(.*)\})?\s*", item, re.DOTALL)
            if not m:
                raise PipelineSpecError(f"cannot read {item.strip()!r} in pipeline {spec!r}: "
                                        "write name or name{key=value,...}")
            pass_cls = get_pass(m.group(1))
            raw: dict[str, str] = {}
            for opt in split_top_level(m.group(2) or "", ","):
                key, eq, value = opt.partition("=")
                key = key.strip()
                if not eq or not key:
                    raise PipelineSpecError(f"pass {pass_cls.name!r}: option {opt.strip()!r} "
                                            f"is not key=value; {describe_options(pass_cls)}")
                if key in raw:
                    raise PipelineSpecError(f"pass {pass_cls.name!r}: option {key!r} given twice")
                raw[key] = value.strip()
            passes.append(pass_cls.from_options(raw))
        return cls(passes)

    def __str__(self) -> str:
        return ",".join(p.spec() for p in self.passes)

    def __repr__(self) -> str:
        return f"Pipeline({str(self)!r})"

    def __len__(self) -> int:
        return len(self.passes)

    def __iter__(self):
        return iter(self.passes)

    def __add__(self, other: Pipeline) -> Pipeline:
        return Pipeline([*self.passes, *other.passes])

    def run(self, graph: Graph, calibration: Sequence[tuple] | None = None, check: bool = False,
            sample_inputs: Any = None, instruments: Sequence[Instrument] = (),
            verify: bool = True, progress: Callable[[str, int, int], None] | None = None,
            seed: int = 0) -> Graph:
        """Run every pass on a copy of `graph` (the input is left alone) and return the result.

        `check=True` (or giving `sample_inputs`) runs the interpreter after every pass and fails
        when a pass exceeds its stated tolerance. The report is `self.report` and, as a dict,
        `result.meta["pass_report"]`.
        """
        graph = graph.clone()
        earlier = list(graph.meta.get("pass_report", {}).get("passes", []))
        report = PipelineReport(spec=str(self))
        self.report = report
        ctx = PassContext(report=report, calibration=calibration, progress_callback=progress,
                          seed=seed, rng=np.random.default_rng(seed))
        if verify:
            verify_graph(graph)  # a broken input is not the first pass's fault
        if check or sample_inputs is not None:
            ctx.sample_inputs = normalize_samples(graph, sample_inputs, calibration, ctx.rng)
            with np.errstate(all="ignore"):
                ctx.reference_outputs = [run_graph(graph, check_inputs(graph, s))
                                         for s in ctx.sample_inputs]
        for inst in instruments:
            inst.start(graph, ctx)
        outputs = ctx.reference_outputs
        t0 = time.perf_counter()
        for i, pass_ in enumerate(self.passes):
            if progress is not None:
                progress(pass_.name, i, len(self.passes))
            graph, outputs = self._run_one(i, pass_, graph, ctx, instruments, verify, outputs)
        report.seconds = time.perf_counter() - t0
        for inst in instruments:
            inst.finish(graph, report)
        record = report.to_dict()  # a graph that went through earlier pipelines keeps their rows
        record["passes"] = earlier + record["passes"]
        graph.meta["pass_report"] = record
        return graph

    def _run_one(self, i: int, pass_: Pass, graph: Graph, ctx: PassContext,
                 instruments: Sequence[Instrument], verify: bool, previous: list[list[np.ndarray]]):
        entry = PassReport(name=pass_.name, spec=pass_.spec(), options=pass_.options(),
                           ops_before=graph.op_counts(), weight_bytes_before=graph.weight_bytes(),
                           tolerance=pass_.tolerance)
        ctx.current = entry
        saved = graph.clone()  # the pass may edit in place; keep its input to save on failure
        for inst in instruments:
            inst.before(pass_, graph, ctx)
        outputs = previous
        try:
            for req in pass_.requires:
                if req not in REQUIREMENTS:
                    raise EmberError(f"unknown requirement {req!r}; known: {sorted(REQUIREMENTS)}")
                problem = REQUIREMENTS[req](graph, ctx)
                if problem:
                    raise EmberError(problem)
            t0 = time.perf_counter()
            out = pass_.run(graph, ctx)
            entry.seconds = time.perf_counter() - t0
            if not isinstance(out, Graph):
                raise EmberError(f"run() returned {type(out).__name__}, not a Graph (return the "
                                 "graph even when editing it in place)")
            if verify:
                t1 = time.perf_counter()
                verify_graph(out)
                entry.verify_seconds = time.perf_counter() - t1
            entry.ops_after = out.op_counts()
            entry.weight_bytes_after = out.weight_bytes()
            if ctx.sample_inputs:
                outputs = self._check_numerics(pass_, out, ctx, entry, previous)
        except Exception as e:
            raise self._failure(i, pass_, saved, e) from e
        finally:
            ctx.current = None
        ctx.report.passes.append(entry)
        for inst in instruments:
            inst.after(pass_, out, entry)
        return out, outputs

    @staticmethod
    def _check_numerics(pass_: Pass, graph: Graph, ctx: PassContext, entry: PassReport,
                        previous: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        with np.errstate(all="ignore"):
            outputs = [run_graph(graph, list(s)) for s in ctx.sample_inputs]
        entry.max_abs_error, entry.mean_abs_error, _ = compare_outputs(outputs,
                                                                       ctx.reference_outputs)
        step_max, _, scale = compare_outputs(outputs, previous)
        entry.step_error = step_max / scale
        allowed = pass_.tolerance or 0.0
        if not entry.step_error <= allowed:
            what = "changed outputs but states it is exact (tolerance None)" \
                if pass_.tolerance is None else f"exceeds its tolerance {pass_.tolerance:g}"
            raise EmberError(f"numeric check: {what}: max |after - before| = {step_max:.3g}, "
                             f"relative to output scale {scale:.3g}: {entry.step_error:.3g}")
        return outputs

    def _failure(self, i: int, pass_: Pass, saved: Graph, exc: Exception) -> PassError:
        done = ", ".join(p.spec() for p in self.passes[:i]) or "none"
        where = _save_input(saved, i, pass_)
        err = PassError(
            f"pass {pass_.name!r} (#{i + 1} of {len(self.passes)}) failed: "
            f"{type(exc).__name__}: {exc}\n"
            f"  options: {pass_.options() or 'none'}\n"
            f"  passes already run: {done}\n"
            f"  its input IR was saved to {where}\n"
            f"  reproduce with: ember opt --passes \"{pass_.spec()}\" {where}")
        err.pass_name, err.saved_input = pass_.name, where  # type: ignore[attr-defined]
        return err


def _save_input(graph: Graph, i: int, pass_: Pass) -> str:
    """Save a failing pass's input (with weights when possible); returns the path."""
    from ..ir.printer import print_graph
    from ..ir.serialize import save

    folder = Path(tempfile.mkdtemp(prefix="ember-pass-"))
    path = folder / f"{i + 1:02d}-{pass_.name}.input.ember"
    try:
        save(graph, path)
        return str(path)
    except Exception:  # e.g. consts parsed from text without their data: keep the text at least
        try:
            text_path = path.with_name(path.name + ".txt")
            text_path.write_text(print_graph(graph))
            return f"{text_path} (IR text only; weights were not available)"
        except Exception as e:
            return f"<not saved: {e}>"
