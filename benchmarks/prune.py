"""Pruning benchmark: accuracy, FLOPs and measured latency of pruned zoo models, one run.

    .venv/bin/python benchmarks/prune.py [--quick] [--json out.json] [--seed 0]

Writes the table to benchmarks/results/prune.{md,json} too (not with --quick or --models).

Cases (the goals of issue 6):
  digits_cnn / digits_vit: prune_channels{ratio=0.5} + finetune (distilled), compiled with
      ember.compile for batch 64; latency measured interleaved with the unpruned artifact.
  digits_mlp 2:4: prune_nm + finetune; the compiled model and a large single layer
      (64 x 1024 -> 1024) timed against the dense kernel.
  digits_mlp low rank: lowrank{params=0.5} (ranks from one energy threshold for every layer, the
      highest that fits half the parameters) + finetune (distilled from the unpruned logits).
Accuracy is z.evaluate through the reference interpreter (ember.interpret). Timings are medians
of interleaved calls (A, B, A, B, ...), so machine load hits both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ember
from ember.passes.prune import _common as C

BATCH = 64


def trace_static(z):
    x = torch.from_numpy(np.ascontiguousarray(z.train[0][:BATCH]))
    return ember.trace(z.module, (x,)), z.train[0][:BATCH]


def accuracy(z, g) -> float:
    return z.evaluate(lambda x: ember.interpret(g, x), BATCH)


def interleaved(models: list, x: np.ndarray, repeat: int) -> list[float]:
    """Median ms per call of each model, calls interleaved."""
    for m in models:
        for _ in range(5):
            m(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeat):
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            m(x)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [float(np.median(t)) for t in times]


def run_case(name: str, spec: str, repeat: int) -> dict:
    z = ember.zoo.load(name)
    g, x = trace_static(z)
    t0 = time.perf_counter()
    pipe = ember.Pipeline.parse(spec)
    pruned = pipe.run(g, calibration=z.calibration)
    seconds = time.perf_counter() - t0
    notes = {p.name: p.notes for p in pipe.report.passes}
    base_acc, pruned_acc = accuracy(z, g), accuracy(z, pruned)
    dense = ember.compile(g, passes="", progress=False)
    small = ember.compile(pruned, passes="", progress=False)
    base_ms, pruned_ms = interleaved([dense, small], x, repeat)
    err = float(np.abs(small(x) - ember.interpret(pruned, x)).max())
    ft = notes.get("finetune", {})
    return {
        "model": name, "spec": spec, "pipeline_seconds": round(seconds, 1),
        "accuracy_base": round(base_acc, 4), "accuracy_pruned_before_recovery":
            ft.get("accuracy_before"), "accuracy_after": round(pruned_acc, 4),
        "accuracy_drop_pt": round(100 * (base_acc - pruned_acc), 2),
        "flops_ratio": round(C.flops(pruned) / C.flops(g), 3),
        "params_ratio": round(C.params(pruned) / C.params(g), 3),
        "latency_ms_base": round(base_ms, 4), "latency_ms_pruned": round(pruned_ms, 4),
        "latency_ratio": round(pruned_ms / base_ms, 3), "compiled_vs_interpreter_max_err": err,
        "notes": {k: v for k, v in notes.items() if k != "finetune"} | {"finetune": ft},
    }


def nm_kernel(repeat: int, k: int = 1024, n_out: int = 1024) -> dict:
    """One big linear, dense vs 2:4, compiled by ember.compile, timed interleaved."""
    rng = np.random.default_rng(0)
    g = ember.ir.Graph("layer")
    xin = g.add_input("x", ember.ir.TensorType((BATCH, k), ember.ir.DType.f32))
    w = g.const((rng.standard_normal((n_out, k)) / np.sqrt(k)).astype(np.float32), name="w.weight")
    b = g.const(np.zeros(n_out, np.float32), name="w.bias")
    g.set_outputs(g.add("linear", xin, w, b))
    sparse = ember.Pipeline.parse("prune_nm").run(g)
    x = rng.standard_normal((BATCH, k)).astype(np.float32)
    dense_m = ember.compile(g, passes="", progress=False)
    sparse_m = ember.compile(sparse, passes="", progress=False)
    d, s = interleaved([dense_m, sparse_m], x, repeat)
    err = float(np.abs(sparse_m(x) - ember.interpret(sparse, x)).max())
    return {"shape": f"{BATCH}x{k} @ {k}x{n_out}", "dense_ms": round(d, 4),
            "nm_2_4_ms": round(s, 4), "speedup": round(d / s, 3), "max_err": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer finetune steps and timings")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--models", default="", help="comma-separated zoo names to run (default all)")
    ap.add_argument("--seed", type=int, default=0, help="finetune seed of the low-rank case")
    args = ap.parse_args()
    # recovery training runs small GEMMs: one torch thread is as fast and does not stall on a
    # busy machine (the compiled artifacts use TVM's own thread pool)
    torch.set_num_threads(1)
    steps = 100 if args.quick else 800
    repeat = 30 if args.quick else 200
    cases = [
        ("digits_cnn", f"prune_channels{{ratio=0.5}},finetune{{zoo=digits_cnn,steps={steps}}}"),
        ("digits_vit", (f"prune_channels{{ratio=0.5,criterion=taylor}},"
                       f"finetune{{zoo=digits_vit,steps={steps},lr=0.003}}")),
        ("digits_mlp", f"prune_nm{{n=2,m=4}},finetune{{zoo=digits_mlp,steps={steps}}}"),
        ("digits_mlp", (f"lowrank{{params=0.5}},"
                       f"finetune{{zoo=digits_mlp,steps={2 * steps},lr=0.003,seed={args.seed}}}")),
    ]
    results = {"cases": [], "note": "timings interleaved in one process; machine may be loaded"}
    for name, spec in cases:
        if args.models and name not in args.models.split(","):
            continue
        r = run_case(name, spec, repeat)
        results["cases"].append(r)
        print(f"{name:11s} {spec.split(',')[0]:45s} acc {r['accuracy_base']:.4f} -> "
              f"{r['accuracy_after']:.4f} (drop {r['accuracy_drop_pt']:+.2f} pt)  "
              f"FLOPs {r['flops_ratio']:.3f}x  params {r['params_ratio']:.3f}x  latency "
              f"{r['latency_ms_base']:.3f} -> {r['latency_ms_pruned']:.3f} ms "
              f"({r['latency_ratio']:.3f}x)", flush=True)
    results["nm_kernel"] = nm_kernel(repeat)
    print("2:4 kernel vs dense:", results["nm_kernel"], flush=True)
    results["load_average"] = os.getloadavg()
    print("load average", tuple(round(v, 2) for v in results["load_average"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if not args.quick and not args.models:
        out = Path(__file__).resolve().parent / "results"
        out.mkdir(exist_ok=True)
        (out / "prune.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "prune.md").write_text(markdown(results, sys.argv[1:]))


def markdown(results: dict, argv: list[str]) -> str:
    rows = ["# Pruning (benchmarks/prune.py)", "",
            f"Command: `.venv/bin/python benchmarks/prune.py {' '.join(argv)}`", "",
            ("| model | pipeline | accuracy | drop (pt) | FLOPs | params | latency ms "
             "(batch 64) | latency ratio |"), "|---|---|---|---|---|---|---|---|"]
    for r in results["cases"]:
        rows.append(f"| {r['model']} | `{r['spec']}` | {r['accuracy_base']:.4f} -> "
                    f"{r['accuracy_after']:.4f} | {r['accuracy_drop_pt']:+.2f} | "
                    f"{r['flops_ratio']:.3f}x | {r['params_ratio']:.3f}x | "
                    f"{r['latency_ms_base']:.3f} -> {r['latency_ms_pruned']:.3f} | "
                    f"{r['latency_ratio']:.3f}x |")
    k = results["nm_kernel"]
    load = ", ".join(f"{v:.2f}" for v in results["load_average"])
    rows += ["", (f"2:4 kernel {k['shape']}: dense {k['dense_ms']} ms, 2:4 {k['nm_2_4_ms']} ms "
                  f"({k['speedup']}x)."), "", (f"Load average at the end (1/5/15 min): {load}; "
                  "timings are interleaved medians, so load hits both sides alike."), ""]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
