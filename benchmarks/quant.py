"""Quantization benchmark, one run: kernels (int8 and XNOR GEMM at 1024^3) and zoo models.

    .venv/bin/python benchmarks/quant.py [--quick] [--json out.json] [--gemm-only] [--threads N]

Every ratio is measured side by side in this run (the machine may be shared: compare ratios,
not absolute numbers across runs). Reports:
- int8 GEMM GOP/s vs torch `_int_mm`, torch fp32 and ember fp32: the AVX2 u8 x s8 vpmaddubsw
  kernel (7-bit weights, what the quantize pass emits on AVX2 without VNNI; int8 input, and float
  input quantized in the kernel) and the vpmaddwd kernel (full 8-bit weights);
- binary XNOR-popcount GEMM vs torch fp32 GEMM, checked exact against a +-1 reference;
- per model (digits_mlp/cnn/vit), int8 static: eval accuracy before/after, latency ember fp32 vs
  ember int8 at batch 64 with the default speed check (layers whose int8 kernel is not faster
  stay float) and with force=true (every layer int8: the weight-ratio/size numbers);
- digits_mlp: binary vs residual binary (2, 3 bases) vs ternary accuracy and weight ratio
  (force=true: a size/accuracy study).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if "--threads" in sys.argv:  # before TVM starts its thread pool
    os.environ["TVM_NUM_THREADS"] = sys.argv[sys.argv.index("--threads") + 1]

import ember
from ember.backends.tvm.build import build
from ember.backends.tvm.layer_timer import TvmLayerTimer
from ember.backends.tvm.lower import lower
from ember.backends.tvm.targets import resolve
from ember.ir import Graph, TensorType
from ember.ir.ops.quant_lowbit import pack_signs
from ember.passes import Pipeline
from ember.passes.quantize import cost as quant_cost

quant_cost.install_oracle(TvmLayerTimer())  # the pass keeps layers float where int8 is slower


def _timeit(fn, repeat: int = 10, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _compile(g: Graph):
    import tvm
    from tvm import relax

    spec = resolve("cpu")
    with spec.tvm_target():  # the quant lowerings pick kernels by the target in scope
        mod = lower(g)
    vm = relax.VirtualMachine(build(mod, spec), tvm.cpu())
    return lambda *xs: vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in xs])


def _one_op(kind, inputs, consts, **attrs):
    g = Graph(kind.replace(".", "_"))
    vals = [g.add_input(f"in{i}", TensorType.of(a)) for i, a in enumerate(inputs)]
    vals += [g.const(c) for c in consts]
    g.set_outputs(g.add(kind, *vals, **attrs))
    return _compile(g)


def _rounds(cands: dict, repeat: int, rounds: int = 5) -> dict:
    """Interleaved rounds over all candidates; per candidate the median and best wall time and
    the median process CPU time per call (with --threads 1 the CPU time is the time the call
    actually ran, unaffected by other processes preempting it on a shared machine)."""
    wall = {k: [] for k in cands}
    cpu = {k: [] for k in cands}
    for fn in cands.values():
        fn()
    for _ in range(rounds):
        for key, fn in cands.items():
            for _ in range(max(1, repeat // rounds)):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
    return {k: (float(np.median(wall[k])), float(np.min(wall[k])), float(np.median(cpu[k])))
            for k in cands}


def gemm_kernels(n: int, repeat: int) -> dict:
    import torch

    rng = np.random.default_rng(0)
    flops = 2.0 * n ** 3
    out = {"size": n, "threads": int(os.environ.get("TVM_NUM_THREADS", "0")),
           "torch_threads": torch.get_num_threads()}
    x = rng.standard_normal((n, n)).astype(np.float32)
    w = rng.standard_normal((n, n)).astype(np.float32)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    f32 = _one_op("linear", [x], [w])
    xq = rng.integers(-128, 128, (n, n)).astype(np.int8)
    wq = rng.integers(-128, 128, (n, n)).astype(np.int8)
    wq7 = rng.integers(-64, 65, (n, n)).astype(np.int8)  # the quantize pass's int7 weights
    one, zero = np.array(1.0, np.float32), np.array(0, np.int32)
    cands = {"torch_fp32": lambda: tx @ tw.T, "ember_fp32": lambda: f32(x)}
    for tag, w_ in (("int8_vpmaddwd", wq), ("int8_u8s8", wq7)):  # 8-bit weights: vpmaddwd
        q8 = _one_op("quant.linear_int8", [xq], [w_, one, zero, np.ones(n, np.float32)])
        want = (xq.astype(np.int64) @ w_.astype(np.int64).T).astype(np.float32)
        out[f"{tag}_exact"] = bool(np.array_equal(q8(xq).numpy(), want))
        cands[tag] = (lambda q8=q8: q8(xq))
    # float input quantized inside the kernel (what a model layer runs)
    g = Graph("fused")
    xv = g.add_input("x", TensorType.of(x))
    qv = g.add("quant.quantize", xv, g.const(np.array(0.02, np.float32)), g.const(zero))
    g.set_outputs(g.add("quant.linear_int8", qv, g.const(wq7), g.const(np.array(0.02, np.float32)),
                        g.const(zero), g.const(np.ones(n, np.float32))))
    fq = _compile(g)
    cands["int8_u8s8_fused_quantize"] = lambda: fq(x)
    a_bits, b_bits = pack_signs(x), pack_signs(w)
    bm = _one_op("quant.binary_matmul", [a_bits], [b_bits], k=n)
    sx, sw = np.where(x >= 0, 1.0, -1.0), np.where(w >= 0, 1.0, -1.0)
    out["binary_exact_vs_pm1_reference"] = bool(np.array_equal(
        bm(a_bits).numpy(), (sx @ sw.T).astype(np.int32)))
    cands["binary_xnor"] = lambda: bm(a_bits)
    txq, twq = torch.from_numpy(xq), torch.from_numpy(wq.T.copy())
    try:
        out["torch_int_mm_gops"] = flops / _timeit(lambda: torch._int_mm(txq, twq), 3, 1) / 1e9
    except Exception as e:  # noqa: BLE001 - report, do not fail the benchmark
        out["torch_int_mm_gops"] = f"unavailable: {e}"
    times = _rounds(cands, repeat)
    for key, (med, best, cpu) in times.items():
        out[f"{key}_gops"] = flops / med / 1e9
        out[f"{key}_gops_best"] = flops / best / 1e9
        out[f"{key}_gops_per_cpu_s"] = flops / cpu / 1e9
    for key in cands:
        for base in ("torch_fp32", "ember_fp32"):
            for suffix in ("", "_best", "_per_cpu_s"):
                out[f"ratio{suffix}_{key}_vs_{base}"] = \
                    out[f"{key}_gops{suffix}"] / out[f"{base}_gops{suffix}"]
    return out


def model_rows(names, batch: int, repeat: int) -> list[dict]:
    """Per model: the default int8 pass (speed-checked: layers not faster stay float) for
    latency, and `force=true` (every layer int8) for the size/accuracy goals; both against the
    same canonicalized fp32 graph (batch norms folded into convs on both sides)."""
    rows = []
    for name in names:
        z = ember.zoo.load(name)
        g = ember.trace(z.module, z.example_inputs, dynamic_dims=z.dynamic_dims)
        calib = [tuple(np.asarray(a) for a in b) for b in z.calibration]
        g = Pipeline.parse("canonicalize,fold,dce").run(g)
        p = Pipeline.parse(f"quantize{{scheme=int8,batch={batch},show_progress=false}}")
        q = p.run(g, calibration=calib)
        notes = p.report.passes[-1].notes
        pf = Pipeline.parse("quantize{scheme=int8,force=true,show_progress=false}")
        qf = pf.run(g, calibration=calib)
        notes_f = pf.report.passes[-1].notes
        f_fn, q_fn, qf_fn = _compile(g), _compile(q), _compile(qf)
        x = np.concatenate([b[0] for b in calib] * 8)[:batch]
        err = float(np.max(np.abs(q_fn(x).numpy() - ember.interpret(q, x))))
        times = _rounds({k: (lambda fn=fn: fn(x)) for k, fn in  # noqa: B023 - called here
                         (("f", f_fn), ("q", q_fn), ("qf", qf_fn))}, 3 * repeat, rounds=3)
        t_f, t_q, t_qf = (times[k][0] for k in ("f", "q", "qf"))
        c_f, c_q, c_qf = (times[k][2] for k in ("f", "q", "qf"))
        rows.append({
            "model": name,
            "acc_fp32": z.evaluate(lambda *xs: f_fn(*xs).numpy()),
            "acc_int8": z.evaluate(lambda *xs: q_fn(*xs).numpy()),
            "acc_int8_all_layers": z.evaluate(lambda *xs: qf_fn(*xs).numpy()),
            "layers_int8": [r["layer"] for r in notes["layers"] if r["scheme"] == "int8"],
            "layers_kept_float_slower": notes["kept_float_slower"],
            "weight_ratio_all_layers_int8": notes_f["weight_ratio"],
            "whole_model_bytes_fp32": g.weight_bytes(), "whole_model_bytes_int8": q.weight_bytes(),
            "whole_model_bytes_int8_all_layers": qf.weight_bytes(),
            f"latency_ms_fp32_b{batch}": t_f * 1e3, f"latency_ms_int8_b{batch}": t_q * 1e3,
            f"latency_ms_int8_all_layers_b{batch}": t_qf * 1e3,
            "latency_ratio_int8_over_fp32": t_q / t_f,
            "latency_ratio_int8_all_layers_over_fp32": t_qf / t_f,
            # process CPU time per call (with --threads 1: immune to preemption by others)
            f"cpu_ms_fp32_b{batch}": c_f * 1e3, f"cpu_ms_int8_b{batch}": c_q * 1e3,
            f"cpu_ms_int8_all_layers_b{batch}": c_qf * 1e3,
            "cpu_ratio_int8_over_fp32": c_q / c_f, "cpu_ratio_int8_all_layers_over_fp32": c_qf / c_f,
            "tvm_vs_interpreter_max_err": err,
            "layers": notes["layers"],
        })
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "layers"}), flush=True)
        print(notes["table"], flush=True)
    return rows


def binary_family() -> list[dict]:
    z = ember.zoo.load("digits_mlp")
    g = ember.trace(z.module, z.example_inputs, dynamic_dims=z.dynamic_dims)
    calib = [tuple(np.asarray(a) for a in b) for b in z.calibration]
    out = [{"scheme": "fp32", "acc": z.evaluate(lambda *xs: ember.interpret(g, *xs))}]
    for spec in ("binary", "binary_residual,bits=2", "binary_residual,bits=3", "ternary",
                 "partial_binary", "int4_weight"):
        p = Pipeline.parse(f"quantize{{scheme={spec},force=true,show_progress=false}}")
        q = p.run(g, calibration=calib)
        out.append({"scheme": spec, "acc": z.evaluate(lambda *xs: ember.interpret(q, *xs)),
                    "weight_ratio": p.report.passes[-1].notes["weight_ratio"]})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="512^3 GEMMs, fewer repeats")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--gemm-only", action="store_true")
    ap.add_argument("--threads", type=int, help="TVM and torch threads (default: all cores)")
    args = ap.parse_args()
    repeat = 3 if args.quick else 10
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = {"gemm": gemm_kernels(512 if args.quick else 1024, 3 * repeat)}
    print(json.dumps(res["gemm"], indent=1), flush=True)
    if args.gemm_only:
        return
    res["binary_family_digits_mlp"] = binary_family()
    res["models_int8"] = model_rows(["digits_mlp", "digits_cnn", "digits_vit"], 64, repeat * 5)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
