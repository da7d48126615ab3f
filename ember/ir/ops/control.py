"""Op family: control (being filled in)."""
