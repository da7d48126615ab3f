"""Linear recurrence h_t = sigmoid(a) * h_{t-1} + u_t (`seq_linear_rnn`-style), one run:
ember parallel_scan (ctrl.linear_scan, the kernel `plan_scan` picks: see below) vs ember's
sequential ctrl.scan loop vs the torch eager Python loop of
`ember.zoo.seq_linear_rnn.make_seq_linear_rnn(T, d)`.

    python benchmarks/recurrence.py [--T 4096 16384 65536] [--d 64 1024] [--split lanes|time]
    python benchmarks/recurrence.py --kernels [--per-step]  # the scan kernels alone, each split
    python benchmarks/recurrence.py --bandwidth   # the memory ceiling: triads, 1 vs 2 threads
    python benchmarks/recurrence.py --newton [--T 8 64 256]   # parallel_newton (DEER)

The plan (ember/backends/tvm/kernels/scan.py, `plan_scan`): serial under 2^16 elements (2^18
with a per-step a); the lane split (kernels/scan_lanes.py: each thread owns whole cache lines of
the state over all of time, no extra work) when each thread's part of a row is 8 KiB or more;
otherwise the warm-start time split (kernels/scan_warm.py: each thread its own rows, later ones
warmed up W rows early from the decay of a, then a serial bitwise fix-up) for T >= 1024. At
d=64 and d=1024 on 2 cores that is the time split: the lane split shares every row between the
cores, whose prefetchers then fetch (and for h, take ownership of) the other core's lines, and
it measured 0.4-1.35x of serial there against 0.9-2.9x for the time split. `--split` forces one
(`forced_split`) to compare them through the whole compiler; `--kernels` times the kernels
alone (output preallocated, steady state, paired rounds), the measurements behind the plan.

--bandwidth: y = 0.5 * x + 1 over float32 arrays of 4 and 256 MiB (in L3 / in DRAM), one and
two threads, normal and non-temporal stores; GB/s counts the bytes read plus written (a normal
store also reads the line it overwrites: that traffic is not counted, it is what makes those
rows slower). The scan moves the same two streams per element, so this is its ceiling.

--newton: digits_gru (T=8, the zoo model) and random GRUs of the same cell (B=4, H=32) at
longer T, after recognize_rnn: iterations to converge and max error vs the sequential loop,
time of ctrl.newton_scan vs the sequential ctrl.scan in the numpy interpreter and in the torch
backend (torch runs with 1 thread), plus ember's compiled sequential TIR loop. The compiled
(TVM) Newton op against ember's compiled sequential forms is benchmarks/newton.py.

The ember graph (`ember.zoo.seq_linear_rnn.scan_graph`) is the form `reroll` produces for that
module (a ctrl.scan whose body is h' = a*h + u_t, scanned over u's time dim), built directly:
torch.export of a 65536-step Python loop would take far longer than the benchmark. Errors are max |ember - torch| / max |torch|.
That graph moves time to dim 0 with a permute before the scan and back after it; the first is
a view after TVM's reshape rewrite, the last (a function output) is folded into the kernel
that writes the scan's output (fold_output_reshape.py; for the sequential loop, its ys output),
so both versions run one kernel. The `op` columns time the same scans on a graph that takes u
as [T, 1, d] and returns [T, 1, d] (no permutes), i.e. the two scan lowerings alone. Times are
steady-state calls (see `_time_side_by_side`); at d=64 and T=4096 a call is ~25-40 us, of which
the VM call and the output buffer take ~3 us; the
kernels alone are in `--kernels`. Torch runs with one thread (see `main`).

Load: the Linux scheduler shares the CPU between sessions (autogroups), not threads, so on a
box other sessions keep busy a two-thread kernel gets one session's share, like a one-thread
loop, and cannot be faster. Measure on an idle machine, or give the run its own session with
priority for a short burst (as root: `setsid -w sh -c 'echo -15 > /proc/self/autogroup; exec
nice -n -15 python benchmarks/recurrence.py'`), and say which; other sessions at the same
priority still take their share.
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
from ember.ir import Graph


def _time(fn, runs: int) -> float:
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _time_side_by_side(vms: dict, x, runs: int, batch_s: float = 2e-3,
                       warm_s: float = 0.5) -> tuple[dict, dict]:
    """Steady-state time per call, the versions side by side: each round times, for each
    version in turn, a batch of back-to-back calls (enough for ~`batch_s`, as TVM's
    time_evaluator does with `number`) after two untimed ones. Returns the median over `runs`
    rounds of the time per call, and of the per-round ratio to the first version (paired in a
    round, so drifts of the shared machine's load cancel).

    Why batches: a lone call of a ~50 us op, timed between calls of the other version, measures
    mostly what happened around it (which core's cache holds the data, whether the other
    thread was parked); its best-of-N swung 0.98x..1.5x between runs at T=4096, d=64.
    Why `warm_s` of untimed rounds first: two-thread work runs slow for the first ~0.1 s of a
    process (T=4096, d=64 scan: 45-49 us per call in the first rounds, falling to 22-27 us
    after ~20 rounds of 4 ms). Part of it is TVM's thread pool: it pins its worker to CPU 1 but
    not the caller, which runs item 0 of every parallel loop; until the scheduler moves a caller
    that sits on CPU 1 both items share that CPU (0.82-1.05x of the serial loop, seen in
    /proc/self/task). Unpinning the worker (TVM_BIND_THREADS=0) removes that transient but
    measured worse in steady state: occasional rounds at 0.95x here, digits_cnn b64 0.63 vs
    0.58 ms (medians of 5 alternated processes), so ember keeps TVM's default."""
    fns = {name: vm["main"] for name, vm in vms.items()}
    number = {}
    for name, f in fns.items():
        f(x)
        t0 = time.perf_counter()
        f(x)
        number[name] = max(1, int(batch_s / max(time.perf_counter() - t0, 1e-7)))
    times: dict = {name: [] for name in fns}
    ratios: dict = {name: [] for name in fns}
    base = next(iter(fns))
    start, rounds = time.perf_counter(), 0
    while rounds < 2 or time.perf_counter() - start < warm_s:  # untimed rounds, see above
        for name, f in fns.items():
            for _ in range(number[name]):
                f(x)
        rounds += 1
    for _ in range(runs):
        got = {}
        for name, f in fns.items():
            f(x)
            f(x)
            t0 = time.perf_counter()
            for _ in range(number[name]):
                f(x)
            got[name] = (time.perf_counter() - t0) / number[name]
            times[name].append(got[name])
        for name in fns:
            ratios[name].append(got[base] / got[name])
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in ratios.items()})


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


def _triad(n: int, threads: int, streaming: bool):
    """y = 0.5 * x + 1 over n floats, `threads` contiguous parts (non-temporal stores or not)."""
    from tvm.script import tirx as T

    from ember.backends.tvm.kernels.scan_warm import NT_STORE_IR

    per = n // threads

    @T.prim_func(private=True)
    def triad(x: T.Buffer((n,), "float32"), y: T.Buffer((n,), "float32")):
        T.func_attr({"tirx.noalias": True})
        with T.attr(0, "pragma_import_llvm", NT_STORE_IR if streaming else ""):
            for p in T.parallel(threads):
                for i in range(per // 8):
                    if streaming:
                        T.evaluate(T.call_extern(
                            "void", "ember_nt_store_f32x8", T.address_of(y[p * per + i * 8]),
                            x[T.Ramp(p * per + i * 8, 1, 8)] * T.Broadcast(T.float32(0.5), 8)
                            + T.Broadcast(T.float32(1), 8)))
                    else:
                        for j in T.vectorized(8):
                            y[p * per + i * 8 + j] = x[p * per + i * 8 + j] * T.float32(0.5) \
                                + T.float32(1)
                if streaming:
                    T.evaluate(T.call_extern("void", "ember_store_fence"))

    return triad


def bandwidth_main(runs: int) -> list[dict]:
    import tvm

    from ember.backends.tvm.targets import resolve

    target = resolve("cpu").tvm_target()
    rows = []
    for mib in (4, 256):
        n = mib << 18
        x = tvm.runtime.tensor(np.ones(n, np.float32))
        y = tvm.runtime.tensor(np.zeros(n, np.float32))
        fns = {}
        for threads in (1, 2):
            for streaming in (False, True):
                f = _triad(n, threads, streaming).with_attr("global_symbol", "main")
                fns[(threads, streaming)] = tvm.compile(tvm.IRModule({"main": f}),
                                                        target=target)["main"]
        best = {k: float("inf") for k in fns}
        for _ in range(runs):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn(x, y)
                best[k] = min(best[k], time.perf_counter() - t0)
        row = {"MiB": mib, **{f"{'nt' if s else 'store'}_{t}t_GBs": 2 * n * 4 / best[(t, s)] / 1e9
                              for t, s in fns}}
        rows.append(row)
        print(f"{mib:4d} MiB: stores 1 thread {row['store_1t_GBs']:5.1f} 2 threads "
              f"{row['store_2t_GBs']:5.1f} GB/s | non-temporal 1 thread {row['nt_1t_GBs']:5.1f} "
              f"2 threads {row['nt_2t_GBs']:5.1f} GB/s  load {os.getloadavg()[0]:.1f}",
              flush=True)
    return rows


def _steady_ratios(calls: dict, base: str, rounds: int) -> tuple[dict, dict]:
    """Per round, each call 8 times back to back (median of the last 6: caches and the thread
    pool warm); returns the median time per call and the median over rounds of the per-round
    ratio t(base) / t(call): paired within a round, so slow drifts of the load cancel."""
    times: dict = {k: [] for k in calls}
    ratios: dict = {k: [] for k in calls}
    start = time.perf_counter()
    while time.perf_counter() - start < 0.5:  # the host's warm-up (see _time_side_by_side)
        for fn in calls.values():
            fn()
    for _ in range(rounds):
        got = {}
        for k, fn in calls.items():
            ts = []
            for _ in range(8):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            got[k] = statistics.median(ts[2:])
            times[k].append(got[k])
        for k in calls:
            ratios[k].append(got[base] / got[k])
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in ratios.items()})


def kernels_main(shapes: list[tuple[int, int]], rounds: int, per_step: bool) -> list[dict]:
    """The linear-scan kernels alone (no VM, output preallocated), each split forced, a drawn
    from [0.5, 0.95] per lane (per step too with --per-step): what `plan_scan`'s cost model is
    measured with. Every split's output is checked bitwise against the serial one."""
    import tvm

    from ember.backends.tvm.kernels.scan import (
        SPLITS,
        forced_split,
        linear_scan_kernel,
        plan_scan,
    )
    from ember.backends.tvm.targets import resolve

    target = resolve("cpu").tvm_target()
    cores = int(target.attrs.get("num-cores", 2) or 2)
    rows = []
    for steps, d in shapes:
        rng = np.random.default_rng(steps + d)
        a = rng.uniform(0.5, 0.95, (steps if per_step else 1, d)).astype(np.float32)
        args = [tvm.runtime.tensor(v) for v in (a, rng.standard_normal((steps, d)).astype(
            np.float32), np.zeros(d, np.float32))]
        fns, outs = {}, {}
        for split in SPLITS:
            with forced_split(split):
                plan = plan_scan(steps, d, cores, per_step_a=per_step, streaming=True)
            f = linear_scan_kernel(plan, per_step).with_attr("global_symbol", "main")
            fns[split] = tvm.compile(tvm.IRModule({"main": f}), target=target)["main"]
            outs[split] = tvm.runtime.tensor(np.zeros((steps, d), np.float32))
        calls = {k: (lambda f=f, o=outs[k], a=tuple(args): f(*a, o)) for k, f in fns.items()}
        times, ratios = _steady_ratios(calls, "serial", rounds)
        for k in fns:
            assert np.array_equal(outs[k].numpy(), outs["serial"].numpy()), k
        chosen = plan_scan(steps, d, cores, per_step_a=per_step, streaming=True).kind
        row = {"T": steps, "d": d, "per_step_a": per_step, "plan": chosen,
               "serial_s": times["serial"], **{f"x_{k}": ratios[k] for k in SPLITS[1:]}}
        rows.append(row)
        print(f"T={steps:6d} d={d:5d} serial {times['serial']*1e6:9.1f} us  time split "
              f"x{ratios['time']:.2f}  lane split x{ratios['lanes']:.2f}  plan: {chosen:6s}"
              f"  load {os.getloadavg()[0]:.1f}", flush=True)
    return rows


def main() -> None:
    import tvm

    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--d", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--newton", action="store_true")
    ap.add_argument("--bandwidth", action="store_true")
    ap.add_argument("--kernels", action="store_true")
    ap.add_argument("--per-step", action="store_true")
    ap.add_argument("--split", choices=("serial", "lanes", "time"), default=None,
                    help="force this split for parallel_scan (default: plan_scan's choice)")
    args = ap.parse_args()
    if args.kernels:
        rows = kernels_main([(t, d) for t in args.T for d in args.d], max(args.runs, 5),
                            args.per_step)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "load": os.getloadavg()}, f, indent=1)
        return
    if args.bandwidth:
        rows = bandwidth_main(max(args.runs, 9))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "load": os.getloadavg()}, f, indent=1)
        return
    if args.newton:
        rows = newton_main(args.T if args.T != [4096, 16384, 65536] else [8, 64, 256],
                           args.runs)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "note": "taken under shared-machine load"}, f, indent=1)
        return
    from ember.backends.tvm.kernels.scan import forced_split
    from ember.zoo.seq_linear_rnn import make_seq_linear_rnn, scan_graph

    # torch's intra-op threads stay busy after the eager loop and took the second core from
    # ember's: T=4096 d=64 op went 1.17-1.30x -> 0.80-0.84x once the eager layer had run. Its
    # per-step ops are far too small to use two threads anyway.
    torch.set_num_threads(1)
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
                with forced_split(args.split):
                    vms = {name: _vm(graph) for name, graph in (("sequential", g),
                                                                ("parallel_scan", gp))}
                for name, vm in vms.items():
                    out = vm["main"](ut).numpy()
                    res[f"rel_err_{form}{name}"] = float(np.abs(out - want).max()
                                                         / np.abs(want).max())
                times, ratios = _time_side_by_side(vms, ut, args.runs)
                for name, t in times.items():
                    res[f"ember_{form}{name}_s"] = t
                res[f"{form}speedup_vs_sequential"] = ratios["parallel_scan"]
            row = {"T": T, "d": d, "torch_eager_s": t_torch, **res}
            row["speedup_vs_torch"] = t_torch / row["ember_parallel_scan_s"]
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
