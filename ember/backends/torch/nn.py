"""Torch implementations: nn ops (being filled in)."""
