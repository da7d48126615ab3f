"""Op family: nn (being filled in)."""
