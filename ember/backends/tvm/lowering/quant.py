"""TVM lowerings: quant ops (being filled in)."""
