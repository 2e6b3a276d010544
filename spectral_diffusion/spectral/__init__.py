"""Orthonormal transforms and frequency utilities shared by processes, losses and metrics."""

from spectral_diffusion.spectral.bases import IdentityBasis
from spectral_diffusion.spectral.frequency import (
    data_power_spectrum,
    hermitian_multiplicity,
    radial_bin_index,
    radial_frequency,
    radial_power_spectrum,
)

__all__ = [
    "IdentityBasis",
    "data_power_spectrum",
    "hermitian_multiplicity",
    "radial_bin_index",
    "radial_frequency",
    "radial_power_spectrum",
]
