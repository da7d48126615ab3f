"""ember's defaults for TVM's thread pool (set in ember/__init__.py before TVM starts it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Runs a 2-item parallel TIR loop, then reports which of the process's threads are pinned.
_PROBE = r"""
import json, os
import ember, tvm
from tvm.script import tirx as T

@T.prim_func
def main(x: T.Buffer((2, 1024), "float32")):
    for i in T.parallel(2):
        for j in range(1024):
            x[i, j] = x[i, j] + T.float32(1)

f = tvm.compile(tvm.IRModule({"main": main}), target={"kind": "llvm"})["main"]
x = tvm.runtime.tensor(__import__("numpy").zeros((2, 1024), "float32"))
for _ in range(10):
    f(x)
tids = os.listdir("/proc/self/task")
pinned = [t for t in tids if len(os.sched_getaffinity(int(t))) == 1]
print(json.dumps({"threads": len(tids), "pinned": len(pinned),
                  "bind": os.environ.get("TVM_BIND_THREADS"),
                  "num": os.environ.get("TVM_NUM_THREADS")}))
"""


def _probe(env: dict, tmp_path) -> dict:
    script = tmp_path / "probe.py"  # a file: TVMScript reads the function's source
    script.write_text(_PROBE)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="thread pinning is observable only on Linux with 2+ CPUs")


@needs_two_cpus
def test_workers_are_not_pinned_by_default(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TVM_BIND_THREADS", "TVM_NUM_THREADS")}
    got = _probe(env, tmp_path)
    assert got["bind"] == "0"
    assert int(got["num"]) == len(os.sched_getaffinity(0))
    assert got["pinned"] == 0, got


@needs_two_cpus
def test_user_setting_wins(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    env["TVM_BIND_THREADS"] = "1"
    got = _probe(env, tmp_path)
    assert got["bind"] == "1"
    assert got["pinned"] >= 1, got  # TVM's own pinning of its workers is back
