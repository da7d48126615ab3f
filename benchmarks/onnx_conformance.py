"""ONNX's own node conformance tests, run four ways side by side.

    python benchmarks/onnx_conformance.py [--columns interp,tvm,ort,tvm_onnx] [--jobs 2]
                                          [--only REGEX] [--out .cache/onnx-conformance.json]

The onnx wheel ships the node-test definitions (`collect_testcases()`, ~1,880 cases) but not
their data; `generate()` writes them into `.cache/onnx-node-tests/<case>/` (model.onnx plus
data_<k>.npz). Columns: `interp` ember import + reference interpreter, `tvm` ember import +
`ember.backends.tvm.lower/build` + relax VM, `ort` ONNX Runtime, `tvm_onnx` TVM's own
`relax.frontend.onnx.from_onnx`. Each case runs in a worker process (a batch per process,
restarted after a hang or a hard crash, which then counts as a crash of that case).
Classes: pass (rtol 1e-3, atol 1e-7, the onnx runner's tolerances, and equal shapes/dtypes),
wrong, unsupported (an ember UnsupportedOpError or other EmberError; for the other columns, a
refusal at import), crash (any other exception, a timeout or a dead worker).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("interp", "tvm", "ort", "tvm_onnx")
RTOL, ATOL = 1e-3, 1e-7


try:  # imported as benchmarks.onnx_conformance (tests) or run as a script (workers)
    from benchmarks.onnx_node_cases import (
        CACHE,
        claimed,
        generate,
        load_case,
        model_ops,
        primary_op,
        static_bindings,
    )
except ModuleNotFoundError:
    from onnx_node_cases import (  # type: ignore
        CACHE,
        claimed,
        generate,
        load_case,
        model_ops,
        primary_op,
        static_bindings,
    )

__all__ = ["CACHE", "claimed", "generate", "load_case", "model_ops", "primary_op", "run_all",
           "run_case", "static_bindings", "summarize"]


# ---- one case, one column ---------------------------------------------------------------------
def compare(got: list, want: list, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """None when outputs match (onnx runner tolerances), else what differs."""
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return f"output {i}: shape {g.shape}, expected {w.shape}"
        if g.dtype != w.dtype:
            return f"output {i}: dtype {g.dtype}, expected {w.dtype}"
        if w.dtype.kind in "fc":
            ok = np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        elif w.dtype.name in _ML_FLOATS:  # bf16/float8/float4 (numpy kind 'V'): NaN == NaN
            ok = np.allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol,
                             equal_nan=True)
        else:
            ok = np.array_equal(g, w)
        if not ok:
            err = np.nanmax(np.abs(g.astype(np.float64) - w.astype(np.float64))) if g.size else 0
            return f"output {i}: max abs error {err:.3g}"
    return None


_SUB_BYTE = ("int4", "uint4", "int2", "uint2")
_ML_FLOATS = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
              "float8_e8m0fnu", "float4_e2m1fn")


def ember_storage(a):
    """ember holds sub-byte ints widened (i4 in int8, u2 in uint8: DType.to_numpy); ONNX's
    data uses ml_dtypes' int4/uint2/...; same values, ember's container."""
    if isinstance(a, np.ndarray) and a.dtype.name in _SUB_BYTE:
        from ember.ir import DType

        return a.astype(DType.from_numpy(a.dtype).to_numpy())
    return a


def _ember_graph(model, inputs):
    from ember.frontends.onnx import load

    inputs = [ember_storage(a) for a in inputs]
    bound = static_bindings(model, inputs)
    names = [vi.name for vi in model.graph.input]
    feed = [a for n, a in zip(names, inputs) if n not in bound]
    return load(model, bind=bound), feed, bool(bound)


def run_interp(model, datasets):
    import ember

    results = []
    for ins, outs in datasets:
        graph, feed, _ = _ember_graph(model, ins)
        got = ember.interpret(graph, *feed)
        results.append((list(got) if isinstance(got, tuple) else [got],
                        [ember_storage(o) for o in outs]))
    return results


def run_tvm(model, datasets):
    import tvm
    from tvm import relax

    from ember.backends.tvm import build, lower

    results = []
    for ins, outs in datasets:
        graph, feed, _ = _ember_graph(model, ins)
        vm = relax.VirtualMachine(build(lower(graph), "cpu"), tvm.cpu())
        results.append((_vm_outputs(vm["main"](*_tensors(feed))),
                        [ember_storage(o) for o in outs]))
    return results


def run_ort(model, datasets):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return [(sess.run(None, dict(zip(names, ins))), outs) for ins, outs in datasets]


def run_tvm_onnx(model, datasets):
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(model, keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    ex = tvm.compile(relax.get_pipeline("zero")(mod), target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return [(_vm_outputs(vm["main"](*_tensors(ins))), outs) for ins, outs in datasets]


def _tensors(arrays):
    import tvm

    return [tvm.runtime.tensor(np.array(a, order="C")) for a in arrays]


def _vm_outputs(out) -> list:
    import tvm

    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [x for o in out for x in _vm_outputs(o)] if not hasattr(out, "shape") else [out]


RUNNERS = {"interp": run_interp, "tvm": run_tvm, "ort": run_ort, "tvm_onnx": run_tvm_onnx}


def run_case(name: str, column: str, cache: Path = CACHE, rtol: float = RTOL,
             atol: float = ATOL) -> dict:
    """Classify one case in one column: pass / wrong / unsupported / crash."""
    from ember.errors import EmberError

    t0 = time.perf_counter()
    try:
        model, datasets = load_case(name, cache)
        pairs = RUNNERS[column](model, datasets)
        bad = [d for d in (compare(g, w, rtol, atol) for g, w in pairs) if d]
        status, detail = ("wrong", bad[0]) if bad else ("pass", "")
    except EmberError as e:
        status, detail = "unsupported", f"{type(e).__name__}: {str(e)[:300]}"
    except Exception as e:  # noqa: BLE001 - classified, that is the point
        if column in ("ort", "tvm_onnx") and _is_import_refusal(column, e):
            status = "unsupported"
        else:
            status = "crash"
        detail = f"{type(e).__name__}: {str(e)[:300]}"
        if column in ("interp", "tvm") and status == "crash":
            detail += " | " + traceback.format_exc(limit=-3).replace("\n", " ")[-600:]
    return {"case": name, "column": column, "status": status, "detail": detail,
            "seconds": round(time.perf_counter() - t0, 3)}


def _is_import_refusal(column: str, e: Exception) -> bool:
    text = f"{type(e).__name__}: {e}"
    if column == "ort":
        return any(s in text for s in ("NOT_IMPLEMENTED", "INVALID_GRAPH",
                                       "Could not find an implementation", "not supported",
                                       "NotImplemented"))
    return isinstance(e, (NotImplementedError, KeyError)) or "not supported" in text.lower() \
        or "not implemented" in text.lower()


# ---- worker processes -----------------------------------------------------------------------
def worker(cases: list[str], columns: list[str], out: Path) -> None:
    """Run cases in this process, one JSON line per result; 'start' lines mark progress."""
    import warnings

    warnings.simplefilter("ignore")
    tolerances = {e["name"]: (e["rtol"], e["atol"]) for e in generate()}
    with open(out, "a") as f:
        for name in cases:
            for col in columns:
                f.write(json.dumps({"start": name, "column": col}) + "\n")
                f.flush()
                tol = tolerances.get(name, (RTOL, ATOL))
                f.write(json.dumps(run_case(name, col, CACHE, *tol)) + "\n")
                f.flush()


def run_all(names: list[str], columns: list[str], jobs: int = 2, timeout: float = 120.0,
            batch: int = 40, log=print) -> list[dict]:
    """Run every (case, column) in worker subprocesses; a hang or a dead worker is a crash."""
    todo = [names[i:i + batch] for i in range(0, len(names), batch)]
    results: list[dict] = []
    running: list[tuple[subprocess.Popen, Path, list[str], float, int]] = []
    tmp = CACHE.parent / "conformance-work"
    tmp.mkdir(parents=True, exist_ok=True)
    serial = 0
    while todo or running:
        while todo and len(running) < jobs:
            chunk = todo.pop(0)
            serial += 1
            out = tmp / f"w{os.getpid()}-{serial}.jsonl"
            out.write_text("")
            cmd = [sys.executable, __file__, "--worker", str(out), "--columns", ",".join(columns),
                   "--cases", ",".join(chunk)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    cwd=ROOT)
            running.append((proc, out, chunk, time.time(), 0))
        time.sleep(0.5)
        still = []
        for proc, out, chunk, last, size in running:
            now_size = out.stat().st_size
            if now_size != size:
                last = time.time()
            done = proc.poll() is not None
            hung = not done and time.time() - last > timeout
            if hung:
                proc.kill()
                proc.wait()
            if done or hung:
                got, pending = _collect(out, chunk, columns, hung or proc.returncode != 0)
                results.extend(got)
                log(f"  {len(results)} results ({len(got)} from a worker)")
                if pending:
                    todo.insert(0, pending)
                out.unlink(missing_ok=True)
            else:
                still.append((proc, out, chunk, last, now_size))
        running = still
    return results


def _collect(out: Path, chunk: list[str], columns: list[str], died: bool):
    """Results of a finished worker, a crash for the case it died in, and the cases left."""
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    results = [x for x in lines if "status" in x]
    started = [x for x in lines if "start" in x]
    done = {(r["case"], r["column"]) for r in results}
    if died and started and (started[-1]["start"], started[-1]["column"]) not in done:
        s = started[-1]
        results.append({"case": s["start"], "column": s["column"], "status": "crash",
                        "detail": "worker hung (timeout) or died", "seconds": None})
        done.add((s["start"], s["column"]))
    pending = [c for c in chunk if any((c, col) not in done for col in columns)]
    if pending and not died:
        pending = []
    return results, pending


# ---- the table --------------------------------------------------------------------------------
def summarize(index: list[dict], results: list[dict], columns: list[str]) -> dict:
    by_case = {e["name"]: e for e in index}
    per_op: dict[str, dict] = defaultdict(lambda: {c: Counter() for c in columns})
    totals = {scope: {c: Counter() for c in columns} for scope in ("all", "claimed")}
    for r in results:
        e = by_case[r["case"]]
        per_op[e["op"]][r["column"]][r["status"]] += 1
        totals["all"][r["column"]][r["status"]] += 1
        if claimed(e):
            totals["claimed"][r["column"]][r["status"]] += 1
    def rate(c: Counter) -> float:
        n = sum(c.values())
        return round(100.0 * c["pass"] / n, 1) if n else 0.0
    return {
        "cases": len({r["case"] for r in results}),
        "claimed_cases": sum(1 for e in index if claimed(e) and e["name"] in
                             {r["case"] for r in results}),
        "totals": {s: {c: {**dict(v), "pass_rate": rate(v)} for c, v in t.items()}
                   for s, t in totals.items()},
        "per_op": {op: {c: dict(v) for c, v in cols.items()} for op, cols in sorted(per_op.items())},
    }


def print_table(summary: dict, columns: list[str]) -> None:
    print(f"{summary['cases']} cases, {summary['claimed_cases']} with every op claimed by ember")
    for scope in ("all", "claimed"):
        print(f"\n[{scope}]  " + "  ".join(f"{c:>28}" for c in columns))
        for status in ("pass", "wrong", "unsupported", "crash"):
            row = [summary["totals"][scope][c].get(status, 0) for c in columns]
            print(f"{status:>12}  " + "  ".join(f"{v:>28}" for v in row))
        print(f"{'pass %':>12}  " + "  ".join(f"{summary['totals'][scope][c]['pass_rate']:>28}"
                                             for c in columns))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--columns", default=",".join(COLUMNS))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", default=None, help="regex on case names")
    p.add_argument("--claimed", action="store_true", help="only cases ember claims")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--every", type=int, default=1, help="run every N-th case (a sample)")
    p.add_argument("--out", default=str(CACHE.parent / "onnx-conformance.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cases", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    columns = args.columns.split(",")
    if args.worker:
        sys.path.insert(0, str(ROOT))
        worker(args.cases.split(","), columns, Path(args.worker))
        return 0
    index = generate()
    names = [e["name"] for e in index if (not args.only or re.search(args.only, e["name"]))
             and (not args.claimed or claimed(e))][::args.every]
    t0 = time.time()
    results = run_all(names, columns, args.jobs, args.timeout)
    summary = summarize(index, results, columns)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["results"] = sorted(results, key=lambda r: (r["case"], r["column"]))
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print_table(summary, columns)
    print(f"\nwrote {args.out} ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
