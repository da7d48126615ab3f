"""ONNX's node conformance tests through ember's importer and reference interpreter (CI gate).

Runs every node test whose op types ember claims (a converter exists for each op in the model)
in-process, and fails on any crash (an exception that is not an EmberError) or when the pass
count drops below the baseline committed in baseline.json; a fixed sample of the same cases
goes through TVM too (no crash, no drop of its pass count). The full TVM column and the
four-way comparison with ONNX Runtime and TVM's importer live in
benchmarks/onnx_conformance.py and in the slow test below. To raise the baseline after an improvement, run this file with
EMBER_UPDATE_BASELINE=1.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("onnx")
from benchmarks import onnx_conformance as conf

BASELINE = Path(__file__).with_name("baseline.json")


@pytest.fixture(scope="module")
def claimed_cases():
    return [e for e in conf.generate() if conf.claimed(e)]


def test_interpreter_column_no_crash_and_no_regression(claimed_cases):
    results = [conf.run_case(e["name"], "interp", rtol=e["rtol"], atol=e["atol"])
               for e in claimed_cases]
    counts = Counter(r["status"] for r in results)
    crashes = [f"{r['case']}: {r['detail'][:300]}" for r in results if r["status"] == "crash"]
    assert not crashes, f"{len(crashes)} crash(es) (non-EmberError exceptions):\n" + \
        "\n".join(crashes[:20])
    baseline = json.loads(BASELINE.read_text())
    if os.environ.get("EMBER_UPDATE_BASELINE") and counts["pass"] >= baseline["interp_pass"]:
        baseline.update(interp_pass=counts["pass"], claimed_cases=len(claimed_cases))
        BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
    wrong = [f"{r['case']}: {r['detail']}" for r in results if r["status"] == "wrong"]
    assert counts["pass"] >= baseline["interp_pass"], (
        f"interpreter passes {counts['pass']} of {len(claimed_cases)} claimed node tests, "
        f"baseline {baseline['interp_pass']}; wrong results:\n" + "\n".join(wrong[:30]))


def test_every_claimed_case_names_its_gap_when_unsupported(claimed_cases):
    """Unsupported claimed cases must say which node and why (not a bare error)."""
    sample = claimed_cases[::25]
    for e in sample:
        r = conf.run_case(e["name"], "interp")
        if r["status"] == "unsupported":
            assert len(r["detail"]) > 40, r


def tvm_sample(claimed_cases) -> list[str]:
    """A fixed every-12th sample of the claimed cases, minus the expanded attention graphs
    (10-30 s of TVM build each): about 90 cases, a minute of CI on 2 cores."""
    fast = [e["name"] for e in claimed_cases if "attention" not in e["name"]]
    return fast[::12]


def test_tvm_column_sample_no_crash_and_no_regression(claimed_cases):
    """ember import + TVM build + relax VM on a fixed sample (worker processes, timeouts)."""
    names = tvm_sample(claimed_cases)
    results = conf.run_all(names, ["tvm"], jobs=1, log=lambda *_: None)
    counts = Counter(r["status"] for r in results)
    crashes = [f"{r['case']}: {r['detail'][:300]}" for r in results if r["status"] == "crash"]
    assert not crashes, f"{len(crashes)} TVM crash(es):\n" + "\n".join(crashes[:20])
    baseline = json.loads(BASELINE.read_text())
    if os.environ.get("EMBER_UPDATE_BASELINE") and counts["pass"] >= baseline.get("tvm_sample_pass", 0):
        baseline.update(tvm_sample_pass=counts["pass"], tvm_sample_cases=len(names))
        BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
    bad = [f"{r['case']}: {r['status']} {r['detail'][:200]}" for r in results
           if r["status"] != "pass"]
    assert counts["pass"] >= baseline.get("tvm_sample_pass", 0), (
        f"TVM passes {counts['pass']} of {len(names)} sampled claimed node tests, baseline "
        f"{baseline.get('tvm_sample_pass')}; failures:\n" + "\n".join(bad[:30]))


@pytest.mark.slow
def test_tvm_column_on_claimed_cases(claimed_cases):
    """ember import + TVM build + relax VM on every claimed case: zero crashes."""
    results = conf.run_all([e["name"] for e in claimed_cases], ["tvm"], jobs=2,
                           log=lambda *_: None)
    crashes = [f"{r['case']}: {r['detail'][:200]}" for r in results if r["status"] == "crash"]
    assert not crashes, "\n".join(crashes[:20])
