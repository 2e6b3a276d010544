"""Pixel-space error terms (squared error, p-norm) and the single-term losses built on them.

``MSELoss`` is Ho et al. 2020, eq. 14 (with ε, or its x0 / v analogues); ``LpLoss`` replaces the square by
|·|^p; p < 2 penalises large errors less than the square and so blurs less (the L1 argument of
Isola et al. 2017, pix2pix, §3.1).
"""

from __future__ import annotations

from torch import Tensor

from spectral_diffusion.losses.base import DiffusionLoss, LossTerm
from spectral_diffusion.utils.validation import check_positive


class SquaredError(LossTerm):
    """Mean over pixels of (estimate − reference)²."""

    def __call__(self, estimate: Tensor, reference: Tensor) -> Tensor:
        return (estimate - reference).square().flatten(1).mean(1)


class LpError(LossTerm):
    """Mean over pixels of |estimate − reference|^p, p > 0."""

    def __init__(self, p: float = 1.5, key: str = "loss.terms.lp.p") -> None:
        self.p = float(check_positive(key, p))

    def __call__(self, estimate: Tensor, reference: Tensor) -> Tensor:
        return (estimate - reference).abs().pow(self.p).flatten(1).mean(1)

    def __repr__(self) -> str:
        return f"LpError(p={self.p})"


class MSELoss(DiffusionLoss):
    """Squared error between the network output and its target (of the module's prediction type)."""

    def __init__(self, min_snr_gamma: float | None = None, noise_weighting: str = "none") -> None:
        super().__init__({"mse": SquaredError()}, min_snr_gamma=min_snr_gamma, noise_weighting=noise_weighting)


class LpLoss(DiffusionLoss):
    """|output − target|^p between the network output and its target (of the module's prediction type)."""

    def __init__(self, p: float = 1.5, min_snr_gamma: float | None = None, noise_weighting: str = "none") -> None:
        super().__init__({"lp": LpError(p, key="loss.p")}, min_snr_gamma=min_snr_gamma,
                         noise_weighting=noise_weighting)
