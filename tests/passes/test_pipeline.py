"""The pipeline: spec parsing, options, reports, numeric checks, instruments and failures."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pytest

from ember.errors import PassError, PipelineSpecError, VerificationError
from ember.ir import DType, Graph, TensorType, interpret, load, parse
from ember.passes import DumpDir, Pass, Pipeline, PrintAfter, TimePasses, all_passes
from ember.passes.pipeline import _PASSES, register_pass


@dataclass(frozen=True)
class _Options(Pass):
    """Test pass with one option of every supported type."""

    count: int = 3
    ratio: float = 0.5
    flag: bool = False
    label: str = "x"
    mode: Literal["fast", "slow"] = "fast"
    skip: tuple[str, ...] = ()
    limit: int | None = None

    def run(self, graph, ctx):
        ctx.note(seen=self.count)
        return graph


@dataclass(frozen=True)
class _Explode(Pass):
    """Test pass that breaks: raises, breaks the IR, or returns something else."""

    how: Literal["raise", "break_ir", "none", "perturb"] = "raise"

    def run(self, graph, ctx):
        if self.how == "raise":
            graph.add("neg", graph.inputs[0])  # edits in place first: the saved input must not
            raise ValueError("boom")
        if self.how == "break_ir":
            op = graph.ops[0]
            op.results[0].type = TensorType((99,), DType.f32)
            return graph
        if self.how == "perturb":
            c = graph.const(np.full((2,), 1e-3, np.float32))
            graph.set_outputs(graph.add("add", graph.outputs[0], c))
            return graph
        return None


@dataclass(frozen=True)
class _Loose(_Explode):
    """Test pass with a tolerance."""

    how: Literal["raise", "break_ir", "none", "perturb"] = "perturb"
    tolerance: ClassVar[float | None] = 1e-2


@dataclass(frozen=True)
class _NeedsCalibration(Pass):
    """Test pass with a requirement."""

    requires: ClassVar[tuple[str, ...]] = ("calibration",)

    def run(self, graph, ctx):
        ctx.note(batches=len(ctx.calibration))
        return graph


@pytest.fixture(autouse=True)
def test_passes():
    for name, cls in [("t_opts", _Options), ("t_explode", _Explode), ("t_loose", _Loose),
                      ("t_calib", _NeedsCalibration)]:
        register_pass(name)(cls)
    yield
    for name in ("t_opts", "t_explode", "t_loose", "t_calib"):
        _PASSES.pop(name, None)


def _graph() -> Graph:
    g = Graph("small")
    x = g.add_input("x", TensorType(("batch", 2), DType.f32))
    w = g.const(np.arange(40, dtype=np.float32).reshape(20, 2)[:1], name="w")
    g.set_outputs(g.add("relu", g.add("mul", x, w)))
    return g


# ---- parsing -----------------------------------------------------------------------------
def test_parse_options_of_every_type_and_print_back():
    p = Pipeline.parse(" fold , t_opts{count=7, ratio=1e-3,flag=true,label=\"a b\",mode=slow,"
                       "skip=fc1|fc2,limit=none}, dce")
    opts = p.passes[1]
    assert (opts.count, opts.ratio, opts.flag, opts.label, opts.mode, opts.skip, opts.limit) == \
        (7, 1e-3, True, "a b", "slow", ("fc1", "fc2"), None)
    assert str(p) == 'fold,t_opts{count=7,ratio=0.001,flag=true,label="a b",mode=slow,' \
                     'skip=[fc1,fc2]},dce'
    assert str(Pipeline.parse(str(p))) == str(p)
    assert Pipeline.parse("t_opts{skip=[a,b],limit=4}").passes[0].options()["skip"] == ("a", "b")
    assert Pipeline.parse("t_opts{limit=4}").passes[0].limit == 4
    assert str(Pipeline.parse("t_opts{count=3}")) == "t_opts"  # defaults are left out
    assert len(Pipeline.parse("")) == 0


def test_pipeline_from_instances_and_concatenation():
    p = Pipeline([_Options(count=2), "fold,dce", _NeedsCalibration])
    assert str(p) == "t_opts{count=2},fold,dce,t_calib"
    assert str(p + Pipeline.parse("cse")) == "t_opts{count=2},fold,dce,t_calib,cse"


@pytest.mark.parametrize("spec, message", [
    ("fodl", r"unknown pass 'fodl' \(did you mean fold\?\); known passes: canonicalize, cse"),
    ("fold{max_elems=3}", r"pass 'fold' has no option 'max_elems'; its options are: "
                          r"max_elements: int = 1048576"),
    ("fold{max_elements=lots}", r"fold\{max_elements=...\}: 'lots' is not a valid int"),
    ("t_opts{mode=medium}", r"'medium' is not a valid one of fast\|slow"),
    ("t_opts{flag=maybe}", r"'maybe' is not a valid bool"),
    ("t_opts{ratio=}", r"'' is not a valid float"),
    ("t_opts{count}", r"option 'count' is not key=value"),
    ("t_opts{count=1,count=2}", r"option 'count' given twice"),
    ("fold,,dce", r"empty item"),
    ("fold{max_elements=3", r"unclosed bracket"),
    ("fold}", r"unbalanced"),
    ("fold dce", r"cannot read 'fold dce'"),
    ("t_opts{limit=x}", r"'x' is not a valid int or none"),
])
def test_bad_specs_raise_pipeline_spec_error(spec, message):
    with pytest.raises(PipelineSpecError, match=message):
        Pipeline.parse(spec)


def test_registered_passes_have_real_docstrings_and_parse_by_name():
    for name, cls in all_passes().items():
        doc = cls.__doc__ or ""
        assert doc and not doc.startswith(cls.__name__ + "("), f"pass {name} has no docstring"
        assert Pipeline.parse(name).passes[0].name == name


# ---- running -------------------------------------------------------------------------------
def test_run_records_report_and_keeps_input_graph():
    g = _graph()
    before = str(g)
    p = Pipeline.parse("t_opts{count=5},fold,dce")
    calls = []
    out = p.run(g, check=True, progress=lambda name, i, n: calls.append((name, i, n)))
    assert str(g) == before and out is not g
    assert calls == [("t_opts", 0, 3), ("fold", 1, 3), ("dce", 2, 3)]
    rows = p.report.passes
    assert [r.name for r in rows] == ["t_opts", "fold", "dce"]
    assert rows[0].notes == {"seen": 5} and rows[0].options["count"] == 5
    assert rows[1].ops_before == {"const": 1, "mul": 1, "relu": 1}
    assert rows[1].weight_bytes_before == 8 and rows[1].max_abs_error == 0.0
    assert rows[1].step_error == 0.0 and rows[2].seconds >= 0
    data = json.loads(json.dumps(out.meta["pass_report"]))
    assert data["spec"] == "t_opts{count=5},fold,dce" and len(data["passes"]) == 3
    text = p.report.render()
    assert "t_opts{count=5}" in text and "fold" in text


def test_second_pipeline_appends_to_graph_report():
    out = Pipeline.parse("fold").run(_graph())
    out = Pipeline.parse("dce").run(out)
    assert [r["name"] for r in out.meta["pass_report"]["passes"]] == ["fold", "dce"]


def test_tolerance_checked_per_step_against_sample_inputs():
    x = np.full((3, 2), 20.0, np.float32)
    p = Pipeline.parse("t_loose,dce")
    out = p.run(_graph(), sample_inputs=[x])
    loose, dce = p.report.passes
    # step error is relative to the output scale (20)
    assert loose.step_error == pytest.approx(1e-3 / 20, rel=1e-2)
    assert dce.step_error == 0.0 and dce.max_abs_error == pytest.approx(1e-3, rel=1e-2)
    np.testing.assert_allclose(interpret(out, x), interpret(_graph(), x) + 1e-3, rtol=1e-6)
    with pytest.raises(PassError, match=r"changed outputs but states it is exact"):
        Pipeline.parse("t_explode{how=perturb}").run(_graph(), check=True)


def test_requirements_are_checked_before_running():
    with pytest.raises(PassError, match=r"needs calibration data"):
        Pipeline.parse("t_calib").run(_graph())
    calib = [(np.ones((4, 2), np.float32),)] * 3
    p = Pipeline.parse("t_calib")
    p.run(_graph(), calibration=calib, check=True)
    assert p.report.passes[0].notes == {"batches": 3}


def test_failing_pass_error_names_pass_history_and_saved_input(tmp_path):
    spec = "fold,t_explode{how=raise}"
    with pytest.raises(PassError) as info:
        Pipeline.parse(spec).run(_graph())
    msg = str(info.value)
    assert "pass 't_explode' (#2 of 2) failed: ValueError: boom" in msg
    assert "options: {'how': 'raise'}" in msg and "passes already run: fold" in msg
    assert 'reproduce with: ember opt --passes "t_explode" ' in msg
    saved = load(info.value.saved_input)
    assert str(saved) == str(Pipeline.parse("fold").run(_graph()))  # input, not half-edited
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("how, message", [
    ("break_ir", r"VerificationError: verify: const: stored result types f32\[99\]"),
    ("none", r"run\(\) returned NoneType, not a Graph"),
])
def test_broken_results_become_pass_errors(how, message):
    with pytest.raises(PassError, match=message):
        Pipeline.parse(f"t_explode{{how={how}}}").run(_graph())


def test_failure_with_elided_weights_saves_text(tmp_path):
    g = parse(str(_graph()).replace("dense<f32[1,2]: [0.0, 1.0]>", 'blob<f32[1,2] "abcd">'))
    with pytest.raises(PassError, match=r"IR text only; weights were not available"):
        Pipeline.parse("t_explode").run(g)


def test_broken_input_is_reported_before_any_pass():
    g = _graph()
    g.ops[1].results[0].type = TensorType((7,), DType.f32)
    with pytest.raises(VerificationError):
        Pipeline.parse("fold").run(g)


def test_instruments_print_dump_and_time(tmp_path):
    out, timing = io.StringIO(), io.StringIO()
    p = Pipeline.parse("t_opts,fold,dce")
    p.run(_graph(), instruments=[PrintAfter("fold", out), DumpDir(tmp_path), TimePasses(timing)])
    assert out.getvalue().startswith("// ---- IR after fold ----\ngraph @small")
    assert out.getvalue().count("graph @") == 1
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["00-input.ember.txt", "01-t_opts.ember.txt", "02-fold.ember.txt",
                     "03-dce.ember.txt"]
    assert parse((tmp_path / "02-fold.ember.txt").read_text()).op_counts() == \
        {"const": 1, "mul": 1, "relu": 1}
    assert "t_opts,fold,dce" in timing.getvalue()
    everything = io.StringIO()
    Pipeline.parse("fold,dce").run(_graph(), instruments=[PrintAfter("all", everything)])
    assert everything.getvalue().count("graph @") == 2
