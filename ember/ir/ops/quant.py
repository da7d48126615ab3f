"""Op family: quant (being filled in)."""
