"""Save and load graphs safely: the IR text in JSON plus weights in safetensors. Never pickle.

Weights are keyed by content hash (the same key the printer shows in `blob<...>`), so identical
tensors are stored once and the text stays the single description of structure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import SerializationError
from .graph import Graph
from .parser import ExternalData, parse
from .printer import INLINE_LIMIT, array_key, print_graph

FORMAT_VERSION = 1


def graph_weights(graph: Graph) -> dict[str, np.ndarray]:
    """Every const payload that the text form elides, keyed by its content hash."""
    out: dict[str, np.ndarray] = {}
    for op in graph.walk():
        for value in op.attrs.values():
            if isinstance(value, ExternalData):
                raise SerializationError(f"const {value.key} ({value.type}) has no data "
                                         "(parsed from text without weights)")
            if isinstance(value, np.ndarray) and value.size > INLINE_LIMIT:
                out[array_key(value)] = np.ascontiguousarray(value)
    return out


def dumps(graph: Graph) -> tuple[str, dict[str, np.ndarray]]:
    doc = {"format": "ember-graph", "format_version": FORMAT_VERSION, "ir": print_graph(graph)}
    return json.dumps(doc, indent=1), graph_weights(graph)


def loads(doc_text: str, weights: dict[str, np.ndarray]) -> Graph:
    try:
        doc = json.loads(doc_text)
    except json.JSONDecodeError as e:
        raise SerializationError(f"graph document is not valid JSON: {e}") from None
    if doc.get("format") != "ember-graph":
        raise SerializationError("not an ember graph document")
    if doc.get("format_version") != FORMAT_VERSION:
        raise SerializationError(f"graph format version {doc.get('format_version')} is not "
                                 f"supported (this ember reads {FORMAT_VERSION})")
    return parse(doc["ir"], weights=weights)


def save(graph: Graph, path: str | os.PathLike) -> None:
    """Write `path` (JSON) and `path` + '.safetensors' atomically."""
    from safetensors.numpy import save_file

    path = Path(path)
    text, weights = dumps(graph)
    tmp_w = path.with_name(path.name + ".safetensors.tmp")
    tmp_j = path.with_name(path.name + ".tmp")
    save_file(weights, str(tmp_w))
    tmp_j.write_text(text)
    os.replace(tmp_w, path.with_name(path.name + ".safetensors"))
    os.replace(tmp_j, path)


def load(path: str | os.PathLike) -> Graph:
    from safetensors.numpy import load_file

    path = Path(path)
    wpath = path.with_name(path.name + ".safetensors")
    if not path.exists() or not wpath.exists():
        raise SerializationError(f"{path} (and {wpath.name}) must both exist")
    return loads(path.read_text(), load_file(str(wpath)))
