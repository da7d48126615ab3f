"""Compiled DEER (ctrl.newton_scan through TVM) vs ember's compiled sequential ctrl.scan, on CPU.

    python benchmarks/newton.py [--runs 15] [--json out.json]
        [--gru-T 8 64 256] [--tanh 256x1x16 1024x1x16 256x4x64]   # tanh cases: TxBxd

Cases: digits_gru's GRU cell (trained weights, B=4, H=32) over T steps of random rows, after
recognize_rnn (T=8 is the zoo model's length); and a synthetic tanh RNN h' = tanh(h W^T + x_t)
with ||W||_2 = 0.6 (contractive: Newton converges in a few updates). Each is compiled four
ways: the sequential ctrl.scan as ember lowers it (`seq`: per-step calls of the scheduled body for
T <= 256 and a dense body, else one TIR loop), the same forced into the TIR loop (`loop`),
parallel_newton{jacobian=full} (DEER) and {jacobian=diag} (quasi-DEER), both forced past
the cost model. Columns: milliseconds per call (median of `runs` rounds, the three versions
interleaved in each round so they see the same load; best/full and best/diag: the faster
sequential form over Newton, > 1 means Newton wins), Newton updates (-1: fell back to the
sequential body), and max |newton - sequential| / max(1, max |sequential|) over all outputs.
The box is shared: report `uptime` with the numbers and compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

import ember
from ember.ir import DType, Graph, TensorType


def gru_case(steps: int) -> tuple[Graph, list[np.ndarray]]:
    z = ember.zoo.load("digits_gru")
    x = np.random.default_rng(steps).uniform(0, 1, (4, steps, 8)).astype(np.float32)
    g = ember.trace(z.module, (torch.from_numpy(x),))
    return ember.Pipeline.parse("recognize_rnn,dce").run(g), [x]


def tanh_case(steps: int, batch: int, d: int, seed: int = 0) -> tuple[Graph, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, d))
    w = (0.6 * w / np.linalg.norm(w, 2)).astype(np.float32)
    f32 = DType.f32
    body = Graph("tanh_cell")
    h = body.add_input("h", TensorType((batch, d), f32))
    x = body.add_input("x", TensorType((batch, d), f32))
    wv = body.add_input("w", TensorType((d, d), f32))
    new = body.add("tanh", body.add("add", body.add("linear", h, wv), x))
    body.set_outputs(new, new)
    g = Graph("tanh_rnn")
    xs = g.add_input("xs", TensorType((steps, batch, d), f32))
    h0 = g.add_input("h0", TensorType((batch, d), f32))
    final, ys = g.add("ctrl.scan", h0, xs, g.const(w), regions=[body], num_carry=1, num_xs=1)
    g.set_outputs(final, ys)
    return g, [rng.standard_normal((steps, batch, d)).astype(np.float32),
               rng.standard_normal((batch, d)).astype(np.float32) * 0.5]


def newton_graph(seq: Graph, jacobian: str, max_iters: int, tol: float = 1e-5) -> Graph:
    """parallel_newton (forced) with the op's iteration count appended to the outputs."""
    g = ember.Pipeline.parse(f"parallel_newton{{force=true,jacobian={jacobian},tol={tol},"
                             f"max_iters={max_iters}}}").run(seq.clone())
    op = next(o for o in g.ops if o.kind == "ctrl.newton_scan")
    g.set_outputs(*g.outputs, op.results[-1])
    return g


def _vm(g: Graph):
    import tvm
    from tvm import relax

    from ember.backends.tvm import build, lower

    return relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())


def _loop_vm(g: Graph):
    """The sequential scan forced into the one-TIR-loop strategy (no per-step calls): for
    T <= CALL_MAX_STEPS with a dense body ember picks per-step calls of the scheduled body,
    whose per-call overhead dominates at a small state."""
    from ember.backends.tvm.lowering import control

    keep = control.CALL_MAX_STEPS
    control.CALL_MAX_STEPS = 0
    try:
        return _vm(g)
    finally:
        control.CALL_MAX_STEPS = keep


def _outs(res) -> list[np.ndarray]:
    import tvm

    return [res.numpy()] if isinstance(res, tvm.runtime.Tensor) else [r.numpy() for r in res]


def measure(name: str, seq: Graph, inputs: list[np.ndarray], runs: int) -> dict:
    import tvm

    steps = seq.inputs[0].type.shape[1 if name.startswith("gru") else 0]
    graphs = {"seq": seq}
    for jac in ("full", "diag"):
        graphs[jac] = newton_graph(seq, jac, max_iters=min(steps, 64))
    vms = {k: _vm(g) for k, g in graphs.items()}
    vms["loop"] = _loop_vm(seq)
    args = [tvm.runtime.tensor(a) for a in inputs]
    want = _outs(vms["seq"]["main"](*args))
    scale = max(1.0, max(float(np.abs(w).max()) for w in want))
    row: dict = {"case": name, "T": steps}
    for jac in ("full", "diag"):
        *got, iters = _outs(vms[jac]["main"](*args))
        row[f"{jac}_iters"] = int(iters)
        row[f"{jac}_err"] = max(float(np.abs(a - b).max()) for a, b in zip(got, want)) / scale
    times: dict = {k: [] for k in vms}
    for vm in vms.values():
        vm["main"](*args)
    for _ in range(runs):
        for k, vm in vms.items():
            t0 = time.perf_counter()
            vm["main"](*args)
            times[k].append(time.perf_counter() - t0)
    for k, ts in times.items():
        row[f"{k}_ms"] = statistics.median(ts) * 1e3
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gru-T", type=int, nargs="*", default=[8, 64, 256])
    ap.add_argument("--tanh", nargs="*", default=["256x1x16", "1024x1x16", "256x4x64"])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cases = [("gru B=4 H=32", lambda t=t: gru_case(t)) for t in args.gru_T]
    for spec in args.tanh:
        t, b, d = (int(v) for v in spec.split("x"))
        cases.append((f"tanh B={b} d={d}", lambda t=t, b=b, d=d: tanh_case(t, b, d)))
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)", flush=True)
    print(f"{'case':16s} {'T':>5s} {'seq ms':>8s} {'loop ms':>8s} {'full ms':>8s} {'it':>3s} {'err':>7s} "
          f"{'diag ms':>8s} {'it':>3s} {'err':>7s}  best/full best/diag", flush=True)
    rows = []
    for name, make in cases:
        g, inputs = make()
        r = measure(name, g, inputs, args.runs)
        rows.append(r)
        best = min(r["seq_ms"], r["loop_ms"])
        print(f"{name:16s} {r['T']:5d} {r['seq_ms']:8.3f} {r['loop_ms']:8.3f} {r['full_ms']:8.3f} "
              f"{r['full_iters']:3d} {r['full_err']:7.1e} {r['diag_ms']:8.3f} "
              f"{r['diag_iters']:3d} {r['diag_err']:7.1e}  {best / r['full_ms']:9.2f} "
              f"{best / r['diag_ms']:9.2f}", flush=True)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
