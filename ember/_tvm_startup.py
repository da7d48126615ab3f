"""Take ~1 s of the first `import tvm` of a process off the critical path.

Why this exists. A cold `ember compile` pays `import tvm` once (~2.4 s of the 10 s budget for a
zoo model), and ~1 s of that is not TVM's own work: TVM's import raises (and catches) errors on
purpose, e.g. `Op.get` probing for ops this build lacks; tvm-ffi attaches a backtrace to every
error, and the FIRST backtrace of a process makes libbacktrace read the symbol tables of every
loaded library (libtorch_cpu and the 259 MB libtvm_compiler.so among them) while the importing
thread holds the GIL. Measured: a failing type-key lookup costs 0.98 s cold, 0.3 ms after.

`warm_backtrace()` pays that in a background thread through ctypes (which releases the GIL),
overlapped with torch tracing (`ember.compile` imports the backend, which starts it, before it
traces) or at least with the Python half of the import. libbacktrace only indexes libraries
loaded when it initializes, so the thread first loads TVM's libraries in the modes `tvm/base.py`
uses (runtime global; compiler and runtime_extra local); `import tvm` then finds them loaded.
It is the same work the import would do anyway, only earlier and off the GIL.

Nothing here changes what TVM computes. `EMBER_TVM_STARTUP=0` turns it off (to compare, or if
a future tvm-ffi changes these internals; every step is guarded and falls back to nothing).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from pathlib import Path

__all__ = ["install", "warm_backtrace"]

_lock = threading.Lock()
_warm_thread: threading.Thread | None = None
_installed = False


def _enabled() -> bool:
    return os.environ.get("EMBER_TVM_STARTUP", "1") != "0" and sys.platform.startswith("linux")


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _warm() -> None:
    """Load TVM's libraries and take one backtrace (GIL released inside both ctypes calls)."""
    try:
        ffi_dir, tvm_dir = _package_dir("tvm_ffi"), _package_dir("tvm")
        if ffi_dir is None or tvm_dir is None:
            return
        ffi = ctypes.CDLL(str(ffi_dir / "lib" / "libtvm_ffi.so"), ctypes.RTLD_GLOBAL)
        lib = tvm_dir / "lib"
        if not (lib / "libtvm_runtime.so").exists():
            return
        ctypes.CDLL(str(lib / "libtvm_runtime.so"), ctypes.RTLD_GLOBAL)
        if os.environ.get("TVM_USE_RUNTIME_LIB") != "1":
            for name in ("libtvm_compiler.so", "libtvm_runtime_extra.so"):
                if (lib / name).exists():
                    ctypes.CDLL(str(lib / name), ctypes.RTLD_LOCAL)
        backtrace = ffi.TVMFFIBacktrace
        backtrace.restype = ctypes.c_void_p
        backtrace.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        backtrace(None, 0, None, 1)
    except (OSError, AttributeError):  # another platform or tvm-ffi: nothing to warm
        return


def warm_backtrace() -> threading.Thread | None:
    """Start (once per process) the background warm-up; returns its thread (None if off)."""
    global _warm_thread
    if not _enabled() or "tvm" in sys.modules:
        return _warm_thread
    with _lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm, name="ember-tvm-warmup", daemon=True)
            _warm_thread.start()
    return _warm_thread


def install() -> None:
    """Call before the first `import tvm` (ember does, in the modules that import it)."""
    global _installed
    if _installed or not _enabled():
        return
    _installed = True
    if "tvm" in sys.modules:  # too late to help; nothing to do
        return
    warm_backtrace()
