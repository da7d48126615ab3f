"""`ember.compile` (this is ember/compiler.py): the table of contents of the whole system, one step per line.

    model ──trace──▶ Graph ──passes──▶ Graph ──lower──▶ Relax IRModule ──build──▶ executable
          ──export + write_artifact──▶ model.ember

Each step lives in its own package (frontends, passes, backends/tvm, runtime); this file only
names them in order, times them for the manifest and shows progress on the slow ones.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError


def compile(module_or_graph: Any, example_inputs: Sequence[Any] | None = None, passes: str = "",
            target: str | dict = "cpu", output: str | os.PathLike | None = None,
            calibration: Sequence[tuple] | None = None,
            dynamic_dims: Mapping[Any, Mapping[int, str]] | None = None, check: bool = True,
            progress: bool = True, tune: Any = False,
            records: str | os.PathLike | bool | None = None):
    """Compile a torch module (or an ember Graph, or a .onnx path) into a .ember artifact.

    Returns the artifact's Path when `output` is given, else the loaded `CompiledModel`.
    `check=True` runs the reference interpreter after every pass and enforces each pass's
    stated tolerance. On any failure nothing is written at `output`.

    Tuning (MetaSchedule, see backends/tvm/tune.py): `tune=True` or `tune=<trials>` (or a
    `TuneConfig`) tunes the kernels that have no decision in the records yet, and
    the build applies the winning records. `records`: the records directory; by default
    `output` with the suffix `.tune` (`model.ember` -> `model.tune/`), used whenever it exists,
    so the next compile reuses it without tuning again; `records=False` ignores it.
    """
    from .backends import tvm as backend
    from .passes import Pipeline
    from .runtime import write_artifact

    steps = _Steps(progress)
    pipeline = Pipeline.parse(passes)  # parse and resolve first: a typo in either should not
    spec = backend.resolve(target)  # wait for tracing
    checking = check and len(pipeline) > 0
    with steps("trace"):  # TVM's import warms up in the background meanwhile (_tvm_startup)
        graph = import_model(module_or_graph, example_inputs, dynamic_dims)
    _install_speed_oracle()  # the quantize pass keeps a layer float where int8 is not faster
    with steps("passes") as step:
        graph = pipeline.run(graph, calibration=calibration, check=checking,
                             sample_inputs=_samples(example_inputs) if checking else None,
                             progress=step.pass_progress)
    with steps("lower"):
        relax_module = backend.lower(graph, target=spec)
    records_dir, tune_config = _tuning(tune, records, output, progress)
    if tune_config is not None:
        with steps("tune", live=False):
            tuned = _tune(relax_module, spec, records_dir, tune_config, steps)
    with steps("build"):
        executable = backend.build(relax_module, spec, records=records_dir)
    with steps("write"), tempfile.TemporaryDirectory(prefix="ember-build-") as tmp:
        library = backend.export(executable, Path(tmp) / "lib.so")
        steps.timings.update({f"build.{k}": v for k, v in executable.ember_timings.items()})
        tuning = getattr(executable, "ember_tuning", None)
        if tuning is not None and tune_config is not None:
            tuning = {**tuning, "tuned_now": tuned}
        extra, members = ({"tuning": tuning} if tuning else {}), {}
        if spec.target_dict.get("kind") == "cuda":  # machine code, so the device needs no nvcc
            from .backends.tvm.cuda_binary import precompile

            members, extra["cuda_binary"] = precompile(executable, spec.tvm_target(),
                                                       spec.target_dict["arch"])
        manifest = make_manifest(graph, spec, pipeline, steps.timings, extra=extra or None)
        path = Path(output) if output is not None else Path(tmp) / "model.ember"
        write_artifact(path, manifest=manifest, lib=Path(library), ir_text=str(graph),
                       extra_members=members)
        if output is None:  # load before the temp dir goes away
            from .runtime import load

            return load(path)
    return path


def _tuning(tune: Any, records: Any, output: Any, progress: bool) -> tuple[Path | None, Any]:
    """(records dir or None, TuneConfig or None) from compile's `tune` and `records`."""
    from .backends.tvm.tune import Records, TuneConfig, default_records_dir

    if records is False:
        if tune:
            raise InputError("tune=... needs a records directory; records=False turns it off")
        return None, None
    path = Path(records) if records not in (None, True) else (
        default_records_dir(output) if output is not None else None)
    if isinstance(tune, TuneConfig):
        config = tune
    elif tune is True:
        config = TuneConfig(progress=progress)
    elif isinstance(tune, int) and not isinstance(tune, bool) and tune > 0:
        config = TuneConfig(trials=tune, progress=progress)
    elif tune in (False, None, 0):
        config = None
    else:
        raise InputError(f"tune={tune!r}: pass True, a number of trials (> 0) or a TuneConfig")
    if config is not None and path is None:
        raise InputError("tuning without `output` needs records=DIR to keep the tuning "
                         "records in")
    if path is not None and config is None and not Records(path).exists:  # a file: error here
        if records not in (None, True):
            raise InputError(f"no tuning records in {path} (expected {path}/summary.json); "
                             "tune first with `ember tune ... --records DIR` or pass tune=")
        return None, None
    return path, config


def _tune(relax_module: Any, spec: Any, records_dir: Path, config: Any, steps: _Steps) -> dict:
    from .backends.tvm.tune import tune_module

    report = tune_module(relax_module, spec, records_dir, config, log_fn=steps.note)
    if report["reused"]:
        steps.note(f"tuning records in {records_dir} cover every kernel: reused, not re-tuned")
    return {k: report[k] for k in ("kernels", "skipped_dynamic", "tuned", "kept_ember",
                                   "trials", "reused")}


def _install_speed_oracle() -> None:
    from .backends.tvm.layer_timer import TvmLayerTimer
    from .passes.quantize import cost

    if not cost.has_oracle():
        cost.install_oracle(TvmLayerTimer())


def import_model(model: Any, example_inputs: Sequence[Any] | None,
                 dynamic_dims: Mapping[Any, Mapping[int, str]] | None):
    """An ember Graph from a Graph (as is), a `.onnx` path, or a torch module (traced)."""
    from .ir import Graph

    if isinstance(model, Graph):
        return model
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"):
        try:
            from .frontends import onnx as onnx_frontend  # type: ignore[attr-defined]
        except ImportError as e:
            raise InputError(f"cannot compile {model}: the ONNX frontend "
                             f"(ember.frontends.onnx) is not available ({e})") from None
        return onnx_frontend.load(model)
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module):
        raise InputError(f"compile expects a torch.nn.Module, an ember Graph or a .onnx path, "
                         f"got {type(model).__name__}")
    if example_inputs is None:
        raise InputError("compiling a torch module needs example_inputs (a tuple of tensors) "
                         "to trace it with")
    from .frontends.torch import trace

    return trace(model, tuple(example_inputs), dynamic_dims=dynamic_dims)


def make_manifest(graph: Any, spec: Any, pipeline: Any, timings: Mapping[str, float],
                  extra: Mapping[str, Any] | None = None) -> dict:
    """The manifest (minus versions and hashes) describing the compiled graph and its target."""
    import tvm

    from .runtime import TensorSpec, build_manifest
    from .runtime.compat import target_record

    def tensor_specs(values: Sequence[Any], prefix: str) -> list[TensorSpec]:
        return [TensorSpec(v.name or f"{prefix}{i}", tuple(v.type.shape),
                           v.type.dtype.to_numpy().name) for i, v in enumerate(values)]

    report = pipeline.report.to_dict() if pipeline.report is not None else {"passes": []}
    target = {**target_record(spec.name, spec.target_dict), "description": spec.description}
    return build_manifest(target=target, inputs=tensor_specs(graph.inputs, "input"),
                          outputs=tensor_specs(graph.outputs, "output"),
                          pipeline={"spec": str(pipeline), "report": report}, timings=timings,
                          tvm_version=tvm.__version__, name=graph.name, extra=extra)


def _samples(example_inputs: Sequence[Any] | None) -> list[tuple] | None:
    """Example inputs as one numpy sample for the pipeline's numeric check."""
    if not example_inputs:
        return None
    arrays = []
    for x in example_inputs:
        arrays.append(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    return [tuple(arrays)]


class _Steps:
    """Times each named step into `timings`; with progress on, shows a spinner per step."""

    def __init__(self, progress: bool):
        self.timings: dict[str, float] = {}
        self._console = None
        if progress:
            from rich.console import Console

            self._console = Console(stderr=True)
        self._status: Any = None
        self._name = ""

    @contextlib.contextmanager
    def __call__(self, name: str, live: bool = True) -> Iterator[_Steps]:
        """`live=False`: no spinner (the step shows its own progress bar)."""
        self._name = name
        t0 = time.perf_counter()
        status = self._console.status(f"{name}...") if self._console and live \
            else contextlib.nullcontext()
        with status as self._status:
            yield self
        self.timings[name] = time.perf_counter() - t0
        if self._console:
            self._console.print(f"[green]✓[/] {name:<7} {self.timings[name]:6.2f}s")

    def note(self, message: str) -> None:
        if self._console:
            self._console.print(f"  {message}", highlight=False)

    def pass_progress(self, pass_name: str, index: int, total: int) -> None:
        if self._status is not None:
            self._status.update(f"{self._name}: {pass_name} ({index + 1}/{total})...")
