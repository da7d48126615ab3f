"""Torch implementations: sparse ops (being filled in)."""
