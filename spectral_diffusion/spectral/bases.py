"""Orthonormal bases in which a forward process is diagonal.

A basis maps images (B, C, H, W) to real coefficient tensors and back with an orthonormal
transform, so white Gaussian noise stays white and the diffusion maths can be written once,
element-wise, on the coefficients. The identity (pixel) basis is the baseline.
"""

from __future__ import annotations

from torch import Tensor


class IdentityBasis:
    """The pixel basis: coefficients are the pixels themselves."""

    name = "identity"
    is_identity = True

    def forward(self, x: Tensor) -> Tensor:
        return x

    def inverse(self, coefficients: Tensor) -> Tensor:
        return coefficients

    def __repr__(self) -> str:
        return "IdentityBasis()"
