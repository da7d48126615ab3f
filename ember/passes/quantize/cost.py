"""Is the quantized layer faster? Measured, per layer shape, on this host, with a cache.

Why measure instead of a formula: what decides small layers is kernel-launch, quantize and
packing overhead, which depends on the host, its load, the TVM build and the kernels; a model
fitted once goes stale with any of them. A micro-benchmark of exactly the two candidates —
the float layer (with the relu that follows it, which the float schedule fuses) and its
quantized replacement (quantize fused into the int8 kernel, relu in its epilogue) — compiled
for the host at the benchmark batch, answers the question directly. Each (scheme, shapes,
attrs, host CPU, kernel sources) is measured once and kept in an in-process table and a JSON
file (`$EMBER_CACHE_DIR`, default ./.cache/ember/quant_speed.json), so re-running a pipeline
does not rebuild. Timings: interleaved rounds, min of each (the machine may be shared).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...ir.graph import Graph
from ...ir.types import TensorType

__all__ = ["Speed", "cache_path", "has_oracle", "install_oracle", "int8_weight_bits",
           "measure_layer", "set_timer"]

_MEMO: dict[str, Speed] = {}
_TIMER: Callable[[Graph, Graph, np.ndarray], tuple[float, float]] | None = None
_ORACLE = None  # installed by a backend, see install_oracle


@dataclass(frozen=True)
class Speed:
    float_us: float
    quant_us: float

    @property
    def faster(self) -> bool:
        return self.quant_us < self.float_us

    def describe(self, batch: int) -> str:
        return (f"quantized {self.quant_us:.1f} us vs float {self.float_us:.1f} us at batch "
                f"{batch} ({self.quant_us / max(self.float_us, 1e-9):.2f}x)")


def set_timer(fn: Callable[[Graph, Graph, np.ndarray], tuple[float, float]] | None) -> None:
    """Replace the timer (tests: a deterministic one); None restores the real measurement."""
    global _TIMER
    _TIMER = fn
    _MEMO.clear()


def install_oracle(oracle) -> None:
    """Set the speed oracle (an object with `key() -> str` and `time_pair(fg, qg, x)`).

    Passes may not import a backend, so the backend installs itself:
    `ember.backends.tvm.layer_timer.install()` (ember.compile does this for you).
    """
    global _ORACLE
    _ORACLE = oracle
    _MEMO.clear()


def int8_weight_bits() -> int:
    """7 or 8: the int8 weight range the target's int8 kernel wants (quantize int8_weights=auto).

    7 on x86 with AVX2 but no AVX-512 VNNI: its fast int8 kernel is u8 x s8 `vpmaddubsw`, whose
    int16 pair sums are only exact for |w| <= 64 (oneDNN quantizes weights to 7 bits there
    too); 8 elsewhere (VNNI's vpdpbusd sums in int32; other targets run the int16 kernel). The
    installed oracle answers when it knows the target (an `int8_weight_bits()` method); else
    this host's CPU flags decide, the host the speed check measures on (passes import no
    backend, so no TVM target here)."""
    fn = getattr(_ORACLE, "int8_weight_bits", None)
    return int(fn()) if fn is not None else _host_int8_weight_bits()


@functools.cache
def _host_int8_weight_bits(path: str = "/proc/cpuinfo") -> int:
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return 8
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return 7 if "avx2" in flags and "avx512_vnni" not in flags else 8


def has_oracle() -> bool:
    return _TIMER is not None or _ORACLE is not None


def cache_path() -> Path:
    """The timings file: $EMBER_CACHE_DIR, else .cache/ember under the working directory."""
    root = os.environ.get("EMBER_CACHE_DIR") or os.path.join(os.getcwd(), ".cache", "ember")
    return Path(root) / "quant_speed.json"


def _load() -> dict[str, dict]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _store(key: str, s: Speed) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _load()
        data[key] = {"float_us": s.float_us, "quant_us": s.quant_us}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=0, sort_keys=True)
        os.replace(tmp, path)  # atomic: parallel test workers never see half a file
    except OSError:
        pass  # an unwritable cache only costs a re-measurement


def measure_layer(key_parts: dict, float_graph: Graph, quant_graph: Graph) -> Speed | None:
    """Time `float_graph` against `quant_graph` (one input each), cached under `key_parts`.

    None when no oracle is installed: the caller reports the layer as unmeasured.
    """
    if _TIMER is None and _ORACLE is None:
        return None
    key = None
    if _TIMER is None:
        key = json.dumps({**key_parts, "oracle": _ORACLE.key()}, sort_keys=True, default=str)
        if key in _MEMO:
            return _MEMO[key]
        hit = _load().get(key)
        if hit is not None:
            _MEMO[key] = Speed(hit["float_us"], hit["quant_us"])
            return _MEMO[key]
    t = float_graph.inputs[0].type
    x = np.random.default_rng(0).standard_normal(
        [int(d) for d in t.shape]).astype(t.dtype.to_numpy())
    tf, tq = (_TIMER or _ORACLE.time_pair)(float_graph, quant_graph, x)
    s = Speed(round(tf * 1e6, 2), round(tq * 1e6, 2))
    if key is not None:
        _MEMO[key] = s
        _store(key, s)
    return s


def with_batch(t: TensorType, batch: int) -> TensorType:
    """`t` with its leading (batch) dim set to `batch` and any other symbolic dim to 1."""
    dims = [batch if i == 0 else (d if isinstance(d, int) else 1) for i, d in enumerate(t.shape)]
    return t.with_shape(tuple(dims))
