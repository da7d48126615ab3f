"""Torch implementations: reduce ops (being filled in)."""
