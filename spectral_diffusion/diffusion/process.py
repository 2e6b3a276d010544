"""Forward processes x_t = A_t · x0 + S_t · ε, diagonal in an orthonormal basis.

A process knows how to noise data, its diagonal coefficients (A_t, S_t) and their time derivatives, its
times and where the prior lies; what the network predicts and how that converts is a prediction object
(``diffusion.predictions``) that reads these coefficients. Backbones, losses and samplers call both and
stay ignorant of schedules and bases.

Symbols (code ↔ paper): ``alpha`` = α_t = √ᾱ_t, ``sigma`` = σ_t = √(1 − ᾱ_t) (Ho et al. 2020).
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectral_diffusion.diffusion.predictions import Prediction, check_prediction
from spectral_diffusion.diffusion.schedules import Schedule
from spectral_diffusion.spectral.bases import make_basis
from spectral_diffusion.utils.random import Generators, randn


def per_sample(value: Tensor, like: Tensor) -> Tensor:
    """A per-sample (B,) value reshaped to broadcast against ``like`` (B, ...)."""
    return value.reshape((-1,) + (1,) * (like.ndim - 1))


def vp_coefficient_derivatives(schedule: Schedule, t: Tensor, like: Tensor,
                               signal_ratio: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
    """(dA/dt, dS/dt) in float64 of the variance-preserving pair with log-SNR λ(t) + log r:
    A² = r ᾱ/D, S² = (1 − ᾱ)/D, D = r ᾱ + 1 − ᾱ (r = 1: A = √ᾱ, S = √(1 − ᾱ)).

    Differentiating gives d(A²)/dt = r ᾱ'/D² = −d(S²)/dt, so A' = r ᾱ'/(2 A D²), S' = −r ᾱ'/(2 S D²).
    ᾱ and ᾱ' are those of the schedule's continuous form (a discrete schedule's continuous counterpart);
    S' is infinite at t = 0, where σ ∝ √t. ``signal_ratio`` r = e^shift may be per coefficient.
    """
    t = per_sample(torch.as_tensor(t, device=like.device, dtype=torch.float64), like)
    alpha_bar = schedule.continuous_alpha_bar(t)
    derivative = schedule.alpha_bar_derivative(t)
    ratio = torch.as_tensor(signal_ratio, dtype=torch.float64, device=like.device)
    denominator = ratio * alpha_bar + 1.0 - alpha_bar
    common = ratio * derivative / denominator.square()
    alpha = (ratio * alpha_bar / denominator).sqrt()
    sigma = ((1.0 - alpha_bar) / denominator).clamp(min=0).sqrt()
    return common / (2 * alpha), -common / (2 * sigma)


class GaussianProcess:
    """The DDPM/VP baseline: white ε, scalar α(t), σ(t) from a schedule, in a basis (pixels by default).

    Subclasses change ``coefficients`` (per-basis-coefficient A_t, S_t) and inherit the prior, and every
    prediction type and sampler works with them unchanged.
    """

    name = "gaussian"

    def __init__(self, schedule: Schedule, basis="identity") -> None:
        self.schedule = schedule
        # a name from the config (identity | fft | dct | dwt) or a basis object
        self.basis = make_basis(basis or "identity") if basis is None or isinstance(basis, str) else basis

    def prepare(self, datamodule) -> None:
        """Estimate what the process needs from the training data (nothing for white processes).

        ``datamodule`` gives ``image_shape`` and, read by coloured processes, the cached
        ``radial_power_spectrum()``. Here it only checks that the basis accepts the image size (a DWT needs
        sides divisible by 2^levels).
        """
        self.basis.check_shape(*datamodule.image_shape[-2:])

    def check_prediction(self, prediction: Prediction) -> Prediction:
        """Reject, naming ``prediction``, a prediction type this process cannot convert or train."""
        return check_prediction(prediction)

    # --- the diagonal coefficients ---------------------------------------------------------------
    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(A_t, S_t) broadcastable against basis coefficients shaped like ``like`` (B, ...)."""
        t = torch.as_tensor(t, device=like.device)
        alpha_bar = per_sample(self.schedule.alpha_bar(t.double()), like)
        return alpha_bar.sqrt().to(like.dtype), (1.0 - alpha_bar).clamp(min=0).sqrt().to(like.dtype)

    def coefficient_derivatives(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(dA/dt, dS/dt) broadcastable like ``coefficients``: the probability-flow ODE of the path is
        dx/dt = A' x0 + S' ε per coefficient (the velocity u_t of flow matching, Lipman et al. 2023, eq. 20).

        Taken from the schedule's continuous form, also for a discrete schedule (see ``Schedule.alpha_bar_derivative``).
        """
        d_alpha, d_sigma = vp_coefficient_derivatives(self.schedule, t, like)
        return d_alpha.to(like.dtype), d_sigma.to(like.dtype)

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

    # --- conversions ------------------------------------------------------------------------------
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
