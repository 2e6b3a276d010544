"""Training losses: small callable classes returning the per-sample loss; the LightningModule reduces."""

from spectral_diffusion.losses.base import DiffusionLoss, KendallWeights, LossContext, LossTerm
from spectral_diffusion.losses.frequency import (
    FocalFrequencyError,
    FrequencyBalancedError,
    FrequencyBalancedLoss,
    PhaseError,
)
from spectral_diffusion.losses.pixel import LpError, LpLoss, MSELoss, SquaredError
from spectral_diffusion.losses.weighting import min_snr_weight

__all__ = [
    "DiffusionLoss",
    "FocalFrequencyError",
    "FrequencyBalancedError",
    "FrequencyBalancedLoss",
    "KendallWeights",
    "LossContext",
    "LossTerm",
    "LpError",
    "LpLoss",
    "MSELoss",
    "PhaseError",
    "SquaredError",
    "min_snr_weight",
]
