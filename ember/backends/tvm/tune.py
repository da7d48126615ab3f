"""Auto-tuning with MetaSchedule, on top of ember's own CPU schedules, never instead of them.

    records = Records("model.tune")                       # a directory beside the artifact
    tune_module(relax_mod, spec, records, TuneConfig(trials=200))   # measure, tune, decide
    ex = build(relax_mod, spec, records=records.path)     # applies the winning records

What is tuned: the fused TIR kernels of the module (after legalize, weight prepacking and
fusion, i.e. exactly the PrimFuncs ember's schedule rules would get), static shapes only
(MetaSchedule measures concrete buffers; kernels with a symbolic batch are left to ember's
rules). Each kernel is first measured with ember's own schedule; tuning goes to the kernels
that take most of the model's time (the top of that profile, about 90% of it), within the
trial budget. After the search the best tuned schedule and ember's schedule are measured again
back to back with the same runner, and the tuned one is kept only when it is faster by a margin
(`TuneConfig.margin`). So a record can never make a kernel slower than ember's rule, as
measured.

Records layout (`model.ember` -> `model.tune/` by default):

    database_workload.json, database_tuning_record.json   the winners: a MetaSchedule JSON
        database holding only tuned schedules that beat ember's; `build` applies these
    summary.json    one entry per kernel: ember time, tuned time, trials, the choice
    search/         MetaSchedule's work dir: every measured trial and the logs; a later
                    `ember tune` continues the search from it

Records are an optimization, never a requirement: a kernel without a record gets ember's rule,
and an artifact built without the directory is correct (and as fast as untuned ember).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi
from tvm import tirx

from ...errors import BuildError, InputError
from .irmod import with_functions
from .schedules import threads
from .tune_measure import (
    lazy_tensor_intrin,
    make_builder,
    make_runner,
    measure_kernels,
    task_module,
)

log = logging.getLogger("ember.backends.tvm.tune")

RECORDS_SUFFIX = ".tune"
WORKLOADS = "database_workload.json"
TUNING_RECORDS = "database_tuning_record.json"
SUMMARY = "summary.json"
SEARCH = "search"


@dataclass
class TuneConfig:
    """How much to tune and where to measure.

    `trials`: total measured candidates for the model; `trials_per_task`: cap per kernel
    (default: the total spread over the selected kernels, at least 16 each).
    `force=False` skips kernels already decided in the records (a compile that finds records
    reuses them); `ember tune` sets it to continue the search. `rpc_tracker` ("host:port") and
    `rpc_key` measure on the devices registered with a TVM RPC tracker instead of locally.
    `margin`: a tuned kernel must take at most this fraction of ember's time to be kept.
    """

    trials: int = 64
    trials_per_task: int | None = None
    force: bool = False
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    margin: float = 0.97
    coverage: float = 0.9
    seed: int = 0
    progress: bool = True


def default_records_dir(artifact: str | os.PathLike) -> Path:
    """`model.ember` -> `model.tune` (beside the artifact)."""
    return Path(artifact).with_suffix(RECORDS_SUFFIX)


class Records:
    """A tuning-records directory: the winners database, the summary and the search dir."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"tuning records {self.path} is a file, not a directory; pass a "
                             "directory (created if missing), e.g. model.tune")

    @property
    def exists(self) -> bool:
        return (self.path / WORKLOADS).is_file() or (self.path / SUMMARY).is_file()

    def summary(self) -> dict[str, Any]:
        path = self.path / SUMMARY
        if not path.is_file():
            return {"kernels": {}}
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc.get("kernels"), dict):
                raise ValueError("no 'kernels' table")  # noqa: TRY004 - reported as BuildError
            return doc
        except (ValueError, AttributeError) as e:
            raise BuildError(f"tuning records {path} are unreadable ({e}); delete {self.path} "
                             "and tune again with `ember tune`") from None

    def database(self, create: bool = False):
        """The winners as a MetaSchedule JSONDatabase (None when there are none yet)."""
        from tvm.s_tir.meta_schedule.database import JSONDatabase

        if not create and not (self.path / WORKLOADS).is_file():
            return None
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            return JSONDatabase(str(self.path / WORKLOADS), str(self.path / TUNING_RECORDS),
                                allow_missing=True)
        except Exception as e:  # noqa: BLE001 (TVM raises its own error types)
            raise BuildError(f"tuning records in {self.path} are not a MetaSchedule JSON "
                             f"database ({_last_line(e)}); delete the directory and tune again "
                             "with `ember tune`") from None


# ---- applying records (build) ----------------------------------------------------------------
def kernels(mod: tvm.IRModule) -> list[tuple[tvm.ir.GlobalVar, tirx.PrimFunc]]:
    """The module's PrimFuncs that no schedule has touched yet."""
    out = []
    for gvar, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and not (
                func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False))):
            out.append((gvar, func))
    return out


def is_static(func: tirx.PrimFunc) -> bool:
    """True when every buffer of `func` has a constant shape (MetaSchedule can measure it)."""
    for param in func.params:
        shape = getattr(param, "shape", None)
        if shape is None:  # a scalar parameter (e.g. a symbolic dim passed in): not static
            return False
        if not all(isinstance(d, tirx.IntImm) for d in shape):
            return False
    return True


def apply_records(mod: tvm.IRModule, target: tvm.target.Target,
                  records: str | os.PathLike | Records) -> tuple[tvm.IRModule, dict[str, Any]]:
    """Replace each kernel that has a winning record by its tuned schedule.

    Returns (module, info) with info = {"records": dir, "applied": n, "kernels": total}.
    Kernels without a record are left for ember's rules.
    """
    records = records if isinstance(records, Records) else Records(records)
    records.summary()  # unreadable records fail loudly here, not silently at the next tune
    todo = kernels(mod)
    info: dict[str, Any] = {"records": str(records.path), "applied": 0, "kernels": len(todo),
                            "applied_kernels": []}
    db = records.database()
    if db is None or not todo:
        return mod, info
    updates = {}
    for gvar, func in todo:
        tmod = task_module(func)
        if not db.has_workload(tmod):
            continue
        try:
            sch = db.query_schedule(tmod, target, workload_name="main")
        except Exception as e:  # noqa: BLE001 - a record that no longer replays: ember's rule
            log.warning("tuning record for %s does not apply (%s); using ember's schedule",
                        gvar.name_hint, _last_line(e))
            continue
        if sch is None:
            continue
        # Tuning timed the kernel alone, with the thread pool hot; inside a model a small
        # kernel's pool launch costs more than its work, so it runs serially like ember's own.
        scheduled = threads.choose_threading(tmod["main"], sch, threads.PARALLEL_MIN_WORK)
        updates[gvar] = restore_attrs(scheduled, func)
    mod = with_functions(mod, updates)
    info["applied"] = len(updates)
    info["applied_kernels"] = sorted(g.name_hint for g in updates)
    return mod, info


def restore_attrs(scheduled: tirx.PrimFunc, original: tirx.PrimFunc) -> tirx.PrimFunc:
    """The tuned function with the original's symbol name, marked as scheduled."""
    symbol = original.attrs.get("global_symbol") if original.attrs is not None else None
    func = scheduled.without_attr("global_symbol") if symbol is None else \
        scheduled.with_attr("global_symbol", symbol)
    return func.with_attr("tirx.is_scheduled", True)


# ---- tuning ----------------------------------------------------------------------------------
@dataclass
class Kernel:
    """One distinct tuning task: a fused kernel (maybe called from several places)."""

    key: str
    name: str
    func: tirx.PrimFunc
    mod: tvm.IRModule  # normalized task module (the database workload)
    calls: int = 1
    ember_s: float | None = None
    ember_rule: str | None = None


def fused_kernels(relax_mod: tvm.IRModule, spec: Any) -> tuple[list[Kernel], int, Any]:
    """(static kernels, number of symbolic-shape kernels skipped, tvm target)."""
    import importlib

    build = importlib.import_module("ember.backends.tvm.build")
    fused, tgt = build.fused_module(relax_mod, spec)
    found: dict[str, Kernel] = {}
    dynamic = 0
    for gvar, func in kernels(fused):
        if not is_static(func):
            dynamic += 1
            continue
        tmod = task_module(func)
        key = kernel_key(tmod)
        if key in found:
            found[key].calls += 1
        else:
            found[key] = Kernel(key, gvar.name_hint, func, tmod)
    return list(found.values()), dynamic, tgt


def kernel_key(tmod: tvm.IRModule) -> str:
    """The records' name for a workload: its structural hash, as 16 hex digits."""
    return f"{tvm_ffi.structural_hash(tmod) & 0xFFFFFFFFFFFFFFFF:016x}"


def tune_module(relax_mod: tvm.IRModule, spec: Any, records: str | os.PathLike | Records,
                config: TuneConfig | None = None,
                log_fn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Tune the kernels of `relax_mod` (a lowered Relax module) and write the records.

    Returns a report: {"tuned": [...], "kept_ember": [...], "skipped_dynamic": n, "trials": n,
    "seconds": s, "reused": bool}.
    """
    from .schedules import schedule_func
    from .tune_search import pick_winners, run_search, select_tasks

    config = config or TuneConfig()
    if config.trials < 1:
        raise InputError(f"tuning needs at least one trial (got trials={config.trials})")
    records = records if isinstance(records, Records) else Records(records)
    say = log_fn or (lambda s: None)
    t0 = time.perf_counter()
    if not spec.is_cpu:
        raise InputError(f"tuning supports CPU (llvm) targets; {spec.name} is not one")
    found, dynamic, tgt = fused_kernels(relax_mod, spec)
    summary = records.summary()
    decided = summary["kernels"]
    report: dict[str, Any] = {"records": str(records.path), "kernels": len(found),
                              "skipped_dynamic": dynamic, "tuned": [], "kept_ember": [],
                              "trials": 0, "reused": False}
    if dynamic:
        say(f"{dynamic} kernel(s) have symbolic shapes and are not tuned (tuning measures "
            "static shapes: compile with a fixed batch, e.g. `ember tune --batch 1`)")
    todo = found if config.force else [k for k in found if k.key not in decided]
    if not todo:
        report["reused"] = bool(found)
        report["seconds"] = time.perf_counter() - t0
        return report
    lazy_tensor_intrin()
    runner, builder = make_runner(config, tgt), make_builder()
    say(f"measuring ember's schedules of {len(todo)} kernel(s)")
    scheduled = []
    for k in todo:
        func, k.ember_rule = schedule_func(k.func, tgt)
        scheduled.append(task_module(func))
    for k, secs in zip(todo, measure_kernels(scheduled, tgt, runner, builder)):
        k.ember_s = secs
    chosen = select_tasks(todo, config)
    records.path.mkdir(parents=True, exist_ok=True)
    search_dir = records.path / SEARCH
    trials = run_search(chosen, tgt, search_dir, runner, builder, config, say)
    report["trials"] = trials
    say("comparing tuned schedules with ember's")
    winners = pick_winners(chosen, tgt, search_dir, runner, builder, config, scheduled_by_key={
        k.key: m for k, m in zip(todo, scheduled)})
    db = _fresh_winners(records, {k.key for k in todo})
    for k in todo:
        entry = {"name": k.name, "calls": k.calls, "ember_rule": k.ember_rule,
                 "ember_us": _us(k.ember_s), "tuned_us": None, "trials": 0, "choice": "ember"}
        win = winners.get(k.key)
        if win is not None:
            entry.update(tuned_us=_us(win["tuned_s"]), ember_us=_us(win["ember_s"]),
                         trials=win["trials"], choice=win["choice"])
            if win["choice"] == "tuned":
                _commit(db, k.mod, win["record"], tgt)
                report["tuned"].append(k.name)
            else:
                report["kept_ember"].append(k.name)
        elif k in chosen:
            entry["choice"] = "ember (no valid tuned schedule)"
            report["kept_ember"].append(k.name)
        else:
            entry["choice"] = "ember (not tuned: small share of the time)"
        decided[k.key] = entry
    summary.update(target=str(tgt), updated=time.strftime("%Y-%m-%d %H:%M:%S"))
    (records.path / SUMMARY).write_text(json.dumps(summary, indent=1))
    report["seconds"] = time.perf_counter() - t0
    return report


def _fresh_winners(records: Records, redecided: set[str]) -> Any:
    """The winners database without the records of `redecided` kernels (the JSON database only
    appends: a kernel re-tuned with ember now winning must lose its old record)."""
    old = records.database()
    keep = [] if old is None else [r for r in old.get_all_tuning_records()
                                   if kernel_key(r.workload.mod) not in redecided]
    for name in (WORKLOADS, TUNING_RECORDS):
        (records.path / name).unlink(missing_ok=True)
    db = records.database(create=True)
    for r in keep:
        _commit(db, r.workload.mod, r, r.target)
    return db


def _commit(db: Any, tmod: tvm.IRModule, record: Any, tgt: Any) -> None:
    from tvm.s_tir.meta_schedule.database import TuningRecord

    workload = db.commit_workload(tmod)
    db.commit_tuning_record(TuningRecord(record.trace, workload, record.run_secs, tgt,
                                         record.args_info))


def clear_search(records: Records) -> None:
    shutil.rmtree(records.path / SEARCH, ignore_errors=True)


def _us(secs: float | None) -> float | None:
    return None if secs is None else round(secs * 1e6, 3)


def _last_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"
