"""Straightness of sampling trajectories (Liu, Gong & Liu 2023, "Flow Straight and Fast", rectified flow, eq. 9:
S = ∫₀¹ E‖(x_0 − x_1) − ẋ_s‖² ds), measured on the discrete trajectory itself so that processes with different
clocks (VP cosine, the flow's linear path, per-frequency equalized or banded coefficients) can be compared.

Why the trajectory's own parametrisation: Liu et al.'s S takes the derivative in the process's time t, so a straight
path walked at a varying speed (a VP schedule's x_t moves fast at some t and slowly at others) would count as
curved, and two processes that trace the same curve at different speeds would differ. Here s ∈ [0, 1] is the
trajectory's normalised arc length (x_1 = x_T at s = 0, x_0 the sample at s = 1), which depends on the path alone.
With D = x_0 − x_1 (the chord) and L the length of the path, ẋ_s = L·(unit tangent) and ∫ ẋ_s ds = D, so

    ∫₀¹ ‖ẋ_s − D‖² ds = L² − ‖D‖²,      straightness = E[L² − ‖D‖²] / E‖D‖²  (0: every path a straight segment).

On the discrete trajectory x^(0) = x_T, …, x^(K) = x_0 with steps Δ_k = x^(k+1) − x^(k) of length ℓ_k and angles θ_k
to the chord, L = Σ ℓ_k and ‖D‖ = Σ ℓ_k cos θ_k, so per path S = (Σ ℓ_k / Σ ℓ_k cos θ_k)² − 1: the per-step
deviation 1 − cos θ_k (0: the step points along the chord; 2: against it) is the curvature profile over noise
levels. Norms are taken in pixel space; every basis of the project is orthonormal, so they equal those in the
process basis. Example: points on a circular arc of angle Φ give (Φ/2 / sin(Φ/2))² − 1 as K → ∞.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from matplotlib.figure import Figure
from torch import Tensor

from spectral_diffusion.metrics.bootstrap import percentile_interval, resample_counts


@torch.no_grad()
def sample_trajectory(sampler: Callable, denoise_fn, process, x_T: Tensor, steps: int | Tensor) -> Tensor:
    """The states (K + 1, B, ...) of one sampler run from ``x_T``: x_T, then the state after each step (the
    sampler's ``callback``), the last being its output. ``sampler`` is any function of ``diffusion.samplers``
    (deterministic ones trace the probability-flow ODE: ``ddim`` with η = 0, ``euler``, ``heun``)."""
    states = [x_T]
    output = sampler(denoise_fn, process, x_T, steps, callback=lambda step: states.append(step["x"]))
    if len(states) < 2 or not torch.equal(states[-1], output):
        raise ValueError("the sampler must report its state after every step through callback(step['x'])")
    return torch.stack(states)


class TrajectoryStraightness:
    """Accumulates straightness over batches of trajectories (float64): E[L²], E‖D‖² and the mean deviation
    1 − cos θ_k of each step from its path's chord (see the module docstring). ``compute()`` gives
    ``{"straightness": S, "deviation": (K,) tensor}`` and ``interval()`` a bootstrap interval of S over paths; a path
    whose chord is zero (it ends where it started) has no direction and is refused."""

    def __init__(self) -> None:
        self.squared_lengths: list[Tensor] = []  # L² of each path
        self.squared_chords: list[Tensor] = []  # ‖D‖² of each path
        self.deviation: Tensor | None = None
        self.count = 0

    def update(self, trajectory: Tensor) -> None:
        """``trajectory``: (K + 1, B, ...) states from x_T to x_0 (``sample_trajectory``)."""
        if trajectory.ndim < 3 or len(trajectory) < 2:
            raise ValueError(f"a trajectory must be (K + 1 >= 2, B, ...) states, got {tuple(trajectory.shape)}")
        path = trajectory.double().flatten(2)  # (K + 1, B, P)
        steps = path[1:] - path[:-1]  # Δ_k
        chord = path[-1] - path[0]  # D
        lengths = steps.norm(dim=-1)  # ℓ_k, (K, B)
        chord_length = chord.norm(dim=-1)  # (B,)
        if bool((chord_length == 0).any()):
            raise ValueError("a trajectory ends where it starts: its chord x_0 − x_T has no direction")
        cosine = (steps * chord).sum(-1) / (lengths * chord_length).clamp(min=torch.finfo(torch.float64).tiny)
        deviation = torch.where(lengths > 0, 1.0 - cosine, torch.zeros_like(cosine)).sum(dim=1)
        if self.deviation is None:
            self.deviation = torch.zeros_like(deviation)
        elif len(self.deviation) != len(deviation):
            raise ValueError(f"trajectories of {len(deviation)} steps after ones of {len(self.deviation)}")
        self.deviation += deviation.cpu()
        self.squared_lengths.append(lengths.sum(0).square().cpu())
        self.squared_chords.append(chord_length.square().cpu())
        self.count += trajectory.shape[1]

    def compute(self) -> dict[str, object]:
        if self.count == 0:
            raise ValueError("no trajectory was given")
        squared_length, squared_chord = (float(torch.cat(values).sum()) for values in (self.squared_lengths,
                                                                                        self.squared_chords))
        return {"straightness": (squared_length - squared_chord) / squared_chord,
                "deviation": self.deviation / self.count}

    def interval(self, *, resamples: int, level: float, seed: int) -> tuple[float, float]:
        """Percentile bootstrap interval (``metrics.bootstrap.percentile_interval``) of the straightness at
        ``level``: the paths resampled with replacement ``resamples`` times from a generator seeded by ``seed``."""
        squared_lengths, squared_chords = torch.cat(self.squared_lengths), torch.cat(self.squared_chords)
        counts = resample_counts(len(squared_lengths), resamples, torch.Generator().manual_seed(seed))
        replicates = (counts @ squared_lengths) / (counts @ squared_chords) - 1.0
        return percentile_interval(replicates, level, self.compute()["straightness"])


def straightness_figure(times: Tensor, deviation: Tensor) -> Figure:
    """Mean deviation 1 − cos θ of each sampling step from its path's chord against the step's start time t."""
    if len(times) != len(deviation):
        raise ValueError(f"{len(times)} step times for {len(deviation)} deviations")
    figure = Figure(figsize=(5, 3.2))
    axes = figure.add_subplot()
    axes.plot(times.numpy(), deviation.numpy(), marker="o")
    axes.set_xlabel("t at the start of the step")
    axes.set_ylabel("1 − cos(step, chord)")
    axes.set_title("trajectory curvature per noise level")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
