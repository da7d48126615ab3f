"""Torch implementations: shape ops (being filled in)."""
