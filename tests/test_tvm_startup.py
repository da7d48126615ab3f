"""ember/_tvm_startup.py: the background warm-up of TVM's first backtrace.

Speed is measured by benchmarks/compile_time.py; here: it starts where it should, finishes, and
leaves TVM working (both with and without it), in fresh processes (it acts once per process).
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="linux only")

_PROBE = r"""
import json, sys, threading, time
import ember._tvm_startup as s
import ember.backends.tvm  # starts the warm-up before any tvm import
thread = s._warm_thread
started = thread is not None
if thread is not None:
    thread.join(120)
from tvm_ffi import core
t0 = time.perf_counter()
missing = core._object_type_key_to_index("ember.test.NoSuchType")  # raises inside, caught
lookup = time.perf_counter() - t0
import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

@tvm.script.ir_module
class Mod:
    @R.function
    def main(x: R.Tensor((4,), "float32")):
        return R.add(x, x)

ex = tvm.compile(Mod, target="llvm")
vm = relax.VirtualMachine(ex, tvm.cpu())
out = vm["main"](tvm.runtime.tensor(np.arange(4, dtype="float32"))).numpy().tolist()
print("RESULT " + json.dumps({"started": started, "alive": bool(thread and thread.is_alive()),
                              "missing": missing, "out": out, "lookup": lookup}))
"""


def _probe(tmp_path, **env) -> dict:
    script = tmp_path / "probe.py"  # a file, not -c: TVMScript reads the function's source
    script.write_text(_PROBE)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_warm_up_runs_before_tvm_import_and_tvm_still_works(tmp_path):
    r = _probe(tmp_path, EMBER_TVM_STARTUP="1")
    assert r["started"] and not r["alive"]
    assert r["missing"] is None
    assert r["out"] == [0.0, 2.0, 4.0, 6.0]
    # The first failing lookup no longer pays libbacktrace's initialisation (~1 s cold on the
    # Zen 3 host); a generous bound so a loaded CI box cannot flake, a lost warm-up still fails.
    assert r["lookup"] < 0.25


def test_switch_off(tmp_path):
    r = _probe(tmp_path, EMBER_TVM_STARTUP="0")
    assert not r["started"]
    assert r["out"] == [0.0, 2.0, 4.0, 6.0]


def test_warm_up_is_a_no_op_once_tvm_is_imported():
    import tvm  # noqa: F401  (the test process has usually imported it already)

    from ember import _tvm_startup

    before = _tvm_startup._warm_thread
    assert _tvm_startup.warm_backtrace() is before
