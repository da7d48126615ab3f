"""Benchmark every zoo model: torch eager, torch.compile (inductor), ONNX Runtime and ember.

    .venv/bin/python benchmarks/bench_zoo.py                       # all models, JSON + table
    .venv/bin/python benchmarks/bench_zoo.py digits_cnn --repeat 500 --json cnn.json

Same as `ember bench`; the measuring code lives in `ember/bench.py` so the CLI can share it.
See benchmarks/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ember.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--json" not in argv:
        argv += ["--json", str(Path(__file__).with_name("results") / "zoo.json")]
        Path(__file__).with_name("results").mkdir(exist_ok=True)
    sys.exit(main(["bench", *argv]))
