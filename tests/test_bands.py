"""Radial band masks: a partition of the rfft2 grid by |f| from fftfreq."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectral_diffusion.spectral.bands import MAX_RADIUS, band_edges, band_index, radial_band_masks
from spectral_diffusion.utils.validation import ConfigError


@pytest.mark.parametrize("size", [(8, 8), (16, 16), (9, 12)])
@pytest.mark.parametrize("num_bands", [1, 3, 5])
def test_masks_partition_the_grid(size, num_bands):
    masks = radial_band_masks(*size, num_bands)
    assert masks.shape == (num_bands, size[0], size[1] // 2 + 1)
    assert torch.equal(masks.sum(0), torch.ones(size[0], size[1] // 2 + 1))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_band_of_each_coefficient_matches_numpy_radius():
    height, width = 8, 8
    fy, fx = np.fft.fftfreq(height), np.fft.rfftfreq(width)
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    edges = [0.15, 0.3]
    expected = np.digitize(radius, edges)  # 0 below 0.15, 1 in [0.15, 0.3), 2 above
    index = band_index(height, width, band_edges(3, edges))
    np.testing.assert_array_equal(index.numpy(), expected)
    assert int(index[0, 0]) == 0 and int(index[4, 4]) == 2  # DC lowest band, the corner highest


def test_splitting_and_recombining_bands_is_exact():
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    spectrum = torch.fft.rfft2(x, norm="ortho")
    masks = radial_band_masks(16, 16, 4).double()
    parts = [torch.fft.irfft2(spectrum * m, s=(16, 16), norm="ortho") for m in masks]
    torch.testing.assert_close(sum(parts), x)
    # the default rings are equally wide in |f| and cover [0, √½]
    torch.testing.assert_close(band_edges(4), torch.linspace(0, MAX_RADIUS, 5, dtype=torch.float64))


@pytest.mark.parametrize("num_bands, edges", [(0, None), (2.5, None), (3, [0.3, 0.2]), (3, [0.2]),
                                              (2, [0.9]), (2, [0.0])])
def test_bad_bands_are_config_errors(num_bands, edges):
    with pytest.raises(ConfigError, match="noise.num_bands"):
        band_edges(num_bands, edges, key="noise.num_bands")
