"""Pixel-space losses and the base class every diffusion loss shares.

A loss knows which quantity the network predicts (``prediction``: eps, x0 or v) and compares the
network output with the process's target for it, element by element (EDM ``training/loss.py`` style).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from spectral_diffusion.diffusion.process import check_prediction


class DiffusionLoss(ABC):
    """Base: holds the prediction type; subclasses define the element-wise error."""

    def __init__(self, prediction: str = "eps") -> None:
        self.prediction = check_prediction(prediction)

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        return self.error(output.float(), target.float())

    @abstractmethod
    def error(self, output: Tensor, target: Tensor) -> Tensor:
        """Element-wise error between network output and target (float32)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prediction={self.prediction!r})"


class MSELoss(DiffusionLoss):
    """Squared error (Ho et al. 2020, eq. 14 with ε, or its x0 / v analogues)."""

    def error(self, output: Tensor, target: Tensor) -> Tensor:
        return (output - target) ** 2
