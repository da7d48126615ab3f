"""The `ember` command: compile, tune, run, inspect, opt, passes, bench.

    ember compile zoo:digits_cnn --passes "fold,dce" -o cnn.ember
    ember compile model.py:build --example-shape x=1,64 --dynamic batch -o m.ember
    ember run cnn.ember --random            ember inspect cnn.ember
    ember passes                            ember opt --passes fold saved.ember.txt
    ember bench digits_mlp --json out.json
    ember tune zoo:digits_cnn --batch 1 --trials 200 -o cnn.ember   # records in cnn.tune/

Errors ember raises on purpose (EmberError) print one red line and exit with status 1; add
--debug for the traceback. Each command's code is in `commands.py` (compile/run/opt) and
`show.py` (inspect/passes/bench); this file only declares the arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import EmberError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember", description="Compile PyTorch/ONNX models into one deployable .ember file.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for ember errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", help="compile a model into a .ember artifact",
                       description="Compile zoo:NAME, path/to/file.py:ATTR (an nn.Module or a "
                       "zero-argument factory) or model.onnx into a .ember artifact.")
    p.add_argument("source", help="zoo:NAME | path/to/file.py:ATTR | model.onnx")
    p.add_argument("--passes", default="", help='pass pipeline, e.g. "fold,dce,quantize{...}"')
    p.add_argument("--target", default="cpu", help="target name (default: cpu)")
    p.add_argument("--example-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="example input shape (float32 random data); repeat per input, in "
                   "forward() order; required for file.py sources")
    p.add_argument("--dynamic", action="append", default=[], metavar="SPEC",
                   help="symbolic dims: 'batch' (dim 0 of every input), 'x:0=batch', or "
                   "'none' (all static); zoo models default to their own dynamic dims")
    p.add_argument("--no-check", action="store_true",
                   help="skip the per-pass numeric check against the reference interpreter")
    p.add_argument("-o", "--output", help="output path (default: NAME.ember)")

    p = sub.add_parser("tune", help="compile with MetaSchedule auto-tuning (records kept)",
                       description="Compile a model for a fixed batch and tune its kernels with "
                       "MetaSchedule. Each tuned kernel is measured against ember's own schedule "
                       "and kept only if faster. The records (a MetaSchedule JSON database) go "
                       "to OUT.tune/ (or --records DIR); `ember compile` with the same output, "
                       "or any compile given --records, reuses them without tuning again.")
    p.add_argument("source", help="zoo:NAME | path/to/file.py:ATTR | model.onnx")
    p.add_argument("-o", "--output", help="output artifact (default: NAME.ember)")
    p.add_argument("--records", metavar="DIR", help="tuning records directory "
                   "(default: the output path with suffix .tune)")
    p.add_argument("--batch", type=int, default=1,
                   help="static batch to compile and tune for (default 1)")
    p.add_argument("--trials", type=int, default=64, help="total trial budget (default 64)")
    p.add_argument("--trials-per-task", type=int, default=None,
                   help="trial cap per kernel (default: the budget spread over the kernels)")
    p.add_argument("--passes", default="", help="pass pipeline spec")
    p.add_argument("--target", default="cpu", help="target name (default: cpu)")
    p.add_argument("--example-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="example input shape for file.py sources (as in compile)")
    p.add_argument("--no-check", action="store_true", help="skip the per-pass numeric check")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="measure on devices of a TVM RPC tracker instead of this machine")
    p.add_argument("--rpc-key", metavar="KEY", help="device key registered with the tracker")

    p = sub.add_parser("run", help="run a .ember artifact on inputs",
                       description="Run a .ember artifact and print a summary of its outputs.")
    p.add_argument("artifact")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                       help="an input array (repeat per input), or one .npz holding them all")
    group.add_argument("--random", action="store_true",
                       help="random inputs from the manifest's shapes")
    p.add_argument("--batch", type=int, default=1, help="symbolic dims for --random (default 1)")
    p.add_argument("--output", help="save outputs to this .npz file")
    p.add_argument("--bench", action="store_true", help="also time 100 calls")
    p.add_argument("--remote", metavar="HOST:PORT",
                   help="run (and --bench: time) on a TVM RPC server, e.g. an aarch64 board "
                   "running `python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090`")

    p = sub.add_parser("inspect", help="show an artifact's manifest, pass report and IR",
                       description="Show a .ember artifact's manifest, pass report and final IR.")
    p.add_argument("artifact")
    p.add_argument("--no-ir", action="store_true", help="do not print the IR text")
    p.add_argument("--json", action="store_true", help="print the raw manifest as JSON")

    p = sub.add_parser("passes", help="list the registered passes and their options",
                       description="List every registered pass with its options and docs.")
    p.add_argument("names", nargs="*", help="only these passes")

    p = sub.add_parser("opt", help="run passes on saved IR and print the result",
                       description="Run a pass pipeline on saved IR (.ember.txt text, a graph "
                       "JSON saved by ember.ir.save, or the IR inside a .ember artifact).")
    p.add_argument("input", help="in.ember.txt | graph.json | model.ember")
    p.add_argument("--passes", required=True, help="pass pipeline spec")
    p.add_argument("--check", action="store_true", help="check numerics on random inputs")
    p.add_argument("-o", "--output", help="write the resulting IR text here instead of stdout")

    p = sub.add_parser("bench", help="benchmark zoo models: torch, torch.compile, ORT, ember",
                       description="Benchmark zoo models against torch eager, torch.compile and "
                       "ONNX Runtime (2 threads each).")
    p.add_argument("models", nargs="*", help="zoo model names (default: all)")
    p.add_argument("--json", help="write the full report to this JSON file")
    p.add_argument("--engines", default="torch,torch.compile,onnxruntime,ember",
                   help="comma-separated: torch, torch.compile, onnxruntime, ember, "
                   "ember.static (static batch), ember.tuned (static + --records)")
    p.add_argument("--batches", default="1,64", help="batch sizes (default 1,64)")
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--passes", default=None, help="ember pass pipeline for the ember engine")
    p.add_argument("--records", metavar="DIR", default=None,
                   help="tuning records root for the ember.tuned engine: DIR/NAME.tune per "
                   "model, written by `ember tune zoo:NAME --records DIR/NAME.tune`")
    p.add_argument("--remote", metavar="HOST:PORT", default=None,
                   help="time ember artifacts on a TVM RPC server instead (engines: ember, "
                   "ember.static, ember.tuned; device-side time_evaluator)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Only a real `ember` process may switch TVM to runtime-only mode (`ember run`): the switch
    # sticks for the process, which would break compiling later in an in-process caller.
    args.process_is_cli = argv is None
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    try:
        return _dispatch(args)
    except EmberError as e:
        if args.debug:
            raise
        first, *rest = str(e).splitlines() or [type(e).__name__]
        err.print(f"[bold red]error:[/] {first}", markup=True, soft_wrap=True)
        for line in rest:  # multi-line messages (e.g. unsupported op lists) keep their detail
            err.print(line, markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("compile", "run", "opt", "tune"):
        from . import commands

        return getattr(commands, f"cmd_{args.command}")(args)
    from . import show

    return getattr(show, f"cmd_{args.command}")(args)


if __name__ == "__main__":
    sys.exit(main())
