"""Op family: reduce (being filled in)."""
