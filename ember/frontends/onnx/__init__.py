"""The ONNX frontend: `load(path_or_model) -> Graph`.

    g = ember.frontends.onnx.load("model.onnx")

Initializers become named `const` ops, ONNX value names are kept (as value names; node names
as op locations), `dim_param` dims become symbols, and ONNX shape inference is checked against
ember's inferred types. Converters live in family modules (`convert_math`, `convert_nn`,
`convert_shape`, `convert_reduce`, `convert_control`) and register with `@converts("OpType")`;
`CONVERTERS` is the table, `supported_ops()` its keys. Ops without a converter are reported
together in one `UnsupportedOpError` before anything is built.
"""

from __future__ import annotations

from . import convert_control, convert_math, convert_nn, convert_reduce, convert_shape  # noqa: F401
from .context import CONVERTERS, STATIC_INPUTS, converts
from .importer import check_supported, load


def supported_ops() -> list[str]:
    """ONNX op types (default domain) ember has a converter for."""
    return sorted(CONVERTERS)


__all__ = ["CONVERTERS", "STATIC_INPUTS", "check_supported", "converts", "load", "supported_ops"]
