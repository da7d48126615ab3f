"""Op family: sparse (being filled in)."""
