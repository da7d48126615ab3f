"""`CompiledModel`: a loaded .ember artifact you call like a function, numpy in and numpy out.

Loading verifies the artifact (see `artifact.read_artifact`), then hands `lib.so` to the TVM
runtime. Inputs are checked against the manifest before every call so a wrong shape or dtype
is an `InputError` naming the input, not a TVM assertion from deep inside a kernel.

Thread safety: a Relax VM keeps per-call state, so each thread gets its own VM over the one
loaded library (VMs are cheap; the library and its baked-in weights are shared).

Per-call cost (digits_mlp, batch 1, 2-core Zen 3; was 25 us at best): input check ~1 us, copy
into a cached aligned staging tensor ~0.8 us, the VM's `main_b1` (batch-1 specialization, see
ember.backends.tvm.lower.batch1_name) ~3.7 us of which ~2.3 us kernels, output copy ~0.8 us.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from .artifact import LIBRARY, Artifact, TensorSpec, read_artifact

# the batch-1 specialization of "main" (ember.backends.tvm.lower.batch1_name; not imported:
# the runtime does not depend on the compiler)
BATCH1_FUNCTION = "main_b1"
_STAGE_MAX_BYTES = 1 << 20  # inputs up to this size are copied into staging tensors
_STAGE_MAX_SHAPES = 16  # staging tensors kept per thread (several batch sizes in turn)


def load(path: str | os.PathLike) -> CompiledModel:
    """Load a .ember file: verify it (format, hashes, target), then load its library."""
    return CompiledModel(read_artifact(path))


def import_tvm():
    """Import TVM for running artifacts without pulling in torch.

    `tvm_ffi` imports torch eagerly when it is installed (a workaround for a Windows-only symbol
    clash), which would add seconds and hundreds of modules to every deployed process. Unless
    torch is already loaded, its import is blocked while TVM initialises; TVM then runs without
    torch interop, which the runtime does not use. `TVM_USE_RUNTIME_LIB=1` (TVM's own switch)
    additionally skips the Relax compiler; `ember run` sets it.
    """
    from .._tvm_startup import install

    if "tvm" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` fail
        try:
            install()
            import tvm
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
    install()
    import tvm
    import tvm.runtime.vm

    return tvm


class CompiledModel:
    """A callable compiled model: `model(x)` or `model(x=x)`; see `manifest`, `report`."""

    def __init__(self, artifact: Artifact):
        tvm = import_tvm()
        self.path = artifact.path
        self.manifest: dict[str, Any] = artifact.manifest
        self.ir_text: str = artifact.ir_text
        self.inputs: list[TensorSpec] = artifact.inputs
        self.outputs: list[TensorSpec] = artifact.outputs
        self._check_tvm_version(tvm.__version__)
        self._device = self._make_device(tvm)
        self.cuda_plan: dict[str, Any] | None = None
        if self.manifest["target"].get("target", {}).get("kind") == "cuda":
            from . import cuda  # the runtime compiles the kernels' CUDA C on load: hand it code

            self.cuda_plan = cuda.install(tvm, self.manifest, artifact.members)
        self._lib = self._load_library(tvm, artifact.members[LIBRARY])
        self._local = threading.local()
        self._tensor = tvm.runtime.tensor
        self._from_dlpack = tvm.runtime.from_dlpack
        self._on_cpu = self._device.dlpack_device_type() == 1  # kDLCPU
        self._vm_class = tvm.runtime.vm.VirtualMachine
        self._tensor_type = tvm.runtime.Tensor
        # per input: (dtype, static dims as (axis, size), symbolic dims as (axis, name))
        self._fast_specs = [(np.dtype(t.dtype), len(t.shape),
                             tuple((i, d) for i, d in enumerate(t.shape) if isinstance(d, int)),
                             tuple((i, d) for i, d in enumerate(t.shape) if not isinstance(d, int)))
                            for t in self.inputs]
        # a batch-1 specialization (lower.batch1_name) exists only when input 0 leads with a
        # symbol; the VM is asked for it once per thread
        self._b1 = bool(self.inputs and self.inputs[0].shape
                        and isinstance(self.inputs[0].shape[0], str))
        # inputs go through per-thread aligned staging tensors made once per shape (a 64-byte
        # alignment check costs more than copying a small input); bool has no DLPack path
        self._stage_ok = self._on_cpu and all(np.dtype(t.dtype) != np.bool_ for t in self.inputs)
        self._fast_out = self._on_cpu and all(np.dtype(t.dtype) != np.bool_ for t in self.outputs)

    # ---- metadata -----------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def report(self) -> dict[str, Any]:
        """The pass pipeline's report from compile time: {"spec", "seconds", "passes": [...]}."""
        return dict(self.manifest.get("pipeline", {}).get("report") or {"passes": []})

    @property
    def target(self) -> str:
        return str(self.manifest["target"].get("name"))

    def __repr__(self) -> str:
        sig = self._signature()
        return f"<CompiledModel {self.manifest.get('name', '?')}({sig}) target={self.target}>"

    # ---- calling ------------------------------------------------------------------------
    def __call__(self, *inputs: Any, **named_inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        arrays = None if named_inputs else self._fast_check(inputs)
        if arrays is None:  # anything unusual (or wrong) takes the full check and its messages
            arrays = self.check_inputs(inputs, named_inputs)
        main, b1, stage = getattr(self._local, "state", None) or self._thread_state()
        fn = b1 if b1 is not None and arrays[0].shape[0] == 1 else main
        if self._stage_ok:
            out = fn(*self._staged(arrays, stage))
        else:
            out = fn(*[self._to_device(a) for a in arrays])
        if self._fast_out and type(out) is self._tensor_type:  # one output: skip the walk
            return np.from_dlpack(out).copy()
        results = _to_numpy(out)
        return results[0] if len(results) == 1 else tuple(results)

    def _staged(self, arrays: Sequence[np.ndarray], stage: dict) -> list:
        """TVM tensors holding `arrays`: each copied into this thread's aligned staging tensor
        for its shape (made on first use; small inputs only, large ones go through DLPack)."""
        out = []
        for i, a in enumerate(arrays):
            slot = stage.get((i, a.shape))
            if slot is None:
                if a.nbytes > _STAGE_MAX_BYTES:
                    out.append(self._to_device(a))
                    continue
                if len(stage) >= _STAGE_MAX_SHAPES:
                    stage.clear()
                buf = _aligned(np.empty_like(a), force_copy=True)
                slot = stage[(i, a.shape)] = (buf, self._from_dlpack(buf))
            slot[0][...] = a  # dtype and shape already checked
            out.append(slot[1])
        return out

    def _fast_check(self, inputs: Sequence[Any]) -> Sequence[np.ndarray] | None:
        """The inputs as they are when they are exactly what the manifest asks for, else None.

        Why: the general check (names, bindings, messages) cost ~5 us per call, a third of a
        small model's latency; the common case is positional C-contiguous numpy arrays.
        """
        if len(inputs) != len(self._fast_specs):
            return None
        seen: dict[str, int] = {}
        for arr, (dtype, ndim, static, symbolic) in zip(inputs, self._fast_specs):
            if type(arr) is not np.ndarray or arr.dtype != dtype or arr.ndim != ndim \
                    or not arr.flags.c_contiguous:
                return None
            shape = arr.shape
            for axis, size in static:
                if shape[axis] != size:
                    return None
            for axis, name in symbolic:
                if seen.setdefault(name, shape[axis]) != shape[axis] or not name.isidentifier():
                    return None
        return inputs

    def _to_device(self, array: np.ndarray):
        """A TVM tensor for `array`. On CPU, zero-copy through DLPack when the data is 64-byte
        aligned (TVM's requirement; one cheap copy into an aligned buffer otherwise): 10x
        cheaper than `tvm.runtime.tensor`, which dominated small-model latency."""
        if self._on_cpu and array.dtype != np.bool_:
            return self._from_dlpack(_aligned(array))
        return self._tensor(array, self._device)

    def check_inputs(self, inputs: Sequence[Any], named: Mapping[str, Any]) -> list[np.ndarray]:
        """Match positional and named inputs to the manifest; check count, dtypes and shapes."""
        specs = self.inputs
        names = self.input_names
        if len(inputs) > len(specs):
            raise InputError(f"{self._name()} takes {len(specs)} input(s) ({self._signature()}), "
                             f"got {len(inputs)} positional")
        given: dict[str, Any] = dict(zip(names, inputs))
        for key, value in named.items():
            if key not in names:
                raise InputError(f"{self._name()} has no input named {key!r}; inputs are "
                                 f"{self._signature()}")
            if key in given:
                raise InputError(f"input {key!r} given both by position and by name")
            given[key] = value
        missing = [n for n in names if n not in given]
        if missing:
            raise InputError(f"{self._name()}: missing input(s) {', '.join(map(repr, missing))}; "
                             f"expected {self._signature()}")
        bindings: dict[str, tuple[int, str]] = {}
        return [self._check_one(spec, given[spec.name], bindings) for spec in specs]

    def _check_one(self, spec: TensorSpec, value: Any, bindings: dict[str, tuple[int, str]]):
        arr = _as_array(spec.name, value)
        if arr.dtype != np.dtype(spec.dtype):
            raise InputError(f"input {spec.name!r}: dtype {arr.dtype} but the model expects "
                             f"{spec.dtype}; convert with .astype(np.{spec.dtype})")
        if arr.ndim != len(spec.shape):
            raise InputError(f"input {spec.name!r}: shape {list(arr.shape)} has rank {arr.ndim}, "
                             f"the model expects rank {len(spec.shape)} {_fmt_shape(spec.shape)}")
        for axis, (got, dim) in enumerate(zip(arr.shape, spec.shape)):
            if isinstance(dim, int):
                if got != dim:
                    raise InputError(f"input {spec.name!r}: dim {axis} is {got} but the model "
                                     f"was compiled for {dim} (shape {_fmt_shape(spec.shape)}); "
                                     "re-compile with dynamic_dims to allow other sizes")
            elif dim.isidentifier():
                seen = bindings.setdefault(dim, (got, spec.name))
                if seen[0] != got:
                    raise InputError(f"input {spec.name!r}: dim {axis} ({dim!r}) is {got} but "
                                     f"{dim!r} is {seen[0]} in input {seen[1]!r}")
        return np.ascontiguousarray(arr)

    def _thread_state(self) -> tuple[Any, Any, dict]:
        """This thread's (main, batch-1 main or None, staging tensors), made on its first call."""
        state = getattr(self._local, "state", None)
        if state is None:
            vm = self._vm_class(self._lib, self._device)
            b1 = None
            if self._b1:
                try:
                    b1 = vm[BATCH1_FUNCTION]
                except AttributeError:  # built before batch-1 specialization, or not specialized
                    b1 = None
            self._local.vm = vm
            state = self._local.state = (vm["main"], b1, {})
        return state

    # ---- benchmarking -------------------------------------------------------------------
    def random_inputs(self, batch: int = 1, seed: int = 0) -> list[np.ndarray]:
        """Inputs shaped from the manifest, every symbolic dim set to `batch`."""
        rng = np.random.default_rng(seed)
        arrays = []
        for spec in self.inputs:
            shape = tuple(d if isinstance(d, int) else batch for d in spec.shape)
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                arrays.append(rng.standard_normal(shape).astype(dtype))
            elif dtype.kind == "b":
                arrays.append(rng.integers(0, 2, shape).astype(bool))
            else:  # indices: stay at 0/1 so any embedding table accepts them
                arrays.append(rng.integers(0, 2, shape).astype(dtype))
        return arrays

    def benchmark(self, inputs: Sequence[Any] | None = None, *, warmup: int = 10,
                  repeat: int = 100, batch: int = 1) -> dict[str, float]:
        """Time whole calls (input checks and copies included): median/p90/mean/min in ms."""
        arrays = list(inputs) if inputs is not None else self.random_inputs(batch)
        for _ in range(max(0, warmup)):
            self(*arrays)
        times = []
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            self(*arrays)
            times.append((time.perf_counter() - t0) * 1e3)
        t = np.asarray(times)
        return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
                "mean_ms": float(t.mean()), "min_ms": float(t.min()), "repeat": len(times),
                "batch": batch if inputs is None else _leading_dim(arrays)}

    # ---- loading helpers ----------------------------------------------------------------
    def _check_tvm_version(self, runtime_version: str) -> None:
        built = str(self.manifest.get("tvm_version") or "")
        if built and built.split(".")[:2] != runtime_version.split(".")[:2]:
            raise ArtifactError(f"{self.path} was built with TVM {built} but this runtime is TVM "
                                f"{runtime_version}; re-compile it or install "
                                f"apache-tvm=={built}")

    def _make_device(self, tvm):
        kind = self.manifest["target"].get("target", {}).get("kind", "llvm")
        if kind in ("llvm", "c"):
            return tvm.cpu(0)
        from .compat import device_unavailable

        reason = device_unavailable(tvm, kind)
        if reason:
            raise ArtifactError(f"{self.path} was compiled for target {self.target!r} but "
                                f"cannot run here: {reason}; re-compile with --target cpu")
        return tvm.device(kind, 0)

    def _load_library(self, tvm, data: bytes):
        tmpdir = tempfile.mkdtemp(prefix="ember-")
        try:
            lib_path = Path(tmpdir) / LIBRARY
            lib_path.write_bytes(data)
            try:
                return tvm.runtime.load_module(str(lib_path))
            except Exception as e:  # TVM raises its own error types; name the artifact instead
                raise ArtifactError(f"{self.path}: the TVM runtime could not load {LIBRARY} "
                                    f"({type(e).__name__}: {str(e).strip().splitlines()[-1]})"
                                    ) from e
        finally:  # the loaded library stays mapped after its file is gone (POSIX)
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _name(self) -> str:
        return f"model {self.manifest.get('name', '')!s}".strip()

    def _signature(self) -> str:
        return ", ".join(f"{t.name}: {t.dtype}{_fmt_shape(t.shape)}" for t in self.inputs)


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    torch = sys.modules.get("torch")  # never import torch here; only recognise its tensors
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (np.generic, int, float, bool)) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise InputError(f"input {name!r}: expected a numpy array or torch tensor, got "
                     f"{type(value).__name__}")


def _aligned(array: np.ndarray, alignment: int = 64, force_copy: bool = False) -> np.ndarray:
    if not force_copy and array.ctypes.data % alignment == 0 and array.flags.c_contiguous:
        return array
    buf = np.empty(array.nbytes + alignment, np.uint8)
    start = -buf.ctypes.data % alignment
    out = buf[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def _to_numpy(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        if out.device.dlpack_device_type() == 1 and str(out.dtype) != "bool":
            # DLPack then one memcpy: far cheaper than .numpy(), and the copy matters because
            # an output may alias a baked-in constant or an input, which callers must not mutate
            return [np.array(np.from_dlpack(out), copy=True)]
        return [out.numpy()]
    results: list[np.ndarray] = []
    for item in out:  # tuples of outputs come back as a sequence (possibly nested)
        results.extend(_to_numpy(item))
    return results


def _fmt_shape(shape: Sequence[int | str]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _leading_dim(arrays: Sequence[Any]) -> int:
    first = np.asarray(arrays[0]) if arrays else np.zeros(())
    return int(first.shape[0]) if first.ndim else 1
