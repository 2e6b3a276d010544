"""Radial frequency bands: a partition of the rfft2 grid into K rings whose masks sum to one.

Band-specific schedules (``noise=banded``) and band-specific denoising heads (``model.band_heads``)
both split an image's spectrum into rings of radius |f| (cycles per pixel, from ``fftfreq``). The
masks are indicator functions of a partition, so Σ_k mask_k = 1 at every coefficient and recombining
the bands of any image gives it back exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from spectral_diffusion.spectral.frequency import radial_frequency
from spectral_diffusion.utils.validation import ConfigError, check_int

# The largest radius on any grid: the corner (1/2, 1/2) cycles per pixel.
MAX_RADIUS = math.sqrt(0.5)


def band_edges(num_bands: int, edges: Sequence[float] | None = None, *, key: str = "bands") -> Tensor:
    """The K + 1 ring boundaries 0 = e_0 < e_1 < … < e_K = √½ (float64).

    ``edges`` gives the K − 1 inner boundaries in cycles per pixel (strictly increasing, inside
    (0, √½)); by default the rings are equally wide in |f|.
    """
    num_bands = check_int(key, num_bands, 1)
    if edges is None:
        return torch.linspace(0.0, MAX_RADIUS, num_bands + 1, dtype=torch.float64)
    inner = [float(e) for e in edges]
    if len(inner) != num_bands - 1:
        raise ConfigError(
            f"{key} edges={inner} must list num_bands - 1 = {num_bands - 1} inner boundaries "
            f"(cycles per pixel, strictly increasing, between 0 and {MAX_RADIUS:.4f})"
        )
    full = [0.0, *inner, MAX_RADIUS]
    if any(b <= a for a, b in zip(full[:-1], full[1:])):
        raise ConfigError(
            f"{key} edges={inner} are not strictly increasing inside (0, {MAX_RADIUS:.4f}) cycles per pixel"
        )
    return torch.tensor(full, dtype=torch.float64)


def band_index(height: int, width: int, edges: Tensor, *, onesided: bool = True, device=None) -> Tensor:
    """The band (0..K−1) of every FFT coefficient: band k holds e_k ≤ |f| < e_{k+1} (the last ring is closed)."""
    radius = radial_frequency(height, width, onesided=onesided, device=device)
    inner = edges[1:-1].to(device=radius.device, dtype=radius.dtype)
    return torch.bucketize(radius, inner, right=True)


def radial_band_masks(height: int, width: int, num_bands: int, edges: Sequence[float] | None = None, *,
                      onesided: bool = True, device=None, key: str = "bands") -> Tensor:
    """(K, H, W//2+1) masks (or (K, H, W) with ``onesided=False``) in float32 that sum to one.

    Band k is the indicator of its ring, so the masks partition the grid. Masks depend on |f| only,
    hence are the same at f and −f and map real images to real images.
    """
    bounds = band_edges(num_bands, edges, key=key)
    index = band_index(height, width, bounds, onesided=onesided, device=device)
    masks = torch.stack([(index == k) for k in range(len(bounds) - 1)]).float()
    return masks
