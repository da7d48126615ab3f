"""The model zoo: small real models trained on sklearn's bundled digits, for tests and benchmarks.

Compiler passes need models whose accuracy can actually drop, so these are trained (by
`scripts/train_zoo.py`, once) and their weights committed under `ember/zoo/weights/`. Loading only
reads those files: no training, no download, a few milliseconds per model.

    import ember.zoo
    z = ember.zoo.load("digits_cnn")
    z.module                # eval-mode float32 nn.Module with the trained weights
    z.example_inputs        # batch of 4 real inputs (torch), in `z.input_names` order
    z.calibration           # 8 batches of 16 train inputs, tuples of numpy float32
    z.train, z.eval_data    # (inputs, labels) numpy; fixed seeded 80/20 stratified split
    z.evaluate(fn)          # accuracy of numpy-in/numpy-out `fn` on eval_data
    z.dynamic_dims          # e.g. {"x": {0: "batch"}}; dims that export as dynamic
    z.extras                # model-specific objects (digits_flow: sampler, classifier, ...)

`ember.zoo.as_numpy_fn(z.module)` turns the eager module into such an `fn`.
For `digits_flow`, `evaluate` scores a sampler instead; see `ember.zoo.digits_flow`.
"""

from __future__ import annotations

import importlib

from ember.errors import EmberError
from ember.zoo.base import ZooModel, as_numpy_fn

__all__ = ["ZooModel", "as_numpy_fn", "load", "names"]

_MODELS = (
    "digits_mlp",
    "digits_cnn",
    "digits_vit",
    "digits_gru",
    "seq_linear_rnn",
    "digits_flow",
)
"""Zoo names; each is also the `ember.zoo.<name>` module defining it (and its `load()`)."""


def names() -> list[str]:
    """Every zoo model name, in a fixed order (simplest first)."""
    return list(_MODELS)


def load(name: str) -> ZooModel:
    """Load a trained zoo model by name; a fresh module and fresh data arrays on every call."""
    if name not in _MODELS:
        raise EmberError(f"unknown zoo model {name!r}; valid names: {', '.join(_MODELS)}")
    return importlib.import_module(f"ember.zoo.{name}").load()
