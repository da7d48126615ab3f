"""Step distillation on `digits_flow`: teacher@64 vs naive@4, searched@4, progressive@4, reflow@1.

Quality: Frechet distance (classifier features) to the real eval digits, classifier confidence,
RMS distance to the teacher from the same noise. Speed: compiled .ember artifacts (TVM, the
ctrl.scan loop kernel), teacher@64 vs student@K, same batch, side by side in one run.
Writes a PNG grid (teacher@64 / naive@4 / searched@4 / progressive@4 / reflow@1) and a JSON.

    .venv/bin/python benchmarks/distill.py [--iters 1500] [--reflow-iters 3000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import ember
from ember.passes.distill import Sampler, find_sampler
from ember.passes.distill._common import run_loop
from ember.passes.distill.metrics import quality, write_png_grid


def timed(fn, x, repeat=3) -> float:
    fn(x)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--reflow-iters", type=int, default=3000)
    ap.add_argument("--out", default="benchmarks/out/distill")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    z = ember.zoo.load("digits_flow")
    noise, real = z.extras["eval_noise"], z.eval_data[0]
    fx, clf = z.extras["features_fn"], z.extras["classifier"]
    # the zoo's own unrolled EulerSampler, rerolled by recognition, is the teacher
    teacher_g = ember.trace(z.extras["sampler"], (torch.randn(4, 64),),
                            dynamic_dims={0: {0: "batch"}})
    teacher_g = ember.Pipeline.parse("steps{k=64}").run(teacher_g)  # k=N: recognize only
    teacher = run_loop(find_sampler(teacher_g), noise)
    results, graphs, samples = {}, {"teacher@64": teacher_g}, {"teacher@64": teacher}
    specs = {
        "naive@4": "steps{k=4,method=uniform}",
        "search@4": "steps{k=4,method=search}",
        "progressive@4": f"distill_steps{{k=4,method=progressive,iters={args.iters},"
                         f"seed={args.seed},checkpoint_dir={out_dir}/ckpt_progressive}}",
        "reflow@1": f"distill_steps{{k=1,method=reflow,iters={args.reflow_iters},"
                    f"seed={args.seed},checkpoint_dir={out_dir}/ckpt_reflow}}",
    }
    for name, spec in specs.items():
        t = time.perf_counter()
        g = ember.Pipeline.parse(spec).run(teacher_g, seed=args.seed)
        graphs[name] = g
        samples[name] = run_loop(find_sampler(g), noise)
        results[name] = {"pass_seconds": time.perf_counter() - t,
                         "sampler": g.meta["sampler"]}
        print(name, "done in", round(results[name]["pass_seconds"], 1), "s", flush=True)
    results.setdefault("teacher@64", {"sampler": teacher_g.meta["sampler"]})
    for name, s in samples.items():
        results[name].update(quality(s, teacher, real, fx, clf))
    base = results["teacher@64"]["frechet"]
    for name in results:
        results[name]["frechet_vs_teacher"] = results[name]["frechet"] / base
    write_png_grid(out_dir / "samples.png", list(samples.values()), count=16)
    # speed: compiled artifacts, same batch
    for name in ("teacher@64", "search@4", "reflow@1"):
        m = ember.compile(graphs[name], progress=False)
        results[name]["artifact_seconds"] = timed(m, noise)
        results[name]["torch_seconds"] = timed(lambda x: run_loop(find_sampler(graphs[name]),
                                                                  x), noise)
    for name in ("search@4", "reflow@1"):
        for k in ("artifact_seconds", "torch_seconds"):
            results[name][k.replace("seconds", "speedup")] = (results["teacher@64"][k]
                                                              / results[name][k])
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    for name, r in results.items():
        print(f"{name:14s} FD {r['frechet']:7.3f} ({r['frechet_vs_teacher']:.2f}x teacher) "
              f"conf {r['confidence']:.3f} rms->teacher {r['teacher_rms']:.3f} "
              + (f"artifact {r['artifact_seconds']*1e3:.0f} ms" if "artifact_seconds" in r
                 else ""))
    print("PNG:", out_dir / "samples.png")


if __name__ == "__main__":
    main()
