"""The ONNX node-test cases for benchmarks/onnx_conformance.py: the on-disk cache of their
models and data, which op types a case uses, whether ember claims it, and which graph inputs
must be bound as constants (ember keeps shape operands static).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "onnx-node-tests"


# ---- the cache ------------------------------------------------------------------------------
def generate(cache: Path = CACHE) -> list[dict]:
    """Write every node test case into `cache` (once) and return the index."""
    index_path = cache / "index.json"
    if index_path.exists():
        return json.loads(index_path.read_text())
    import warnings

    import onnx
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    index = []
    for case in cases:
        d = cache / case.name
        d.mkdir(parents=True, exist_ok=True)
        onnx.save(case.model, str(d / "model.onnx"))
        for k, (ins, outs) in enumerate(case.data_sets or []):
            arrays = {f"in{i}": _plain(a) for i, a in enumerate(ins)}
            arrays.update({f"out{i}": _plain(a) for i, a in enumerate(outs)})
            np.savez(d / f"data_{k}.npz", **arrays)
        index.append({"name": case.name, "op": primary_op(case.name, case.model),
                      "ops": sorted(model_ops(case.model)),
                      "datasets": len(case.data_sets or []), "rtol": case.rtol,
                      "atol": case.atol})
    index_path.write_text(json.dumps(index, indent=0))
    return index


def _plain(a):
    """Tensors as arrays; sequences/optionals (a few cases) as 1-element object arrays."""
    import onnx

    if type(a).__name__ == "TensorProto":
        a = onnx.numpy_helper.to_array(a)
    if isinstance(a, np.ndarray) and a.dtype.type.__module__ == "numpy":
        return a
    box = np.empty(1, dtype=object)
    if isinstance(a, np.ndarray):  # ml_dtypes (float8, int4, ...): npz cannot hold them
        box[0] = ("tensorproto", onnx.numpy_helper.from_array(a).SerializeToString())
        return box
    box = np.empty(1, dtype=object)
    box[0] = a
    return box


def model_ops(model) -> set[str]:
    """Every op type in the model, bodies of control-flow ops included."""
    out: set[str] = set()

    def walk(graph):
        for node in graph.node:
            out.add(node.op_type if node.domain in ("", "ai.onnx") else
                    f"{node.domain}.{node.op_type}")
            for a in node.attribute:
                if a.HasField("g"):
                    walk(a.g)
                for g in a.graphs:
                    walk(g)
    walk(model.graph)
    return out


def primary_op(name: str, model) -> str:
    """The op a case tests: its single node, or for an expanded function body the op named by
    the case (test_<op>_..._expanded), matched against ONNX's schema names."""
    nodes = model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    import onnx

    key = name[len("test_"):].replace("_", "").lower()
    names = sorted((s.name for s in onnx.defs.get_all_schemas()), key=len, reverse=True)
    for n in names:
        if key.startswith(n.lower()):
            return n
    return nodes[0].op_type if nodes else "?"


def load_case(name: str, cache: Path = CACHE):
    import onnx

    d = cache / name
    model = onnx.load(str(d / "model.onnx"))
    datasets = []
    for f in sorted(d.glob("data_*.npz")):
        z = np.load(f, allow_pickle=True)
        ins = [_unbox(z[f"in{i}"]) for i in range(sum(k.startswith("in") for k in z.files))]
        outs = [_unbox(z[f"out{i}"]) for i in range(sum(k.startswith("out") for k in z.files))]
        datasets.append((ins, outs))
    return model, datasets


def _unbox(a: np.ndarray):
    if a.dtype != object or a.shape != (1,):
        return a
    item = a[0]
    if isinstance(item, tuple) and len(item) == 2 and item[0] == "tensorproto":
        import onnx

        proto = onnx.TensorProto()
        proto.ParseFromString(item[1])
        return onnx.numpy_helper.to_array(proto)
    return item


def claimed(entry: dict) -> bool:
    """Does ember claim every op type of this case (a converter exists for each)?"""
    from ember.frontends.onnx import CONVERTERS

    return all(op in CONVERTERS for op in entry["ops"])


def static_bindings(model, inputs: list) -> dict[str, np.ndarray]:
    """Graph inputs that feed a shape operand (ONNX STATIC_INPUTS slots) become constants,
    directly or through the nodes that compute it (an expanded function such as
    HannWindow's computes Range's limit from its `size` input). The walk stops at Shape/Size,
    whose values come from static shapes: the tensor they measure stays a runtime input."""
    from ember.frontends.onnx import STATIC_INPUTS

    names = [vi.name for vi in model.graph.input]
    feeds = {n: a for n, a in zip(names, inputs)}
    producer = {o: node for node in model.graph.node for o in node.output if o}
    out: dict[str, np.ndarray] = {}
    seen: set[str] = set()

    def bind(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name in feeds:
            out[name] = feeds[name]
        elif name in producer and producer[name].op_type not in ("Shape", "Size"):
            for i in producer[name].input:  # (Shape/Size: static shapes, the data stays fed)
                bind(i)

    for node in model.graph.node:
        for slot in STATIC_INPUTS.get(node.op_type, ()):
            if slot < len(node.input) and node.input[slot]:
                bind(node.input[slot])
    return out
