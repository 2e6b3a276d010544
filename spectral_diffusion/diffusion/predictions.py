"""Prediction types: what the network outputs (ε, x0, v or the flow velocity) and how that maps to the rest.

Each type is a small object chosen by ``_target_`` (``conf/prediction``) and owned by the LightningModule. It knows
its training target, its conversion of a network output to (x̂0, ε̂) and the factor λ by which its squared
error scales the x0 error, all through a process's diagonal coefficients (A_t, S_t) and their time
derivatives (A'_t, S'_t) in the process basis, so each is written once for every process.

Symbols (code ↔ paper): ``a``, ``s`` = A_t, S_t (α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t) for VP, Ho et al. 2020);
``v`` = a ε − s x0 (Salimans & Ho 2022, §4), generalised to any diagonal (a, s); ``flow`` = u_t = dx_t/dt =
a' x0 + s' ε, the velocity of flow matching (Lipman et al. 2023, eq. 20; Liu et al. 2023 rectified flow:
u = ε − x0 for A = 1 − t, S = t), defined for every process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from spectral_diffusion.utils.validation import ConfigError


def per_sample_alpha_sigma(process, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Scalar (α, σ) per sample, shape (B,) in float64: the root-mean-square of the process's diagonal A_t, S_t.

    Exact for scalar (white) processes; for per-frequency processes it is the SNR of the whole image.
    """
    coefficients = process.to_basis(like)
    alpha, sigma = process.coefficients(t, coefficients)
    return _root_mean_square(alpha, coefficients), _root_mean_square(sigma, coefficients)


def per_sample_flow_determinant(process, t: Tensor, like: Tensor) -> Tensor:
    """d = A S' − S A' per sample, shape (B,) in float64, root-mean-square over coefficients (exact for scalar
    processes): how a flow-velocity error maps to an x0 error on the process's path (1 on the flow path)."""
    coefficients = process.to_basis(like)
    alpha, sigma = process.coefficients(t, coefficients)
    d_alpha, d_sigma = process.coefficient_derivatives(t, coefficients)
    determinant = alpha.double() * d_sigma.double() - sigma.double() * d_alpha.double()
    return torch.broadcast_to(determinant, coefficients.shape).flatten(1).square().mean(1).sqrt()


def _root_mean_square(value: Tensor, coefficients: Tensor) -> Tensor:
    return torch.broadcast_to(value, coefficients.shape).flatten(1).double().square().mean(1).sqrt()


def _in_basis(x_t: Tensor, t: Tensor, output: Tensor, process) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x_t and the network output in the process basis, with (A_t, S_t) there: what every conversion reads."""
    c_t = process.to_basis(x_t)
    return (c_t, process.to_basis(output), *process.coefficients(t, c_t))


class Prediction(ABC):
    """What the network predicts. ``target`` and ``x0_eps`` work in the process basis, element-wise."""

    name: str

    @abstractmethod
    def target(self, x0: Tensor, eps: Tensor, t: Tensor, process) -> Tensor:
        """What a network trained for this prediction should output at (x0, ε, t)."""

    @abstractmethod
    def x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, process) -> tuple[Tensor, Tensor]:
        """(x̂0, ε̂) implied by a network ``output`` at (x_t, t), with x_t = A x0 + S ε."""

    @abstractmethod
    def x0_error_scale(self, t: Tensor, x0: Tensor, process) -> Tensor:
        """λ per sample (B,), float64, with ‖pred̂ − pred‖² = λ ‖x̂0 − x0‖² at fixed x_t (per-sample α, σ of
        ``per_sample_alpha_sigma``): min-SNR-γ divides by it (Hang et al. 2023, eq. 7–9)."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EpsPrediction(Prediction):
    """ε-prediction (Ho et al. 2020, eq. 14): x̂0 = (x_t − S ε̂)/A, undefined where A = 0."""

    name = "eps"

    def target(self, x0: Tensor, eps: Tensor, t: Tensor, process) -> Tensor:
        return eps

    def x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, process) -> tuple[Tensor, Tensor]:
        c_t, c_out, a, s = _in_basis(x_t, t, output, process)
        return process.from_basis((c_t - s * c_out) / a), process.from_basis(c_out)

    def x0_error_scale(self, t: Tensor, x0: Tensor, process) -> Tensor:
        """Δε = −(α/σ) Δx0, so λ = α²/σ² = SNR."""
        alpha, sigma = per_sample_alpha_sigma(process, t, x0)
        return alpha.square() / sigma.square()


class X0Prediction(Prediction):
    """x0-prediction: the network outputs the clean image; ε̂ = (x_t − A x̂0)/S."""

    name = "x0"

    def target(self, x0: Tensor, eps: Tensor, t: Tensor, process) -> Tensor:
        return x0

    def x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, process) -> tuple[Tensor, Tensor]:
        c_t, c_out, a, s = _in_basis(x_t, t, output, process)
        return process.from_basis(c_out), process.from_basis((c_t - a * c_out) / s)

    def x0_error_scale(self, t: Tensor, x0: Tensor, process) -> Tensor:
        return torch.ones(x0.shape[0], dtype=torch.float64, device=x0.device)


class VPrediction(Prediction):
    """v-prediction v = A ε − S x0 (Salimans & Ho 2022, §4, generalised to diagonal A, S)."""

    name = "v"

    def target(self, x0: Tensor, eps: Tensor, t: Tensor, process) -> Tensor:
        c0, ce = process.to_basis(x0), process.to_basis(eps)
        a, s = process.coefficients(t, c0)
        return process.from_basis(a * ce - s * c0)

    def x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, process) -> tuple[Tensor, Tensor]:
        """From x_t = a x0 + s ε and v = a ε − s x0: x0 = (a x_t − s v)/(a² + s²) and ε = (s x_t + a v)/(a² + s²),
        which for a² + s² = 1 are Salimans & Ho's eq. (8)–(9)."""
        c_t, c_out, a, s = _in_basis(x_t, t, output, process)
        norm = a * a + s * s
        return process.from_basis((a * c_t - s * c_out) / norm), process.from_basis((s * c_t + a * c_out) / norm)

    def x0_error_scale(self, t: Tensor, x0: Tensor, process) -> Tensor:
        """Δv = −((α² + σ²)/σ) Δx0, so λ = (α² + σ²)²/σ² (= SNR + 1 for VP)."""
        alpha, sigma = per_sample_alpha_sigma(process, t, x0)
        return (alpha.square() + sigma.square()).square() / sigma.square()


class FlowPrediction(Prediction):
    """The flow-matching velocity u = A' x0 + S' ε (Lipman et al. 2023, eq. 20), for every process."""

    name = "flow"

    def target(self, x0: Tensor, eps: Tensor, t: Tensor, process) -> Tensor:
        c0, ce = process.to_basis(x0), process.to_basis(eps)
        d_a, d_s = process.coefficient_derivatives(t, c0)
        return process.from_basis(d_a * c0 + d_s * ce)

    def x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, process) -> tuple[Tensor, Tensor]:
        """From x_t and u, the 2×2 system [a s; a' s'] gives x0 = (s' x_t − s u)/d and ε = (a u − a' x_t)/d
        with d = a s' − s a' (= 1 on the flow path)."""
        c_t, c_out, a, s = _in_basis(x_t, t, output, process)
        d_a, d_s = process.coefficient_derivatives(t, c_t)
        determinant = a * d_s - s * d_a
        return (process.from_basis((d_s * c_t - s * c_out) / determinant),
                process.from_basis((a * c_out - d_a * c_t) / determinant))

    def x0_error_scale(self, t: Tensor, x0: Tensor, process) -> Tensor:
        """Δu = (α' − σ' α/σ) Δx0 = −(d/σ) Δx0 with d = α σ' − σ α', so λ = d²/σ²."""
        _, sigma = per_sample_alpha_sigma(process, t, x0)
        return per_sample_flow_determinant(process, t, x0).square() / sigma.square()


def check_prediction(prediction, key: str = "prediction") -> Prediction:
    """``prediction`` when it is a prediction object; else a ConfigError naming ``key`` and the choices."""
    if not isinstance(prediction, Prediction):
        raise ConfigError(f"{key}={prediction!r} is not a prediction type; choose one of eps, x0, v, flow "
                          "(conf/prediction)")
    return prediction
