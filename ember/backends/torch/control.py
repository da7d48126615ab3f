"""Torch implementations: control ops (being filled in)."""
