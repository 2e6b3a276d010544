"""Spatial structure of generated vs real images, diagnostics that spectra average
away: how sharp foreground boundaries are, how strongly neighbouring pixels correlate, and how clean the background
is. Every state is a float64 sum over images, so the metrics stream in batches and bootstrap by resampling.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectral_diffusion.metrics.statistics import MeanRatioMetric, TwoSampleMetric
from spectral_diffusion.metrics.texture import gradient_field


def boundary_mask(images: Tensor, threshold: float = 0.0) -> Tensor:
    """Foreground boundary pixels of each image channel (bool, like ``images``): pixels on either side of an edge
    between a pixel above ``threshold`` (foreground) and a 4-neighbour at or below it."""
    foreground = images > threshold
    mask = torch.zeros_like(foreground)
    vertical = foreground[..., 1:, :] != foreground[..., :-1, :]
    horizontal = foreground[..., :, 1:] != foreground[..., :, :-1]
    mask[..., 1:, :] |= vertical
    mask[..., :-1, :] |= vertical
    mask[..., :, 1:] |= horizontal
    mask[..., :, :-1] |= horizontal
    return mask


class BoundarySharpness(MeanRatioMetric):
    """``boundary_sharpness_{real,fake}``: mean gradient magnitude over the foreground boundary pixels of all images
    (``boundary_mask`` at ``threshold``, the midpoint 0 of [-1, 1] by default); ``_ratio`` = fake / real, below 1
    for blurred strokes."""

    prefix = "boundary_sharpness"
    empty_is_nan = True  # a set without any boundary pixel has no sharpness

    def __init__(self, threshold: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def _update(self, images: Tensor, split: str) -> None:
        images = images.to(self.device, torch.float64)
        mask = boundary_mask(images, self.threshold)
        self._add_values(split, gradient_field(images)[mask].sum(), mask.sum().double())


def lag_correlations(images: Tensor, lags: int) -> Tensor:
    """Per image channel, the mean over lags d = 1..``lags`` and the two axes of the correlation coefficient between
    each pixel and its neighbour d pixels down (right): Σ(x − x̄)(x' − x̄) / Σ(x − x̄)² with x̄ the image mean, the
    sums over the overlapping pixels and over all pixels (float64, (N, C); 0 for a constant image)."""
    centred = images.to(torch.float64) - images.to(torch.float64).mean(dim=(-2, -1), keepdim=True)
    energy = centred.square().sum(dim=(-2, -1))
    products = [(centred[..., lag:, :] * centred[..., :-lag, :]).sum(dim=(-2, -1)) for lag in range(1, lags + 1)]
    products += [(centred[..., :, lag:] * centred[..., :, :-lag]).sum(dim=(-2, -1)) for lag in range(1, lags + 1)]
    mean_product = torch.stack(products).mean(dim=0)
    return torch.where(energy > 0, mean_product / energy.clamp_min(1e-300), torch.zeros_like(energy))


class SpatialCorrelation(MeanRatioMetric):
    """``spatial_correlation_{real,fake}``: mean ``lag_correlations`` at lags 1..``lags`` over image channels;
    ``_ratio`` = fake / real, below 1 for noisy, decorrelated texture."""

    prefix = "spatial_correlation"

    def __init__(self, lags: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lags = int(lags)

    def _update(self, images: Tensor, split: str) -> None:
        if min(images.shape[-2:]) <= self.lags:
            raise ValueError(f"spatial correlation at lags up to {self.lags} needs larger images than "
                             f"{tuple(images.shape[-2:])}")
        correlations = lag_correlations(images.to(self.device), self.lags)
        self._add_values(split, correlations.sum(), float(correlations.numel()))


class Background(TwoSampleMetric):
    """Background cleanliness on the pixels that are background in the real data: positions (c, h, w) whose real
    mean lies within ``tolerance`` of the smallest real mean m (the data minimum: −1 for MNIST's black).

    ``background_std_{real,fake}``: standard deviation of all pixel values at those positions over all images
    (pooled); ``background_deviation_{real,fake}``: |mean of those values − m|. Ideal: the real values.
    """

    def __init__(self, image_shape: tuple[int, int, int], tolerance: float = 0.02, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_shape, self.tolerance = tuple(int(size) for size in image_shape), float(tolerance)
        self._add_pair("count", torch.zeros((), dtype=torch.float64))
        self._add_pair("sum", torch.zeros(self.image_shape, dtype=torch.float64))
        self._add_pair("square", torch.zeros(self.image_shape, dtype=torch.float64))

    def _update(self, images: Tensor, split: str) -> None:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape {self.image_shape}, got {tuple(images.shape[1:])}")
        images = images.to(self.device, torch.float64)
        self._accumulate("count", split, torch.tensor(float(len(images))))
        self._accumulate("sum", split, images.sum(dim=0))
        self._accumulate("square", split, images.square().sum(dim=0))

    def compute(self) -> dict[str, float]:
        self._require("count")
        real_mean = self.state("sum", "real") / self.state("count", "real")
        minimum = real_mean.min()
        mask = real_mean <= minimum + self.tolerance
        results = {}
        for split in ("real", "fake"):
            values = mask.sum() * self.state("count", split)
            mean = self.state("sum", split)[mask].sum() / values
            variance = (self.state("square", split)[mask].sum() / values - mean.square()).clamp_min(0)
            results[f"background_std_{split}"] = float(variance.sqrt())
            results[f"background_deviation_{split}"] = float((mean - minimum).abs())
        return results
