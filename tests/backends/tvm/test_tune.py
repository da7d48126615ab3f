"""Tuning records: stored beside the artifact, applied by the build, reused without re-tuning,
never needed for correctness; clear errors for bad records and unreachable trackers.

The fast tests write a record by hand (a simple vectorized schedule committed to the winners
database), so no MetaSchedule search runs in CI; the slow one tunes a tiny graph for real.
"""

from __future__ import annotations

import importlib
import json
import time

import numpy as np
import pytest
import torch

import ember
from ember.errors import BuildError, InputError, RemoteError

tune = importlib.import_module("ember.backends.tvm.tune")


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, x):
        return torch.relu(self.fc(x)) * 2.0


@pytest.fixture(scope="module")
def tiny():
    m = _Tiny().eval()
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = m(x).numpy()
    return m, x, want


def _kernels(m, x):
    from ember.backends.tvm.lower import lower
    from ember.backends.tvm.targets import resolve
    from ember.compiler import import_model

    spec = resolve("cpu")
    return tune.fused_kernels(lower(import_model(m, (x,), None), target=spec), spec)


def _hand_record(records_dir, m, x) -> str:
    """A winners database with one hand-made schedule (parallel + vectorize) for the largest
    kernel, as `ember tune` would leave it. Returns the kernel's name."""
    from tvm import s_tir
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.database import TuningRecord

    kernels, _, tgt = _kernels(m, x)
    k = kernels[0]
    sch = s_tir.Schedule(k.mod)
    block = sch.get_child_blocks(sch.get_sblock("root") if hasattr(sch, "get_sblock")
                                 else sch.get_block("root"))[-1]
    loops = sch.get_loops(block)
    sch.parallel(loops[0])
    db = tune.Records(records_dir).database(create=True)
    workload = db.commit_workload(k.mod)
    db.commit_tuning_record(TuningRecord(sch.trace, workload, [1e-6], tgt,
                                         ArgInfo.from_prim_func(k.mod["main"])))
    summary = {"target": str(tgt), "kernels": {k.key: {"name": k.name, "choice": "tuned",
                                                       "ember_us": 2.0, "tuned_us": 1.0}}}
    (records_dir / "summary.json").write_text(json.dumps(summary))
    return k.name


def test_static_kernels_are_found(tiny):
    m, x, _ = tiny
    kernels, dynamic, _ = _kernels(m, x)
    assert kernels and dynamic == 0
    assert all(tune.is_static(k.func) for k in kernels)


def test_records_beside_artifact_are_applied_and_correct(tiny, tmp_path):
    m, x, want = tiny
    out = tmp_path / "tiny.ember"
    name = _hand_record(tune.default_records_dir(out), m, x)
    path = ember.compile(m, (x,), output=out, progress=False)  # finds tiny.tune/ by itself
    model = ember.load(path)
    tuning = model.manifest["tuning"]
    assert tuning["applied"] == 1 and tuning["applied_kernels"] == [name]
    np.testing.assert_allclose(model(x.numpy()), want, rtol=1e-5, atol=1e-5)
    # records=False: ember's schedules only, same numbers
    plain = ember.compile(m, (x,), output=tmp_path / "plain.ember", records=False,
                          progress=False)
    assert "tuning" not in ember.load(plain).manifest
    np.testing.assert_allclose(ember.load(plain)(x.numpy()), want, rtol=1e-5, atol=1e-5)


def test_compile_with_tune_reuses_decided_records(tiny, tmp_path):
    """Every kernel already decided in the records: tune=... applies them without a search."""
    m, x, want = tiny
    records = tmp_path / "rec"
    _hand_record(records, m, x)
    kernels, _, _ = _kernels(m, x)
    summary = json.loads((records / "summary.json").read_text())
    for k in kernels[1:]:
        summary["kernels"][k.key] = {"name": k.name, "choice": "ember"}
    (records / "summary.json").write_text(json.dumps(summary))
    t0 = time.perf_counter()
    model = ember.compile(m, (x,), tune=4, records=records, progress=False)
    assert time.perf_counter() - t0 < 60
    assert model.manifest["tuning"]["tuned_now"]["reused"] is True
    assert model.manifest["tuning"]["applied"] == 1
    assert not (records / "search").exists()  # no search was started
    np.testing.assert_allclose(model(x.numpy()), want, rtol=1e-5, atol=1e-5)


def test_bad_records(tiny, tmp_path):
    m, x, _ = tiny
    a_file = tmp_path / "records.txt"
    a_file.write_text("not a directory")
    with pytest.raises(InputError, match="not a directory"):
        ember.compile(m, (x,), records=a_file, progress=False)
    with pytest.raises(InputError, match="no tuning records in"):
        ember.compile(m, (x,), records=tmp_path / "missing", progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{oops")
    with pytest.raises(BuildError, match="unreadable.*ember tune"):
        ember.compile(m, (x,), records=broken, progress=False)
    with pytest.raises(InputError, match="tune="):
        ember.compile(m, (x,), tune="lots", records=tmp_path / "r", progress=False)
    with pytest.raises(InputError, match="records=DIR"):
        ember.compile(m, (x,), tune=4, progress=False)


def test_unreachable_tracker_is_named(tiny, tmp_path):
    import socket

    from ember.backends.tvm.tune_measure import make_runner

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tune.TuneConfig(rpc_tracker=f"127.0.0.1:{port}", rpc_key="box")
    with pytest.raises(RemoteError, match=f"127.0.0.1:{port}.*rpc_tracker"):
        make_runner(config, None)
    with pytest.raises(RemoteError, match="host:port"):
        make_runner(tune.TuneConfig(rpc_tracker="nohost", rpc_key="k"), None)


@pytest.mark.slow
def test_tune_tiny_graph_then_reuse(tiny, tmp_path):
    """A real (tiny) MetaSchedule search; the second compile reuses the records, fast."""
    m, x, want = tiny
    out = tmp_path / "tiny.ember"
    t0 = time.perf_counter()
    first = ember.load(ember.compile(m, (x,), output=out, tune=8, progress=False))
    first_s = time.perf_counter() - t0
    np.testing.assert_allclose(first(x.numpy()), want, rtol=1e-5, atol=1e-5)
    summary = json.loads((tmp_path / "tiny.tune" / "summary.json").read_text())
    assert summary["kernels"] and all(e["choice"].startswith(("ember", "tuned"))
                                      for e in summary["kernels"].values())
    for e in summary["kernels"].values():  # a kept record beat ember's schedule as measured
        if e["choice"] == "tuned":
            assert e["tuned_us"] < e["ember_us"]
    t0 = time.perf_counter()
    second = ember.load(ember.compile(m, (x,), output=out, tune=8, progress=False))
    assert second.manifest["tuning"]["tuned_now"]["reused"] is True
    assert time.perf_counter() - t0 < first_s
    np.testing.assert_allclose(second(x.numpy()), want, rtol=1e-5, atol=1e-5)
