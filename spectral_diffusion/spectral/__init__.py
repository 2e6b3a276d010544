"""Orthonormal transforms and frequency utilities shared by processes, losses and metrics."""

from spectral_diffusion.spectral.bases import IdentityBasis

__all__ = ["IdentityBasis"]
