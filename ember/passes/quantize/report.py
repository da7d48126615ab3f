"""Per-layer quantization report: scheme, bits, weight bytes and output SQNR versus float.

Why SQNR per layer: ONNX Runtime / NNCF users see an accuracy collapse with no hint which layer
to blame (reference-systems.md). Each rewritten layer is evaluated on the calibration
activations that reached it, float op against quantized op (the numpy references, i.e. the
semantics every backend matches), so a low row points at the layer to `skip`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...ir.graph import Value

__all__ = ["LayerRow", "evaluate_value", "sqnr_db", "value_weight_bytes"]


@dataclass
class LayerRow:
    layer: str
    scheme: str
    bits: float  # weight bits per parameter, quantization parameters included
    weight_bytes: int
    float_bytes: int
    sqnr_db: float | None
    kernel: str  # what executes it, or why it stayed float

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sqnr_db"] = None if self.sqnr_db is None else round(float(self.sqnr_db), 2)
        d["bits"] = round(float(self.bits), 3)
        return d


def evaluate_value(v: Value, env: dict[int, np.ndarray]) -> np.ndarray:
    """Evaluate `v` by the registry references, given arrays for some values (by id)."""
    if id(v) in env:
        return env[id(v)]
    op = v.producer
    if op is None:
        raise KeyError(f"graph input {v.name!r} has no value")
    if op.kind == "const":
        out = op.attrs["value"]
    else:
        ins = [evaluate_value(i, env) for i in op.inputs]
        with np.errstate(all="ignore"):
            out = op.schema.run_reference(ins, op.attrs, op.regions)[v.index]
    env[id(v)] = out
    return out


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    noise = float(np.sum((ref - got) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return float("inf")
    return 10 * np.log10(max(signal, 1e-30) / noise)


def value_weight_bytes(v: Value, stop: Value) -> int:
    """Bytes of the consts feeding `v` (back to `stop`, the layer's activation input)."""
    seen: set[int] = set()
    total = 0
    stack = [v]
    while stack:
        cur = stack.pop()
        if cur is stop or id(cur) in seen or cur.producer is None:
            continue
        seen.add(id(cur))
        op = cur.producer
        if op.kind == "const":
            arr = op.attrs.get("value")
            total += int(arr.nbytes) if isinstance(arr, np.ndarray) else 0
        else:
            stack.extend(op.inputs)
    return total


def render(rows: list[LayerRow]) -> str:
    head = f"{'layer':28} {'scheme':16} {'bits':>6} {'bytes':>9} {'SQNR dB':>8}  kernel"
    lines = [head]
    for r in rows:
        s = "-" if r.sqnr_db is None else f"{r.sqnr_db:8.1f}"
        lines.append(f"{r.layer:28} {r.scheme:16} {r.bits:6.2f} {r.weight_bytes:9d} {s:>8}  "
                     f"{r.kernel}")
    return "\n".join(lines)
