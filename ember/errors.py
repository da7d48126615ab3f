"""Every error ember raises on purpose derives from `EmberError`.

Messages name the op, the node, the shape and what to do next: users see these, not tracebacks.
"""

from __future__ import annotations


class EmberError(Exception):
    """Base of every error ember raises on purpose."""


class ShapeError(EmberError):
    """Type inference rejected an op's inputs or attributes."""


class VerificationError(EmberError):
    """The IR is structurally broken or a stored type disagrees with inference."""


class ParseError(EmberError):
    """The IR text form could not be parsed."""


class UnsupportedOpError(EmberError):
    """A model uses ops ember cannot import or lower; lists every one of them at once."""

    def __init__(self, message: str, ops: dict | None = None):
        super().__init__(message)
        self.ops = ops or {}


class InputError(EmberError):
    """Inputs given by the user (example inputs, call-time inputs) do not fit the model."""


class PipelineSpecError(EmberError):
    """A pass pipeline string names an unknown pass or option, or a bad option value."""


class PassError(EmberError):
    """A pass failed; names the pass, its options, the passes before it and the saved input IR."""


class LoweringError(EmberError):
    """The graph could not be lowered to a backend."""


class BuildError(EmberError):
    """The backend compiler failed to build a lowered module."""


class ArtifactError(EmberError):
    """A .ember artifact is missing, truncated, tampered with, or for another target/version."""


class SerializationError(EmberError):
    """A graph could not be saved or loaded."""


class RewriteLoopError(EmberError):
    """Rewrite rules kept firing past the round limit (rules that undo each other, usually)."""


class TargetError(EmberError):
    """An unknown target name, or an artifact built for CPU features this host lacks."""


class RemoteError(EmberError):
    """A remote device (TVM RPC server) could not be reached, or failed to load or run a model."""
