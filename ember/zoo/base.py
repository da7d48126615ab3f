"""`ZooModel` and the shared loading/evaluation code behind every zoo entry.

A zoo model bundles what a compiler test or benchmark needs besides the `nn.Module`: real example
inputs, calibration batches for quantization, the train split for fine-tuning passes and an
`evaluate` that scores *any* numpy-in/numpy-out callable, so an eager module and a compiled
artifact are measured by the same code on the same samples.

Loading only reads `weights/<name>.safetensors`: it never trains and never downloads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember.errors import EmberError
from ember.zoo.data import EXAMPLE_BATCH, calibration_indices, digits_split

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

NumpyFn = Callable[..., Any]
"""A callable taking numpy arrays (one per model input) and returning the output array."""


@dataclass(kw_only=True)
class ZooModel:
    """A trained zoo model plus its data. See `ember.zoo` for the meaning of each field."""

    name: str
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    calibration: list[tuple[np.ndarray, ...]]
    train: tuple[Any, np.ndarray]
    eval_data: tuple[Any, np.ndarray]
    dynamic_dims: dict[str, dict[int, str]]
    input_names: tuple[str, ...]
    evaluator: Callable[[NumpyFn, int | None], float] = field(repr=False)
    extras: dict[str, Any] = field(default_factory=dict, repr=False)
    metric: str = "accuracy"
    """What `evaluate` returns: "accuracy", or "sample_confidence" for digits_flow."""
    reference_metric: float | None = None
    """The `evaluate` value recorded by the training script (from the weights file's metadata)."""
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    """What the training script recorded: metrics, parameter count, torch version."""

    def evaluate(self, fn: NumpyFn, batch_size: int | None = None) -> float:
        """Score `fn` on the held-out split; `fn` maps numpy inputs to numpy (or torch) outputs.

        With `batch_size` the data is fed in batches of exactly that size (the last one padded by
        repeating its final row, padding outputs dropped), for artifacts compiled for a static
        batch; by default everything goes in one call.
        """
        return float(self.evaluator(fn, batch_size))

    def export_dynamic_shapes(self) -> dict[str, dict[int, Any] | None]:
        """`dynamic_dims` as a `torch.export` `dynamic_shapes` dict (one `Dim` per dim name)."""
        dims: dict[str, Any] = {}
        spec: dict[str, dict[int, Any] | None] = {}
        for input_name in self.input_names:
            named = self.dynamic_dims.get(input_name)
            if not named:
                spec[input_name] = None
                continue
            spec[input_name] = {
                axis: dims.setdefault(dim_name, torch.export.Dim(dim_name, min=1))
                for axis, dim_name in named.items()
            }
        return spec


def as_numpy_fn(module: torch.nn.Module) -> NumpyFn:
    """Wrap an eager module as the numpy-in/numpy-out callable `ZooModel.evaluate` expects."""

    def fn(*arrays: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return out.detach().cpu().numpy()

    return fn


def to_numpy(out: Any) -> np.ndarray:
    """Accept numpy, torch tensors or a one-element tuple/list, as backends return any of them."""
    if isinstance(out, (tuple, list)):
        if len(out) != 1:
            raise EmberError(f"evaluate expected one output from fn, got {len(out)}")
        out = out[0]
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    return np.asarray(out)


def call_batched(fn: NumpyFn, inputs: Sequence[np.ndarray], batch_size: int | None) -> np.ndarray:
    """Run `fn` over `inputs` whole or in fixed-size batches (see `ZooModel.evaluate`)."""
    if batch_size is None:
        return to_numpy(fn(*inputs))
    if batch_size < 1:
        raise EmberError(f"evaluate batch_size must be >= 1, got {batch_size}")
    n = inputs[0].shape[0]
    outs = []
    for start in range(0, n, batch_size):
        chunk = [a[start : start + batch_size] for a in inputs]
        k = chunk[0].shape[0]
        if k < batch_size:
            chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - k, axis=0)]) for c in chunk]
        outs.append(to_numpy(fn(*[np.ascontiguousarray(c) for c in chunk]))[:k])
    return np.concatenate(outs)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    logits = np.asarray(logits).reshape(labels.shape[0], -1)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def load_weights(module: torch.nn.Module, name: str) -> dict[str, Any]:
    """Load `weights/<name>.safetensors` into `module` strictly; return the recorded metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = weights_path(name)
    if not path.exists():
        raise EmberError(
            f"zoo weights for {name!r} are missing ({path}); "
            f"run `python scripts/train_zoo.py {name}` to train them"
        )
    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        metadata = json.loads((f.metadata() or {}).get("ember_zoo", "{}"))
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise EmberError(
            f"zoo weights {path.name} do not match the {type(module).__name__} definition "
            f"(missing {result.missing_keys}, unexpected {result.unexpected_keys}); "
            f"retrain with `python scripts/train_zoo.py {name}`"
        )
    module.float().eval()
    return metadata


def reference_metric(metadata: dict[str, Any]) -> float | None:
    value = metadata.get("eval_metric")
    return float(value) if value is not None else None


def classifier_zoo_model(
    *,
    name: str,
    module: torch.nn.Module,
    preprocess: Callable[[np.ndarray], tuple[np.ndarray, ...]],
    input_names: tuple[str, ...],
    dynamic_dims: dict[str, dict[int, str]],
) -> ZooModel:
    """Build the `ZooModel` of a digits classifier: load weights, preprocess both splits.

    `preprocess` maps flat [n, 64] pixels in [0, 1] to the model's input arrays. `train` and
    `eval_data` hold the preprocessed inputs (a single array for one-input models).
    """
    metadata = load_weights(module, name)
    split = digits_split()
    train_inputs = preprocess(split.x_train)
    eval_inputs = preprocess(split.x_eval)
    y_eval = split.y_eval

    def evaluator(fn: NumpyFn, batch_size: int | None) -> float:
        return accuracy(call_batched(fn, eval_inputs, batch_size), y_eval)

    def unwrap(inputs: tuple[np.ndarray, ...]) -> Any:
        return inputs[0] if len(inputs) == 1 else inputs

    return ZooModel(
        name=name,
        module=module,
        example_inputs=tuple(torch.from_numpy(a[:EXAMPLE_BATCH].copy()) for a in eval_inputs),
        calibration=[
            tuple(a[idx] for a in train_inputs) for idx in calibration_indices(len(split.y_train))
        ],
        train=(unwrap(train_inputs), split.y_train),
        eval_data=(unwrap(eval_inputs), y_eval),
        dynamic_dims=dynamic_dims,
        input_names=input_names,
        evaluator=evaluator,
        reference_metric=reference_metric(metadata),
        metadata=metadata,
    )
