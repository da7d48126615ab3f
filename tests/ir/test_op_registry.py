"""Registry-driven op tests: every op's examples run through infer, reference and torch.

A new op with `examples` is covered here without anyone writing a test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.backends.torch import TORCH_OPS, UNSUPPORTED, run_op
from ember.ir import TensorType
from ember.ir.ops import all_schemas

SCHEMAS = all_schemas()


def _cases():
    for schema in SCHEMAS:
        rng = np.random.default_rng(0)
        for i, (inputs, attrs) in enumerate(schema.iter_examples(rng)):
            yield pytest.param(schema, inputs, attrs, id=f"{schema.kind}-{i}")


def _split_regions(attrs):
    """Examples of region ops (HAS_REGIONS) pass their body graphs as attrs["regions"]."""
    attrs = dict(attrs)
    return attrs, tuple(attrs.pop("regions", ()))


CASES = list(_cases())


def test_every_op_has_examples():
    missing = [s.kind for s in SCHEMAS if s._examples is None]
    assert not missing, f"ops without examples: {missing}"


def test_every_op_has_a_reference_and_infer():
    missing = [s.kind for s in SCHEMAS if s._reference is None or s._infer is None]
    assert not missing


@pytest.mark.parametrize("schema,inputs,attrs", CASES)
def test_infer_matches_reference(schema, inputs, attrs):
    attrs, regions = _split_regions(attrs)
    full = schema.complete_attrs(attrs)
    types = schema.infer_types([TensorType.of(np.asarray(x)) for x in inputs], full, regions)
    outs = schema.run_reference(inputs, full, regions)
    assert [TensorType.of(o) for o in outs] == types


@pytest.mark.parametrize("schema,inputs,attrs", CASES)
def test_reference_matches_torch(schema, inputs, attrs):
    if schema.kind == "const":
        pytest.skip("const has no computation")
    attrs, regions = _split_regions(attrs)
    assert schema.kind in TORCH_OPS or schema.kind in UNSUPPORTED, \
        f"{schema.kind} has no torch implementation and no UNSUPPORTED reason"
    if schema.kind in UNSUPPORTED:
        return
    full = schema.complete_attrs(attrs)
    want = schema.run_reference(inputs, full, regions)
    got = run_op(schema.kind, [torch.from_numpy(np.array(x)) for x in inputs], full, regions)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = g.detach().numpy()
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=schema.tolerance, atol=schema.tolerance)
