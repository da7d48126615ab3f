"""TVM lowerings: sparse ops (being filled in)."""
