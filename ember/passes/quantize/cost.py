"""Is the quantized layer faster? Measured, per layer shape, on this host, with a cache.

Why measure instead of a formula: what decides small layers is kernel-launch, quantize and
packing overhead, which depends on the host, its load, the TVM build and the kernels; a model
fitted once goes stale with any of them. A micro-benchmark of exactly the two candidates —
the float layer (with the relu that follows it, which the float schedule fuses) and its
quantized replacement (quantize fused into the int8 kernel, relu in its epilogue) — compiled
for the host at the benchmark batch, answers the question directly. Each (scheme, shapes,
attrs, host CPU, kernel sources) is measured once and kept in an in-process table and a JSON
file (`$EMBER_CACHE_DIR`, default ~/.cache/ember/quant_speed.json), so re-running a pipeline
does not rebuild. Timings: interleaved rounds, min of each (the machine may be shared).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...ir.graph import Graph
from ...ir.types import TensorType

__all__ = ["Speed", "cache_path", "measure_layer", "set_timer"]

_MEMO: dict[str, Speed] = {}
_TIMER: Callable[[Graph, Graph, np.ndarray], tuple[float, float]] | None = None


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


def cache_path() -> Path:
    root = os.environ.get("EMBER_CACHE_DIR") or os.path.join(Path.home(), ".cache", "ember")
    return Path(root) / "quant_speed.json"


def _kernel_digest() -> str:
    """Hash of the kernel and lowering sources: editing a kernel invalidates its timings."""
    from ...backends.tvm import kernels
    from ...backends.tvm.lowering import quant as lq

    h = hashlib.sha1()
    kdir = Path(kernels.__file__).parent
    for p in sorted(kdir.glob("*.py")) + [Path(lq.__file__)]:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def _host() -> str:
    from ...backends.tvm.targets import host_features, resolve

    f = host_features()
    return f"{f.model_name}|{f.physical_cores}|" + json.dumps(resolve("cpu").target_dict,
                                                              sort_keys=True, default=str)


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


def _compile(g: Graph):
    import tvm
    from tvm import relax

    from ...backends.tvm.build import build
    from ...backends.tvm.lower import lower
    from ...backends.tvm.targets import resolve

    spec = resolve("cpu")
    vm = relax.VirtualMachine(build(lower(g, target=spec), spec), tvm.cpu())
    return vm["main"]


def _time_pair(fg: Graph, qg: Graph, x: np.ndarray, rounds: int = 60, calls: int = 1):
    """(float seconds, quantized seconds) per call: the minimum over interleaved calls, the
    estimate least disturbed by other processes preempting a worker thread."""
    import tvm

    f, q = _compile(fg), _compile(qg)
    xt = tvm.runtime.tensor(np.ascontiguousarray(x))
    best = [float("inf"), float("inf")]
    for fn in (f, q):
        for _ in range(3):
            fn(xt)
    for _ in range(rounds):
        for i, fn in enumerate((f, q)):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(xt)
            best[i] = min(best[i], (time.perf_counter() - t0) / calls)
    return best[0], best[1]


def measure_layer(key_parts: dict, float_graph: Graph, quant_graph: Graph) -> Speed:
    """Time `float_graph` against `quant_graph` (one input each), cached under `key_parts`."""
    key = json.dumps({**key_parts, "host": _host(), "kernels": _kernel_digest()},
                     sort_keys=True, default=str)
    if _TIMER is None:
        if key in _MEMO:
            return _MEMO[key]
        hit = _load().get(key)
        if hit is not None:
            _MEMO[key] = Speed(hit["float_us"], hit["quant_us"])
            return _MEMO[key]
    t = float_graph.inputs[0].type
    x = np.random.default_rng(0).standard_normal(
        [int(d) for d in t.shape]).astype(t.dtype.to_numpy())
    tf, tq = (_TIMER or _time_pair)(float_graph, quant_graph, x)
    s = Speed(round(tf * 1e6, 2), round(tq * 1e6, 2))
    if _TIMER is None:
        _MEMO[key] = s
        _store(key, s)
    return s


def with_batch(t: TensorType, batch: int) -> TensorType:
    """`t` with its leading (batch) dim set to `batch` and any other symbolic dim to 1."""
    dims = [batch if i == 0 else (d if isinstance(d, int) else 1) for i, d in enumerate(t.shape)]
    return t.with_shape(tuple(dims))
