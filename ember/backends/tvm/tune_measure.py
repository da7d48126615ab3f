"""Measuring kernels the way MetaSchedule does: its builder and runner (local or RPC tracker).

Ember's own schedule of a kernel and MetaSchedule's candidates go through the same
LocalBuilder and the same runner, so their times compare fairly.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import tvm
from tvm import tirx

from ...errors import InputError, RemoteError

log = logging.getLogger("ember.backends.tvm.tune")

# Each measurement: >= 40 ms of calls after a warm-up; comparisons repeat it (COMPARE_ROUNDS).
SEARCH_EVAL = {"number": 3, "repeat": 1, "min_repeat_ms": 40}
COMPARE_ROUNDS = 3


def lazy_tensor_intrin() -> None:
    """Register `tvm.s_tir.tensor_intrin` without running its __init__, which parses every
    tensor intrinsic of every target (CUDA mma, ...) as TVMScript: minutes of CPU on a busy
    2-core machine, paid by MetaSchedule's TuneContext and by each builder worker. Ember tunes
    float CPU kernels, whose llvm rules use no intrinsics unless the target has VNNI/AVX-512
    dot products; those submodules (x86, arm_cpu, ...) still import on demand.
    Call it in the tuning process and (as an initializer) in every builder worker."""
    import importlib.util
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return
    stub = types.ModuleType(name)
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__spec__ = spec
    sys.modules[name] = stub
    from tvm import s_tir

    s_tir.tensor_intrin = stub  # type: ignore[attr-defined]


def make_builder():
    """MetaSchedule's LocalBuilder with one worker that skips the intrinsics import."""
    from tvm.s_tir.meta_schedule.builder import LocalBuilder

    return LocalBuilder(max_workers=1, timeout_sec=120, initializer=lazy_tensor_intrin)


def task_module(func: tirx.PrimFunc) -> tvm.IRModule:
    """The normalized workload module for one kernel: named "main", independent of the name the
    fused kernel had in the model (so records match across builds of the same kernel)."""
    func = func.with_attr("global_symbol", "main").with_attr("tirx.noalias", True)
    func = func.without_attr("tirx.is_scheduled")
    return tvm.IRModule({"main": func})


def make_runner(config: Any, tgt: Any):
    """A LocalRunner, or an RPCRunner on `config.rpc_tracker`/`config.rpc_key`."""
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, LocalRunner, RPCConfig, RPCRunner

    evaluator = EvaluatorConfig(**SEARCH_EVAL)
    if not config.rpc_tracker:
        return LocalRunner(timeout_sec=60, evaluator_config=evaluator)
    host, port = _tracker_address(config.rpc_tracker)
    if not config.rpc_key:
        raise InputError("--rpc-tracker needs --rpc-key: the key the device's RPC server "
                         "registered with (python -m tvm.exec.rpc_server --tracker HOST:PORT "
                         "--key KEY)")
    check_tracker(host, port, config.rpc_key)
    rpc = RPCConfig(tracker_host=host, tracker_port=port, tracker_key=config.rpc_key,
                    session_timeout_sec=60)
    return RPCRunner(rpc_config=rpc, evaluator_config=evaluator, max_workers=1)


def _tracker_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RemoteError(f"RPC tracker address {address!r} is not host:port (e.g. "
                          "127.0.0.1:9190; start one with `python -m tvm.exec.rpc_tracker "
                          "--port 9190`)")
    return host.strip("[]"), int(port)


def check_tracker(host: str, port: int, key: str) -> None:
    """Fail early, naming the tracker, when it is unreachable or has no server with `key`."""
    import socket

    from tvm import rpc

    try:
        socket.create_connection((host, port), timeout=10).close()  # TVM retries for a minute
        tracker = rpc.connect_tracker(host, port)
        summary = tracker.summary()
    except Exception as e:  # noqa: BLE001 (TVM raises its own error types)
        raise RemoteError(f"cannot reach the RPC tracker at {host}:{port} ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); is "
                          f"`python -m tvm.exec.rpc_tracker --port {port}` running there and "
                          "the port reachable?") from None
    queue = summary.get("queue_info", {}) if isinstance(summary, dict) else {}
    if key not in queue:
        keys = ", ".join(sorted(queue)) or "none"
        raise RemoteError(f"the RPC tracker at {host}:{port} has no server with key {key!r} "
                          f"(registered keys: {keys}); start one with `python -m "
                          f"tvm.exec.rpc_server --tracker {host}:{port} --key {key}`")


def measure_kernels(mods: Sequence[tvm.IRModule], tgt: Any, runner: Any, builder: Any,
                    rounds: int = 1) -> list[float | None]:
    """Median seconds per call of each single-kernel module (None when it failed).

    `rounds` > 1 measures the whole list that many times, interleaved (so a burst of load on a
    shared machine hits every kernel alike), and takes the median per kernel."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    if not mods:
        return []
    built = builder.build([BuilderInput(m, tgt) for m in mods])
    times: list[float | None] = [None] * len(mods)
    inputs, where = [], []
    for i, (m, b) in enumerate(zip(mods, built)):
        if b.error_msg is not None:
            log.warning("building kernel %d for measurement failed: %s", i,
                        b.error_msg.strip().splitlines()[-1][:300])
        else:
            inputs.append(RunnerInput(b.artifact_path, _device_type(tgt),
                                      ArgInfo.from_prim_func(m["main"])))
            where.append(i)
    try:
        samples: dict[int, list[float]] = {i: [] for i in where}
        for _ in range(max(1, rounds)):
            results = [f.result() for f in runner.run(inputs)] if inputs else []
            for i, r in zip(where, results):
                if r.error_msg is None and r.run_secs:
                    samples[i].extend(float(s) for s in r.run_secs)
                elif r.error_msg:
                    log.warning("measuring kernel %d failed: %s", i,
                                r.error_msg.strip().splitlines()[-1][:300])
        for i, secs in samples.items():
            if secs:
                times[i] = float(np.median(secs))
    finally:
        for b in built:
            if b.artifact_path:
                shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    return times


def _device_type(tgt: Any) -> str:
    kind = tgt.kind.name
    return "cpu" if kind in ("llvm", "c") else kind
