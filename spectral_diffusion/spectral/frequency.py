"""Frequency grids and power spectra on the orthonormal rfft2 grid, shared by losses, processes and metrics.

Radii come from ``torch.fft.fftfreq`` / ``rfftfreq`` (unshifted, as the FFT lays them out); spectra are
accumulated in float64 so the tiny high-frequency power of natural images is not lost to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def radial_frequency(height: int, width: int, *, onesided: bool = True, device=None) -> Tensor:
    """|f| in cycles per pixel at every FFT coefficient (float64, shape (H, W//2+1) or (H, W)).

    Built from ``fftfreq`` so it matches the unshifted layout of ``torch.fft.rfft2`` / ``fft2``.
    """
    fy = torch.fft.fftfreq(height, dtype=torch.float64, device=device)
    fx = (torch.fft.rfftfreq if onesided else torch.fft.fftfreq)(width, dtype=torch.float64, device=device)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def hermitian_multiplicity(height: int, width: int, *, device=None) -> Tensor:
    """How many full-grid coefficients each rfft2 coefficient stands for (1 or 2), shape (H, W//2+1).

    Column 0 (and column W/2 for even W) is its own mirror; every other column also counts for its
    conjugate, so Σ m·|X|² over the rfft2 grid equals Σ |x|² (Parseval) with ``norm="ortho"``.
    """
    multiplicity = torch.full((height, width // 2 + 1), 2.0, dtype=torch.float64, device=device)
    multiplicity[:, 0] = 1.0
    if width % 2 == 0:
        multiplicity[:, -1] = 1.0
    return multiplicity


def radial_bin_index(height: int, width: int, *, device=None) -> Tensor:
    """Integer radial bin of every rfft2 coefficient: round(|f| · max(H, W)), 0 being the DC term."""
    radius = radial_frequency(height, width, device=device)
    return torch.round(radius * max(height, width)).long()


def radial_average(power: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Radially average a power grid on the rfft2 layout (H, W//2+1): (bin frequencies, mean power), float64.

    Bin round(|f|·max(H, W)); every rfft2 coefficient counts as often as it appears on the full grid
    (``hermitian_multiplicity``); ``frequencies`` are the bin radii in cycles per pixel. Empty bins (none for
    square images) are dropped.
    """
    bins = radial_bin_index(height, width, device=power.device).flatten()
    weights = hermitian_multiplicity(height, width, device=power.device).flatten()
    count = torch.zeros(int(bins.max()) + 1, dtype=torch.float64, device=power.device).index_add_(0, bins, weights)
    total = torch.zeros_like(count).index_add_(0, bins, weights * power.flatten().to(torch.float64))
    filled = count > 0
    frequencies = torch.arange(len(count), dtype=torch.float64, device=power.device) / max(height, width)
    return frequencies[filled], total[filled] / count[filled]


def radial_power_spectrum(images: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Radially averaged power spectrum of ``images`` (N, C, H, W): (frequencies, power), float64.

    Power is |rfft2(x, norm="ortho")|² averaged over images, channels and every full-grid coefficient
    whose radius falls in a bin (Hermitian mirrors counted; ``radial_average``); ``frequencies`` are the
    bin radii in cycles per pixel.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    _, channels, height, width = images.shape
    total = torch.zeros(height, width // 2 + 1, dtype=torch.float64)
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size].detach().to("cpu", torch.float64)
        total += torch.fft.rfft2(chunk, norm="ortho").abs().square().sum(dim=(0, 1))
    return radial_average(total / (images.shape[0] * channels), height, width)


def radial_profile_on_grid(frequencies: Tensor, power: Tensor, height: int, width: int) -> Tensor:
    """A radial profile (bin radii in cycles per pixel, one value per bin, as ``radial_power_spectrum`` gives)
    read at every coefficient of the rfft2 grid (H, W//2+1), float64: each takes its radial bin's value."""
    bins = radial_bin_index(height, width)
    by_bin = torch.zeros(int(bins.max()) + 1, dtype=torch.float64)
    by_bin[torch.round(frequencies * max(height, width)).long()] = power.to(torch.float64)
    return by_bin[bins]


def floor_spectrum(power: Tensor, floor: float = 1e-8) -> Tensor:
    """``power`` floored at ``floor`` × its maximum, so that weights S^−γ stay finite where a band of the
    data carries no power."""
    return power.clamp(min=float(floor) * float(power.max()))


def data_power_spectrum(images: Tensor, *, floor: float = 1e-8, batch_size: int = 1024) -> Tensor:
    """S_data(f) on the orthonormal rfft2 grid (H, W//2+1), float64: the training set's radially
    averaged power spectrum put back on the grid (``radial_profile_on_grid``).

    Radial (angular) averaging smooths the estimate, so the result depends on |f| only and is the
    same at f and −f. Values are floored at ``floor`` × max (``floor_spectrum``).
    """
    _, _, height, width = images.shape
    profile = radial_profile_on_grid(*radial_power_spectrum(images, batch_size=batch_size), height, width)
    return floor_spectrum(profile, floor)
