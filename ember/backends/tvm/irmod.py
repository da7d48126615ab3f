"""IRModule helpers shared by the build stages."""

from __future__ import annotations

from collections.abc import Mapping

import tvm

__all__ = ["with_functions"]


def with_functions(mod: tvm.IRModule, updates: Mapping) -> tvm.IRModule:
    """`mod` with the functions in `updates` ({GlobalVar: function}) replaced, in a copy: the
    caller's module stays as it was (stages are timed and retried on it). No updates: `mod`."""
    if not updates:
        return mod
    mod = mod.clone()
    for gvar, func in updates.items():
        mod.update_func(gvar, func)
    return mod
