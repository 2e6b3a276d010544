"""Noise schedules: the signal level ᾱ(t) of a variance-preserving process, t ∈ [0, 1].

t = 0 is clean data (ᾱ = 1). A discrete schedule of T steps lives on the grid t = i/T,
i = 1..T, with ᾱ_i = ∏_{j≤i} (1 − β_j) exactly as in DDPM (Ho et al. 2020); a continuous schedule
takes any t. Both expose the same ``alpha_bar(t)`` so processes and samplers need not care.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from spectral_diffusion.utils.validation import ConfigError, check_int, check_positive, check_range

# The smallest ᾱ a continuous schedule returns, about the last ᾱ of the discrete cosine schedule
# (β clipped at 0.999): keeps x0 = (x_t − σ ε)/α finite at t = 1.
MIN_ALPHA_BAR = 1e-9


def check_steps(steps: int) -> int:
    """``sampler.steps``, the number of sampling steps, as an ``int`` >= 1: the one check of a step count,
    made where every process builds its sampling grid (``Schedule.sampling_times``, the schedule-free
    ``FlowProcess``), so every sampler and ``validate_sampler`` reach it through ``time_grid``."""
    return check_int("sampler.steps", steps, 1)


class Schedule(ABC):
    """ᾱ(t) on [0, 1]; discrete when ``discrete`` is true (then only grid points i/T are valid)."""

    def __init__(self, timesteps: int = 1000, discrete: bool = True) -> None:
        self.timesteps = check_int("noise.schedule.timesteps", timesteps, 1)
        self.discrete = bool(discrete)
        self._tables: dict[str, Tensor] = {}
        if self.discrete:
            betas = self.discrete_betas().double()
            self.alpha_bar_table = torch.cumprod(1.0 - betas, dim=0)

    @abstractmethod
    def discrete_betas(self) -> Tensor:
        """β_1..β_T of the discrete schedule (float64)."""

    @abstractmethod
    def continuous_alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ(t) of the continuous schedule (float64, before clamping)."""

    @abstractmethod
    def alpha_bar_derivative(self, t: Tensor) -> Tensor:
        """dᾱ/dt of the continuous schedule (float64, before clamping).

        A discrete schedule has no derivative; ODE samplers use that of its continuous counterpart
        (the same β range or cosine offset with T → ∞), which the discrete ᾱ_i follow to O(1/T).
        """

    def betas_of_continuous_form(self, max_beta: float) -> Tensor:
        """β_i = 1 − ᾱ(i/T)/ᾱ((i − 1)/T) of the continuous form, clipped at ``max_beta`` (Nichol & Dhariwal
        2021, §3.2), for schedules defined by ᾱ(t) rather than by β."""
        t = torch.arange(self.timesteps + 1, dtype=torch.float64) / self.timesteps
        alpha_bar = self.continuous_alpha_bar(t)
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)

    def alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ(t) in float64 (callers cast); t = 0 gives exactly 1."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if not self.discrete:
            return self.continuous_alpha_bar(t).clamp(min=MIN_ALPHA_BAR)
        index = torch.round(t * self.timesteps).long()
        return self._table(t.device)[index.clamp(0, self.timesteps)]

    def _table(self, device) -> Tensor:
        """[1, ᾱ_1, ..., ᾱ_T] on ``device``, built once per device (a sampler asks every step)."""
        key = str(device)
        if key not in self._tables:
            self._tables[key] = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar_table]).to(device)
        return self._tables[key]

    def training_times(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """t drawn uniformly: from {1/T, ..., 1} when discrete, from (0, 1] when continuous."""
        if self.discrete:
            index = torch.randint(1, self.timesteps + 1, (batch,), generator=generator)
            t = index.float() / self.timesteps
        else:
            t = 1.0 - torch.rand(batch, generator=generator)  # (0, 1]: never the clean endpoint
        return t.to(device) if device is not None else t

    def sampling_times(self, steps: int) -> Tensor:
        """A descending grid of ``steps`` noisy times followed by 0 (the clean endpoint).

        Discrete: ``steps`` indices evenly spaced from T down to 1 and rounded ("linspace" spacing of
        Lu et al. 2022 / diffusers), so ``steps = T`` visits every DDPM step. Continuous: t = 1 … 1/steps.
        """
        steps = check_steps(steps)
        if self.discrete:
            if steps > self.timesteps:
                raise ConfigError(
                    f"sampler.steps={steps} is invalid; a discrete schedule of "
                    f"noise.schedule.timesteps={self.timesteps} allows 1..{self.timesteps} steps"
                )
            index = torch.linspace(self.timesteps, 1, steps, dtype=torch.float64).round()
            grid = index / self.timesteps
        else:
            grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
        return torch.cat([grid, torch.zeros(1, dtype=torch.float64)]).float()


class LinearSchedule(Schedule):
    """Linear β from ``beta_start`` to ``beta_end`` over T steps (Ho et al. 2020, §4).

    The continuous form is its T → ∞ limit, the VP SDE of Song et al. 2021 (eq. 33) with
    β_min = T·beta_start, β_max = T·beta_end: log ᾱ(t) = −(β_min t + ½ (β_max − β_min) t²).
    """

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, timesteps: int = 1000,
                 discrete: bool = True) -> None:
        check_range("noise.schedule.beta_start", beta_start, 0.0, 1.0)
        check_range("noise.schedule.beta_end", beta_end, 0.0, 1.0)
        check_positive("noise.schedule.beta_start", beta_start)
        if beta_end < beta_start:
            raise ConfigError(
                f"noise.schedule.beta_end={beta_end} must be >= noise.schedule.beta_start={beta_start}"
            )
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        super().__init__(timesteps, discrete)

    def discrete_betas(self) -> Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.timesteps, dtype=torch.float64)

    def continuous_alpha_bar(self, t: Tensor) -> Tensor:
        beta_min, beta_max = self.timesteps * self.beta_start, self.timesteps * self.beta_end
        return torch.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t * t))

    def alpha_bar_derivative(self, t: Tensor) -> Tensor:
        """dᾱ/dt = −β(t) ᾱ(t), β(t) = β_min + (β_max − β_min) t (Song et al. 2021, eq. 33)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        beta_min, beta_max = self.timesteps * self.beta_start, self.timesteps * self.beta_end
        return -(beta_min + (beta_max - beta_min) * t) * self.continuous_alpha_bar(t)

    def __repr__(self) -> str:
        kind = "discrete" if self.discrete else "continuous"
        return f"LinearSchedule({self.beta_start}, {self.beta_end}, T={self.timesteps}, {kind})"


class CosineSchedule(Schedule):
    """Cosine ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t + s)/(1 + s)) (Nichol & Dhariwal 2021, eq. 17).

    Discrete betas are clipped at ``max_beta`` = 0.999 as in the paper.
    """

    def __init__(self, s: float = 0.008, max_beta: float = 0.999, timesteps: int = 1000,
                 discrete: bool = True) -> None:
        check_positive("noise.schedule.s", s, strict=False)
        check_range("noise.schedule.max_beta", max_beta, 0.0, 1.0)
        self.s, self.max_beta = float(s), float(max_beta)
        super().__init__(timesteps, discrete)

    def _f(self, t: Tensor) -> Tensor:
        return torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2

    def continuous_alpha_bar(self, t: Tensor) -> Tensor:
        return self._f(t) / self._f(torch.zeros_like(t))

    def alpha_bar_derivative(self, t: Tensor) -> Tensor:
        """dᾱ/dt = −(π/2)/(1 + s) · sin(π (t + s)/(1 + s)) / f(0), the derivative of eq. 17."""
        t = torch.as_tensor(t, dtype=torch.float64)
        angle = (t + self.s) / (1 + self.s) * math.pi
        return -(math.pi / 2) / (1 + self.s) * torch.sin(angle) / self._f(torch.zeros_like(t))

    def discrete_betas(self) -> Tensor:
        return self.betas_of_continuous_form(self.max_beta)

    def __repr__(self) -> str:
        kind = "discrete" if self.discrete else "continuous"
        return f"CosineSchedule(s={self.s}, T={self.timesteps}, {kind})"


class RectifiedFlowSchedule(Schedule):
    """The signal level of the rectified-flow path x = (1 − t) x0 + t ε seen as a VP process:
    ᾱ(t) = (1 − t)²/((1 − t)² + t²), the same SNR ((1 − t)/t)² at every t (Liu et al. 2023; Kingma &
    Gao 2023 show every Gaussian path is a rescaled VP path of equal SNR).

    As the ``schedule`` of ``noise=flow`` it makes the flow times uniform; as the schedule of a VP process
    it gives that process the flow path's SNR. Discrete betas are clipped at ``max_beta`` (ᾱ(1) = 0).
    """

    def __init__(self, max_beta: float = 0.999, timesteps: int = 1000, discrete: bool = False) -> None:
        check_range("noise.schedule.max_beta", max_beta, 0.0, 1.0)
        self.max_beta = float(max_beta)
        super().__init__(timesteps, discrete)

    def continuous_alpha_bar(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return (1 - t) ** 2 / ((1 - t) ** 2 + t**2)

    def alpha_bar_derivative(self, t: Tensor) -> Tensor:
        """dᾱ/dt = −2 t (1 − t)/((1 − t)² + t²)²."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return -2 * t * (1 - t) / ((1 - t) ** 2 + t**2) ** 2

    def discrete_betas(self) -> Tensor:
        return self.betas_of_continuous_form(self.max_beta)

    def __repr__(self) -> str:
        kind = "discrete" if self.discrete else "continuous"
        return f"RectifiedFlowSchedule(T={self.timesteps}, {kind})"
