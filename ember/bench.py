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
EXTRA_ENGINES = ("ember.static", "ember.tuned")
"""ember.static: one artifact per batch, static shapes, no tuning records; ember.tuned: the same
with the records of `ember tune` (records root: `run(records=DIR)`, DIR/NAME.tune per model)."""
DEFAULT_PASSES = "fold,dce,cse,canonicalize"
OPTIONS: dict[str, Any] = {"records": None, "remote": None}
"""Set by `run`: the tuning-records root and the RPC address ember engines are timed on."""


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
                  calibration=z.calibration, dynamic_dims=z.dynamic_dims, progress=False,
                  records=False)
    if OPTIONS["remote"]:
        return _RemoteEngine({None: path}), path.stat().st_size / 1024
    model = ember.load(path)
    return model, path.stat().st_size / 1024


class _StaticEmber:
    """One static-shape artifact per batch size, compiled on the first call at that batch
    (inside the benchmark's setup time), with or without tuning records."""

    def __init__(self, z: Any, workdir: Path, passes: str, records: Path | None):
        self.z, self.workdir, self.passes, self.records = z, workdir, passes, records
        self.paths: dict[int, Path] = {}
        self.models: dict[int, Any] = {}
        self.remote = _RemoteEngine(self.paths) if OPTIONS["remote"] else None

    def _model(self, batch: int) -> Any:
        import torch

        import ember

        if batch not in self.paths:
            tag = "tuned" if self.records else "static"
            path = self.workdir / f"{self.z.name}.{tag}.b{batch}.ember"
            examples = tuple(torch.from_numpy(a) for a in batch_inputs(self.z, batch))
            ember.compile(self.z.module, examples, passes=self.passes, output=path,
                          calibration=self.z.calibration, dynamic_dims=None, progress=False,
                          records=self.records if self.records else False)
            self.paths[batch] = path
        if self.remote is not None:
            return self.remote.session(batch)
        if batch not in self.models:
            self.models[batch] = ember.load(self.paths[batch])
        return self.models[batch]

    def __call__(self, *arrays: np.ndarray) -> Any:
        return self._model(int(arrays[0].shape[0]))(*arrays)

    def time_calls(self, arrays: Sequence[np.ndarray], warmup: int, repeat: int):
        if self.remote is None:
            return None
        self._model(int(arrays[0].shape[0]))
        return self.remote.time_calls(arrays, warmup, repeat)

    def size_kb(self) -> float:
        return max((p.stat().st_size for p in self.paths.values()), default=0) / 1024


class _RemoteEngine:
    """Artifacts run and timed on the TVM RPC server at OPTIONS["remote"] (time_evaluator on
    the device). The server serves one session at a time: one artifact connected at a time."""

    def __init__(self, paths: dict[int | None, Path] | dict[int, Path]):
        self.paths: dict[Any, Path] = paths  # type: ignore[assignment]
        self.key: Any = object()
        self.model: Any = None

    def session(self, batch: int | None) -> Any:
        from .backends.tvm.remote import connect_remote

        key = batch if batch in self.paths else None
        if self.model is None or key != self.key:
            if self.model is not None:
                self.model.close()
            self.model = connect_remote(self.paths[key], OPTIONS["remote"])
            self.key = key
        return self.model

    def __call__(self, *arrays: np.ndarray) -> Any:
        return self.session(int(arrays[0].shape[0]))(*arrays)

    def time_calls(self, arrays: Sequence[np.ndarray], warmup: int, repeat: int):
        stats = self.session(int(arrays[0].shape[0])).benchmark(list(arrays), warmup=warmup,
                                                                repeat=repeat)
        return {"median": stats["median_ms"], "p90": stats["p90_ms"], "mean": stats["mean_ms"]}

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None


def _ember_static(z: Any, workdir: Path, passes: str):
    engine = _StaticEmber(z, workdir, passes, None)
    return engine, None


def _ember_tuned(z: Any, workdir: Path, passes: str):
    from .backends.tvm.tune import Records

    root = OPTIONS["records"]
    if root is None:
        raise RuntimeError("ember.tuned needs --records DIR (tuning records per model, DIR/"
                           f"{z.name}.tune, from `ember tune zoo:{z.name} --records DIR/"
                           f"{z.name}.tune`)")
    records = Path(root) / f"{z.name}.tune"
    if not Records(records).exists:
        raise RuntimeError(f"no tuning records at {records}: run `ember tune zoo:{z.name} "
                           f"--batch 1 --records {records}` (and --batch 64)")
    return _StaticEmber(z, workdir, passes, records), None


_ENGINE_FNS = {"torch": _torch_eager, "torch.compile": _torch_compile,
               "onnxruntime": _onnxruntime, "ember": _ember, "ember.static": _ember_static,
               "ember.tuned": _ember_tuned}


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
    fn: Any = None
    try:
        fn, result.size_kb = _ENGINE_FNS[engine](z, workdir, passes)
        diffs = []
        for b, arrays in inputs.items():  # first call per batch: torch.compile compiles here
            out = np.asarray(fn(*arrays))
            diffs.append(float(np.abs(out - reference[b]).max()))
        result.setup_s = time.perf_counter() - t0
        result.max_abs_diff = max(diffs)
        if result.size_kb is None and hasattr(fn, "size_kb"):
            result.size_kb = fn.size_kb()
        for b, arrays in inputs.items():
            on_device = fn.time_calls(arrays, warmup, repeat) if hasattr(fn, "time_calls") \
                else None  # remote: TVM's time_evaluator on the device
            result.latency_ms[str(b)] = on_device or time_calls(lambda a=arrays: fn(*a), warmup,
                                                                repeat)
    except Exception as e:  # noqa: BLE001 - a failing engine is a result ("n/a"), not a crash
        result.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}" if str(e) \
            else type(e).__name__
        if os.environ.get("EMBER_DEBUG"):
            traceback.print_exc()
    finally:  # an RPC server serves one session at a time: end ours
        for handle in (fn, getattr(fn, "remote", None)):
            if isinstance(handle, _RemoteEngine):
                handle.close()
    result.rss_delta_mb = _rss_mb() - rss0
    return result


def run(models: Sequence[str] | None = None, engines: Sequence[str] = ENGINES,
        batches: Sequence[int] = (1, 64), warmup: int = 20, repeat: int = 200, threads: int = 2,
        passes: str = DEFAULT_PASSES, log: Callable[[str], None] = lambda s: None,
        records: str | os.PathLike | None = None, remote: str | None = None) -> dict:
    """Benchmark `models` (default: the whole zoo); returns the JSON-ready report.

    `records`: root of the tuning records for ember.tuned (DIR/NAME.tune); `remote`: time the
    ember engines on this TVM RPC server ("host:port") instead of in this process."""
    set_threads(threads)
    OPTIONS.update(records=records, remote=remote)
    if remote:
        from .backends.tvm.remote import parse_address

        parse_address(remote)
    import platform

    import ember.zoo

    unknown = [e for e in engines if e not in _ENGINE_FNS]
    if unknown:
        from .errors import EmberError

        raise EmberError(f"unknown engine(s) {unknown}; choose from "
                         f"{', '.join(ENGINES + EXTRA_ENGINES)}")
    models = list(models or ember.zoo.names())
    rows = []
    for name in models:
        rows.extend(bench_model(name, engines, batches, warmup, repeat, passes, log))
    return {"config": {"threads": threads, "batches": list(batches), "warmup": warmup,
                       "repeat": repeat, "passes": passes, "machine": platform.machine(),
                       "cpu": _cpu_name(), "engines": list(engines), "records": records and
                       str(records), "remote": remote, "load": _loadavg()},
            "results": [asdict(r) for r in rows]}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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
    for engine, row in geomeans(report).items():
        t.add_row("[bold]geomean[/]", engine, *[c for b in batches for c in
                                             ("", "", row.get(b, "-"))], "", "", "", "")
    return t


def geomeans(report: dict) -> dict[str, dict[str, str]]:
    """Per engine and batch: the geometric mean over models of eager median / engine median
    (models where either failed are left out) and, in brackets, the same against ORT."""
    batches = [str(b) for b in report["config"]["batches"]]
    ok = [r for r in report["results"] if not r["error"]]
    by = {(r["model"], r["engine"]): r for r in ok}
    out: dict[str, dict[str, str]] = {}
    for engine in dict.fromkeys(r["engine"] for r in ok):
        if engine == "torch":
            continue
        row = {}
        for b in batches:
            cells = []
            for base in ("torch", "onnxruntime"):
                ratios = [by[(m, base)]["latency_ms"][b]["median"] /
                          by[(m, engine)]["latency_ms"][b]["median"]
                          for (m, e) in by if e == engine and (m, base) in by
                          and b in by[(m, base)]["latency_ms"] and b in by[(m, e)]["latency_ms"]]
                cells.append(f"{float(np.exp(np.mean(np.log(ratios)))):.2f}x" if ratios else "-")
            row[b] = cells[0] + (f" ({cells[1]} ORT)" if engine != "onnxruntime" and
                                 cells[1] != "-" else "")
        if any(v != "-" for v in row.values()):  # no eager run (e.g. --remote): no row
            out[engine] = row
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)
