"""Texture metrics of generated vs real images: grey-level co-occurrence (GLCM) properties and mean
gradient magnitude, each averaged over images and compared as generated/real.

The GLCM properties are computed for a whole batch at once in torch, as means over pixel pairs, and
equal ``skimage.feature.graycomatrix`` (symmetric, normalised) followed by ``graycoprops``; states are
float64 sums over images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from spectral_diffusion.metrics.statistics import MeanRatioMetric, TwoSampleMetric, safe_ratio
from spectral_diffusion.utils.validation import ConfigError

GLCM_PROPERTIES = ("contrast", "dissimilarity", "correlation")


def quantize(images: Tensor, levels: int) -> Tensor:
    """[-1, 1] images → integer grey levels 0..levels−1: floor((x + 1)/2 · levels), x clamped to [-1, 1]."""
    scaled = (images.detach().to(torch.float64).clamp(-1.0, 1.0) + 1.0) * (levels / 2.0)
    return scaled.floor().long().clamp_(0, levels - 1)


def _round_half_away(value: float) -> int:
    """C's round(), which scikit-image's GLCM loop uses for its pixel offsets."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def glcm_properties(levels_image: Tensor, distances: Sequence[int], angles: Sequence[float]) -> dict[str, Tensor]:
    """Haralick et al. (1973) contrast, dissimilarity and correlation of the symmetric normalised grey-level
    co-occurrence matrix P of each integer image (M, H, W); each returned as float64 (M, D, A).

    For offset (round(sin θ · d), round(cos θ · d)) in (row, column), angles in radians, P(i, j) is the
    frequency of the pair (i, j) among all pixel pairs at that offset, counted in both orders. The
    properties Σ P(i,j)(i−j)², Σ P(i,j)|i−j| and Σ P(i,j)(i−μ)(j−μ)/σ² (1 where σ < 1e-15) are therefore
    means over the pixel pairs, computed here without forming P; they equal
    ``graycoprops(graycomatrix(image, distances, angles, levels, symmetric=True, normed=True), prop)``.
    """
    count, height, width = levels_image.shape
    values = levels_image.to(torch.float64)
    results = {name: torch.zeros(count, len(distances), len(angles), dtype=torch.float64, device=values.device)
               for name in GLCM_PROPERTIES}
    for d_index, distance in enumerate(distances):
        for a_index, angle in enumerate(angles):
            row = _round_half_away(math.sin(angle) * distance)
            col = _round_half_away(math.cos(angle) * distance)
            rows = slice(max(0, -row), min(height, height - row))
            cols = slice(max(0, -col), min(width, width - col))
            first = values[:, rows, cols].flatten(1)
            second = values[:, rows.start + row:rows.stop + row, cols.start + col:cols.stop + col].flatten(1)
            difference = first - second
            results["contrast"][:, d_index, a_index] = difference.square().mean(1)
            results["dissimilarity"][:, d_index, a_index] = difference.abs().mean(1)
            # symmetric P: both marginals are the pooled distribution of first and second
            mean = 0.5 * (first.mean(1, keepdim=True) + second.mean(1, keepdim=True))
            variance = 0.5 * ((first - mean).square().mean(1) + (second - mean).square().mean(1))
            covariance = ((first - mean) * (second - mean)).mean(1)
            flat = variance < 1e-30
            results["correlation"][:, d_index, a_index] = torch.where(
                flat, torch.ones_like(variance), covariance / torch.where(flat, 1.0, variance))
    return results


class GLCMTexture(TwoSampleMetric):
    """Mean GLCM contrast, dissimilarity and correlation per image channel (averaged over the configured
    distances and angles) for each set, images quantised to ``levels`` grey levels:
    ``glcm_{contrast,dissimilarity}_{real,fake,ratio}`` (ratio = fake/real), ``glcm_correlation_{real,fake,diff}``
    (diff = fake − real; correlation lies in [−1, 1]).
    """

    def __init__(self, levels: int = 32, distances: Sequence[int] = (1,), angles: Sequence[float] = (0, 45, 90, 135),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if int(levels) != levels or not 2 <= levels <= 256:
            raise ConfigError(f"battery.glcm_levels={levels!r} is invalid; it must be an integer in [2, 256]")
        distances = list(distances)
        if not distances or any(int(d) != d or d < 1 for d in distances):
            raise ConfigError(f"battery.glcm_distances={distances} is invalid; give a non-empty list of integers >= 1")
        angles = [float(a) for a in angles]
        if not angles:
            raise ConfigError("battery.glcm_angles=[] is invalid; give a non-empty list of angles in degrees")
        self.levels, self.distances = int(levels), [int(d) for d in distances]
        self.angles = [math.radians(a) for a in angles]
        self._add_pair("count", torch.zeros((), dtype=torch.float64))
        self._add_pair("properties", torch.zeros(len(GLCM_PROPERTIES), dtype=torch.float64))

    def _update(self, images: Tensor, split: str) -> None:
        height, width = images.shape[-2:]
        if max(self.distances) >= max(height, width):
            raise ValueError(f"battery.glcm_distances={self.distances} exceed the {height}x{width} image size")
        levels_image = quantize(images.to(self.device).flatten(0, 1), self.levels)
        properties = glcm_properties(levels_image, self.distances, self.angles)
        sums = torch.stack([properties[name].mean(dim=(1, 2)).sum() for name in GLCM_PROPERTIES])
        self._accumulate("count", split, torch.tensor(float(len(levels_image))))
        self._accumulate("properties", split, sums)

    def compute(self) -> dict[str, float]:
        self._require("count")
        means = {split: self.state("properties", split) / self.state("count", split) for split in ("real", "fake")}
        results = {}
        for index, name in enumerate(GLCM_PROPERTIES):
            real, fake = float(means["real"][index]), float(means["fake"][index])
            results[f"glcm_{name}_real"], results[f"glcm_{name}_fake"] = real, fake
            if name == "correlation":
                results["glcm_correlation_diff"] = fake - real
            else:
                results[f"glcm_{name}_ratio"] = safe_ratio(fake, real)
        return results


def gradient_magnitude(images: Tensor) -> Tensor:
    """Mean of √(∂_y x² + ∂_x x²) over the pixels of each image channel, float64 (N, C).

    Derivatives are ``torch.gradient``'s (central differences inside, one-sided at the border, pixel
    spacing 1), the same as ``numpy.gradient``.
    """
    return gradient_field(images).mean(dim=(-2, -1))


def gradient_field(images: Tensor) -> Tensor:
    """√(∂_y x² + ∂_x x²) at every pixel (``torch.gradient``, as ``numpy.gradient``), float64 like ``images``."""
    gradient_y, gradient_x = torch.gradient(images.to(torch.float64), dim=(-2, -1))
    return (gradient_y.square() + gradient_x.square()).sqrt()


class GradientMagnitude(MeanRatioMetric):
    """``gradient_magnitude_{real,fake}``: mean ``gradient_magnitude`` per image channel; ``_ratio`` = fake/real."""

    prefix = "gradient_magnitude"

    def _update(self, images: Tensor, split: str) -> None:
        if min(images.shape[-2:]) < 2:
            raise ValueError(f"gradient magnitude needs images of at least 2x2 pixels, got {tuple(images.shape)}")
        magnitude = gradient_magnitude(images.to(self.device))
        self._add_values(split, magnitude.sum(), float(magnitude.numel()))


def per_image_texture(images: Tensor, levels: int, distances: Sequence[int], angles: Sequence[float]) -> dict[str, Tensor]:
    """Per image channel (flattened, float64 (N·C,)): the GLCM properties (mean over distances and angles, angles in
    radians) and the mean gradient magnitude; the per-image values behind ``texture_ks``."""
    properties = glcm_properties(quantize(images.flatten(0, 1), levels), distances, angles)
    values = {name: properties[name].mean(dim=(1, 2)) for name in GLCM_PROPERTIES}
    values["gradient_magnitude"] = gradient_magnitude(images).flatten()
    return values


def ks_statistic(first: Tensor, second: Tensor) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup_x |F₁(x) − F₂(x)| of the empirical distributions (as
    ``scipy.stats.ks_2samp(...).statistic``)."""
    first, second = first.double().sort().values, second.double().sort().values
    points = torch.cat([first, second])
    cdf_first = torch.searchsorted(first, points, right=True).double() / len(first)
    cdf_second = torch.searchsorted(second, points, right=True).double() / len(second)
    return float((cdf_first - cdf_second).abs().max())


class TextureKS(TwoSampleMetric):
    """``texture_ks_<feature>``: two-sample KS statistic between the generated and real per-image values of each
    texture feature (GLCM contrast, dissimilarity, correlation; gradient magnitude), and ``texture_ks``, their mean:
    0 when the per-image distributions match, 1 when they do not overlap. Where the GLCM/gradient ratios compare set
    means, this sees a spread or a subpopulation (some images smooth, some noisy) that a mean hides. Keeps the
    per-image values (``cat`` states)."""

    def __init__(self, levels: int = 32, distances: Sequence[int] = (1,), angles: Sequence[float] = (0.0,),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.levels, self.distances = int(levels), [int(d) for d in distances]
        self.angles = [math.radians(float(a)) for a in angles]
        self._add_pair("values", None, reduce="cat")

    def _update(self, images: Tensor, split: str) -> None:
        values = per_image_texture(images.to(self.device), self.levels, self.distances, self.angles)
        self._append("values", split, torch.stack(list(values.values()), dim=1))

    def compute(self) -> dict[str, float]:
        self._require("values")
        real, fake = self.state("values", "real"), self.state("values", "fake")
        names = (*GLCM_PROPERTIES, "gradient_magnitude")
        results = {f"texture_ks_{name}": ks_statistic(fake[:, index], real[:, index]) for index, name in
                   enumerate(names)}
        results["texture_ks"] = sum(results.values()) / len(names)
        return results
