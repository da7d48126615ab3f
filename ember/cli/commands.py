"""`ember compile`, `ember run` and `ember opt`: argument handling around the Python API."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmberError, InputError

_IDENT = re.compile(r"^[A-Za-z_]\w*$")


# ---- compile ---------------------------------------------------------------------------------
def cmd_compile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..compiler import compile as ember_compile

    model, example_inputs, dynamic_dims, calibration, name = load_source(
        args.source, args.example_shape, args.dynamic)
    output = Path(args.output or f"{name}.ember")
    path = ember_compile(model, example_inputs, passes=args.passes, target=args.target,
                         output=output, calibration=calibration, dynamic_dims=dynamic_dims,
                         check=not args.no_check, progress=True)
    size = path.stat().st_size / 1024
    Console(stderr=True).print(f"[green]wrote[/] {path} ({size:.0f} kB)")
    return 0


# ---- tune ------------------------------------------------------------------------------------
def cmd_tune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..backends.tvm.tune import Records, TuneConfig, default_records_dir
    from ..compiler import compile as ember_compile

    if args.batch < 1 or args.trials < 1 or (args.trials_per_task or 1) < 1:
        raise InputError("--batch, --trials and --trials-per-task must be positive")
    if bool(args.rpc_tracker) != bool(args.rpc_key):
        raise InputError("--rpc-tracker and --rpc-key go together (the tracker's address and "
                         "the key the device registered with)")
    model, examples, _, calibration, name = load_source(args.source, args.example_shape, [])
    if examples is not None:  # a static batch: MetaSchedule measures concrete shapes
        examples = tuple(_at_batch(x, args.batch) for x in examples)
    output = Path(args.output or f"{name}.ember")
    records = Path(args.records) if args.records else default_records_dir(output)
    config = TuneConfig(trials=args.trials, trials_per_task=args.trials_per_task, force=True,
                        rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key)
    path = ember_compile(model, examples, passes=args.passes, target=args.target, output=output,
                         calibration=calibration, dynamic_dims=None, check=not args.no_check,
                         progress=True, tune=config, records=records)
    console = Console(stderr=True)
    console.print(tuning_table(Records(records).summary(), records))
    console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1024:.0f} kB), records in "
                  f"{records}")
    return 0


def _at_batch(x: Any, batch: int) -> Any:
    """`x` tiled (or cut) along dim 0 to `batch` rows."""
    import torch

    reps = -(-batch // max(1, x.shape[0]))
    return torch.cat([x] * reps)[:batch].contiguous()


def tuning_table(summary: dict, records: Path) -> Any:
    from rich.table import Table

    table = Table(title=f"tuning records {records} (target {summary.get('target', '?')})",
                  title_justify="left")
    for col in ("kernel", "calls", "ember µs", "tuned µs", "speedup", "trials", "choice"):
        table.add_column(col, justify="left" if col in ("kernel", "choice") else "right")
    for entry in summary.get("kernels", {}).values():
        ember_us, tuned_us = entry.get("ember_us"), entry.get("tuned_us")
        speedup = f"{ember_us / tuned_us:.2f}x" if ember_us and tuned_us else "-"
        table.add_row(str(entry.get("name")), str(entry.get("calls", 1)),
                      "-" if ember_us is None else f"{ember_us:.1f}",
                      "-" if tuned_us is None else f"{tuned_us:.1f}", speedup,
                      str(entry.get("trials", 0)), str(entry.get("choice")))
    return table


def load_source(source: str, shapes: list[str], dynamic: list[str]):
    """(model, example inputs, dynamic dims, calibration, default name) for a CLI source."""
    if source.startswith("zoo:"):
        import ember.zoo

        z = ember.zoo.load(source[4:])
        examples = _example_inputs(shapes) if shapes else tuple(z.example_inputs)
        names = list(z.input_names)
        dims = parse_dynamic(dynamic, names) if dynamic else z.dynamic_dims
        return z.module, examples, dims, z.calibration, z.name
    if source.endswith(".onnx"):
        if not Path(source).is_file():
            raise InputError(f"{source}: no such ONNX file")
        return source, None, None, None, Path(source).stem
    module = _module_from_file(source)
    if not shapes:
        raise InputError(f"compiling {source} needs example inputs: add --example-shape "
                         "NAME=D0,D1,... for each forward() argument (e.g. --example-shape "
                         "x=1,64)")
    examples = _example_inputs(shapes)
    names = [s.partition("=")[0] for s in shapes]
    name = source.rpartition(":")[2]
    return module, examples, parse_dynamic(dynamic, names) if dynamic else None, None, name


def _module_from_file(source: str):
    path, sep, attr = source.rpartition(":")
    if not sep or not path.endswith(".py") or not attr:
        raise InputError(f"cannot read model source {source!r}: use zoo:NAME, "
                         "path/to/file.py:ATTR or model.onnx")
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_ember_user_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.path.insert(0, str(Path(path).resolve().parent))  # let the file import its neighbours
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        sys.path.pop(0)
    if not hasattr(module, attr):
        public = [n for n in vars(module) if not n.startswith("_")]
        raise InputError(f"{path} has no attribute {attr!r}; it defines {', '.join(public)}")
    import torch

    obj = getattr(module, attr)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise InputError(f"{path}:{attr} is a {type(obj).__name__}; it must be an "
                             "nn.Module instance or a zero-argument factory returning one")
        try:
            obj = obj()
        except TypeError as e:
            raise InputError(f"calling {path}:{attr}() failed ({e}); it must take no "
                             "arguments") from None
        if not isinstance(obj, torch.nn.Module):
            raise InputError(f"{path}:{attr}() returned a {type(obj).__name__}, not an "
                             "nn.Module")
    return obj.eval()


def _example_inputs(shapes: list[str]) -> tuple:
    import torch

    gen = torch.Generator().manual_seed(0)
    tensors = []
    for item in shapes:
        name, eq, dims = item.partition("=")
        try:
            shape = [int(d) for d in dims.split(",")] if dims else []
        except ValueError:
            shape = None
        if not eq or not _IDENT.match(name) or shape is None or any(d < 1 for d in shape):
            raise InputError(f"--example-shape {item!r}: write NAME=D0,D1,... with positive "
                             "integer dims, e.g. x=1,64")
        tensors.append(torch.randn(*shape, generator=gen))
    return tuple(tensors)


def parse_dynamic(specs: list[str], names: list[str]) -> dict[str, dict[int, str]] | None:
    """--dynamic values -> {input: {dim: symbol}}; 'batch' marks dim 0 of every input."""
    dims: dict[str, dict[int, str]] = {}
    for spec in specs:
        if spec == "none":
            return None
        m = re.fullmatch(r"(\w+):(\d+)=(\w+)", spec)
        if m:
            if m.group(1) not in names:
                raise InputError(f"--dynamic {spec!r}: no input named {m.group(1)!r} (inputs: "
                                 f"{', '.join(names)})")
            dims.setdefault(m.group(1), {})[int(m.group(2))] = m.group(3)
        elif _IDENT.match(spec):
            for name in names:
                dims.setdefault(name, {})[0] = spec
        else:
            raise InputError(f"--dynamic {spec!r}: write a symbol name (dim 0 of every input), "
                             "INPUT:DIM=SYMBOL, or none")
    return dims


# ---- run -------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    if args.process_is_cli and "tvm" not in sys.modules:  # only runs: skip TVM's compiler
        os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    from rich.console import Console
    from rich.table import Table

    from ..runtime import load

    if getattr(args, "remote", None):  # the artifact runs on the RPC server, not here
        from ..backends.tvm.remote import connect_remote

        model = connect_remote(args.artifact, args.remote)
    else:
        model = load(args.artifact)
    inputs = model.random_inputs(args.batch) if args.random else \
        read_inputs(args.input, model.input_names)
    outputs = model(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    table = Table(title=f"{args.artifact}: outputs", title_justify="left")
    for col in ("output", "shape", "dtype", "min", "max", "mean", "argmax[0]"):
        table.add_column(col, justify="left" if col in ("output", "dtype") else "right")
    for spec, out in zip(model.outputs, outputs):
        stats = ["-"] * 3
        if out.size and out.dtype.kind in "fiub":
            stats = [f"{out.min():.4g}", f"{out.max():.4g}", f"{out.astype(np.float64).mean():.4g}"]
        first = str(int(np.argmax(out[0]))) if out.ndim >= 1 and out.size else "-"
        table.add_row(spec.name, str(list(out.shape)), str(out.dtype), *stats, first)
    console = Console()
    console.print(table)
    if args.output:
        np.savez(args.output, **{spec.name: out for spec, out in zip(model.outputs, outputs)})
        console.print(f"saved outputs to {args.output}")
    if args.bench:
        stats = model.benchmark(inputs, warmup=10, repeat=100)
        console.print(f"latency: median {stats['median_ms']:.3f} ms, p90 "
                      f"{stats['p90_ms']:.3f} ms, mean {stats['mean_ms']:.3f} ms (100 calls"
                      f"{', timed on ' + args.remote if getattr(args, 'remote', None) else ''})")
    return 0


def read_inputs(items: list[str], names: list[str]) -> list[np.ndarray]:
    """--input NAME=FILE.npy ... (or one FILE.npz with an array per input name)."""
    if len(items) == 1 and items[0].endswith(".npz") and "=" not in items[0]:
        with np.load(items[0]) as data:
            missing = [n for n in names if n not in data.files]
            if missing:
                raise InputError(f"{items[0]} lacks input(s) {', '.join(missing)} (has "
                                 f"{', '.join(data.files)})")
            return [data[n] for n in names]
    given: dict[str, np.ndarray] = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq:
            raise InputError(f"--input {item!r}: write NAME=FILE.npy (inputs: {', '.join(names)})")
        if not Path(path).is_file():
            raise InputError(f"--input {name}: no such file {path}")
        given[name] = np.load(path, allow_pickle=False)
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InputError(f"--input {unknown[0]!r} is not an input of this model "
                         f"(inputs: {', '.join(names)})")
    return [given[n] for n in names if n in given]


# ---- opt -------------------------------------------------------------------------------------
def cmd_opt(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..ir import print_graph
    from ..passes import Pipeline

    pipeline = Pipeline.parse(args.passes)
    graph = load_graph(args.input)
    result = pipeline.run(graph, check=args.check)
    text = print_graph(result)
    err = Console(stderr=True)
    if args.output:
        Path(args.output).write_text(text)
        err.print(f"wrote {args.output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if pipeline.report is not None:
        err.print(pipeline.report.table())
    return 0


def load_graph(path_text: str):
    """A graph from IR text, a saved graph JSON (+ .safetensors), or an artifact's IR."""
    from .. import ir

    path = Path(path_text)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        from ..runtime import read_artifact

        return ir.parse(read_artifact(path, check_target=False).ir_text)
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            kind = json.loads(text).get("format")
        except json.JSONDecodeError:
            kind = None
        if kind == "ember-graph":
            return ir.load(path)
        raise EmberError(f"{path} is JSON but not an ember graph document (saved by "
                         "ember.ir.save)")
    return ir.parse(text)


__all__: list[Any] = [
    "cmd_compile",
    "cmd_opt",
    "cmd_run",
    "cmd_tune",
    "load_graph",
    "load_source",
    "parse_dynamic",
    "read_inputs",
]
