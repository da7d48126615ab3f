"""The TVM backend: lower an ember graph to Relax, build it for a named target, export it.

    mod = lower(graph)                  # tvm.IRModule, function "main"
    spec = targets.resolve("cpu")       # TargetSpec with the host's mcpu and core count
    ex = build(mod, spec)               # tvm executable; ex.ember_timings: seconds per stage
    export(ex, "lib.so")

Names load lazily: `ember.backends.tvm.targets` is imported by the runtime on a device that has
only the TVM runtime, so importing this package must not import the TVM compiler.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from ..._tvm_startup import install as _install_tvm_startup

_install_tvm_startup()  # before any submodule imports tvm: ~1.5 s off its first import

_LAZY = {
    "lower": ("ember.backends.tvm.lower", "lower"),
    "build": ("ember.backends.tvm.build", "build"),
    "export": ("ember.backends.tvm.build", "export"),
    "BuildResult": ("ember.backends.tvm.build", "BuildResult"),
    "resolve": ("ember.backends.tvm.targets", "resolve"),
    "TargetSpec": ("ember.backends.tvm.targets", "TargetSpec"),
    "LOWERINGS": ("ember.backends.tvm.lowering", "LOWERINGS"),
    "UNSUPPORTED": ("ember.backends.tvm.lowering", "UNSUPPORTED"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ember.backends.tvm' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps `lower`/`build` bound to the functions: importing the submodules `lower.py` and
    `build.py` would otherwise rebind those package attributes to the modules."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("lower", "build") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
__all__ = list(_LAZY)
