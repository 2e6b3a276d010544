"""Forward processes x_t = A_t · x0 + S_t · ε, diagonal in an orthonormal basis.

This module is the one place that knows the diffusion maths: how to noise data, how the network's
ε / x0 / v output maps to the others, what the training target is and where the prior lies.
Backbones, losses and samplers call it and stay ignorant of schedules and bases.

Symbols (code ↔ paper): ``alpha`` = α_t = √ᾱ_t, ``sigma`` = σ_t = √(1 − ᾱ_t) (Ho et al. 2020);
``v`` = α_t ε − σ_t x0 (Salimans & Ho 2022, §4), generalised to any diagonal (α, σ) below.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectral_diffusion.diffusion.schedules import Schedule
from spectral_diffusion.spectral.bases import IdentityBasis
from spectral_diffusion.utils.random import Generators, randn
from spectral_diffusion.utils.validation import check_choice

PREDICTIONS = ("eps", "x0", "v")


def check_prediction(prediction: str, key: str = "loss.prediction") -> str:
    return check_choice(key, prediction, PREDICTIONS)


class GaussianProcess:
    """The DDPM/VP baseline: white ε, scalar α(t), σ(t) from a schedule, in a basis (pixels by default).

    Subclasses change ``coefficients`` (per-basis-coefficient A_t, S_t) and inherit every
    conversion, the training target and the prior, so every sampler works with them unchanged.
    """

    name = "gaussian"

    def __init__(self, schedule: Schedule, basis=None) -> None:
        self.schedule = schedule
        self.basis = basis if basis is not None else IdentityBasis()

    # --- the diagonal coefficients ---------------------------------------------------------------
    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(A_t, S_t) broadcastable against basis coefficients shaped like ``like`` (B, ...)."""
        t = torch.as_tensor(t, device=like.device)
        alpha_bar = self.schedule.alpha_bar(t.double())
        shape = (-1,) + (1,) * (like.ndim - 1)
        alpha = alpha_bar.sqrt().to(like.dtype).reshape(shape)
        sigma = (1.0 - alpha_bar).clamp(min=0).sqrt().to(like.dtype).reshape(shape)
        return alpha, sigma

    # --- basis plumbing --------------------------------------------------------------------------
    def to_basis(self, x: Tensor) -> Tensor:
        """Coefficients of images in the process basis (a no-op for pixels)."""
        return x if self.basis.is_identity else self.basis.forward(x)

    def from_basis(self, c: Tensor) -> Tensor:
        """Images from coefficients in the process basis."""
        return c if self.basis.is_identity else self.basis.inverse(c)

    # --- forward process ---------------------------------------------------------------------------
    def noise(self, shape, generator: Generators = None, *, device=None, dtype=None) -> Tensor:
        """ε: white in pixels, hence white in any orthonormal basis (colour lives in S_t)."""
        return randn(shape, generator, device=device, dtype=dtype)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = A_t x0 + S_t ε (Ho et al. 2020, eq. 4, generalised to diagonal A, S)."""
        c0, ce = self.to_basis(x0), self.to_basis(eps)
        a, s = self.coefficients(t, c0)
        return self.from_basis(a * c0 + s * ce)

    def prior(self, shape, generator: Generators = None, *, device=None, dtype=None) -> Tensor:
        """x_T drawn with the marginal variance A_T² + S_T² of unit-variance data and the same ε law.

        For the VP baseline this is exactly N(0, I), the textbook prior.
        """
        eps = self.noise(shape, generator, device=device, dtype=dtype)
        c = self.to_basis(eps)
        t_max = torch.ones(shape[0], device=c.device)
        a, s = self.coefficients(t_max, c)
        return self.from_basis((a * a + s * s).sqrt() * c)

    # --- prediction conversions --------------------------------------------------------------------
    def target(self, x0: Tensor, eps: Tensor, t: Tensor, prediction: str) -> Tensor:
        """What a network trained for ``prediction`` should output at (x0, ε, t)."""
        if prediction == "eps":
            return eps
        if prediction == "x0":
            return x0
        check_prediction(prediction)
        c0, ce = self.to_basis(x0), self.to_basis(eps)
        a, s = self.coefficients(t, c0)
        return self.from_basis(a * ce - s * c0)

    def x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, prediction: str) -> tuple[Tensor, Tensor]:
        """(x0, ε) implied by a network ``output`` of type ``prediction`` at (x_t, t).

        From x_t = a x0 + s ε and v = a ε − s x0: x0 = (a x_t − s v)/(a² + s²) and
        ε = (s x_t + a v)/(a² + s²), which for a² + s² = 1 are Salimans & Ho's eq. (8)–(9).
        """
        check_prediction(prediction)
        c_t, c_out = self.to_basis(x_t), self.to_basis(output)
        a, s = self.coefficients(t, c_t)
        if prediction == "eps":
            c_x0, c_eps = (c_t - s * c_out) / a, c_out
        elif prediction == "x0":
            c_x0, c_eps = c_out, (c_t - a * c_out) / s
        else:
            norm = a * a + s * s
            c_x0, c_eps = (a * c_t - s * c_out) / norm, (s * c_t + a * c_out) / norm
        return self.from_basis(c_x0), self.from_basis(c_eps)

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """ε = (x_t − A_t x0)/S_t: the noise a given clean estimate implies."""
        c_t, c0 = self.to_basis(x_t), self.to_basis(x0)
        a, s = self.coefficients(t, c_t)
        return self.from_basis((c_t - a * c0) / s)

    # --- time -----------------------------------------------------------------------------------
    def training_times(self, batch: int, generator=None, device=None) -> Tensor:
        return self.schedule.training_times(batch, generator, device)

    def sampling_times(self, steps: int) -> Tensor:
        return self.schedule.sampling_times(steps)

    @staticmethod
    def network_time(t: Tensor) -> Tensor:
        """The noise-level input the backbone sees: 1000·t (DDPM's step index scale)."""
        return 1000.0 * t

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r}, basis={self.basis!r})"
