"""`ember inspect`, `ember passes` and `ember bench`: tables for people."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import typing
from pathlib import Path
from typing import Any

from ..errors import EmberError

DEFAULT_ENGINES = "torch,torch.compile,onnxruntime,ember"


def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..runtime import read_artifact

    artifact = read_artifact(args.artifact, check_target=False)  # inspecting needs no match
    console = Console()
    if args.json:
        console.print_json(json.dumps(artifact.manifest))
        return 0
    for table in manifest_tables(artifact):
        console.print(table)
    report = artifact.manifest.get("pipeline", {}).get("report") or {}
    if report.get("passes"):
        console.print(report_table(report))
    if not args.no_ir:
        console.rule("final IR (graph.ember.txt)")
        console.print(artifact.ir_text, markup=False, highlight=False, soft_wrap=True)
    return 0


def manifest_tables(artifact: Any) -> list[Any]:
    from rich.markup import escape
    from rich.table import Table

    from ..runtime.compat import check_host

    m = artifact.manifest
    target = m.get("target", {})
    reason = check_host(target)
    summary = Table(title=f"{artifact.path}", title_justify="left", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows = [("model", m.get("name", "?")),
            ("format", (f"{m.get('format_version')} (ember {m.get('ember_version')}, "
                        f"TVM {m.get('tvm_version')})")),
            ("target", f"{target.get('name')}  {json.dumps(target.get('target'))}"),
            ("needs", (f"{target.get('arch')} / {target.get('os')}; CPU features: "
                       f"{', '.join(target.get('host_features') or []) or 'baseline'}")),
            ("runs here", "yes" if reason is None else f"[red]no: {escape(reason)}[/]"),
            ("passes", m.get("pipeline", {}).get("spec") or "(none)"),
            ("timings", ", ".join(f"{k} {v:.2f}s" for k, v in m.get("timings", {}).items()
                                  if "." not in k)),
            ("members", ", ".join(f"{n} {len(d) / 1024:.0f} kB"
                                  for n, d in artifact.members.items()))]
    tuning = m.get("tuning")
    if tuning:
        text = (f"{tuning.get('applied', 0)} of {tuning.get('kernels', '?')} kernels use tuned "
                f"schedules (records {tuning.get('records')})")
        rows.append(("tuning", text))
    for key, value in rows:
        summary.add_row(key, str(value) if key == "runs here" else escape(str(value)))
    io = Table(title="inputs and outputs", title_justify="left")
    for col in ("", "name", "shape", "dtype"):
        io.add_column(col)
    for kind, specs in (("in", artifact.inputs), ("out", artifact.outputs)):
        for s in specs:
            io.add_row(kind, s.name, escape("[" + ",".join(map(str, s.shape)) + "]"), s.dtype)
    return [summary, io]


def report_table(report: dict) -> Any:
    """The pipeline report as a table (the passes package's own renderer when present)."""
    try:
        from ..passes.instruments import PipelineReport

        return PipelineReport.from_dict(report).table()
    except (ImportError, AttributeError, TypeError, KeyError):
        from rich.table import Table

        table = Table(title=f"passes: {report.get('spec', '')}", title_justify="left")
        for col in ("pass", "ms", "max |error|"):
            table.add_column(col)
        for p in report.get("passes", []):
            err = p.get("max_abs_error")
            table.add_row(p.get("spec") or p.get("name", "?"), f"{p.get('seconds', 0) * 1e3:.1f}",
                          "-" if err is None else f"{err:.2g}")
        return table


# ---- passes -----------------------------------------------------------------------------------
def cmd_passes(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..passes import all_passes

    registry = all_passes()
    unknown = [n for n in args.names if n not in registry]
    if unknown:
        raise EmberError(f"unknown pass(es) {', '.join(unknown)}; known: {', '.join(registry)}")
    table = Table(title="registered passes (use as --passes \"name{option=value,...}\")",
                  title_justify="left", show_lines=True)
    # The pass name is what users type: never wrap or crop it; long option lists fold instead.
    table.add_column("pass", no_wrap=True, min_width=max(map(len, registry), default=4))
    table.add_column("options", overflow="fold", ratio=2)
    table.add_column("numerics", overflow="fold", ratio=1)
    table.add_column("description", overflow="fold", ratio=3)
    for name, cls in registry.items():
        if args.names and name not in args.names:
            continue
        numerics = "exact" if cls.tolerance is None else f"tolerance {cls.tolerance:g}"
        if cls.requires:
            numerics += f"\nneeds: {', '.join(cls.requires)}"
        table.add_row(name, pass_options(cls) or "-", numerics, inspect.getdoc(cls) or "")
    Console().print(table)
    return 0


def pass_options(cls: type) -> str:
    """One line per option: name: type = default."""
    if not dataclasses.is_dataclass(cls):
        return ""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        lines.append(f"{f.name}: {_type_name(hints.get(f.name, f.type))} = {default!r}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# ---- bench ------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .. import bench

    console = Console()
    console = Console(width=max(console.width, 170))  # 14 columns: wrap rather than elide
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise EmberError(f"--batches {args.batches!r}: write comma-separated integers") from None
    kwargs = {} if args.passes is None else {"passes": args.passes}
    engines = args.engines.split(",")
    remote = getattr(args, "remote", None)
    if remote and args.engines == DEFAULT_ENGINES:  # the device runs ember only
        engines = ["ember"]
    records = getattr(args, "records", None)
    if records and not Path(records).is_dir():
        raise EmberError(f"--records {records}: no such directory (it should hold NAME.tune "
                         "directories written by `ember tune zoo:NAME --records DIR/NAME.tune`)")
    with console.status("benchmarking...") as status:
        report = bench.run(args.models or None, engines=engines, batches=batches,
                           records=records, remote=remote,
                           warmup=args.warmup, repeat=args.repeat, threads=args.threads,
                           log=lambda msg: status.update(f"benchmarking {msg}..."), **kwargs)
    if remote:
        console.print(f"ember engines timed on {remote} (TVM time_evaluator on the device; "
                      "other engines ran here)")
    console.print(bench.table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        console.print(f"wrote {args.json}")
    return 0
