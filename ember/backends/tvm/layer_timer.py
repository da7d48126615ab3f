"""Times a float layer against its quantized replacement on this host, for the quantize pass.

The quantize pass must never make a model slower, so it asks a "speed oracle" per layer shape.
Passes may not import a backend (design.md), so whoever runs the pipeline installs it:
`ember.passes.quantize.cost.install_oracle(TvmLayerTimer())` (ember.compile does).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from ...ir import Graph
from .build import build
from .lower import lower
from .targets import host_features, resolve


class TvmLayerTimer:
    """The oracle: `key()` says what the timings depend on; `time_pair` measures."""

    def key(self) -> str:
        """Host CPU, target and a hash of the kernel sources: editing a kernel re-measures."""
        from . import kernels
        from .lowering import quant as lowering_quant

        h = hashlib.sha1()
        for p in sorted(Path(kernels.__file__).parent.glob("*.py")) + [Path(lowering_quant.__file__)]:
            h.update(p.read_bytes())
        f = host_features()
        target = json.dumps(resolve("cpu").target_dict, sort_keys=True, default=str)
        return f"{f.model_name}|{f.physical_cores}|{target}|{h.hexdigest()[:12]}"

    def int8_weight_bits(self) -> int:
        """7 where the int8 kernel for this target is AVX2 `vpmaddubsw` (its i16 pair sums stay
        exact only for weights within +-64), 8 with VNNI or without AVX2 (other kernels)."""
        from .kernels.qgemm import has_feature

        t = resolve("cpu").tvm_target()
        if has_feature(t, "avx512vnni") or not has_feature(t, "avx2"):
            return 8
        return 7

    def time_pair(self, float_graph: Graph, quant_graph: Graph, x: np.ndarray,
                  rounds: int = 60) -> tuple[float, float]:
        """(float s, quantized s) per call: the minimum over interleaved calls, the estimate
        least disturbed by other processes preempting a worker thread."""
        f, q = _compile(float_graph), _compile(quant_graph)
        xt = tvm.runtime.tensor(np.ascontiguousarray(x))
        best = [float("inf"), float("inf")]
        for fn in (f, q):
            for _ in range(3):
                fn(xt)
        for _ in range(rounds):
            for i, fn in enumerate((f, q)):
                t0 = time.perf_counter()
                fn(xt)
                best[i] = min(best[i], time.perf_counter() - t0)
        return best[0], best[1]


def _compile(g: Graph):
    spec = resolve("cpu")
    vm = relax.VirtualMachine(build(lower(g, target=spec), spec, exportable=False), tvm.cpu())
    return vm["main"]
