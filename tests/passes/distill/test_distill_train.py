"""Training options of distill_steps: EMA + lr schedule, reflow's distillation stage, seeds,
keyed checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ember
from ember.errors import PassError
from ember.passes.distill import find_sampler
from ember.passes.distill._train import TrainConfig, Trainer, fingerprint
from tests.passes.distill.helpers import noise

TINY = "iters=4,batch=16,pool=64,progress_bar=false"


def _weights(g):
    return [np.asarray(op.attrs["value"]) for op in g.ops
            if op.kind == "const" and np.asarray(op.attrs["value"]).size > 1
            and op.attrs.get("name") != "sampler_table"]


def _run(g, spec, seed=0):
    return ember.Pipeline.parse(spec).run(g, seed=seed)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_weights(a), _weights(b)))


def test_trainer_warms_up_decays_and_hands_on_the_ema():
    lin = torch.nn.Linear(2, 1)
    tr = Trainer(lin, TrainConfig(lr=0.1, ema=0.9), iters=40)
    lrs = []
    for _ in range(40):
        lrs.append(tr._lr())
        tr.step((lin(torch.ones(1, 2)) - 3.0).pow(2).sum())
    assert lrs[0] < lrs[1] <= 0.1 and lrs[-1] < 0.01  # linear warmup, cosine decay
    raw = [p.detach().clone() for p in lin.parameters()]
    tr.finish()
    assert any(not torch.equal(r, p) for r, p in zip(raw, lin.parameters()))
    assert all(torch.equal(s, p) for s, p in zip(tr.shadow, lin.parameters()))


def test_fingerprint_changes_with_options_and_weights_not_with_paths():
    p = [torch.ones(3)]
    a = fingerprint(TrainConfig(), "x", p)
    assert a == fingerprint(TrainConfig(checkpoint_dir="/tmp/a", progress_bar=False), "x", p)
    assert a != fingerprint(TrainConfig(iters=7), "x", p)
    assert a != fingerprint(TrainConfig(), "x", [torch.zeros(3)])


def test_reflow_with_distillation_is_deterministic_under_a_seed(sampler8):
    _, g = sampler8
    spec = f"distill_steps{{k=1,method=reflow,{TINY},distill_iters=3,seed=5}}"
    a, b = _run(g, spec), _run(g, spec)
    assert _same(a, b) and not _same(a, _run(g, spec.replace("seed=5", "seed=6")))
    hist = a.meta["pass_report"]["passes"][-1]["notes"]["history"]
    assert [h["stage"] for h in hist] == ["reflow", "distill"] and hist[1]["iters"] == 3
    assert find_sampler(a).steps == 1
    assert np.all(np.isfinite(ember.interpret(a, noise())))
    no_distill = _run(g, spec.replace("distill_iters=3", "distill_iters=0"))
    hist = no_distill.meta["pass_report"]["passes"][-1]["notes"]["history"]
    assert [h["stage"] for h in hist] == ["reflow"] and not _same(a, no_distill)


def test_reflow_resumes_each_stage_and_restarts_on_other_options(sampler8, tmp_path):
    _, g = sampler8
    spec = f"distill_steps{{k=2,method=reflow,{TINY},distill_iters=3,checkpoint_dir={tmp_path}}}"
    first = _run(g, spec)
    for f in ("reflow_pairs.npz", "reflow.json", "reflow.safetensors", "distill.safetensors"):
        assert (tmp_path / f).exists()
    assert _same(first, _run(g, spec))  # both stages loaded
    (tmp_path / "distill.json").unlink()  # resume after the reflow stage
    assert _same(first, _run(g, spec))
    other = _run(g, spec.replace("iters=4", "iters=5"))  # another key: trains afresh
    assert not _same(first, other)


def test_progressive_ignores_checkpoints_of_other_options(sampler8, tmp_path):
    _, g = sampler8
    spec = f"distill_steps{{k=2,method=progressive,{TINY},checkpoint_dir={tmp_path}}}"
    first = _run(g, spec)
    key = json.loads((tmp_path / "progress.json").read_text())["key"]
    changed = _run(g, spec.replace("iters=4", "iters=3"))
    assert json.loads((tmp_path / "progress.json").read_text())["key"] != key
    assert not _same(first, changed)
    fresh = _run(g, spec.replace(f",checkpoint_dir={tmp_path}", ""))
    assert _same(first, fresh)  # a resumed-from-nothing run equals one without checkpoints


def test_progressive_final_iters_and_ema_options(sampler8):
    _, g = sampler8
    out = _run(g, f"distill_steps{{k=2,method=progressive,{TINY},final_iters=6,ema=0}}")
    hist = out.meta["pass_report"]["passes"][-1]["notes"]["history"]
    assert [h["iters"] for h in hist] == [4, 6]
    assert not _same(out, _run(g, f"distill_steps{{k=2,method=progressive,{TINY},"
                                  "final_iters=6}"))


@pytest.mark.parametrize("method", ["progressive", "reflow"])
def test_k_equal_n_is_the_identity_with_training_options(sampler8, method):
    _, g = sampler8
    out = _run(g, f"distill_steps{{k=8,method={method},{TINY},final_iters=2,distill_iters=2,"
                  "ema=0.5,chunks=2}")
    assert str(out) == str(g)


@pytest.mark.parametrize("bad", ["ema=1.0", "chunks=0", "iters=0"])
def test_bad_training_options_are_refused(sampler8, bad):
    _, g = sampler8
    with pytest.raises(PassError, match="distill_steps"):
        _run(g, f"distill_steps{{k=2,method=progressive,batch=16,pool=64,"
                f"progress_bar=false,{bad}}}")
