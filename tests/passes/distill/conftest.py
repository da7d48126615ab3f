from tests.passes.distill.helpers import sampler8  # noqa: F401  (shared fixture)
