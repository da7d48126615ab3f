from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.errors import PassError
from ember.passes.distill import find_sampler
from tests.passes.distill.helpers import noise

TINY = "iters=4,batch=16,pool=64,progress_bar=false"


def _weights(g):
    return [np.asarray(op.attrs["value"]) for op in g.ops
            if op.kind == "const" and np.asarray(op.attrs["value"]).size > 1
            and op.attrs.get("name") != "sampler_table"]


def _run(g, spec, seed=0):
    return ember.Pipeline.parse(spec).run(g, seed=seed)


def test_progressive_is_deterministic_under_a_seed(sampler8):
    _, g = sampler8
    spec = f"distill_steps{{k=2,method=progressive,{TINY},seed=3}}"
    a, b = _run(g, spec), _run(g, spec)
    c = _run(g, spec.replace("seed=3", "seed=4"))
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(_weights(a), _weights(c)))
    assert any(not np.array_equal(wa, w0) for wa, w0 in zip(_weights(a), _weights(g)))
    loop = find_sampler(a)
    assert loop.steps == 2 and a.meta["sampler"]["distilled"]["method"] == "progressive"
    hist = a.meta["pass_report"]["passes"][-1]["notes"]["history"]
    assert [h["steps"] for h in hist] == [4, 2]


def test_progressive_resumes_from_checkpoints(sampler8, tmp_path):
    _, g = sampler8
    spec = f"distill_steps{{k=2,method=progressive,{TINY},checkpoint_dir={tmp_path}}}"
    first = _run(g, spec)
    assert (tmp_path / "round0.safetensors").exists() and (tmp_path / "progress.json").exists()
    resumed = _run(g, spec)  # every round is done: loads the last checkpoint
    for wa, wb in zip(_weights(first), _weights(resumed)):
        np.testing.assert_array_equal(wa, wb)
    # resuming after round 0 gives what an uninterrupted run gives
    import json

    info = json.loads((tmp_path / "progress.json").read_text())
    info["rounds_done"] = 1
    info["history"] = info["history"][:1]
    (tmp_path / "progress.json").write_text(json.dumps(info))
    again = _run(g, spec)
    for wa, wb in zip(_weights(first), _weights(again)):
        np.testing.assert_allclose(wa, wb, atol=1e-6)


def test_reflow_trains_a_one_step_student(sampler8):
    _, g = sampler8
    out = _run(g, f"distill_steps{{k=1,method=reflow,{TINY}}}")
    loop = find_sampler(out)
    assert loop.steps == 1 and loop.solvers == ["euler"]
    assert np.all(np.isfinite(ember.interpret(out, noise())))
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(out), _weights(g)))


@pytest.mark.parametrize("method", ["progressive", "reflow"])
def test_k_equal_n_is_the_identity(sampler8, method):
    _, g = sampler8
    out = _run(g, f"distill_steps{{k=8,method={method},{TINY}}}")
    assert str(out) == str(g)


def test_progressive_needs_a_power_of_two_ratio(sampler8):
    _, g = sampler8
    with pytest.raises(PassError, match="halves the step count"):
        _run(g, f"distill_steps{{k=3,method=progressive,{TINY}}}")
