"""Run compiled models: read/verify .ember artifacts and call them. Needs numpy + TVM only.

    m = ember.load("model.ember")     # verifies format, hashes and target before loading
    y = m(x)                           # numpy (or torch tensors) in, numpy out
    m.manifest, m.report, m.ir_text, m.benchmark()

Imports neither torch nor ember's compiler (frontends, passes); a test enforces it.
"""

from __future__ import annotations

from .artifact import (
                       FORMAT_VERSION,
                       Artifact,
                       TensorSpec,
                       build_manifest,
                       read_artifact,
                       write_artifact,
)
from .module import CompiledModel, load

__all__ = ["FORMAT_VERSION", "Artifact", "CompiledModel", "TensorSpec", "build_manifest", "load",
           "read_artifact", "write_artifact"]
