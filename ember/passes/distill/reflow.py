"""Reflow (Rectified Flow / InstaFlow): straighten the teacher's flow, then sample in 1-2 steps.

The teacher (the N-step loop) maps noise z to a sample x1; those (z, x1) pairs are a coupling
whose straight paths x_t = (1 - t) z + t x1 the velocity net is fine-tuned on (target x1 - z).
A straight flow is integrated exactly by one Euler step, so the K-step student is the same loop
with a K-row uniform Euler table. The net is queried through a probe row (v(x, t) itself), so
training runs through the IR's torch mode. t is drawn U-shaped (more mass near 0 and 1, as in
"Improving the Training of Rectified Flows"); the loss is a pseudo-Huber loss (their LPIPS-Huber
without LPIPS, which needs pretrained image weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ._common import LoopModule, require_linear, rows_tensor, run_loop
from .progressive import TrainConfig, _progress
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


def reflow_distill(loop: SamplerLoop, k: int, cfg: TrainConfig, noise_shape: tuple[int, ...],
                   chunks: int = 4) -> tuple[np.ndarray, list[dict]]:
    """Fine-tune the loop's weights (written back) on teacher pairs; returns the k-step table."""
    require_linear(loop, "reflow")
    rng = np.random.default_rng([cfg.seed, 7])
    torch.manual_seed(cfg.seed)
    z = rng.standard_normal((cfg.pool, *noise_shape)).astype(np.float32)
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    pairs_file = ckpt / "reflow_pairs.npz" if ckpt else None
    if pairs_file is not None and pairs_file.exists():
        x1 = np.load(pairs_file)["x1"]
    else:
        x1 = run_loop(loop, z)  # the teacher's coupling
        if pairs_file is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
            np.savez(pairs_file, x1=x1)
    student = LoopModule(loop)
    if ckpt is not None and (ckpt / "reflow.safetensors").exists():
        from safetensors.torch import load_file

        student.load_state(load_file(str(ckpt / "reflow.safetensors")))
        history = json.loads((ckpt / "reflow.json").read_text())["history"]
        student.write_back()
        return solver_table(uniform_times(k), "euler"), history
    zt, x1t = torch.from_numpy(z), torch.from_numpy(x1)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.iters, 1))
    per = max(cfg.batch // chunks, 1)
    losses: list[float] = []
    bar, what, total = _progress(cfg, cfg.iters, f"reflow -> {k} step(s)")
    with bar:
        task = bar.add_task(what, total=total, loss=float("nan"))
        for _ in range(cfg.iters):
            ts = u_shaped_times(rng, chunks)
            loss = 0.0
            for t in ts:  # one time per chunk: a table row is shared by the batch
                idx = torch.from_numpy(rng.integers(cfg.pool, size=per))
                x0, x1b = zt[idx], x1t[idx]
                xt = (1.0 - float(t)) * x0 + float(t) * x1b
                v = student(xt, rows_tensor(probe_row(float(t))))
                loss = loss + pseudo_huber(v, x1b - x0) / chunks
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
    history = [{"iters": cfg.iters, "pairs": cfg.pool,
                "loss_first": float(np.mean(losses[:50])) if losses else None,
                "loss_last": float(np.mean(losses[-50:])) if losses else None}]
    if ckpt is not None:
        from safetensors.torch import save_file

        save_file(student.state(), str(ckpt / "reflow.safetensors"))
        (ckpt / "reflow.json").write_text(json.dumps({"history": history}))
    student.write_back()
    return solver_table(uniform_times(k), "euler"), history
