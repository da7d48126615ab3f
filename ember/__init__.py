"""ember: a Python model compiler. PyTorch (or ONNX) in, a fast, small, deployable artifact out.

Public names are imported lazily so that `import ember.runtime` on a device pulls in neither
torch nor the compiler.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .errors import EmberError

# TVM's thread pool uses half the CPUs by default (one thread on a 2-CPU machine, halving GEMM
# speed); it reads this once, when the pool starts, so set the default before any tvm import.
if "TVM_NUM_THREADS" not in os.environ:
    try:
        os.environ["TVM_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        os.environ["TVM_NUM_THREADS"] = str(os.cpu_count() or 1)

__version__ = "0.1.0"

_LAZY = {
    "ir": ("ember.ir", None),
    "zoo": ("ember.zoo", None),
    "frontends": ("ember.frontends", None),
    "passes": ("ember.passes", None),
    "backends": ("ember.backends", None),
    "runtime": ("ember.runtime", None),
    "trace": ("ember.frontends.torch", "trace"),
    "Pipeline": ("ember.passes.pipeline", "Pipeline"),
    "compile": ("ember.compiler", "compile"),  # module is compiler.py: a submodule named
    # `compile` would rebind `ember.compile` to the module on import, shadowing the function
    "load": ("ember.runtime", "load"),
    "Sampler": ("ember.passes.distill.sampler", "Sampler"),
}


def interpret(graph, *inputs: Any, mode: str = "numpy"):
    """Run a graph with the reference semantics: mode "numpy" (default) or "torch"."""
    if mode == "numpy":
        from .ir import interpret as run

        return run(graph, *inputs)
    if mode == "torch":
        from .backends.torch import interpret_torch

        return interpret_torch(graph, *inputs)
    raise EmberError(f"interpret: unknown mode {mode!r}; use 'numpy' or 'torch'")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ember' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


__all__ = ["EmberError", "interpret", *_LAZY]
