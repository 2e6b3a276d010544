"""Spectral metrics of generated vs real images: power-spectrum error and slope, high-frequency energy,
wavelet sub-band energies, and Fourier magnitude/phase statistics per radial band.

Each is a ``torchmetrics.Metric`` (``update(images, real)``) whose states are float64 sums over
images and channels, so any batching gives the same value and DDP reduces them with ``"sum"``.
Frequencies are in cycles per pixel on the orthonormal rfft2 grid (``spectral.frequency``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pywt
import torch
from torch import Tensor

from spectral_diffusion.metrics.statistics import (
    TwoSampleMetric,
    js_divergence,
    safe_ratio,
)
from spectral_diffusion.spectral.bands import MAX_RADIUS, band_edges, band_index
from spectral_diffusion.spectral.frequency import (
    hermitian_multiplicity,
    radial_average,
    radial_frequency,
)
from spectral_diffusion.utils.validation import ConfigError

# Power below this (per coefficient, images in [-1, 1], orthonormal FFT) is treated as this in logs.
POWER_FLOOR = 1e-12
# Log10-magnitude histograms start here; the top edge is log10 √(HW), the largest possible |X|.
LOG_MAGNITUDE_MIN = -4.0
ORIENTATIONS = ("lh", "hl", "hh")  # pywt (cH, cV, cD): high-pass along height, along width, along both


def power_sum(images: Tensor) -> Tensor:
    """Σ over images and channels of |rfft2(x, norm="ortho")|², float64 (H, W//2+1)."""
    spectrum = torch.fft.rfft2(images.to(torch.float64), norm="ortho")
    return spectrum.abs().square().sum(dim=(0, 1))


def log_spectrum_mse(power_real: Tensor, power_fake: Tensor) -> float:
    """Mean over the given bins of (log10 P_fake − log10 P_real)², powers floored at ``POWER_FLOOR``."""
    difference = power_fake.clamp_min(POWER_FLOOR).log10() - power_real.clamp_min(POWER_FLOOR).log10()
    return float(difference.square().mean())


def slope_mask(height: int, width: int, band: Sequence[float]) -> Tensor:
    """Coefficients used by the slope fit: low ≤ |f| ≤ high and |f| > 0."""
    radius = radial_frequency(height, width)
    return (radius >= band[0]) & (radius <= band[1]) & (radius > 0)


def fit_spectral_slope(power: Tensor, height: int, width: int, band: Sequence[float]) -> float:
    """Spectral exponent β of P(f) ∝ |f|^−β: weighted least squares of log10 P against log10 |f|.

    The fit runs over every rfft2 coefficient with low ≤ |f| ≤ high (cycles per pixel), weighted by its
    Hermitian multiplicity, rather than over radial bins: a bin averages |f|^−β over a ring and biases
    β low on small grids, while each coefficient's mean power is exactly c|f|^−β for a power-law field.
    """
    mask = slope_mask(height, width, band).to(power.device)
    x = radial_frequency(height, width, device=power.device)[mask].log10()
    y = power[mask].clamp_min(POWER_FLOOR).log10()
    w = hermitian_multiplicity(height, width, device=power.device)[mask]
    x_mean, y_mean = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    slope = (w * (x - x_mean) * (y - y_mean)).sum() / (w * (x - x_mean).square()).sum()
    return float(-slope)


def high_frequency_energy(power: Tensor, height: int, width: int, cutoff: float) -> float:
    """Σ over full-grid coefficients with |f| ≥ cutoff of the power (Hermitian mirrors counted)."""
    mask = radial_frequency(height, width, device=power.device) >= cutoff
    return float((hermitian_multiplicity(height, width, device=power.device) * power)[mask].sum())


class PowerSpectrum(TwoSampleMetric):
    """Mean power |X(f)|² of each set on the rfft2 grid; from it:

    - ``spectral_mse``: mean over radial bins f > 0 of (log10 P̄_fake(f) − log10 P̄_real(f))², P̄ the
      radially averaged power spectrum;
    - ``spectral_slope_real``/``_fake``: β of P ∝ |f|^−β fitted over ``slope_band`` (``fit_spectral_slope``),
      ``spectral_slope_diff`` = |β_fake − β_real|;
    - ``hf_energy_ratio``: mean energy at |f| ≥ ``hf_cutoff`` per generated image over that per real image.
    """

    def __init__(self, height: int, width: int, slope_band: Sequence[float] = (0.0625, 0.5),
                 hf_cutoff: float = 0.25, **kwargs) -> None:
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)
        band = [float(value) for value in slope_band]
        if len(band) != 2 or not 0 <= band[0] < band[1] <= MAX_RADIUS:
            raise ConfigError(f"battery.slope_band={list(slope_band)} is invalid; give [low, high] cycles per pixel "
                              f"with 0 <= low < high <= {MAX_RADIUS:.4f}")
        radii = radial_frequency(self.height, self.width)[slope_mask(self.height, self.width, band)].unique()
        if len(radii) < 2:
            raise ConfigError(f"battery.slope_band={band} holds fewer than 2 distinct frequencies on a "
                              f"{self.height}x{self.width} grid (frequencies are multiples of 1/{self.height})")
        self.slope_band = band
        self.hf_cutoff = float(hf_cutoff)
        largest = float(radial_frequency(self.height, self.width).max())
        if not 0 < self.hf_cutoff <= largest:
            raise ConfigError(f"battery.hf_cutoff={hf_cutoff!r} is invalid; it must lie in (0, {largest:.4f}] "
                              f"cycles per pixel for {self.height}x{self.width} images")
        self._add_pair("count", torch.zeros((), dtype=torch.float64))
        self._add_pair("power", torch.zeros(self.height, self.width // 2 + 1, dtype=torch.float64))

    def _update(self, images: Tensor, split: str) -> None:
        if tuple(images.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"PowerSpectrum was built for {self.height}x{self.width} images, got "
                             f"{tuple(images.shape[-2:])}")
        self._accumulate("count", split, torch.tensor(float(images.shape[0] * images.shape[1])))
        self._accumulate("power", split, power_sum(images.to(self.device)))

    def mean_power(self, split: str) -> Tensor:
        self._require("count", splits=(split,))
        return self.state("power", split) / self.state("count", split)

    def radial_spectra(self) -> dict[str, Tensor]:
        frequencies, real = radial_average(self.mean_power("real"), self.height, self.width)
        _, fake = radial_average(self.mean_power("fake"), self.height, self.width)
        return {"frequency": frequencies.cpu(), "real": real.cpu(), "fake": fake.cpu()}

    def compute(self) -> dict[str, float]:
        spectra = self.radial_spectra()
        positive = spectra["frequency"] > 0
        real, fake = self.mean_power("real"), self.mean_power("fake")
        slope_real = fit_spectral_slope(real, self.height, self.width, self.slope_band)
        slope_fake = fit_spectral_slope(fake, self.height, self.width, self.slope_band)
        hf_real = high_frequency_energy(real, self.height, self.width, self.hf_cutoff)
        hf_fake = high_frequency_energy(fake, self.height, self.width, self.hf_cutoff)
        return {
            "spectral_mse": log_spectrum_mse(spectra["real"][positive], spectra["fake"][positive]),
            "spectral_slope_real": slope_real,
            "spectral_slope_fake": slope_fake,
            "spectral_slope_diff": abs(slope_fake - slope_real),
            "hf_energy_ratio": safe_ratio(hf_fake, hf_real),
        }


def wavelet_energies(images: Tensor, wavelet: str, levels: int) -> Tensor:
    """Σ over images and channels of the squared detail coefficients, float64 (levels, 3).

    Row l−1 is level l (1 = finest), columns ``ORIENTATIONS`` = (lh, hl, hh) = pywt's (cH, cV, cD) of
    ``wavedec2(mode="periodization")`` (Mallat 1989): lh high-pass along the height (horizontal edges),
    hl high-pass along the width (vertical edges), hh along both (diagonal detail).
    """
    array = images.detach().to("cpu", torch.float64).numpy()
    coefficients = pywt.wavedec2(array, wavelet, mode="periodization", level=levels, axes=(-2, -1))
    details = coefficients[1:][::-1]  # pywt lists the coarsest level first
    energies = [[float(np.square(band).sum()) for band in level] for level in details]
    return torch.tensor(energies, dtype=torch.float64)


class WaveletEnergy(TwoSampleMetric):
    """``wavelet_{lh,hl,hh}_ratio_l{l}``: mean energy of a detail sub-band per generated image over that per
    real image; ``wavelet_energy_ratio_l{l}`` the same for all three orientations of level l together.
    """

    def __init__(self, height: int, width: int, wavelet: str = "haar", levels: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ConfigError(f"battery.wavelet={wavelet!r} is not allowed; choose a discrete PyWavelets wavelet "
                              f"(pywt.wavelist(kind='discrete'), e.g. haar, db2, sym4)")
        deepest = pywt.dwt_max_level(min(int(height), int(width)), pywt.Wavelet(wavelet).dec_len)
        if int(levels) != levels or not 1 <= levels <= deepest:
            raise ConfigError(f"battery.wavelet_levels={levels!r} is invalid; for {wavelet} on {height}x{width} "
                              f"images it must be an integer in [1, {deepest}]")
        self.wavelet, self.levels = wavelet, int(levels)
        self._add_pair("count", torch.zeros((), dtype=torch.float64))
        self._add_pair("energy", torch.zeros(self.levels, len(ORIENTATIONS), dtype=torch.float64))

    def _update(self, images: Tensor, split: str) -> None:
        self._accumulate("count", split, torch.tensor(float(images.shape[0] * images.shape[1])))
        self._accumulate("energy", split, wavelet_energies(images, self.wavelet, self.levels))

    def mean_energies(self) -> dict[str, Tensor]:
        self._require("count")
        return {split: (self.state("energy", split) / self.state("count", split)).cpu() for split in ("real", "fake")}

    def compute(self) -> dict[str, float]:
        energies = self.mean_energies()
        results = {}
        for level in range(self.levels):
            for index, orientation in enumerate(ORIENTATIONS):
                results[f"wavelet_{orientation}_ratio_l{level + 1}"] = safe_ratio(
                    float(energies["fake"][level, index]), float(energies["real"][level, index]))
            results[f"wavelet_energy_ratio_l{level + 1}"] = safe_ratio(
                float(energies["fake"][level].sum()), float(energies["real"][level].sum()))
        return results


class BandStatistics(TwoSampleMetric):
    """Fourier magnitude and phase statistics in ``num_bands`` equal-width radial rings (``spectral.bands``).

    Per band k, every coefficient weighted by its Hermitian multiplicity, channels pooled:
    - ``band_magnitude_ratio_b{k}``: mean |X| of generated over mean |X| of real images;
    - ``band_magnitude_js_b{k}``, ``band_phase_js_b{k}``: JS divergence (bits) between the histograms of
      log10 |X| (``magnitude_bins`` bins on [−4, log10 √(HW)], clamped) and of arg X (``phase_bins`` on [−π, π]);
    - ``band_phase_coherence_diff_b{k}``: generated minus real band mean of ρ̂², the unbiased squared
      mean resultant length of the phases at one frequency over n images (Mardia & Jupp 2000, §3.4):
      ρ̂² = (|Σ_n e^{iφ_n}|² − n) / (n(n − 1)); 0 for uniform phases, 1 when all images share a phase.
    """

    def __init__(self, height: int, width: int, num_bands: int = 4, magnitude_bins: int = 64, phase_bins: int = 36,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)
        edges = band_edges(num_bands, key="battery.num_bands")
        self.num_bands = len(edges) - 1
        self.magnitude_bins, self.phase_bins = int(magnitude_bins), int(phase_bins)
        self.magnitude_range = (LOG_MAGNITUDE_MIN, 0.5 * math.log10(self.height * self.width))
        self.register_buffer("band", band_index(self.height, self.width, edges), persistent=False)
        self.register_buffer("weight", hermitian_multiplicity(self.height, self.width), persistent=False)
        grid = (self.height, self.width // 2 + 1)
        self._add_pair("count", torch.zeros((), dtype=torch.float64))
        self._add_pair("magnitude", torch.zeros(self.num_bands, dtype=torch.float64))
        self._add_pair("magnitude_histogram", torch.zeros(self.num_bands, self.magnitude_bins, dtype=torch.float64))
        self._add_pair("phase_histogram", torch.zeros(self.num_bands, self.phase_bins, dtype=torch.float64))
        self._add_pair("cos", torch.zeros(grid, dtype=torch.float64))
        self._add_pair("sin", torch.zeros(grid, dtype=torch.float64))

    def _histogram(self, values: Tensor, weights: Tensor, low: float, high: float, bins: int) -> Tensor:
        index = ((values - low) / (high - low) * bins).floor().long().clamp_(0, bins - 1)
        flat = (self.band * bins + index).flatten(start_dim=-2)
        counts = torch.zeros(self.num_bands * bins, dtype=torch.float64, device=values.device)
        counts.index_add_(0, flat.flatten(), weights.expand_as(values).flatten())
        return counts.reshape(self.num_bands, bins)

    def _update(self, images: Tensor, split: str) -> None:
        spectrum = torch.fft.rfft2(images.to(self.device, torch.float64), norm="ortho").flatten(0, 1)
        magnitude, phase = spectrum.abs(), spectrum.angle()
        log_magnitude = magnitude.clamp_min(1e-300).log10()
        self._accumulate("count", split, torch.tensor(float(len(spectrum))))
        weighted = (self.weight * magnitude).sum(0).flatten()
        self._accumulate("magnitude", split, torch.zeros(self.num_bands, dtype=torch.float64, device=self.device)
                         .index_add_(0, self.band.flatten(), weighted))
        self._accumulate("magnitude_histogram", split,
                         self._histogram(log_magnitude, self.weight, *self.magnitude_range, self.magnitude_bins))
        self._accumulate("phase_histogram", split, self._histogram(phase, self.weight, -math.pi, math.pi,
                                                                   self.phase_bins))
        self._accumulate("cos", split, phase.cos().sum(0))
        self._accumulate("sin", split, phase.sin().sum(0))

    def phase_coherence(self, split: str) -> Tensor:
        """Band means of ρ̂² (see the class docstring), float64 (K,)."""
        n = float(self.state("count", split))
        if n < 2:
            raise ValueError(f"phase coherence needs at least 2 {split} image channels")
        resultant = self.state("cos", split).square() + self.state("sin", split).square()
        rho_squared = (resultant - n) / (n * (n - 1))
        totals = torch.zeros(self.num_bands, dtype=torch.float64, device=rho_squared.device)
        totals.index_add_(0, self.band.flatten(), (self.weight * rho_squared).flatten())
        weights = torch.zeros_like(totals).index_add_(0, self.band.flatten(), self.weight.flatten())
        return totals / weights

    def histograms(self) -> dict:
        """Histograms for the figures: per split (K, bins) counts, plus bin edges."""
        return {
            "magnitude_edges": torch.linspace(*self.magnitude_range, self.magnitude_bins + 1, dtype=torch.float64),
            "phase_edges": torch.linspace(-math.pi, math.pi, self.phase_bins + 1, dtype=torch.float64),
            **{f"{name}_{split}": self.state(name, split).cpu() for name in ("magnitude_histogram", "phase_histogram")
               for split in ("real", "fake")},
        }

    def compute(self) -> dict[str, float]:
        self._require("count", 2)
        coherence = {split: self.phase_coherence(split) for split in ("real", "fake")}
        results = {}
        for k in range(self.num_bands):
            magnitude = {split: self.state("magnitude_histogram", split)[k] for split in ("real", "fake")}
            if magnitude["real"].sum() == 0:  # a ring with no coefficient on this grid
                continue
            means = [float(self.state("magnitude", split)[k] / magnitude[split].sum()) for split in ("fake", "real")]
            results[f"band_magnitude_ratio_b{k}"] = safe_ratio(*means)
            results[f"band_magnitude_js_b{k}"] = js_divergence(magnitude["real"], magnitude["fake"])
            results[f"band_phase_js_b{k}"] = js_divergence(self.state("phase_histogram", "real")[k],
                                                           self.state("phase_histogram", "fake")[k])
            results[f"band_phase_coherence_diff_b{k}"] = float(coherence["fake"][k] - coherence["real"][k])
        return results
