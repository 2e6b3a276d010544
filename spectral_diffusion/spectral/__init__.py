"""Orthonormal transforms and frequency utilities shared by processes, losses and metrics."""

from spectral_diffusion.spectral.bases import (
    BASES,
    DCTBasis,
    DWTBasis,
    FFTBasis,
    IdentityBasis,
    make_basis,
)
from spectral_diffusion.spectral.frequency import (
    data_power_spectrum,
    hermitian_multiplicity,
    radial_average,
    radial_bin_index,
    radial_frequency,
    radial_power_spectrum,
)

__all__ = [
    "BASES",
    "DCTBasis",
    "DWTBasis",
    "FFTBasis",
    "IdentityBasis",
    "data_power_spectrum",
    "hermitian_multiplicity",
    "make_basis",
    "radial_average",
    "radial_bin_index",
    "radial_frequency",
    "radial_power_spectrum",
]
