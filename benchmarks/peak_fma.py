"""Measured FMA peak of this host (single thread and all threads), GFLOP/s fp32.

python benchmarks/peak_fma.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from ember.backends.tvm.schedules.probe import measure_fma_peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", help="write the result to this file")
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = ap.parse_args()
    res = measure_fma_peak(seconds=args.seconds)
    print(
        f"SIMD {res['simd_bits']} bit: 1 thread {res['single_core_gflops']} GFLOP/s, "
        f"{res['threads']} threads {res['all_cores_gflops']} GFLOP/s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
