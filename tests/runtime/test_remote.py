"""Remote devices over TVM RPC: a `python -m tvm.exec.rpc_server` on loopback (started here, on a
free port) runs and times an artifact; `ember run --remote` does the same from the CLI; a bad
address or a dead server is a RemoteError. The slow test runs the server under qemu-aarch64."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.backends.tvm.remote import connect_remote, parse_address
from ember.errors import InputError, RemoteError

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def rpc_server(python: Sequence[str], env: dict[str, str] | None = None,
               timeout: float = 120, executable: str | None = None) -> Iterator[str]:
    """Start `python -m tvm.exec.rpc_server` on a free loopback port; yields 'host:port'.

    `executable` replaces sys.executable in the server, which re-executes it for its workers.
    The server and the worker processes it spawns share a new process group, ended as one.
    """
    port = _free_port()
    shim = (f"import runpy, sys; sys.executable = {executable or python[0]!r}; "
            "sys.argv = ['rpc_server', '--host', '127.0.0.1', '--port', "
            f"'{port}', '--port-end', '{port + 1}', '--silent']; "
            "runpy.run_module('tvm.exec.rpc_server', run_name='__main__')")
    proc = subprocess.Popen([*python, "-c", shim], env={**os.environ, **(env or {})},
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"RPC server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"RPC server did not listen on port {port} in {timeout:.0f}s")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stderr.close()


@pytest.fixture(scope="module")
def local_server() -> Iterator[str]:
    with rpc_server([sys.executable], env={"TVM_USE_RUNTIME_LIB": "1"}) as address:
        yield address


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    z = ember.zoo.load("digits_mlp")
    path = ember.compile(z.module, z.example_inputs, target="cpu",
                         output=tmp_path_factory.mktemp("remote") / "mlp.ember", progress=False)
    return z, path


def test_remote_run_matches_local_and_times_on_device(local_server, mlp_artifact):
    z, path = mlp_artifact
    x = z.example_inputs[0].numpy()
    want = ember.load(path)(x)
    with connect_remote(path, local_server) as m:
        np.testing.assert_allclose(m(x), want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(m(x=x * 2), ember.load(path)(x * 2), rtol=1e-6, atol=1e-6)
        stats = m.benchmark([x], warmup=2, repeat=5)
    assert stats["repeat"] == 5 and stats["remote"] == local_server
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    with pytest.raises(RemoteError, match="closed"):
        m(x)


def test_remote_checks_inputs_before_sending(local_server, mlp_artifact):
    _, path = mlp_artifact
    with connect_remote(path, local_server) as m, pytest.raises(InputError, match="dtype"):
        m(np.zeros(tuple(m.inputs[0].shape), np.float64))


def test_cli_run_remote(local_server, mlp_artifact, tmp_path):
    _, path = mlp_artifact
    out = tmp_path / "y.npz"
    proc = subprocess.run([sys.executable, "-m", "ember.cli", "run", str(path), "--random",
                           "--remote", local_server, "--bench", "--output", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"timed on {local_server}" in " ".join(proc.stdout.split())  # rich wraps lines
    m = ember.load(path)
    with np.load(out) as got:
        np.testing.assert_allclose(got[m.output_names[0]], m(*m.random_inputs(1)), atol=1e-6)


@pytest.mark.parametrize("bad", ["localhost", "host:port", ":9090", "1.2.3.4:"])
def test_bad_address(bad):
    with pytest.raises(RemoteError, match="host:port"):
        parse_address(bad)


def test_no_server_is_a_remote_error(mlp_artifact):
    _, path = mlp_artifact
    with pytest.raises(RemoteError, match="cannot connect.*rpc_server"):
        connect_remote(path, f"127.0.0.1:{_free_port()}")


@pytest.mark.slow
def test_remote_aarch64_server_under_qemu(tmp_path):
    """An aarch64 artifact on an RPC server running in qemu-aarch64 (a stand-in for a board)."""
    sysroot = Path(os.environ.get("EMBER_EDGE_SYSROOT", ROOT / ".cache/edge-sysroot/aarch64"))
    if shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("needs qemu-user and g++-aarch64-linux-gnu (scripts/install-cross.sh)")
    if not (sysroot / ".ready").exists():
        pytest.skip(f"no aarch64 sysroot at {sysroot}: run scripts/edge-sysroot.sh")
    z = ember.zoo.load("digits_mlp")
    arm = ember.compile(z.module, z.example_inputs, target="aarch64",
                        output=tmp_path / "arm.ember", progress=False)
    x = z.example_inputs[0].numpy()
    want = ember.compile(z.module, z.example_inputs, target="cpu", progress=False)(x)
    # The server re-executes sys.executable for its workers: point it at a qemu wrapper.
    wrapper = tmp_path / "python-aarch64"
    wrapper.write_text(f'#!/bin/sh\nexec qemu-aarch64 -L {sysroot} '
                       f'{sysroot}/usr/bin/python3.11 "$@"\n')
    wrapper.chmod(0o755)
    env = {"TVM_USE_RUNTIME_LIB": "1", "PYTHONPATH": f"{sysroot}/opt/ember/site-packages"}
    with (rpc_server([str(wrapper)], env=env, timeout=240, executable=str(wrapper)) as address,
          connect_remote(arm, address) as m):
        np.testing.assert_allclose(m(x), want, atol=1e-4, rtol=1e-4)
        assert m.benchmark([x], warmup=1, repeat=3)["median_ms"] > 0


def test_cli_bench_remote(local_server):
    """`ember bench --remote`: the ember artifact is uploaded and timed on the server."""
    proc = subprocess.run([sys.executable, "-m", "ember.cli", "bench", "digits_mlp", "--remote",
                           local_server, "--batches", "1,4", "--warmup", "1", "--repeat", "5"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = " ".join(proc.stdout.split())
    assert f"timed on {local_server}" in out
    assert "digits_mlp" in out and "ember" in out and "n/a" not in out


def test_bench_remote_engine_reports_device_time(local_server):
    from ember import bench

    report = bench.run(["digits_mlp"], engines=["ember"], batches=[2], warmup=1, repeat=3,
                       remote=local_server)
    (row,) = report["results"]
    assert row["error"] is None, row["error"]
    assert report["config"]["remote"] == local_server
    assert 0 < row["latency_ms"]["2"]["median"] and row["max_abs_diff"] < 1e-4


@contextlib.contextmanager
def rpc_tracker_with_server(key: str) -> Iterator[str]:
    """`python -m tvm.exec.rpc_tracker` on a free port plus one rpc_server registered with
    `key`; yields the tracker's 'host:port'."""
    from tvm import rpc

    port = _free_port()
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host",
                                "127.0.0.1", "--port", str(port), "--port-end", str(port + 1),
                                "--silent"], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [tracker]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or tracker.poll() is not None:
                    pytest.fail("RPC tracker did not start")
                time.sleep(0.2)
        sport = _free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port",
             str(sport), "--port-end", str(sport + 1), "--tracker", f"127.0.0.1:{port}",
             "--key", key, "--silent"], start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        while key not in rpc.connect_tracker("127.0.0.1", port).summary().get("queue_info", {}):
            if time.monotonic() > deadline:
                pytest.fail(f"no RPC server registered with key {key!r}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


@pytest.mark.slow
def test_tune_measures_through_rpc_tracker(tmp_path):
    """MetaSchedule's RPCRunner: the candidates and ember's own schedules are timed on the
    device registered with the tracker (here a loopback server)."""
    import importlib

    import torch

    pytest.importorskip("tornado", reason="TVM's rpc_tracker needs tornado (pip install tornado)")
    tune = importlib.import_module("ember.backends.tvm.tune")
    m = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval()
    x = torch.randn(2, 16)
    with rpc_tracker_with_server("loopback") as tracker:
        config = tune.TuneConfig(trials=4, rpc_tracker=tracker, rpc_key="loopback",
                                 progress=False)
        model = ember.compile(m, (x,), tune=config, records=tmp_path / "rec", progress=False)
        with pytest.raises(RemoteError, match="no server with key 'nokey'"):
            ember.compile(m, (x,), tune=tune.TuneConfig(trials=4, rpc_tracker=tracker,
                                                         rpc_key="nokey", force=True),
                          records=tmp_path / "rec2", progress=False)
    summary = tune.Records(tmp_path / "rec").summary()
    assert any(e["ember_us"] for e in summary["kernels"].values())
    with torch.no_grad():
        np.testing.assert_allclose(model(x.numpy()), m(x).numpy(), rtol=1e-5, atol=1e-5)
