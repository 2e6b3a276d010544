"""The diffusion objective: error terms on the network output or its x0 estimate, weighted and summed.

A ``LossTerm`` is the maths of one error (squared, p-norm, focal frequency, ...) between two image
batches; ``DiffusionLoss`` decides what it compares (prediction vs target, or x̂0 vs x0), the min-SNR-γ
weight, the SNR gate of frequency terms and fixed or learned (Kendall et al. 2018) term weights. It
returns the per-sample loss (B,). The prediction type comes with each call's ``LossContext``: the
LightningModule owns it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from spectral_diffusion.diffusion.predictions import Prediction, X0Prediction, per_sample_alpha_sigma
from spectral_diffusion.losses.weighting import min_snr_weight, white_residual_weights
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_positive

WEIGHTINGS = ("fixed", "kendall")
NOISE_WEIGHTINGS = ("none", "white")
# What an x0-space term compares: its error is the x0 error itself (λ = 1 for min-SNR-γ).
X0_SPACE = X0Prediction()


class LossTerm(ABC):
    """One error between an estimate and a reference batch (B, C, H, W), per sample (B,).

    ``space`` says what the objective feeds it: ``"prediction"`` (network output vs its target) or
    ``"x0"`` (the x0 estimate implied by the output vs the clean batch). ``frequency`` terms can be
    gated by ``frequency_min_snr``.
    """

    space = "prediction"
    frequency = False

    @abstractmethod
    def __call__(self, estimate: Tensor, reference: Tensor) -> Tensor:
        """Per-sample error, shape (B,)."""

    def prepare(self, datamodule) -> None:
        """Check the term against the datamodule's ``image_shape`` and read what it needs (cached S_data)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass
class LossContext:
    """What a training step knows besides output and target: the clean batch, x_t, t, the process and what
    the network predicts."""

    x0: Tensor
    x_t: Tensor
    t: Tensor
    process: object
    prediction: Prediction
    _x0_estimate: Tensor | None = field(default=None, repr=False)

    def x0_estimate(self, output: Tensor) -> Tensor:
        """x̂0 implied by ``output`` (computed once per step, differentiable)."""
        if self._x0_estimate is None:
            self._x0_estimate = self.prediction.x0_eps(self.x_t, self.t, output, self.process)[0]
        return self._x0_estimate

    def alpha_sigma(self) -> tuple[Tensor, Tensor]:
        return per_sample_alpha_sigma(self.process, self.t, self.x0)


class KendallWeights(nn.Module):
    """Learned log-variances s_i = log σ_i² of Kendall, Gal & Cipolla 2018 (CVPR), eq. 7:
    L = Σ_i ½ exp(−s_i) L_i + ½ s_i, i.e. (1/2σ_i²) L_i + log σ_i."""

    def __init__(self, names: list[str], initial_weights: Mapping[str, float]) -> None:
        super().__init__()
        # Start where fixed weights w_i would be: ½ exp(−s_i) = w_i.
        self.log_variances = nn.ParameterDict(
            {name: nn.Parameter(torch.tensor(-math.log(2.0 * float(initial_weights[name])))) for name in names}
        )

    def combine(self, name: str, value: Tensor) -> Tensor:
        log_variance = self.log_variances[name]
        return 0.5 * torch.exp(-log_variance) * value + 0.5 * log_variance

    def effective_weights(self) -> dict[str, Tensor]:
        return {name: 0.5 * torch.exp(-s.detach()) for name, s in self.log_variances.items()}


class DiffusionLoss:
    """Weighted sum of ``terms``; call as ``loss(output, target, context)`` → per-sample loss (B,).

    Args:
        terms: name → ``LossTerm``.
        weights: name → weight ≥ 0 (fixed weighting) or the initial effective weight ½exp(−s) > 0
            (Kendall weighting). ``None`` gives every term weight 1.
        weighting: ``fixed`` or ``kendall`` (learned log-variances, Kendall et al. 2018).
        min_snr_gamma: γ of min-SNR-γ weighting (Hang et al. 2023), or ``None`` for none.
        frequency_min_snr: frequency terms count only for samples whose SNR α²/σ² is at least this
            (an x0 estimate at high noise is blurry by nature); ``None`` applies them everywhere.
        noise_weighting: ``none``, or ``white``: the residual of every prediction-space term is rescaled per
            coefficient of the process basis (``losses.weighting.white_residual_weights``) so that a unit x0
            error in each coefficient costs what it costs under white noise with the same α(t), σ(t); a
            coloured process (``equalized``) otherwise weighs frequencies by its noise gain w(f) (issue 16).
            A white process is left exactly as it is.

    The ``LossContext`` of a call carries the prediction type; a loss with min-SNR-γ weighting, an SNR gate
    or an x0-space term needs it.
    """

    def __init__(self, terms: Mapping[str, LossTerm], weights: Mapping[str, float] | None = None, *,
                 weighting: str = "fixed", min_snr_gamma: float | None = None,
                 frequency_min_snr: float | None = None, noise_weighting: str = "none") -> None:
        self.terms = {str(name): term for name, term in dict(terms).items()}
        if not self.terms:
            raise ConfigError("loss.terms is empty; give at least one loss term")
        for name, term in self.terms.items():
            if not isinstance(term, LossTerm):
                raise ConfigError(f"loss.terms.{name}={term!r} is not a LossTerm (give a _target_ node)")
        self.weighting = check_choice("loss.weighting", weighting, WEIGHTINGS)
        weights = {name: 1.0 for name in self.terms} if weights is None else {str(k): v for k, v in dict(weights).items()}
        if set(weights) != set(self.terms):
            raise ConfigError(f"loss.weights has keys {sorted(weights)}; they must be the term names {sorted(self.terms)}")
        for name, value in weights.items():
            check_positive(f"loss.weights.{name}", float(value), strict=self.weighting == "kendall")
        self.weights = {name: float(value) for name, value in weights.items()}
        self.kendall = KendallWeights(list(self.terms), self.weights) if self.weighting == "kendall" else None
        self.min_snr_gamma = None if min_snr_gamma is None else float(check_positive("loss.min_snr_gamma", min_snr_gamma))
        self.frequency_min_snr = (None if frequency_min_snr is None
                                  else float(check_positive("loss.frequency_min_snr", frequency_min_snr, strict=False)))
        self.noise_weighting = check_choice("loss.noise_weighting", noise_weighting, NOISE_WEIGHTINGS)
        self.last_values: dict[str, Tensor] = {}

    # --- what the LightningModule uses ---------------------------------------------------------------
    @property
    def learned_weights(self) -> nn.Module | None:
        """Parameters the optimizer must train alongside the network (Kendall log-variances), or None."""
        return self.kendall

    def prepare(self, datamodule) -> None:
        """Validate every term against the datamodule's images and give terms what they need (its cached S_data)."""
        for term in self.terms.values():
            term.prepare(datamodule)

    def __call__(self, output: Tensor, target: Tensor, context: LossContext | None = None) -> Tensor:
        output, target = output.float(), target.float()
        needs_context = (self.min_snr_gamma is not None or self.frequency_min_snr is not None
                         or self.noise_weighting != "none" or any(term.space == "x0" for term in self.terms.values()))
        if needs_context and context is None:
            raise ValueError(f"{self!r} needs a LossContext (x0, x_t, t, process, prediction) to be computed")
        alpha_sigma = context.alpha_sigma() if self.frequency_min_snr is not None else None
        scale = self.residual_scale(output, context)

        total = torch.zeros(output.shape[0], device=output.device)
        values: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            if term.space == "x0":
                value = term(context.x0_estimate(output).float(), context.x0.float())
                space = X0_SPACE
            elif scale is not None:
                value = term(scale(output), scale(target))
                space = context.prediction
            else:
                value = term(output, target)
                space = None if context is None else context.prediction
            if self.min_snr_gamma is not None:
                value = value * min_snr_weight(space, context.t, context.x0, context.process,
                                               self.min_snr_gamma).to(value)
            if term.frequency and self.frequency_min_snr is not None:
                alpha, sigma = alpha_sigma
                value = value * ((alpha / sigma).square() >= self.frequency_min_snr).to(value)
            values[name] = value.detach().mean()
            if self.kendall is not None:
                total = total + self.kendall.combine(name, value)
            else:
                total = total + self.weights[name] * value
        if self.kendall is not None:
            for name, weight in self.kendall.effective_weights().items():
                values[f"weight_{name}"] = weight
                values[f"log_variance_{name}"] = self.kendall.log_variances[name].detach()
        self.last_values = values
        return total

    def residual_weights(self, t: Tensor, like: Tensor, process, prediction: Prediction) -> Tensor | None:
        """Per-coefficient weights (B, C, H, W, process basis, float64) on the squared residual of prediction-space
        terms at times ``t`` for batches shaped like ``like``; None when they are all one (``noise_weighting=none``
        or a white process)."""
        if self.noise_weighting == "none":
            return None
        return white_residual_weights(prediction, t, like, process)

    def residual_scale(self, output: Tensor, context: LossContext | None):
        """x ↦ from_basis(√weights · to_basis(x)) for this step, so a squared error of two scaled batches is the
        weighted squared error of the residual (the basis is orthonormal); None when nothing is rescaled."""
        if self.noise_weighting == "none":
            return None
        weights = self.residual_weights(context.t, output, context.process, context.prediction)
        if weights is None:
            return None
        root = weights.sqrt().to(output.dtype)
        process = context.process
        return lambda x: process.from_basis(root * process.to_basis(x))

    def __repr__(self) -> str:
        terms = ", ".join(f"{name}={term!r}" for name, term in self.terms.items())
        return (f"{type(self).__name__}(terms=[{terms}], weighting={self.weighting!r}, weights={self.weights}, "
                f"min_snr_gamma={self.min_snr_gamma}, frequency_min_snr={self.frequency_min_snr}, "
                f"noise_weighting={self.noise_weighting!r})")

