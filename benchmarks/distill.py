"""Step distillation on `digits_flow`: teacher@64 vs naive@4, searched@4, progressive@4, reflow@1.

Quality: Frechet distance (classifier features) to the real eval digits, classifier confidence,
RMS distance to the teacher from the same noise - every sampler on the same 360 eval noises.
Speed: compiled .ember artifacts (TVM, the ctrl.scan loop kernel), teacher@64 vs student@K, same
batch, side by side in one run. Goals (issue 8): progressive@4 FD <= 1.25x teacher@64, reflow@1
FD <= 2x teacher@64. Writes a PNG grid, results.json (in --out) and the table to
benchmarks/results/distill.{md,json}.

    .venv/bin/python benchmarks/distill.py [--iters 400] [--final-iters 800]
        [--reflow-iters 1000] [--distill-iters 2000] [--pairs 16384] [--fresh] [--out DIR]

Training is checkpointed under --out (keyed by options and teacher): a rerun resumes, --fresh
starts over (use it when timing the distillation).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ember
from ember.passes.distill import find_sampler
from ember.passes.distill._common import run_loop
from ember.passes.distill.metrics import quality, write_png_grid

GOALS = {"progressive@4": 1.25, "reflow@1": 2.0}
RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, x, repeat=3) -> float:
    fn(x)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return best


def table(results: dict) -> str:
    rows = [("| sampler | steps (NFE) | FD | FD / teacher | goal | confidence | RMS to teacher "
             "| distillation s | artifact ms | artifact speedup |"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        goal = GOALS.get(name)
        ok = "" if goal is None else \
            f"<= {goal}x {'PASS' if r['frechet_vs_teacher'] <= goal else 'FAIL'}"
        art = f"{r['artifact_seconds'] * 1e3:.0f}" if "artifact_seconds" in r else \
            r.get("artifact_error", "")
        speed = f"{r['artifact_speedup']:.1f}x" if "artifact_speedup" in r else ""
        rows.append(f"| {name} | {r['sampler']['steps']} ({r['sampler']['nfe']}) | "
                    f"{r['frechet']:.3f} | {r['frechet_vs_teacher']:.2f}x | {ok} | "
                    f"{r['confidence']:.3f} | {r['teacher_rms']:.3f} | "
                    f"{r.get('pass_seconds', 0.0):.1f} | {art} | {speed} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=400, help="progressive: iterations per round")
    ap.add_argument("--final-iters", type=int, default=800, help="progressive: last round")
    ap.add_argument("--reflow-iters", type=int, default=1000)
    ap.add_argument("--distill-iters", type=int, default=2000, help="reflow: 1-step distillation")
    ap.add_argument("--pairs", type=int, default=16384, help="reflow: teacher (noise, x1) pairs")
    ap.add_argument("--out", default="benchmarks/out/distill")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (the GEMMs are small: a 2nd thread gains little)")
    ap.add_argument("--fresh", action="store_true", help="delete checkpoints first")
    args = ap.parse_args()
    out_dir = Path(args.out)
    if args.fresh:
        for d in ("ckpt_progressive", "ckpt_reflow"):
            shutil.rmtree(out_dir / d, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    z = ember.zoo.load("digits_flow")
    noise, real = z.extras["eval_noise"], z.eval_data[0]
    fx, clf = z.extras["features_fn"], z.extras["classifier"]
    # the zoo's own unrolled EulerSampler, rerolled by recognition, is the teacher
    teacher_g = ember.trace(z.extras["sampler"], (torch.randn(4, 64),),
                            dynamic_dims={0: {0: "batch"}})
    teacher_g = ember.Pipeline.parse("steps{k=64}").run(teacher_g)  # k=N: recognize only
    teacher = run_loop(find_sampler(teacher_g), noise)
    results, graphs, samples = {}, {"teacher@64": teacher_g}, {"teacher@64": teacher}
    results["teacher@64"] = {"sampler": teacher_g.meta["sampler"]}
    specs = {
        "naive@4": "steps{k=4,method=uniform}",
        "search@4": "steps{k=4,method=search}",
        "progressive@4": f"distill_steps{{k=4,method=progressive,iters={args.iters},"
                         f"final_iters={args.final_iters},seed={args.seed},"
                         f"checkpoint_dir={out_dir}/ckpt_progressive}}",
        "reflow@1": f"distill_steps{{k=1,method=reflow,iters={args.reflow_iters},"
                    f"distill_iters={args.distill_iters},pool={args.pairs},seed={args.seed},"
                    f"checkpoint_dir={out_dir}/ckpt_reflow}}",
    }
    for name, spec in specs.items():
        t = time.perf_counter()
        pipe = ember.Pipeline.parse(spec)
        g = pipe.run(teacher_g, seed=args.seed)
        graphs[name] = g
        samples[name] = run_loop(find_sampler(g), noise)
        results[name] = {"spec": spec, "pass_seconds": time.perf_counter() - t,
                         "sampler": g.meta["sampler"],
                         "history": pipe.report.passes[-1].notes.get("history")}
        print(name, "done in", round(results[name]["pass_seconds"], 1), "s", flush=True)
    for name, s in samples.items():
        results[name].update(quality(s, teacher, real, fx, clf))
    base = results["teacher@64"]["frechet"]
    for r in results.values():
        r["frechet_vs_teacher"] = r["frechet"] / base
    write_png_grid(out_dir / "samples.png", list(samples.values()), count=16)
    # speed: compiled artifacts, same batch (a build failure is recorded, not fatal)
    for name in ("teacher@64", "search@4", "progressive@4", "reflow@1"):
        try:
            m = ember.compile(graphs[name], progress=False)
            results[name]["artifact_seconds"] = timed(m, noise)
        except Exception as e:  # noqa: BLE001
            results[name]["artifact_error"] = f"{type(e).__name__}: {str(e)[:120]}"
        results[name]["torch_seconds"] = timed(
            lambda x, n=name: run_loop(find_sampler(graphs[n]), x), noise)
    for name in ("search@4", "progressive@4", "reflow@1"):
        for k in ("artifact_seconds", "torch_seconds"):
            if k in results[name] and k in results["teacher@64"]:
                results[name][k.replace("seconds", "speedup")] = (results["teacher@64"][k]
                                                                  / results[name][k])
    meta = {"total_seconds": round(time.perf_counter() - start, 1), "threads": args.threads,
            "load_average": os.getloadavg(), "args": vars(args),
            "goals_met": {n: results[n]["frechet_vs_teacher"] <= g for n, g in GOALS.items()}}
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "results": results},
                                                     indent=1, default=str))
    md = table(results)
    print(md)
    print(f"total {meta['total_seconds']} s, {args.threads} threads, load average "
          f"{tuple(round(v, 2) for v in meta['load_average'])}; goals met: {meta['goals_met']}")
    print("PNG:", out_dir / "samples.png")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distill.json").write_text(json.dumps({"meta": meta, "results": results},
                                                     indent=1, default=str))
    (RESULTS / "distill.md").write_text(
        "# Step distillation on digits_flow (benchmarks/distill.py)\n\n"
        f"Command: `.venv/bin/python benchmarks/distill.py "
        f"{' '.join(sys.argv[1:])}`\n\n{md}\n\nTotal {meta['total_seconds']} s on "
        f"{args.threads} threads (load average {meta['load_average'][0]:.2f}). FD: Frechet "
        "distance of digits_mlp features to the 360 real eval digits, every sampler on the same "
        "360 eval noises. Goals met: " + ", ".join(f"{k} {v}" for k, v in
                                                  meta["goals_met"].items()) + "\n")


if __name__ == "__main__":
    main()
