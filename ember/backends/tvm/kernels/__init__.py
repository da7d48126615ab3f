"""Hand-written TE/TIR kernels for ember-specific ops (quantized, sparse, scan)."""
