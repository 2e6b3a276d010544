"""Forward processes x_t = A_t · x0 + S_t · ε, diagonal in an orthonormal basis.

This module is the one place that knows the diffusion maths: how to noise data, how the network's
ε / x0 / v output maps to the others, what the training target is and where the prior lies.
Backbones, losses and samplers call it and stay ignorant of schedules and bases.

Symbols (code ↔ paper): ``alpha`` = α_t = √ᾱ_t, ``sigma`` = σ_t = √(1 − ᾱ_t) (Ho et al. 2020);
``v`` = α_t ε − σ_t x0 (Salimans & Ho 2022, §4), generalised to any diagonal (α, σ) below;
``flow`` = u_t = dx_t/dt = A'_t x0 + S'_t ε, the velocity of flow matching (Lipman et al. 2023, eq. 20;
Liu et al. 2023 rectified flow: u = ε − x0 for A = 1 − t, S = t), defined for every process.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spectral_diffusion.diffusion.schedules import Schedule
from spectral_diffusion.spectral.bases import make_basis
from spectral_diffusion.utils.random import Generators, randn
from spectral_diffusion.utils.validation import check_choice

PREDICTIONS = ("eps", "x0", "v", "flow")


def check_prediction(prediction: str, key: str = "loss.prediction") -> str:
    return check_choice(key, prediction, PREDICTIONS)


def image_size(data) -> tuple[int, int]:
    """(H, W) of a datamodule (``image_shape``) or of an (N, C, H, W) image tensor."""
    shape = data.image_shape if hasattr(data, "image_shape") else data.shape
    return int(shape[-2]), int(shape[-1])


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

    Subclasses change ``coefficients`` (per-basis-coefficient A_t, S_t) and inherit every
    conversion, the training target and the prior, so every sampler works with them unchanged.
    """

    name = "gaussian"

    def __init__(self, schedule: Schedule, basis="identity") -> None:
        self.schedule = schedule
        # a name from the config (identity | fft | dct | dwt) or a basis object
        self.basis = make_basis(basis or "identity") if basis is None or isinstance(basis, str) else basis

    def prepare(self, data) -> None:
        """Estimate what the process needs from the training data (nothing for white processes).

        ``data`` is the datamodule (its cached ``power_spectrum()`` is used) or a (N, C, H, W) image tensor.
        Here it only checks that the basis accepts the image size (a DWT needs sides divisible by 2^levels).
        """
        self.basis.check_shape(*image_size(data))

    def check_prediction(self, prediction: str) -> str:
        """Reject, naming ``loss.prediction``, a prediction type this process cannot convert or train."""
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

    # --- prediction conversions --------------------------------------------------------------------
    def target(self, x0: Tensor, eps: Tensor, t: Tensor, prediction: str) -> Tensor:
        """What a network trained for ``prediction`` should output at (x0, ε, t)."""
        if prediction == "eps":
            return eps
        if prediction == "x0":
            return x0
        check_prediction(prediction)
        c0, ce = self.to_basis(x0), self.to_basis(eps)
        if prediction == "flow":
            d_a, d_s = self.coefficient_derivatives(t, c0)
            return self.from_basis(d_a * c0 + d_s * ce)
        a, s = self.coefficients(t, c0)
        return self.from_basis(a * ce - s * c0)

    def x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, prediction: str) -> tuple[Tensor, Tensor]:
        """(x0, ε) implied by a network ``output`` of type ``prediction`` at (x_t, t).

        From x_t = a x0 + s ε and v = a ε − s x0: x0 = (a x_t − s v)/(a² + s²) and
        ε = (s x_t + a v)/(a² + s²), which for a² + s² = 1 are Salimans & Ho's eq. (8)–(9).
        From x_t and the velocity u = a' x0 + s' ε, the 2×2 system [a s; a' s'] gives
        x0 = (s' x_t − s u)/d and ε = (a u − a' x_t)/d with d = a s' − s a' (= 1 on the flow path).
        """
        check_prediction(prediction)
        c_t, c_out = self.to_basis(x_t), self.to_basis(output)
        a, s = self.coefficients(t, c_t)
        if prediction == "eps":
            c_x0, c_eps = (c_t - s * c_out) / a, c_out
        elif prediction == "x0":
            c_x0, c_eps = c_out, (c_t - a * c_out) / s
        elif prediction == "flow":
            d_a, d_s = self.coefficient_derivatives(t, c_t)
            determinant = a * d_s - s * d_a
            c_x0, c_eps = (d_s * c_t - s * c_out) / determinant, (a * c_out - d_a * c_t) / determinant
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
