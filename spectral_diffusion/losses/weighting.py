"""Per-sample loss weights that depend on the noise level: min-SNR-γ for every prediction type.

Min-SNR-γ (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 7–9) is
defined on the x0 error: weight min(SNR, γ). A loss on another prediction measures the x0 error times a
factor λ (``Prediction.x0_error_scale``); dividing by λ gives every prediction type the same effective weighting.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectral_diffusion.diffusion.predictions import Prediction, per_sample_alpha_sigma


def min_snr_weight(prediction: Prediction, t: Tensor, x0: Tensor, process, gamma: float) -> Tensor:
    """Per-sample (B,) weight of a loss on ``prediction`` so that it weighs the x0 error by min(SNR, γ)
    (Hang et al. 2023), SNR = α²/σ² from the process's per-sample (α, σ) at ``t``.

    For VP processes this is the paper's min(SNR, γ) for x0, min(SNR, γ)/SNR for ε and
    min(SNR, γ)/(SNR + 1) for v, all from one expression.
    """
    alpha, sigma = per_sample_alpha_sigma(process, t, x0)
    snr = alpha.square() / sigma.square()
    return torch.clamp(snr, max=float(gamma)) / prediction.x0_error_scale(t, x0, process)


class WhiteTwin:
    """The white counterpart of a process: the same basis and times, every coefficient's A_t, S_t (and A'_t,
    S'_t) replaced by their per-sample root mean square over the coefficients (derivatives keep their sign), so
    a frequency-equalized process (mean(w²) = 1) maps to ``gaussian`` with the same α(t), σ(t)."""

    def __init__(self, process) -> None:
        self.process = process

    def to_basis(self, x: Tensor) -> Tensor:
        return self.process.to_basis(x)

    def from_basis(self, c: Tensor) -> Tensor:
        return self.process.from_basis(c)

    @staticmethod
    def _rms(value: Tensor, like: Tensor, signed: bool = False) -> Tensor:
        full = torch.broadcast_to(value, like.shape).flatten(1)
        rms = full.square().mean(1).sqrt()
        if signed:
            rms = rms * torch.sign(full.mean(1))
        return rms.reshape((-1,) + (1,) * (like.ndim - 1))

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.process.coefficients(t, like)
        return self._rms(alpha, like), self._rms(sigma, like)

    def coefficient_derivatives(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        d_alpha, d_sigma = self.process.coefficient_derivatives(t, like)
        return self._rms(d_alpha, like, signed=True), self._rms(d_sigma, like, signed=True)


def is_white(process, t: Tensor, like: Tensor) -> bool:
    """Whether ``process`` has one A_t and one S_t per sample (no per-coefficient colour) at ``t``."""
    alpha, sigma = process.coefficients(t, like)
    return all(size == 1 for size in (*alpha.shape[1:], *sigma.shape[1:]))


def white_residual_weights(prediction: Prediction, t: Tensor, like: Tensor, process) -> Tensor | None:
    """Per-coefficient weights (B, C, H, W) in the process basis, float64, for the squared residual of a loss on
    ``prediction`` so that a unit x0 error in every coefficient costs what it costs under the white process with
    the same whole-image α(t), σ(t) (``WhiteTwin``): λ_white / λ_process, where λ = 1/g² and g = ∂x̂0/∂output is
    read from the prediction's own conversion ``x0_eps`` (diagonal and affine in the basis).

    For ε and v on ``equalized`` noise this is w² and w²/(α² + σ²w²)²; for x0 it is 1. None for a white process
    (the loss is then left exactly as it is)."""
    like = torch.zeros_like(like, dtype=torch.float64)
    if is_white(process, t, like):
        return None
    ones = process.from_basis(torch.ones_like(like))
    zeros = torch.zeros_like(like)

    def slope(path) -> Tensor:
        return path.to_basis(prediction.x0_eps(zeros, t, ones, path)[0])

    return slope(process).square() / slope(WhiteTwin(process)).square()
