"""Compile time per zoo model and per phase, each compile cold in a fresh process.

    .venv/bin/python benchmarks/compile_time.py                      # every zoo model, 1 run each
    .venv/bin/python benchmarks/compile_time.py digits_vit --repeat 5 --json
    .venv/bin/python benchmarks/compile_time.py digits_vit --baseline /tmp/ember-old --repeat 5

Each run is a new Python process that imports torch and ember (not timed: every user pays it
before calling anything), loads the zoo model and times one `ember.compile(...)` to a file with
the zoo benchmark's passes (`ember.bench.DEFAULT_PASSES`, accuracy checks on): the time a user
waits on a first compile, lazy imports (torch.export, TVM's compiler) included. The phases are
the manifest's `timings` (trace, passes, lower, build.*, write; see ember/compiler.py).

Why fresh processes: a second compile in the same process is seconds faster (imports and LLVM
initialisation are paid once), which is not what `ember compile` users see. Why CPU time next
to wall time: this machine is shared, so wall times swing with the load; `cpu s` (this process
plus its children, e.g. the linker) moves less. `--baseline DIR` runs another ember source tree
(e.g. `git archive <commit> | tar -x -C DIR`) interleaved with this one, run for run, and
prints the ratio of medians, the fair way to compare on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results") / "compile_time.json"
PHASES = ("trace", "passes", "lower", "build.legalize", "build.fold", "build.prepack",
          "build.fuse", "build.schedule", "build.compile", "build.export", "write")

# Runs in the child: prints one JSON line with the timings of one cold compile.
_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, os.environ["EMBER_ROOT"])
t0 = time.perf_counter()
import torch, ember, ember.zoo
from ember.bench import DEFAULT_PASSES
from ember.runtime import read_artifact
imports = time.perf_counter() - t0
z = ember.zoo.load(sys.argv[1])
passes = DEFAULT_PASSES if sys.argv[2] == "default" else sys.argv[2]
def cpu():
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
c0, t0 = cpu(), time.perf_counter()
path = ember.compile(z.module, z.example_inputs, passes=passes, output=sys.argv[3],
                     calibration=z.calibration, dynamic_dims=z.dynamic_dims, progress=False,
                     records=False)
wall, cpu_s = time.perf_counter() - t0, cpu() - c0
timings = read_artifact(path).manifest.get("timings", {})
print("RESULT " + json.dumps({"wall": wall, "cpu": cpu_s, "imports": imports,
                              "ember": ember.__file__, "phases": timings}))
"""


def run_once(model: str, root: Path, passes: str, workdir: Path) -> dict:
    """One cold compile of `model` with the ember tree at `root`, in a new process."""
    env = {**os.environ, "EMBER_ROOT": str(root), "PYTHONPATH": str(root)}
    out = workdir / f"{model}.ember"
    proc = subprocess.run([sys.executable, "-c", _CHILD, model, passes, str(out)], env=env,
                          check=False, capture_output=True, text=True, cwd=workdir)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            if not result["ember"].startswith(str(root)):
                raise SystemExit(f"the child imported ember from {result['ember']}, "
                                 f"not from {root}")
            return result
    raise SystemExit(f"compiling {model} with {root} failed:\n{proc.stderr[-3000:]}")


def summarize(runs: list[dict]) -> dict:
    """Medians over runs: wall, cpu and every phase."""
    phases = sorted({k for r in runs for k in r["phases"]})
    return {"wall": statistics.median(r["wall"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs),
            "imports": statistics.median(r["imports"] for r in runs),
            "phases": {k: statistics.median(r["phases"].get(k, 0.0) for r in runs)
                       for k in phases},
            "runs": len(runs)}


def table(results: dict[str, dict[str, dict]]) -> str:
    """One row per (model, tree): wall, cpu and the phases, seconds (medians)."""
    seen = {k for trees in results.values() for s in trees.values() for k in s["phases"]}
    cols = [p for p in PHASES if p in seen] + sorted(seen - set(PHASES) - {"build"})
    head = ["model", "tree", "wall s", "cpu s"] + [c.replace("build.", "") for c in cols]
    rows = [head]
    for model, trees in results.items():
        for tree, s in trees.items():
            rows.append([model, tree, f"{s['wall']:.2f}", f"{s['cpu']:.2f}"]
                        + [f"{s['phases'].get(c, 0.0):.2f}" for c in cols])
        if "baseline" in trees and "current" in trees:
            b, c = trees["baseline"], trees["current"]
            rows.append([model, "ratio", f"{c['wall'] / b['wall']:.2f}",
                         f"{c['cpu'] / b['cpu']:.2f}"] + [""] * len(cols))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if i > 1 else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help="zoo names (default: every zoo model)")
    p.add_argument("--repeat", type=int, default=1, help="fresh-process compiles per model")
    p.add_argument("--passes", default="default", help="pass pipeline (default: the zoo "
                   "benchmark's, ember.bench.DEFAULT_PASSES)")
    p.add_argument("--baseline", type=Path, help="another ember source tree to time "
                   "interleaved with this one (ratios: current / baseline)")
    p.add_argument("--json", nargs="?", const=str(RESULTS), help=f"write the results as JSON "
                   f"(default path {RESULTS.relative_to(ROOT)})")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from ember.zoo import names

    models = args.models or names()
    trees = {"current": ROOT} if args.baseline is None else \
        {"baseline": args.baseline.resolve(), "current": ROOT}
    raw: dict[str, dict[str, list[dict]]] = {m: {t: [] for t in trees} for m in models}
    with tempfile.TemporaryDirectory(prefix="ember-compile-time-") as tmp:
        for model in models:
            for i in range(args.repeat):
                for tree, root in trees.items():  # interleaved: both see the same load
                    r = run_once(model, root, args.passes, Path(tmp))
                    raw[model][tree].append(r)
                    print(f"{model:<15} {tree:<8} run {i + 1}/{args.repeat}: "
                          f"{r['wall']:.2f} s wall, {r['cpu']:.2f} s cpu", file=sys.stderr)
    results = {m: {t: summarize(runs) for t, runs in per.items()} for m, per in raw.items()}
    print(table(results))
    load = os.getloadavg()
    print(f"medians of {args.repeat} run(s); load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} on {os.cpu_count()} cores")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"results": results, "raw": raw, "repeat": args.repeat,
                                    "passes": args.passes, "loadavg": load,
                                    "cpus": os.cpu_count(), "time": time.time(),
                                    "trees": {t: str(r) for t, r in trees.items()}}, indent=1))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
