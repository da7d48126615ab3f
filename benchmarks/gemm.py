"""fp32 GEMM: ember's scheduled TVM kernel vs torch.matmul vs numpy, in one run, with the
host's measured FMA peak (benchmarks/peak_fma.py) so every number is also a fraction of peak.

    python benchmarks/gemm.py [--size 1024] [--runs 20] [--json out.json]

The ember kernel is the relax matmul through the build's fusion pipeline, apply_cpu_schedules
and tvm.compile, called through the Relax VM (B is packed inside the call, so packing is timed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np


def _median_seconds(fn, runs: int) -> tuple[float, float]:
    fn()
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def _ember_gemm(m: int, n: int, k: int, target):
    import tvm
    from tvm import relax

    from ember.backends.tvm.schedules import apply_cpu_schedules

    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((m, k), "float32"))
    b = relax.Var("b", relax.TensorType((k, n), "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(a, b))
        bb.emit_func_output(out)
    passes = [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    mod = apply_cpu_schedules(tvm.transform.Sequential(passes)(bb.get()), target)
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    return vm["main"]


def _host_target(threads: int):
    import tvm
    from tvm.target.codegen import llvm_get_system_cpu

    # explicit mcpu: TVM 0.27 ignores mcpu=native and would build for baseline x86-64
    return tvm.target.Target(
        {"kind": "llvm", "mcpu": str(llvm_get_system_cpu()), "num-cores": threads}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1024, help="M = N = K")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", help="write results to this file")
    args = ap.parse_args()
    threads = len(os.sched_getaffinity(0))
    # TVM's runtime defaults to half the logical CPUs (it assumes hyper-threading): 1 thread on
    # this 2-vCPU host. Must be set before the first parallel kernel runs.
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))

    import torch
    import tvm

    from ember.backends.tvm.schedules.probe import measure_fma_peak

    torch.set_num_threads(threads)
    s = args.size
    flops = 2.0 * s**3
    peak = measure_fma_peak(threads)
    rng = np.random.default_rng(0)
    a, b = rng.random((s, s), np.float32), rng.random((s, s), np.float32)

    target = _host_target(threads)
    fn = _ember_gemm(s, s, s, target)
    ta, tb = tvm.runtime.tensor(a), tvm.runtime.tensor(b)
    np.testing.assert_allclose(fn(ta, tb).numpy(), a @ b, rtol=1e-3)
    pa, pb = torch.from_numpy(a), torch.from_numpy(b)

    results = {"size": s, "threads": threads, "target": str(target), "peak": peak, "kernels": {}}
    for name, call in [
        ("ember", lambda: fn(ta, tb)),
        ("torch", lambda: torch.matmul(pa, pb)),
        ("numpy", lambda: a @ b),
    ]:
        med, best = _median_seconds(call, args.runs)
        gflops = flops / med / 1e9
        results["kernels"][name] = {
            "median_ms": round(med * 1e3, 3),
            "min_ms": round(best * 1e3, 3),
            "gflops": round(gflops, 1),
            "pct_of_peak": round(100 * gflops / peak["all_cores_gflops"], 1),
        }
    print(
        f"{s}^3 fp32 GEMM, {threads} threads, measured peak {peak['all_cores_gflops']} "
        f"GFLOP/s ({peak['single_core_gflops']} single thread), median of {args.runs}"
    )
    for name, r in results["kernels"].items():
        print(
            f"  {name:6s} {r['median_ms']:9.2f} ms  {r['gflops']:7.1f} GFLOP/s  "
            f"{r['pct_of_peak']:5.1f}% of peak  (min {r['min_ms']:.2f} ms)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
