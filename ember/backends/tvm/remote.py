"""Run and time a .ember artifact on a remote device through TVM RPC.

The device runs TVM's own RPC server (`python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090`,
runtime-only TVM is enough: `TVM_USE_RUNTIME_LIB=1`); it needs neither ember nor the artifact
file. We upload the artifact's `lib.so`, load it there, and drive a Relax VM on the remote device:
inputs are copied over the connection, outputs copied back, and `benchmark` times the calls with
TVM's time_evaluator *on the device*, so the network is not in the numbers.

    with connect_remote("artifact.ember", "10.0.0.7:9090") as m:
        y = m(x)                   # numpy in, numpy out, checked against the manifest
        m.benchmark(repeat=50)     # device-side median/p90/mean/min in ms

Why TVM RPC rather than our own protocol: fleets already run it (with a tracker to share
devices), and TVM's auto-tuners measure through the same servers.

Imports only the TVM runtime and ember.runtime: usable from a deploy host without torch.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RemoteError
from ...runtime.artifact import LIBRARY, read_artifact
from ...runtime.module import CompiledModel, import_tvm

_CPU_KINDS = ("llvm", "c")


RUNTIME_FILES = ("ember/__init__.py", "ember/errors.py", "ember/_tvm_startup.py",
                 "ember/runtime/__init__.py",
                 "ember/runtime/artifact.py", "ember/runtime/compat.py", "ember/runtime/module.py",
                 "ember/runtime/cuda.py", "ember/backends/__init__.py", "ember/backends/tvm/__init__.py",
                 "ember/backends/tvm/targets.py")
"""The ember files a device needs to `ember.load` and call an artifact itself (besides numpy and
the TVM runtime); tests/backends/tvm/test_edge.py runs an aarch64 artifact with only these."""


def stage_runtime(dest: str | os.PathLike) -> Path:
    """Copy RUNTIME_FILES under `dest` (put `dest` on the device's PYTHONPATH); returns dest."""
    root = Path(__file__).resolve().parents[3]
    dest = Path(dest)
    for rel in RUNTIME_FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dest / rel)
    return dest


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' -> (host, port); a RemoteError says what a valid address looks like."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RemoteError(f"remote address {address!r} is not host:port (e.g. 192.168.1.20:9090; "
                          "start the server with `python -m tvm.exec.rpc_server --port 9090`)")
    return host.strip("[]"), int(port)


def connect_remote(artifact_path: str | os.PathLike, address: str, *, key: str = "",
                   session_timeout: float = 0) -> RemoteModel:
    """Upload the artifact's library to the RPC server at `address` and load it there."""
    return RemoteModel(artifact_path, address, key=key, session_timeout=session_timeout)


class RemoteModel(CompiledModel):
    """A compiled model living on a TVM RPC server: call it like a `CompiledModel`.

    Input checking and `random_inputs` are CompiledModel's; calling and timing go over RPC.
    The local host is not checked against the target (an aarch64 artifact is meant for an
    aarch64 server); the server itself refuses a library for another architecture at load.
    """

    def __init__(self, artifact_path: str | os.PathLike, address: str, *, key: str = "",
                 session_timeout: float = 0):  # CompiledModel.__init__ is not called: no local load
        artifact = read_artifact(artifact_path, check_target=False)
        self.path = artifact.path
        self.manifest: dict[str, Any] = artifact.manifest
        self.ir_text = artifact.ir_text
        self.inputs = artifact.inputs
        self.outputs = artifact.outputs
        self.address = address
        tvm = import_tvm()
        self._tvm = tvm
        host, port = parse_address(address)
        try:
            from tvm import rpc

            self.session = rpc.connect(host, port, key=key, session_timeout=session_timeout)
        except Exception as e:  # noqa: BLE001 - TVM raises its own error types
            raise RemoteError(f"cannot connect to the TVM RPC server at {address}: "
                              f"{_last_line(e)}; is `python -m tvm.exec.rpc_server --host "
                              f"0.0.0.0 --port {port}` running there and the port reachable?"
                              ) from None
        kind = str(self.manifest["target"].get("target", {}).get("kind", "llvm"))
        try:
            self._device = (self.session.cpu(0) if kind in _CPU_KINDS
                            else self.session.device(kind, 0))
            name = f"ember-{artifact.manifest.get('sha256', {}).get(LIBRARY, 'lib')[:16]}.so"
            self.session.upload(bytearray(artifact.members[LIBRARY]), target=name)
            self._lib = self.session.load_module(name)
            self._vm = tvm.runtime.vm.VirtualMachine(self._lib, self._device)
        except Exception as e:  # noqa: BLE001 - remote errors come back as TVM errors
            arch = self.manifest["target"].get("arch", "?")
            raise RemoteError(f"the RPC server at {address} could not load {self.path} "
                              f"(target {self.target!r}, {arch} code): {_last_line(e)}; the "
                              "server must run on a device of that architecture with a TVM "
                              f"runtime {self.manifest.get('tvm_version', '')}".rstrip()
                              ) from None

    def __repr__(self) -> str:
        return f"<RemoteModel {self.manifest.get('name', '?')} at {self.address} target={self.target}>"

    def close(self) -> None:
        """End the session (the server serves one session at a time, so close before the next
        connection). Every remote handle must go: even a remote Device keeps the session open."""
        self._vm = self._lib = self._device = self.session = None
        gc.collect()  # TVM's Python VM/RPC wrappers can sit in reference cycles that keep it open

    def __enter__(self) -> RemoteModel:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- calling ------------------------------------------------------------------------
    def __call__(self, *inputs: Any, **named_inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        arrays = self.check_inputs(inputs, named_inputs)
        self._set_inputs(arrays)
        try:
            self._vm.invoke_stateful("main")
            results = _flatten(self._vm.get_outputs("main"))
        except Exception as e:  # noqa: BLE001
            raise RemoteError(f"running {self._name()} on {self.address} failed: "
                              f"{_last_line(e)}") from None
        return results[0] if len(results) == 1 else tuple(results)

    def _set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        if self._vm is None:
            raise RemoteError(f"{self!r} is closed; connect again with connect_remote")
        tensors = [self._tvm.runtime.tensor(np.ascontiguousarray(a), self._device)
                   for a in arrays]
        self._vm.set_input("main", *tensors)

    def benchmark(self, inputs: Sequence[Any] | None = None, *, warmup: int = 10,
                  repeat: int = 100, batch: int = 1) -> dict[str, float]:
        """Time `main` on the device (TVM time_evaluator; no network, no input copies).

        `warmup` calls are run and discarded first; each of `repeat` samples is one call.
        """
        arrays = list(inputs) if inputs is not None else self.random_inputs(batch)
        self._set_inputs(self.check_inputs(arrays, {}))
        try:
            if warmup > 0:
                self._vm.time_evaluator("invoke_stateful", self._device, number=warmup,
                                        repeat=1)("main")
            res = self._vm.time_evaluator("invoke_stateful", self._device, number=1,
                                          repeat=max(1, repeat))("main")
        except Exception as e:  # noqa: BLE001
            raise RemoteError(f"timing {self._name()} on {self.address} failed: "
                              f"{_last_line(e)}") from None
        t = np.asarray([float(x) for x in res.results]) * 1e3
        return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
                "mean_ms": float(t.mean()), "min_ms": float(t.min()), "repeat": len(t),
                "batch": batch if inputs is None else _batch_of(arrays), "remote": self.address}


def _flatten(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    results: list[np.ndarray] = []
    for item in out:
        results.extend(_flatten(item))
    return results


def _batch_of(arrays: Sequence[Any]) -> int:
    first = np.asarray(arrays[0]) if arrays else np.zeros(())
    return int(first.shape[0]) if first.ndim else 1


def _last_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"
