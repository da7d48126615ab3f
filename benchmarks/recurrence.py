"""Linear recurrence h_t = sigmoid(a) * h_{t-1} + u_t (`seq_linear_rnn`-style), one run:
ember parallel_scan (ctrl.linear_scan, chunked kernel) vs ember's sequential ctrl.scan loop vs
the torch eager Python loop of `ember.zoo.seq_linear_rnn.make_seq_linear_rnn(T, d)`.

    python benchmarks/recurrence.py [--T 4096 16384 65536] [--d 64 1024] [--json out.json]
    python benchmarks/recurrence.py --newton [--T 8 64 256]   # parallel_newton (DEER)

--newton: digits_gru (T=8, the zoo model) and random GRUs of the same cell (B=4, H=32) at
longer T, after recognize_rnn: iterations to converge and max error vs the sequential loop,
time of ctrl.newton_scan vs the sequential ctrl.scan in the numpy interpreter and in the torch
backend (the Newton op has no TVM lowering; torch runs with 1 thread), plus ember's compiled
sequential TIR loop.

The ember graph is the form `reroll` produces for that module (a ctrl.scan whose body is
h' = a*h + u_t, scanned over u's time dim), built directly: torch.export of a 65536-step Python
loop would take far longer than the benchmark. Errors are max |ember - torch| / max |torch|.
That graph moves time to dim 0 with a permute before the scan and back after it (two copies of
the whole [T, d] tensor in both versions); the `op` columns time the same scans on a graph that
takes u as [T, 1, d] and returns [T, 1, d] (no permutes), i.e. the two scan lowerings alone.
Run it on an idle machine: parallel kernels wait for their slowest thread, so on an
oversubscribed box (load above the core count) they lose to any single-threaded loop.
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


def scan_graph(layer, T: int, d: int, permutes: bool = True) -> Graph:
    f32 = DType.f32
    body = Graph("body")
    h = body.add_input("h", TensorType((1, d), f32))
    x = body.add_input("u_t", TensorType((1, d), f32))
    a = body.add_input("a", TensorType((d,), f32))
    new = body.add("add", body.add("mul", a, h), x)
    body.set_outputs(new, new)
    g = Graph("seq_linear_rnn")
    u = g.add_input("u", TensorType((1, T, d) if permutes else (T, 1, d), f32))
    av = g.add("sigmoid", g.const(layer.a_logit.detach().numpy(), name="a_logit"))
    xs = g.add("permute", u, dims=(1, 0, 2)) if permutes else u
    _, ys = g.add("ctrl.scan", g.const(np.zeros((1, d), np.float32)), xs, av, regions=[body],
                  num_carry=1, num_xs=1)
    g.set_outputs(g.add("permute", ys, dims=(1, 0, 2)) if permutes else ys)
    return g


def _time(fn, runs: int) -> float:
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _time_side_by_side(vms: dict, x, runs: int) -> dict:
    """Best-of-`runs` rounds, the versions interleaved in each round (same load for all)."""
    best = {name: float("inf") for name in vms}
    for vm in vms.values():
        vm["main"](x)
    for _ in range(runs):
        for name, vm in vms.items():
            t0 = time.perf_counter()
            vm["main"](x)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _vm(g: Graph):
    import tvm
    from tvm import relax

    from ember.backends.tvm import build, lower

    return relax.VirtualMachine(build(lower(g), "cpu"), tvm.cpu())


def _gru_graph(T: int):
    """digits_gru's GRU cell (trained weights) over T steps of random rows, recognized."""
    z = ember.zoo.load("digits_gru")
    x = np.random.default_rng(T).uniform(0, 1, (4, T, 8)).astype(np.float32)
    g = ember.trace(z.module, (torch.from_numpy(x),))
    return ember.Pipeline.parse("recognize_rnn,dce").run(g), x


def newton_main(steps: list[int], runs: int) -> list[dict]:
    import tvm

    from ember.backends.torch import GraphModule

    torch.set_num_threads(1)  # 2 threads on a loaded 2-core box made tiny torch ops ~50x slower
    rows = []
    for T in steps:
        seq, x = _gru_graph(T)
        want = ember.interpret(seq, x)
        row: dict = {"T": T}
        for jac in ("full", "diag"):
            g = ember.Pipeline.parse(f"parallel_newton{{force=true,jacobian={jac},tol=1e-5,"
                                     f"max_iters={min(T, 64)}}}").run(seq.clone())
            gi = g.clone()
            op = next(o for o in gi.ops if o.kind == "ctrl.newton_scan")
            gi.set_outputs(*gi.outputs, op.results[-1])
            got, iters = ember.interpret(gi, x)
            tm = GraphModule(g)
            xt = torch.from_numpy(x)
            with torch.no_grad():
                row[f"{jac}_iters"] = int(iters)
                row[f"{jac}_err"] = float(np.abs(got - want).max())
                row[f"{jac}_numpy_s"] = _time(lambda: ember.interpret(g, x), runs)
                row[f"{jac}_torch_s"] = _time(lambda: tm(xt), runs)
        ts = GraphModule(seq)
        with torch.no_grad():
            row["seq_torch_s"] = _time(lambda: ts(torch.from_numpy(x)), runs)
        row["seq_numpy_s"] = _time(lambda: ember.interpret(seq, x), runs)
        vm = _vm(seq)
        xn = tvm.runtime.tensor(x)
        row["seq_tvm_s"] = _time(lambda: vm["main"](xn), runs * 4)
        rows.append(row)
        print(f"T={T:5d} iters full {row['full_iters']:3d} diag {row['diag_iters']:3d}  err "
              f"{row['full_err']:.1e}/{row['diag_err']:.1e}  numpy: seq "
              f"{row['seq_numpy_s']*1e3:8.2f} ms  newton full {row['full_numpy_s']*1e3:8.2f}"
              f" diag {row['diag_numpy_s']*1e3:8.2f}  torch: seq {row['seq_torch_s']*1e3:8.2f} "
              f"full {row['full_torch_s']*1e3:8.2f} diag {row['diag_torch_s']*1e3:8.2f}  "
              f"tvm seq {row['seq_tvm_s']*1e3:7.3f} ms", flush=True)
    return rows


def main() -> None:
    import tvm

    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--d", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--newton", action="store_true")
    args = ap.parse_args()
    if args.newton:
        rows = newton_main(args.T if args.T != [4096, 16384, 65536] else [8, 64, 256],
                           args.runs)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "note": "taken under shared-machine load"}, f, indent=1)
        return
    from ember.zoo.seq_linear_rnn import make_seq_linear_rnn

    rows = []
    for T in args.T:
        for d in args.d:
            layer = make_seq_linear_rnn(T, d, seed=0).eval()
            u = torch.randn(1, T, d, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                ref = layer(u).numpy()
                t_torch = _time(lambda: layer(u), max(1, args.runs // 2))
            res = {}
            for form, permutes in (("", True), ("op_", False)):
                g = scan_graph(layer, T, d, permutes)
                gp = ember.Pipeline.parse("parallel_scan,dce").run(g.clone())
                assert any(op.kind == "ctrl.linear_scan" for op in gp.ops)
                un = u.numpy() if permutes else np.ascontiguousarray(u.numpy().transpose(1, 0, 2))
                want = ref if permutes else ref.transpose(1, 0, 2)
                ut = tvm.runtime.tensor(un)
                vms = {name: _vm(graph) for name, graph in (("sequential", g),
                                                            ("parallel_scan", gp))}
                for name, vm in vms.items():
                    out = vm["main"](ut).numpy()
                    res[f"rel_err_{form}{name}"] = float(np.abs(out - want).max()
                                                         / np.abs(want).max())
                for name, t in _time_side_by_side(vms, ut, args.runs).items():
                    res[f"ember_{form}{name}_s"] = t
            row = {"T": T, "d": d, "torch_eager_s": t_torch, **res}
            row["speedup_vs_torch"] = t_torch / row["ember_parallel_scan_s"]
            row["speedup_vs_sequential"] = row["ember_sequential_s"] / row["ember_parallel_scan_s"]
            row["op_speedup_vs_sequential"] = (row["ember_op_sequential_s"]
                                               / row["ember_op_parallel_scan_s"])
            rows.append(row)
            print(f"T={T:6d} d={d:5d}  torch {t_torch*1e3:8.1f} ms  graph: seq "
                  f"{row['ember_sequential_s']*1e3:8.2f} scan {row['ember_parallel_scan_s']*1e3:8.2f}"
                  f" x{row['speedup_vs_sequential']:.2f}  op: seq "
                  f"{row['ember_op_sequential_s']*1e3:8.2f} scan "
                  f"{row['ember_op_parallel_scan_s']*1e3:8.2f} x{row['op_speedup_vs_sequential']:.2f}"
                  f"  err {max(row['rel_err_parallel_scan'], row['rel_err_op_parallel_scan']):.1e}"
                  f"  load {os.getloadavg()[0]:.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "note": "taken under shared-machine load",
                       "load": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    main()
