"""Reflow (Rectified Flow / InstaFlow): straighten the teacher's flow, then sample in 1-2 steps.

Stage 1, reflow: the teacher (the N-step loop) maps noise z to a sample x1; those (z, x1) pairs
are a coupling whose straight paths x_t = (1 - t) z + t x1 the velocity net is fine-tuned on
(target x1 - z). A straight flow is integrated exactly by one Euler step, so the K-step student is
the same loop with a K-row uniform Euler table. The net is queried through a probe row (v(x, t)
itself), so training runs through the IR's torch mode. t is drawn U-shaped (more mass near 0 and
1, as in "Improving the Training of Rectified Flows"); the loss is a pseudo-Huber loss (their
LPIPS-Huber without LPIPS, which needs pretrained image weights).

Stage 2, distillation (InstaFlow; `distill_iters` > 0): the reflowed net, now nearly straight,
is the starting point of a K-step student trained end to end - the whole K-step Euler loop from
z - to land on the teacher's x1 (pseudo-Huber in sample space). For K = 1 that is the t = 0 slice
of the reflow objective trained to convergence.

Both stages use Adam with warmup + cosine decay and hand on the EMA of their weights (_train.py).
Checkpoints (`checkpoint_dir`): the pairs, then each finished stage's weights, keyed by a
fingerprint of the options and the teacher, so a rerun resumes after the last finished stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ._common import LoopModule, require_linear, rows_tensor, run_loop
from ._train import TrainConfig, Trainer, fingerprint, progress, summary
from .recognize import SamplerLoop
from .sampler import probe_row, solver_table, uniform_times


def u_shaped_times(rng: np.random.Generator, n: int) -> np.ndarray:
    """t in (0, 1) with density ~ cosh-like bowl: a mix of uniform and the two ends."""
    u = rng.uniform(size=n)
    ends = rng.beta(0.5, 0.5, size=n)  # arcsine law: U-shaped
    return np.where(rng.uniform(size=n) < 0.5, u, ends).clip(1e-4, 1 - 1e-4)


def pseudo_huber(pred: torch.Tensor, target: torch.Tensor, c: float = 0.03) -> torch.Tensor:
    d2 = torch.sum((pred - target) ** 2, dim=tuple(range(1, pred.dim())))
    return torch.mean(torch.sqrt(d2 + c * c) - c)


def _pairs(loop: SamplerLoop, cfg: TrainConfig, shape: tuple[int, ...], ckpt: Path | None,
           key: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([cfg.seed, 7])
    z = rng.standard_normal((cfg.pool, *shape)).astype(np.float32)
    path = ckpt / "reflow_pairs.npz" if ckpt else None
    if path is not None and path.exists():
        saved = np.load(path)
        if "key" in saved and str(saved["key"]) == key:
            return z, saved["x1"]
    x1 = run_loop(loop, z)  # the teacher's coupling
    if path is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        np.savez(path, x1=x1, key=np.array(key))
    return z, x1


def _load_stage(ckpt: Path | None, stage: str, key: str, student: LoopModule) -> dict | None:
    if ckpt is None or not (ckpt / f"{stage}.json").exists():
        return None
    info = json.loads((ckpt / f"{stage}.json").read_text())
    if info.get("key") != key:
        return None
    from safetensors.torch import load_file

    student.load_state(load_file(str(ckpt / f"{stage}.safetensors")))
    return info["history"]


def _save_stage(ckpt: Path | None, stage: str, key: str, student: LoopModule,
                history: dict) -> None:
    if ckpt is None:
        return
    from safetensors.torch import save_file

    ckpt.mkdir(parents=True, exist_ok=True)
    save_file(student.state(), str(ckpt / f"{stage}.safetensors"))
    (ckpt / f"{stage}.json").write_text(json.dumps({"key": key, "history": history}))


def _reflow(student: LoopModule, zt: torch.Tensor, x1t: torch.Tensor, cfg: TrainConfig,
            rng: np.random.Generator, k: int) -> list[float]:
    trainer = Trainer(student, cfg, cfg.iters)
    chunks = max(cfg.chunks, 1)
    per = max(cfg.batch // chunks, 1)
    losses: list[float] = []
    with progress(cfg) as bar:
        task = bar.add_task(f"reflow -> {k} step(s)", total=cfg.iters, loss=float("nan"))
        for _ in range(cfg.iters):
            loss = 0.0
            for t in u_shaped_times(rng, chunks):  # one time per chunk: a row is shared
                idx = torch.from_numpy(rng.integers(len(zt), size=per))
                x0, x1b = zt[idx], x1t[idx]
                xt = (1.0 - float(t)) * x0 + float(t) * x1b
                v = student(xt, rows_tensor(probe_row(float(t))))
                loss = loss + pseudo_huber(v, x1b - x0) / chunks
            losses.append(trainer.step(loss))
            bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
    trainer.finish()
    return losses


def _distill(student: LoopModule, zt: torch.Tensor, x1t: torch.Tensor, cfg: TrainConfig,
             rng: np.random.Generator, table: np.ndarray) -> list[float]:
    trainer = Trainer(student, cfg, cfg.distill_iters)
    rows = rows_tensor(table)
    losses: list[float] = []
    with progress(cfg) as bar:
        task = bar.add_task(f"distill -> {len(table)} step(s)", total=cfg.distill_iters,
                            loss=float("nan"))
        for _ in range(cfg.distill_iters):
            idx = torch.from_numpy(rng.integers(len(zt), size=cfg.batch))
            loss = pseudo_huber(student(zt[idx], rows), x1t[idx])
            losses.append(trainer.step(loss))
            bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
    trainer.finish()
    return losses


def reflow_distill(loop: SamplerLoop, k: int, cfg: TrainConfig,
                   noise_shape: tuple[int, ...]) -> tuple[np.ndarray, list[dict]]:
    """Fine-tune the loop's weights (written back) on teacher pairs; returns the k-step table."""
    require_linear(loop, "reflow")
    torch.manual_seed(cfg.seed)
    student = LoopModule(loop)
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    teacher_key = fingerprint(TrainConfig(pool=cfg.pool, seed=cfg.seed), "reflow pairs",
                              list(student.gm.params))
    z, x1 = _pairs(loop, cfg, noise_shape, ckpt, teacher_key)
    zt, x1t = torch.from_numpy(z), torch.from_numpy(x1)
    table = solver_table(uniform_times(k), "euler")
    history: list[dict] = []
    key = fingerprint(cfg, f"reflow k={k}", list(student.gm.params))
    done = _load_stage(ckpt, "reflow", key, student)
    if done is None:
        losses = _reflow(student, zt, x1t, cfg, np.random.default_rng([cfg.seed, 8]), k)
        done = {"stage": "reflow", "iters": cfg.iters, "pairs": cfg.pool, **summary(losses)}
        _save_stage(ckpt, "reflow", key, student, done)
    history.append(done)
    if cfg.distill_iters > 0:
        done = _load_stage(ckpt, "distill", key, student)
        if done is None:
            losses = _distill(student, zt, x1t, cfg, np.random.default_rng([cfg.seed, 9]), table)
            done = {"stage": "distill", "iters": cfg.distill_iters, "steps": k, **summary(losses)}
            _save_stage(ckpt, "distill", key, student, done)
        history.append(done)
    student.write_back()
    return table, history
