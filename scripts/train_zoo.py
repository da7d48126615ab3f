"""Train the ember.zoo models on sklearn digits and write their weights.

    python scripts/train_zoo.py               # all models
    python scripts/train_zoo.py digits_cnn    # only some

Deterministic (fixed seeds, one CPU thread), so rerunning reproduces the committed files. Writes
ember/zoo/weights/<name>.safetensors (with the metrics in its metadata) and merges each model's
eval metric into ember/zoo/weights/accuracy.json. After saving, every model is reloaded through
`ember.zoo.load` and re-evaluated, so the recorded number is exactly what loading reproduces.
digits_flow is scored with the digits_mlp classifier, so digits_mlp must be trained first.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ember.zoo
from ember.zoo.base import WEIGHTS_DIR, accuracy, as_numpy_fn, weights_path
from ember.zoo.data import SPLIT_SEED, digits_split

SEED = 0
THREADS = 1
"""Intra-op threads. These models are op-overhead bound: a second thread only adds a barrier per
op (measured 20x slower per step on a loaded 2-core box) and makes results depend on the thread
count. One thread keeps training inside the 2-core budget and bitwise reproducible."""
TARGETS = {
    "digits_mlp": 0.95,
    "digits_cnn": 0.96,
    "digits_vit": 0.93,
    "digits_gru": 0.90,
    "seq_linear_rnn": 0.85,
}


def random_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each [n, 64] image by up to 1 pixel in x and y (zero fill): cheap augmentation."""
    n = images.shape[0]
    padded = F.pad(images.reshape(n, 8, 8), (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(8))[:, :, None].expand(n, 8, 8)
    cols = (dx[:, None] + torch.arange(8))[:, None, :].expand(n, 8, 8)
    out = padded[torch.arange(n)[:, None, None], rows, cols]
    return out.reshape(n, 64)


def noise_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """Off-manifold [2n, 64] pixels for outlier exposure: clipped Gaussian (what a broken
    sampler emits, mapped to [0, 1]) and uniform noise."""
    gauss = (torch.randn(n, 64, generator=generator).clamp(-1, 1) + 1) / 2
    return torch.cat([gauss, torch.rand(n, 64, generator=generator)])


def train_classifier(name: str) -> tuple[torch.nn.Module, dict]:
    mod = importlib.import_module(f"ember.zoo.{name}")
    cfg = mod.TRAIN_CONFIG
    split = digits_split()
    model = mod.build()
    x_train = torch.from_numpy(split.x_train)
    y_train = torch.from_numpy(split.y_train)
    n = x_train.shape[0]
    steps_per_epoch = (n + cfg["batch_size"] - 1) // cfg["batch_size"]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg["lr"], total_steps=cfg["epochs"] * steps_per_epoch, pct_start=0.1
    )
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(cfg["epochs"]):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg["batch_size"]):
            idx = order[start : start + cfg["batch_size"]]
            xb = x_train[idx]
            if cfg["shift"]:
                xb = random_shift(xb, gen)
            inputs = [torch.from_numpy(a) for a in mod.preprocess(xb.numpy())]
            loss = F.cross_entropy(model(*inputs), y_train[idx])
            if cfg.get("outlier_exposure"):
                noise = [
                    torch.from_numpy(a) for a in mod.preprocess(noise_images(len(idx), gen).numpy())
                ]
                uniform_ce = -F.log_softmax(model(*noise), dim=-1).mean()
                loss = loss + cfg["outlier_exposure"] * uniform_ce
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    fn = as_numpy_fn(model)
    stats = {
        "train_accuracy": accuracy(fn(*mod.preprocess(split.x_train)), split.y_train),
        "eval_metric": accuracy(fn(*mod.preprocess(split.x_eval)), split.y_eval),
        "metric": "accuracy",
    }
    return model, stats


def train_flow() -> tuple[torch.nn.Module, dict]:
    from ember.zoo import digits_flow as mod

    cfg = mod.TRAIN_CONFIG
    split = digits_split()
    data = torch.from_numpy(mod.to_data_range(split.x_train))
    model = mod.build()
    ema = mod.build()
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg["lr"], total_steps=cfg["steps"], pct_start=0.05
    )
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for step in range(cfg["steps"]):
        x1 = data[torch.randint(0, data.shape[0], (cfg["batch_size"],), generator=gen)]
        x0 = torch.randn(x1.shape, generator=gen)
        t = torch.rand(x1.shape[0], 1, generator=gen)
        xt = (1 - t) * x0 + t * x1
        loss = F.mse_loss(model(xt, t), x1 - x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        decay = min(cfg["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
    ema.eval()
    classifier = ember.zoo.load("digits_mlp").module
    with torch.no_grad():
        samples = mod.EulerSampler(ema).eval()(torch.from_numpy(mod.eval_noise())).numpy()
    features = mod.classifier_features(classifier)
    stats = {
        "metric": "sample_confidence",
        "eval_metric": mod.sample_confidence(classifier, samples),
        "real_eval_confidence": mod.sample_confidence(classifier, mod.to_data_range(split.x_eval)),
        "frechet_distance": mod.frechet_distance(
            samples, mod.to_data_range(split.x_eval), features
        ),
        "frechet_distance_real": mod.frechet_distance(
            mod.to_data_range(split.x_train), mod.to_data_range(split.x_eval), features
        ),
        "final_loss": float(loss.detach()),
    }
    return ema, stats


def save(name: str, model: torch.nn.Module, stats: dict) -> None:
    """Write the weights with `stats` as metadata, byte-identical for identical training.

    Metadata is one sorted JSON string under "ember_zoo" (safetensors writes several keys in
    random order) and leaves out wall-clock timings, so retraining does not churn git.
    """
    from safetensors.torch import save_file

    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    timings = ("train_seconds", "train_cpu_seconds")
    recorded = {k: v for k, v in stats.items() if k not in timings}
    recorded.update(name=name, split_seed=SPLIT_SEED, torch_version=torch.__version__)
    metadata = {"ember_zoo": json.dumps(recorded, sort_keys=True)}
    save_file(state, str(weights_path(name)), metadata=metadata)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"models to train (default all: {ember.zoo.names()})"
    )
    parser.add_argument("--threads", type=int, default=THREADS, help="torch intra-op threads")
    args = parser.parse_args(argv)
    names = args.names or ember.zoo.names()
    unknown = [n for n in names if n not in ember.zoo.names()]
    if unknown:
        parser.error(f"unknown zoo models {unknown}; valid: {ember.zoo.names()}")
    names = [n for n in ember.zoo.names() if n in names]  # digits_mlp before digits_flow
    torch.set_num_threads(args.threads)

    acc_path = WEIGHTS_DIR / "accuracy.json"
    recorded = json.loads(acc_path.read_text()) if acc_path.exists() else {}
    failed = []
    for name in names:
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        start, cpu_start = time.perf_counter(), time.process_time()
        model, stats = train_flow() if name == "digits_flow" else train_classifier(name)
        stats["train_seconds"] = round(time.perf_counter() - start, 1)
        stats["train_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
        stats["params"] = sum(p.numel() for p in model.parameters())
        save(name, model, stats)

        z = ember.zoo.load(name)  # what users get must reproduce what we record
        fn = as_numpy_fn(z.extras["sampler"] if name == "digits_flow" else z.module)
        reloaded = z.evaluate(fn)
        if abs(reloaded - stats["eval_metric"]) > 1e-6:
            raise SystemExit(
                f"{name}: reloaded metric {reloaded} != trained {stats['eval_metric']}"
            )
        recorded[name] = round(reloaded, 6)

        shown = ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()
        )
        print(f"{name}: {shown}", flush=True)
        if name in TARGETS and reloaded < TARGETS[name]:
            failed.append(f"{name} eval accuracy {reloaded:.4f} < target {TARGETS[name]}")

    acc_path.write_text(json.dumps({k: recorded[k] for k in sorted(recorded)}, indent=2) + "\n")
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors"))
    print(f"wrote {acc_path} ; weights total {total / 1e6:.2f} MB")
    if "digits_mlp" in names and "digits_flow" not in names:
        print("NOTE: digits_flow is scored by digits_mlp; retrain it too to refresh its record")
    for line in failed:
        print("TARGET MISSED:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
