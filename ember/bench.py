"""The zoo benchmark: ember against torch eager, torch.compile and ONNX Runtime, in one run.

For each zoo model and engine it measures latency (median and p90 over `repeat` calls after
`warmup`) at batch 1 and at a throughput batch, the RSS growth caused by preparing and running
that engine, the on-disk size of what the engine loads, and the max |difference| from torch
eager (a benchmark of wrong numbers is worthless). Every engine gets the same thread budget
(torch threads, ORT intra-op threads and TVM_NUM_THREADS), set before any of them starts.

Used by `benchmarks/bench_zoo.py` and `ember bench`. Imports torch: this is a development tool.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("torch", "torch.compile", "onnxruntime", "ember")
DEFAULT_PASSES = "fold,dce,cse,canonicalize"


@dataclass
class Result:
    """One (model, engine) row; `error` is set (and the numbers None) when the engine failed."""

    model: str
    engine: str
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # batch -> stats
    setup_s: float | None = None  # compile/export/load time
    rss_delta_mb: float | None = None
    size_kb: float | None = None  # artifact or model file loaded by the engine
    max_abs_diff: float | None = None  # vs torch eager on the same inputs
    error: str | None = None


def set_threads(threads: int) -> None:
    """Give every engine the same thread budget (TVM reads its variable when it starts)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def time_calls(fn: Callable[[], Any], warmup: int, repeat: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    times *= 1e3
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)),
            "mean": float(times.mean())}


def batch_inputs(z: Any, batch: int) -> list[np.ndarray]:
    """Real example inputs tiled along dim 0 to `batch` rows."""
    out = []
    for x in z.example_inputs:
        a = x.numpy()
        reps = -(-batch // a.shape[0])
        out.append(np.ascontiguousarray(np.concatenate([a] * reps)[:batch]))
    return out


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# ---- engines: each returns (callable on numpy inputs -> numpy, size in kB or None) ---------
def _torch_eager(z: Any, workdir: Path, passes: str):
    import torch

    def run(*arrays):
        with torch.inference_mode():
            return z.module(*[torch.from_numpy(a) for a in arrays]).numpy()

    return run, None


def _torch_compile(z: Any, workdir: Path, passes: str):
    import torch

    compiled = torch.compile(z.module, backend="inductor", dynamic=False)

    def run(*arrays):
        with torch.inference_mode():
            return compiled(*[torch.from_numpy(a) for a in arrays]).numpy()

    return run, None


def _onnxruntime(z: Any, workdir: Path, passes: str):
    import onnxruntime as ort

    path = workdir / f"{z.name}.onnx"
    export_onnx(z, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*arrays):
        return session.run(None, dict(zip(names, arrays)))[0]

    size = sum(f.stat().st_size for f in workdir.glob(path.name + "*"))  # + external .data
    return run, size / 1024


def export_onnx(z: Any, path: Path) -> None:
    """torch.onnx.export with a dynamic batch: the dynamo exporter first, then the legacy one."""
    import torch

    args = tuple(z.example_inputs)
    errors = []
    try:
        torch.onnx.export(z.module, args, str(path), dynamo=True, optimize=True,
                          input_names=list(z.input_names),
                          dynamic_shapes=z.export_dynamic_shapes(), verbose=False)
        return
    except Exception as e:  # noqa: BLE001 - fall back to the TorchScript exporter
        errors.append(f"dynamo: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    try:
        axes = {n: dict(d) for n, d in z.dynamic_dims.items()}
        torch.onnx.export(z.module, args, str(path), dynamo=False, input_names=list(z.input_names),
                          dynamic_axes=axes)
    except Exception as e:  # noqa: BLE001
        errors.append(f"legacy: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        raise RuntimeError("; ".join(errors)) from None


def _ember(z: Any, workdir: Path, passes: str):
    import ember

    path = workdir / f"{z.name}.ember"
    ember.compile(z.module, z.example_inputs, passes=passes, output=path,
                  calibration=z.calibration, dynamic_dims=z.dynamic_dims, progress=False)
    model = ember.load(path)
    return model, path.stat().st_size / 1024


_ENGINE_FNS = {"torch": _torch_eager, "torch.compile": _torch_compile,
               "onnxruntime": _onnxruntime, "ember": _ember}


def bench_model(name: str, engines: Sequence[str] = ENGINES, batches: Sequence[int] = (1, 64),
                warmup: int = 20, repeat: int = 200, passes: str = DEFAULT_PASSES,
                log: Callable[[str], None] = lambda s: None) -> list[Result]:
    """Every engine on one zoo model; an engine that fails gets a row with its error."""
    import ember.zoo

    z = ember.zoo.load(name)
    inputs = {b: batch_inputs(z, b) for b in batches}
    reference = {b: _torch_eager(z, Path("."), passes)[0](*inputs[b]) for b in batches}
    results = []
    with tempfile.TemporaryDirectory(prefix="ember-bench-") as tmp:
        for engine in engines:
            log(f"{name}: {engine}")
            results.append(_bench_engine(z, engine, Path(tmp), inputs, reference, warmup, repeat,
                                         passes))
    return results


def _bench_engine(z, engine, workdir, inputs, reference, warmup, repeat, passes) -> Result:
    result = Result(z.name, engine)
    gc.collect()
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    try:
        fn, result.size_kb = _ENGINE_FNS[engine](z, workdir, passes)
        diffs = []
        for b, arrays in inputs.items():  # first call per batch: torch.compile compiles here
            out = np.asarray(fn(*arrays))
            diffs.append(float(np.abs(out - reference[b]).max()))
        result.setup_s = time.perf_counter() - t0
        result.max_abs_diff = max(diffs)
        for b, arrays in inputs.items():
            result.latency_ms[str(b)] = time_calls(lambda a=arrays: fn(*a), warmup, repeat)
    except Exception as e:  # noqa: BLE001 - a failing engine is a result ("n/a"), not a crash
        result.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}" if str(e) \
            else type(e).__name__
        if os.environ.get("EMBER_DEBUG"):
            traceback.print_exc()
    result.rss_delta_mb = _rss_mb() - rss0
    return result


def run(models: Sequence[str] | None = None, engines: Sequence[str] = ENGINES,
        batches: Sequence[int] = (1, 64), warmup: int = 20, repeat: int = 200, threads: int = 2,
        passes: str = DEFAULT_PASSES, log: Callable[[str], None] = lambda s: None) -> dict:
    """Benchmark `models` (default: the whole zoo); returns the JSON-ready report."""
    set_threads(threads)
    import platform

    import ember.zoo

    unknown = [e for e in engines if e not in _ENGINE_FNS]
    if unknown:
        from .errors import EmberError

        raise EmberError(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    models = list(models or ember.zoo.names())
    rows = []
    for name in models:
        rows.extend(bench_model(name, engines, batches, warmup, repeat, passes, log))
    return {"config": {"threads": threads, "batches": list(batches), "warmup": warmup,
                       "repeat": repeat, "passes": passes, "machine": platform.machine(),
                       "cpu": _cpu_name(), "engines": list(engines)},
            "results": [asdict(r) for r in rows]}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def table(report: dict) -> Any:
    """A rich Table of a `run` report: latency per batch and the ratio to torch eager."""
    from rich.table import Table

    batches = [str(b) for b in report["config"]["batches"]]
    t = Table(title=f"zoo benchmark ({report['config']['threads']} threads, "
                    f"median of {report['config']['repeat']} calls, ms)", title_justify="left")
    t.add_column("model")
    t.add_column("engine")
    for b in batches:
        t.add_column(f"b{b} median", justify="right")
        t.add_column(f"b{b} p90", justify="right")
        t.add_column(f"b{b} speedup", justify="right")
    for col in ("setup s", "RSS +MB", "size kB", "max|diff|"):
        t.add_column(col, justify="right")
    eager = {r["model"]: r for r in report["results"] if r["engine"] == "torch" and not r["error"]}
    for r in report["results"]:
        cells = [r["model"], r["engine"]]
        if r["error"]:
            cells += ["n/a"] * (3 * len(batches)) + [f"[red]{r['error'][:60]}[/]", "", "", ""]
            t.add_row(*cells)
            continue
        for b in batches:
            stats = r["latency_ms"].get(b)
            base = eager.get(r["model"], {}).get("latency_ms", {}).get(b)
            ratio = f"{base['median'] / stats['median']:.2f}x" if stats and base else "-"
            cells += [f"{stats['median']:.3f}", f"{stats['p90']:.3f}", ratio] if stats \
                else ["-", "-", "-"]
        cells += [_fmt(r["setup_s"], "{:.1f}"), _fmt(r["rss_delta_mb"], "{:.0f}"),
                  _fmt(r["size_kb"], "{:.0f}"), _fmt(r["max_abs_diff"], "{:.1e}")]
        t.add_row(*cells)
    return t


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)
