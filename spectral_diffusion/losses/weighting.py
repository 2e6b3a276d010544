"""Per-sample loss weights that depend on the noise level: min-SNR-γ for every prediction type.

Min-SNR-γ (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 7–9) is
defined on the x0 error: weight min(SNR, γ). A loss on another prediction measures the x0 error times a
factor λ(prediction); dividing by λ gives every prediction type the same effective weighting.
"""

from __future__ import annotations

import torch
from torch import Tensor


def x0_error_scale(prediction: str, alpha: Tensor, sigma: Tensor, determinant: Tensor | None = None) -> Tensor:
    """λ with ‖pred̂ − pred‖² = λ ‖x̂0 − x0‖² at fixed x_t = α x0 + σ ε.

    eps: ε = (x_t − α x0)/σ, so Δε = −(α/σ) Δx0 and λ = α²/σ² = SNR.
    v = α ε − σ x0 (Salimans & Ho 2022): Δv = −((α² + σ²)/σ) Δx0, λ = (α² + σ²)²/σ² (= SNR + 1 for VP).
    flow velocity u = α' x0 + σ' ε (Lipman et al. 2023): Δu = (α' − σ' α/σ) Δx0 = −(d/σ) Δx0 with
    d = α σ' − σ α', so λ = d²/σ²; ``determinant`` d defaults to the rectified-flow path's α + σ
    (α = 1 − t, σ = t).
    """
    if prediction == "x0":
        return torch.ones_like(alpha)
    if prediction == "eps":
        return alpha.square() / sigma.square()
    if prediction == "v":
        return (alpha.square() + sigma.square()).square() / sigma.square()
    if prediction == "flow":
        d = alpha + sigma if determinant is None else determinant
        return d.square() / sigma.square()
    raise ValueError(f"no x0 error scale for prediction {prediction!r}")


def min_snr_weight(prediction: str, alpha: Tensor, sigma: Tensor, gamma: float,
                   determinant: Tensor | None = None) -> Tensor:
    """Weight of a loss on ``prediction`` so that it weighs the x0 error by min(SNR, γ) (Hang et al. 2023).

    For VP processes this is the paper's min(SNR, γ) for x0, min(SNR, γ)/SNR for ε and
    min(SNR, γ)/(SNR + 1) for v, all from one expression.
    """
    snr = alpha.square() / sigma.square()
    return torch.clamp(snr, max=float(gamma)) / x0_error_scale(prediction, alpha, sigma, determinant)


def per_sample_alpha_sigma(process, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Scalar (α, σ) per sample, shape (B,): the root-mean-square of the process's diagonal A_t, S_t.

    Exact for scalar (white) processes; for per-frequency processes it is the SNR of the whole image.
    """
    coefficients = process.to_basis(like)
    alpha, sigma = process.coefficients(t, coefficients)
    alpha = torch.broadcast_to(alpha, coefficients.shape).flatten(1).double().square().mean(1).sqrt()
    sigma = torch.broadcast_to(sigma, coefficients.shape).flatten(1).double().square().mean(1).sqrt()
    return alpha, sigma


def per_sample_flow_determinant(process, t: Tensor, like: Tensor) -> Tensor:
    """d = A S' − S A' per sample, shape (B,), root-mean-square over coefficients (exact for scalar processes)."""
    coefficients = process.to_basis(like)
    alpha, sigma = process.coefficients(t, coefficients)
    d_alpha, d_sigma = process.coefficient_derivatives(t, coefficients)
    determinant = alpha.double() * d_sigma.double() - sigma.double() * d_alpha.double()
    return torch.broadcast_to(determinant, coefficients.shape).flatten(1).square().mean(1).sqrt()
