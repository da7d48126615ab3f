"""The `ember` command: compile, run, inspect, passes, opt, bench, --help and error handling.

Most commands run in-process through `main(argv)` (fast); the console script itself is run
once as a subprocess to check the installed entry point and the exit status of an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.cli import build_parser, main

EMBER = str(Path(sys.executable).with_name("ember"))


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "mlp.ember"
    assert main(["compile", "zoo:digits_mlp", "--passes", "fold,dce", "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize("command", [[], ["compile"], ["run"], ["inspect"], ["passes"], ["opt"],
                                     ["bench"], ["tune"]])
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: ember" in capsys.readouterr().out


def test_every_subcommand_is_declared():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"compile", "run", "inspect", "passes", "opt", "bench", "tune"}


def test_compile_zoo_and_run_with_inputs(mlp_artifact, tmp_path, capsys):
    z = ember.zoo.load("digits_mlp")
    x = z.example_inputs[0].numpy()
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", str(mlp_artifact), "--input", f"x={tmp_path / 'x.npy'}",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "output0" in printed and "[4, 10]" in printed
    got = np.load(out)["output0"]
    np.testing.assert_allclose(got, ember.zoo.as_numpy_fn(z.module)(x), atol=1e-4)
    manifest = ember.load(mlp_artifact).manifest
    assert manifest["pipeline"]["spec"] == "fold,dce"
    assert manifest["inputs"][0]["shape"] == ["batch", 64]  # zoo default: dynamic batch


def test_run_random_and_bench(mlp_artifact, capsys):
    assert main(["run", str(mlp_artifact), "--random", "--batch", "3", "--bench"]) == 0
    printed = capsys.readouterr().out
    assert "[3, 10]" in printed and "latency: median" in printed


def test_run_errors_are_one_red_line_and_exit_1(mlp_artifact, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((2, 63), np.float32))
    assert main(["run", str(mlp_artifact), "--input", f"x={tmp_path / 'bad.npy'}"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "input 'x': dim 1 is 63" in err and "Traceback" not in err
    assert main(["run", str(mlp_artifact), "--input", f"y={tmp_path / 'bad.npy'}"]) == 1
    assert "'y' is not an input" in capsys.readouterr().err


def test_debug_flag_shows_the_exception(tmp_path):
    with pytest.raises(ember.EmberError, match="no such .ember file"):
        main(["--debug", "run", str(tmp_path / "missing.ember"), "--random"])


def test_inspect_shows_manifest_report_and_ir(mlp_artifact, capsys):
    assert main(["inspect", str(mlp_artifact)]) == 0
    out = capsys.readouterr().out
    for expected in ("digits_mlp", "[batch,64]", "runs here", "fold", "dce", "graph @digits_mlp",
                     "linear(", "lib.so"):
        assert expected in out, expected
    assert main(["inspect", str(mlp_artifact), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "digits_mlp"


def test_passes_lists_registered_passes_with_options(capsys):
    from ember.passes import all_passes

    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in all_passes():
        assert name in out
    assert "max_elements" in out  # fold's option
    assert main(["passes", "no_such_pass"]) == 1


def test_compile_python_file_with_factory_and_dynamic_batch(tmp_path, capsys):
    source = tmp_path / "mymodel.py"
    source.write_text(textwrap.dedent("""
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.fc = torch.nn.Linear(6, 3)

            def forward(self, x):
                return torch.relu(self.fc(x))

        def build():
            return Net()

        not_a_model = 3
    """))
    out = tmp_path / "m.ember"
    assert main(["compile", f"{source}:build", "--example-shape", "x=2,6", "--dynamic", "batch",
                 "-o", str(out)]) == 0
    model = ember.load(out)
    assert model.manifest["inputs"] == [{"name": "x", "shape": ["batch", 6], "dtype": "float32"}]
    assert model(np.ones((5, 6), np.float32)).shape == (5, 3)
    capsys.readouterr()
    assert main(["compile", f"{source}:build", "-o", str(tmp_path / "n.ember")]) == 1
    assert "--example-shape" in capsys.readouterr().err
    assert main(["compile", f"{source}:not_a_model", "--example-shape", "x=2,6"]) == 1
    assert "nn.Module instance or a zero-argument factory" in capsys.readouterr().err
    assert main(["compile", f"{source}:missing", "--example-shape", "x=2,6"]) == 1
    assert "has no attribute 'missing'" in capsys.readouterr().err
    assert main(["compile", f"{source}:build", "--example-shape", "x=two"]) == 1
    assert "NAME=D0,D1" in capsys.readouterr().err
    assert not (tmp_path / "n.ember").exists()


def test_compile_unsupported_op_fails_cleanly(tmp_path, capsys):
    source = tmp_path / "bad.py"
    source.write_text("import torch\n\nclass M(torch.nn.Module):\n"
                      "    def forward(self, x):\n        return torch.special.erfcx(x)\n\n"
                      "model = M()\n")
    out = tmp_path / "bad.ember"
    assert main(["compile", f"{source}:model", "--example-shape", "x=2,3", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "special_erfcx" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]


def test_opt_on_saved_graph_text_and_artifact(tmp_path, capsys, mlp_artifact):
    import torch

    class Small(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x + 0.0) * 1.0

    graph = ember.trace(Small(), (torch.randn(2, 3),))
    ember.ir.save(graph, tmp_path / "g.json")
    assert main(["opt", "--passes", "canonicalize,dce", "--check", str(tmp_path / "g.json")]) == 0
    captured = capsys.readouterr()
    assert "relu(" in captured.out and "add(" not in captured.out and "mul(" not in captured.out
    assert "canonicalize" in captured.err  # the report table
    (tmp_path / "g.ember.txt").write_text(str(graph))
    out = tmp_path / "after.ember.txt"
    assert main(["opt", "--passes", "dce", str(tmp_path / "g.ember.txt"), "-o", str(out)]) == 0
    assert ember.ir.parse(out.read_text()).name == graph.name
    assert main(["opt", "--passes", "dce", str(mlp_artifact)]) == 0
    assert "graph @digits_mlp" in capsys.readouterr().out
    assert main(["opt", "--passes", "nope", str(out)]) == 1
    assert "unknown pass 'nope'" in capsys.readouterr().err


def test_bench_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "digits_mlp", "--engines", "torch", "--repeat", "3", "--warmup", "1",
                 "--batches", "1,8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["model"] == "digits_mlp" and row["engine"] == "torch" and row["error"] is None
    assert set(row["latency_ms"]) == {"1", "8"} and row["latency_ms"]["8"]["median"] > 0
    assert "digits_mlp" in capsys.readouterr().out
    assert main(["bench", "digits_mlp", "--engines", "tensorflow"]) == 1


def test_tune_argument_errors_are_one_line(tmp_path, capsys):
    assert main(["tune", "zoo:digits_mlp", "--trials", "0"]) == 1
    assert "must be positive" in capsys.readouterr().err
    assert main(["tune", "zoo:digits_mlp", "--rpc-tracker", "127.0.0.1:9190"]) == 1
    assert "--rpc-key" in capsys.readouterr().err
    a_file = tmp_path / "rec"
    a_file.write_text("x")
    assert main(["tune", "zoo:digits_mlp", "--records", str(a_file), "-o",
                 str(tmp_path / "m.ember")]) == 1
    assert "not a directory" in " ".join(capsys.readouterr().err.split())


def test_bench_tuned_engine_without_records_is_a_row_error(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "digits_mlp", "--engines", "ember.tuned", "--repeat", "2",
                 "--warmup", "1", "--batches", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert "--records" in row["error"]
    assert main(["bench", "digits_mlp", "--engines", "ember.tuned", "--records",
                 str(tmp_path / "nope")]) == 1
    assert "no such directory" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_every_engine_on_one_model(tmp_path):
    from ember import bench

    report = bench.run(["digits_mlp"], repeat=5, warmup=1, batches=(1, 4))
    rows = {r["engine"]: r for r in report["results"]}
    assert set(rows) == set(bench.ENGINES)
    for engine in ("torch", "onnxruntime", "ember"):
        assert rows[engine]["error"] is None, rows[engine]["error"]
        assert rows[engine]["max_abs_diff"] < 1e-4


def test_console_script_runs_and_reports_errors(mlp_artifact, tmp_path):
    env = {**os.environ, "NO_COLOR": "1"}
    ok = subprocess.run([EMBER, "run", str(mlp_artifact), "--random"], capture_output=True,
                        text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "output0" in ok.stdout
    bad = tmp_path / "bad.ember"
    bad.write_bytes(mlp_artifact.read_bytes()[:500])
    proc = subprocess.run([EMBER, "run", str(bad), "--random"], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 1
    assert "truncated or not an .ember file" in proc.stderr and "Traceback" not in proc.stderr
