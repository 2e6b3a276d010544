"""Frequency-space error terms: spectrum-balanced squared error, focal frequency loss, phase error.

All use the orthonormal 2-D FFT, so a squared error summed over the full coefficient grid equals the
pixel squared error (Parseval); rfft2 grids count each non-self-mirrored column twice for that reason.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectral_diffusion.losses.base import DiffusionLoss, LossTerm
from spectral_diffusion.spectral.dft import real_fft2, real_rfft2
from spectral_diffusion.spectral.frequency import hermitian_multiplicity
from spectral_diffusion.utils.validation import ConfigError, check_int, check_positive


class FrequencyBalancedError(LossTerm):
    """Squared error in the orthonormal FFT basis with per-frequency weights w(f) ∝ S_data(f)^−γ.

    The weights are normalised to mean 1 over the full FFT grid, so at γ = 1 every radial band
    contributes in proportion to its relative error rather than to its power, and at γ = 0 the term
    is exactly the pixel MSE. S_data is the training set's radially averaged power spectrum on the rfft2
    grid (``spectral.data_power_spectrum``), set by ``prepare(datamodule)`` from the datamodule's cached
    ``power_spectrum()`` or by ``set_data_spectrum``.
    """

    frequency = True

    def __init__(self, gamma: float = 1.0, key: str = "loss.terms.frequency_balanced.gamma") -> None:
        self.gamma = float(check_positive(key, gamma, strict=False))
        self.spectrum: Tensor | None = None
        self._weights: dict[tuple, Tensor] = {}

    def prepare(self, datamodule) -> None:
        self.set_data_spectrum(datamodule.power_spectrum())

    def set_data_spectrum(self, spectrum: Tensor) -> None:
        """S_data on the rfft2 grid (H, W//2+1), as returned by ``data_power_spectrum``."""
        self.spectrum = spectrum.detach().to("cpu", torch.float64)
        self._weights.clear()

    def frequency_weights(self, height: int, width: int, device=None) -> Tensor:
        """w on the rfft2 grid (H, W//2+1), float32, with Σ m·w = H·W (mean 1 over the full grid)."""
        key = (height, width, str(device))
        if key not in self._weights:
            multiplicity = hermitian_multiplicity(height, width)
            if self.gamma == 0:
                weights = torch.ones_like(multiplicity)
            else:
                if self.spectrum is None:
                    raise RuntimeError("FrequencyBalancedError needs S_data: call prepare(datamodule) first")
                if tuple(self.spectrum.shape) != tuple(multiplicity.shape):
                    raise ValueError(f"S_data has shape {tuple(self.spectrum.shape)}, images need {tuple(multiplicity.shape)}")
                weights = self.spectrum.pow(-self.gamma)
                weights = weights * (height * width) / (multiplicity * weights).sum()
            self._weights[key] = (multiplicity * weights).float().to(device)
        return self._weights[key]

    def __call__(self, estimate: Tensor, reference: Tensor) -> Tensor:
        _, _, height, width = estimate.shape
        real, imag = real_rfft2(estimate - reference)
        weighted = self.frequency_weights(height, width, estimate.device) * (real.square() + imag.square())
        return weighted.flatten(1).sum(1) / (estimate[0].numel())

    def __repr__(self) -> str:
        return f"FrequencyBalancedError(gamma={self.gamma})"


class FocalFrequencyError(LossTerm):
    """Focal frequency loss (Jiang, Dai, Wu & Loy, ICCV 2021, eq. 2–4) on the x0 estimate.

    Each image is cut into patch_factor² patches; on each patch's orthonormal 2-D FFT the distance
    |F̂ − F|² is weighted by w = |F̂ − F|^α (optionally log(1 + ·)), scaled to [0, 1] by its maximum per
    image, patch and channel (or over the batch with ``batch_matrix``), and not back-propagated.
    ``ave_spectrum`` compares minibatch-average spectra instead (the loss is then one value per batch).
    """

    space = "x0"
    frequency = True

    def __init__(self, alpha: float = 1.0, patch_factor: int = 1, ave_spectrum: bool = False,
                 log_matrix: bool = False, batch_matrix: bool = False, key: str = "loss.terms.ffl") -> None:
        self.key = key
        self.alpha = float(check_positive(f"{key}.alpha", alpha, strict=False))
        self.patch_factor = check_int(f"{key}.patch_factor", patch_factor, 1)
        self.ave_spectrum = bool(ave_spectrum)
        self.log_matrix = bool(log_matrix)
        self.batch_matrix = bool(batch_matrix)

    def prepare(self, datamodule) -> None:
        self.check_image_size(*datamodule.image_shape[-2:])

    def check_image_size(self, height: int, width: int) -> None:
        if height % self.patch_factor or width % self.patch_factor:
            raise ConfigError(f"{self.key}.patch_factor={self.patch_factor} does not divide the image size "
                              f"{height}x{width}; choose a divisor of both")

    def patch_spectra(self, images: Tensor) -> Tensor:
        """(B, C, H, W) → real and imaginary parts of the orthonormal fft2 of each patch stacked on a new first
        axis, (2, B, P², C, H/P, W/P), patches in row-major order (``spectral.dft.real_fft2``: real matrix
        products, far cheaper than torch.fft on small patches)."""
        batch, channels, height, width = images.shape
        self.check_image_size(height, width)
        f = self.patch_factor
        patches = images.reshape(batch, channels, f, height // f, f, width // f).permute(0, 2, 4, 1, 3, 5)
        return torch.stack(real_fft2(patches.reshape(batch, f * f, channels, height // f, width // f)))

    def __call__(self, estimate: Tensor, reference: Tensor) -> Tensor:
        # the FFT is linear: the spectrum of the difference is the difference of the spectra
        difference = self.patch_spectra(estimate - reference)
        if self.ave_spectrum:
            difference = difference.mean(1, keepdim=True)
        distance = difference.square().sum(0)
        with torch.no_grad():
            focal = distance.sqrt().pow(self.alpha)
            if self.log_matrix:
                focal = torch.log1p(focal)
            if self.batch_matrix:
                focal = focal / focal.max()
            else:
                focal = focal / focal.amax(dim=(-2, -1), keepdim=True)
            focal = torch.nan_to_num(focal, nan=0.0).clamp(0.0, 1.0)  # 0/0 where a patch matches exactly
        per_sample = (focal * distance).flatten(1).mean(1)
        return per_sample.expand(estimate.shape[0]) if self.ave_spectrum else per_sample

    def __repr__(self) -> str:
        return (f"FocalFrequencyError(alpha={self.alpha}, patch_factor={self.patch_factor}, "
                f"ave_spectrum={self.ave_spectrum}, log_matrix={self.log_matrix}, batch_matrix={self.batch_matrix})")


class PhaseError(LossTerm):
    """Magnitude-weighted phase error of the x0 estimate's spectrum (phase-preserving reconstruction):

        Σ_f |X(f)| · (1 − cos(∠X̂(f) − ∠X(f))) / Σ_f |X(f)|      over the full orthonormal FFT grid,

    with X the clean image's spectrum, so it lies in [0, 2], is zero when the phases agree, and does not
    change when either spectrum is scaled by a positive constant.
    """

    space = "x0"
    frequency = True

    def __call__(self, estimate: Tensor, reference: Tensor) -> Tensor:
        _, _, height, width = estimate.shape
        estimate_spectrum = torch.fft.rfft2(estimate, norm="ortho")
        reference_spectrum = torch.fft.rfft2(reference, norm="ortho")
        multiplicity = hermitian_multiplicity(height, width, device=estimate.device).float()
        magnitude = reference_spectrum.abs()
        # cos Δφ = Re(X̂ X̄)/(|X̂||X|); the floor keeps the gradient finite where X̂ vanishes.
        cosine = (estimate_spectrum * reference_spectrum.conj()).real / (estimate_spectrum.abs() * magnitude).clamp(min=1e-12)
        error = (multiplicity * magnitude * (1.0 - cosine)).flatten(1).sum(1)
        return error / (multiplicity * magnitude).flatten(1).sum(1).clamp(min=1e-12)


class FrequencyBalancedLoss(DiffusionLoss):
    """``FrequencyBalancedError`` between the network output and its target (of the module's prediction type)."""

    def __init__(self, gamma: float = 1.0, min_snr_gamma: float | None = None, noise_weighting: str = "none") -> None:
        super().__init__({"frequency_balanced": FrequencyBalancedError(gamma, key="loss.gamma")},
                         min_snr_gamma=min_snr_gamma, noise_weighting=noise_weighting)
