"""Measured FMA peak of this host, to state kernel speed as a fraction of what the cores can do.

Why measure: nominal clocks and core counts lie on shared or virtualised hosts (this 2-vCPU
machine measured 85-100 GFLOP/s per core alone, but about half that per core when both vCPUs
were busy). The probe is a C kernel of 12 independent vector FMA chains held in registers, built with
the system C compiler for the host's widest SIMD, run on 1 thread and on all threads at once.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

_SOURCE = r"""
typedef float vf __attribute__((vector_size(%(bytes)d)));
long fma_chains(long iters, float seed) {
    vf a0 = {seed}, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, a4 = a0 + 4, a5 = a0 + 5;
    vf a6 = a0 + 6, a7 = a0 + 7, a8 = a0 + 8, a9 = a0 + 9, a10 = a0 + 10, a11 = a0 + 11;
    vf m = a0 * 0 + 0.999999f, c = a0 * 0 + 1e-7f;
    for (long i = 0; i < iters; ++i) {
        a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
        a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
        a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));
    }
    vf s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    return (long)s[0];
}
"""


def simd_bytes(cpuinfo: str = "/proc/cpuinfo") -> int:
    """Widest float vector of the host: 64 (AVX-512), 32 (AVX/AVX2) or 16 bytes."""
    try:
        with open(cpuinfo) as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx512f" in flags:
        return 64
    if "avx2" in flags or "avx" in flags:
        return 32
    return 16


def _build(vbytes: int, workdir: str) -> ctypes.CDLL:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("the FMA probe needs a C compiler (cc/gcc/clang) on PATH")
    src, lib = os.path.join(workdir, "fma.c"), os.path.join(workdir, "fma.so")
    with open(src, "w") as f:
        f.write(_SOURCE % {"bytes": vbytes})
    subprocess.run(
        [cc, "-O2", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC", src, "-o", lib],
        check=True,
        capture_output=True,
    )
    so = ctypes.CDLL(lib)
    so.fma_chains.argtypes = [ctypes.c_long, ctypes.c_float]
    so.fma_chains.restype = ctypes.c_long
    return so


def measure_fma_peak(threads: int | None = None, seconds: float = 0.5, repeats: int = 3) -> dict:
    """GFLOP/s on one thread and on `threads` (default: all CPUs we may run on) at once."""
    threads = threads or len(os.sched_getaffinity(0))
    vbytes = simd_bytes()
    flops_per_iter = 12 * 2 * (vbytes // 4)
    with tempfile.TemporaryDirectory() as tmp:
        so = _build(vbytes, tmp)
        so.fma_chains(1000, 1.0)
        t = time.perf_counter()
        so.fma_chains(10_000_000, 1.0)
        per_iter = (time.perf_counter() - t) / 10_000_000
        iters = max(1000, int(seconds / per_iter))

        def run(n: int) -> float:
            best = float("inf")
            with ThreadPoolExecutor(n) as pool:
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    list(pool.map(lambda _: so.fma_chains(iters, 1.0), range(n)))
                    best = min(best, time.perf_counter() - t0)
            return n * iters * flops_per_iter / best / 1e9

        single = run(1)
        multi = run(threads) if threads > 1 else single
    return {
        "simd_bits": vbytes * 8,
        "threads": threads,
        "single_core_gflops": round(single, 1),
        "all_cores_gflops": round(multi, 1),
    }
