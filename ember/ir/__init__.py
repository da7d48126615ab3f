"""ember's graph IR: types, graphs, the op registry, text form, verifier, interpreter.

Imports nothing from torch, tvm, onnx or other ember packages (a test enforces it).
"""

from . import ops  # noqa: F401  (registers every op)
from .graph import Graph, Op, Use, Value
from .interpret import interpret
from .parser import ExternalData, parse
from .printer import print_graph
from .serialize import load, save
from .types import DType, TensorType
from .verify import verify

__all__ = ["Graph", "Op", "Use", "Value", "DType", "TensorType", "parse", "print_graph",
           "verify", "interpret", "ExternalData", "save", "load", "ops"]
