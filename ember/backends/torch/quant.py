"""Torch implementations: quant ops (being filled in)."""
