"""Progressive distillation (Salimans & Ho), data-free, through the IR's torch mode.

Each round halves the step count: the student (initialized from the teacher, i.e. the previous
round's student) learns to make ONE Euler step from t_{2j} to t_{2j+2} land where TWO teacher
steps land. The states x_{t_{2j}} it trains on are the teacher's own trajectories from fresh
noise, so no data set is needed. N -> N/2 -> ... -> K; N must be K times a power of two.

Parametrization: the student is the same velocity net in the same Euler sampler, so the loss is
taken in velocity space, |v_student(x, t_{2j}) - (x_target - x) / (t_{2j+2} - t_{2j})|^2 (the
x-space loss divided by the step's squared length: every step weighs alike). Each round runs
Adam with warmup + cosine decay and hands the EMA of its weights to the next round (_train.py);
every batch mixes `chunks` steps j. The last round, the hardest, can get more iterations
(`final_iters`).

Determinism: every random draw comes from a generator seeded by (seed, round), and torch runs
single-threaded order-stable CPU ops, so a run and a resumed run give the same weights.
Checkpoints: after each round the student weights (safetensors) and progress.json are written to
`checkpoint_dir`; a later run with the same options and teacher resumes after the last finished
round (progress.json holds a fingerprint of both; a mismatch starts over).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ._common import LoopModule, check_one_call_rows, require_linear, rows_tensor
from ._train import TrainConfig, Trainer, fingerprint, progress, summary
from .recognize import SamplerLoop
from .sampler import T0, T1, solver_table

__all__ = ["TrainConfig", "progressive_distill"]


def _trajectory_states(teacher: LoopModule, table: np.ndarray, noise: torch.Tensor,
                       every: int) -> list[torch.Tensor]:
    """Teacher states at step indices 0, every, 2*every, ... (before those steps)."""
    states, x = [], noise
    with torch.no_grad():
        for i in range(table.shape[0]):
            if i % every == 0:
                states.append(x)
            x = teacher(x, rows_tensor(table[i:i + 1]))
    return states


def _save(ckpt: Path, round_: int, student: LoopModule, history: list[dict], key: str) -> None:
    from safetensors.torch import save_file

    ckpt.mkdir(parents=True, exist_ok=True)
    save_file(student.state(), str(ckpt / f"round{round_}.safetensors"))
    (ckpt / "progress.json").write_text(json.dumps({"rounds_done": round_ + 1, "key": key,
                                                    "history": history}, indent=1))


def _resume(ckpt: Path | None, student: LoopModule, key: str) -> tuple[int, list[dict]]:
    if ckpt is None or not (ckpt / "progress.json").exists():
        return 0, []
    from safetensors.torch import load_file

    info = json.loads((ckpt / "progress.json").read_text())
    if info.get("key") != key:  # other options or another teacher: start over
        return 0, []
    done = int(info["rounds_done"])
    student.load_state(load_file(str(ckpt / f"round{done - 1}.safetensors")))
    return done, list(info["history"])


def _train_round(student: LoopModule, teacher: LoopModule, table: np.ndarray,
                 student_table: np.ndarray, states: list[torch.Tensor], cfg: TrainConfig,
                 iters: int, rng: np.random.Generator) -> list[float]:
    trainer = Trainer(student, cfg, iters)
    chunks = max(1, min(cfg.chunks, len(student_table)))
    per = max(cfg.batch // chunks, 1)
    losses: list[float] = []
    with progress(cfg) as bar:
        task = bar.add_task(f"progressive {len(table)}->{len(student_table)}", total=iters,
                            loss=float("nan"))
        for _ in range(iters):
            loss = 0.0
            for j in rng.choice(len(student_table), size=chunks, replace=False):
                idx = torch.from_numpy(rng.integers(cfg.pool, size=per))
                x = states[j][idx]
                span = float(student_table[j, T1] - student_table[j, T0])
                with torch.no_grad():
                    target = teacher(x, rows_tensor(table[2 * j:2 * j + 2]))
                pred = student(x, rows_tensor(student_table[j:j + 1]))
                loss = loss + torch.mean((pred - target) ** 2) / (span * span * chunks)
            losses.append(trainer.step(loss))
            bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
    trainer.finish()
    return losses


def progressive_distill(loop: SamplerLoop, k: int, cfg: TrainConfig,
                        noise_shape: tuple[int, ...]) -> tuple[np.ndarray, list[dict]]:
    """Train the loop's weights in place (write-back) for a k-step Euler schedule.

    Returns the k-step table and the per-round history (loss, steps).
    """
    require_linear(loop, "progressive distillation")
    check_one_call_rows(loop.table, "progressive distillation")
    n = loop.steps
    rounds = round(np.log2(n / k)) if k <= n else -1
    if rounds < 0 or k * 2 ** rounds != n:
        raise InputError(f"progressive distillation halves the step count: {n} steps cannot "
                         f"reach k={k} (n must be k * 2^r); use method=search or reflow")
    torch.manual_seed(cfg.seed)
    student = LoopModule(loop)
    key = fingerprint(cfg, f"progressive k={k}", list(student.gm.params))
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    start, history = _resume(ckpt, student, key)
    times = loop.times
    for _ in range(start):
        times = times[::2]
    table = loop.table if start == 0 else solver_table(times, "euler")
    for r in range(start, rounds):
        rng = np.random.default_rng([cfg.seed, r])
        torch.manual_seed(cfg.seed * 1000 + r)
        teacher = LoopModule(loop)  # a frozen copy of the current student
        teacher.load_state(student.state())
        teacher.requires_grad_(False)
        student_times = times[::2]
        student_table = solver_table(student_times, "euler")
        noise = torch.from_numpy(rng.standard_normal((cfg.pool, *noise_shape)).astype(np.float32))
        states = _trajectory_states(teacher, table, noise, every=2)
        last = r == rounds - 1 and cfg.final_iters is not None
        iters = int(cfg.final_iters) if last else cfg.iters
        losses = _train_round(student, teacher, table, student_table, states, cfg, iters, rng)
        history.append({"round": r, "steps": len(student_table), "iters": iters,
                        **summary(losses)})
        times, table = student_times, student_table
        if ckpt is not None:
            _save(ckpt, r, student, history, key)
    student.write_back()
    return solver_table(times, "euler"), history
