"""The MetaSchedule search behind `tune_module`: which kernels, the search itself (with a
progress bar), and the final ember-vs-tuned comparison per kernel."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tvm

from .tune_measure import COMPARE_ROUNDS, measure_kernels

MIN_TRIALS_PER_TASK = 16


def select_tasks(kernels: Sequence[Any], config: Any) -> list[Any]:
    """The kernels worth the budget: by share of the model's time under ember's schedules, the
    top ones covering `config.coverage` of it, at most one per MIN_TRIALS_PER_TASK trials."""
    per_task = config.trials_per_task or MIN_TRIALS_PER_TASK
    cap = max(1, config.trials // max(1, min(per_task, MIN_TRIALS_PER_TASK)))

    def cost(k: Any) -> float:  # an unmeasurable ember schedule is worth a look first
        return math.inf if k.ember_s is None else k.ember_s * k.calls

    ranked = sorted(kernels, key=cost, reverse=True)
    total = sum(cost(k) for k in ranked if k.ember_s is not None) or 1.0
    chosen, covered = [], 0.0
    for k in ranked:
        if len(chosen) >= cap or (chosen and covered >= config.coverage * total):
            break
        chosen.append(k)
        covered += 0.0 if k.ember_s is None else cost(k)
    return chosen


def run_search(chosen: Sequence[Any], tgt: Any, work_dir: Path, runner: Any, builder: Any,
               config: Any, say: Callable[[str], None]) -> int:
    """MetaSchedule's evolutionary search over `chosen`; returns the trials measured."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule import TuneContext, tune_tasks
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
    from tvm.s_tir.meta_schedule.measure_callback import MeasureCallback, PyMeasureCallback
    from tvm.s_tir.meta_schedule.search_strategy import EvolutionarySearch
    from tvm.s_tir.meta_schedule.utils import fork_seed

    if not chosen:
        return 0
    work_dir.mkdir(parents=True, exist_ok=True)
    per_task = config.trials_per_task or max(MIN_TRIALS_PER_TASK,
                                             math.ceil(config.trials / len(chosen)))
    total = min(config.trials, per_task * len(chosen))
    names = [k.name for k in chosen]
    loggers = get_loggers_from_work_dir(str(work_dir), names)
    quiet_meta_schedule()
    contexts = []
    for k, logger, seed in zip(chosen, loggers, fork_seed(config.seed, n=len(chosen))):
        strategy = EvolutionarySearch(population_size=256, init_min_unmeasured=32,
                                      genetic_num_iters=2)
        contexts.append(TuneContext(mod=k.mod, target=tgt, space_generator="post-order-apply",
                                    search_strategy=strategy, task_name=k.name, logger=logger,
                                    rand_state=seed, num_threads="physical").clone())
    bar = _Bar(total, names, config.progress)

    @derived_object
    class _Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
                  runner_results) -> None:
            bar.advance(int(task_id), len(runner_results))

    say(f"tuning {len(chosen)} kernel(s): {total} trials, at most {per_task} per kernel")
    callbacks = [*MeasureCallback.create("default"), _Progress()]
    with bar:
        tune_tasks(tasks=contexts, task_weights=[float(k.calls) for k in chosen],
                   work_dir=str(work_dir), max_trials_global=total, max_trials_per_task=per_task,
                   num_trials_per_iter=min(per_task, 32),
                   builder=builder, runner=runner,
                   database="json", cost_model="xgb", measure_callbacks=callbacks,
                   task_scheduler="gradient")
    return bar.done


def pick_winners(chosen: Sequence[Any], tgt: Any, work_dir: Path, runner: Any, builder: Any,
                 config: Any, scheduled_by_key: dict[str, tvm.IRModule]
                 ) -> dict[str, dict[str, Any]]:
    """Per tuned kernel: its best record, both times re-measured back to back, the choice."""
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    if not chosen:
        return {}
    db = JSONDatabase(work_dir=str(work_dir), allow_missing=True)
    out: dict[str, dict[str, Any]] = {}
    pairs, keys = [], []
    for k in chosen:
        if not db.has_workload(k.mod):
            continue
        workload = db.commit_workload(k.mod)
        valid = [r for r in db.get_top_k(workload, 1 << 20) if r.run_secs]
        if not valid:
            continue
        try:
            sch = db.query_schedule(k.mod, tgt, workload_name="main")
        except Exception:  # noqa: BLE001, S112 - a record that does not replay is no winner
            continue
        if sch is None:
            continue
        out[k.key] = {"record": valid[0], "trials": len(valid)}
        pairs += [scheduled_by_key[k.key], sch.mod]
        keys.append(k.key)
    times = measure_kernels(pairs, tgt, runner, builder, rounds=COMPARE_ROUNDS)
    for i, key in enumerate(keys):
        ember_s, tuned_s = times[2 * i], times[2 * i + 1]
        win = out[key]
        win.update(ember_s=ember_s, tuned_s=tuned_s)
        better = tuned_s is not None and (ember_s is None or tuned_s <= config.margin * ember_s)
        win["choice"] = "tuned" if better else "ember"
    return out


def quiet_meta_schedule() -> None:
    """MetaSchedule prints a task table per round on its console logger; keep it in its log
    files (search/logs) and show ember's progress bar instead."""
    for name in list(logging.root.manager.loggerDict):
        if not name.startswith("tvm.s_tir.meta_schedule"):
            continue
        for h in list(logging.getLogger(name).handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.WARNING)


class _Bar:
    """A rich progress bar over trials (stderr), or nothing when progress is off."""

    def __init__(self, total: int, names: Sequence[str], enabled: bool):
        self.total, self.names, self.done = total, list(names), 0
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("tune {task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TextColumn("trials"),
                                      TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=Console(stderr=True))

    def __enter__(self) -> _Bar:  # noqa: PYI034
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.names[0][:40], total=self.total)
        return self

    def advance(self, task_id: int, n: int) -> None:
        self.done += n
        if self._progress is not None:
            name = self.names[task_id] if 0 <= task_id < len(self.names) else "?"
            self._progress.update(self._task, advance=n, description=name[:40])

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, description="done")
            self._progress.stop()
