"""Training losses: small callable classes returning the unreduced loss; the LightningModule reduces."""

from spectral_diffusion.losses.pixel import DiffusionLoss, MSELoss

__all__ = ["DiffusionLoss", "MSELoss"]
