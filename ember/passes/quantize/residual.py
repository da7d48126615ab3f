"""Residual binary (`binary_residual{bits=k}`): k stacked binary bases fitted greedily.

Each base binarizes the residual the previous ones left (see binary.binary_bases), so k bases
cost k bits per weight and the reconstruction error shrinks with every base.
"""

from __future__ import annotations

from .binary import binary_bases

__all__ = ["residual_bases"]


def residual_bases(w, bits: int):
    if bits < 1:
        from ...errors import PassError

        raise PassError(f"binary_residual needs bits >= 1 (number of bases), got {bits}")
    return binary_bases(w, bits)
