"""Trajectory straightness (metrics.straightness): 0 for straight paths, the closed form of circular arcs, the
oracle trajectories of the flow (straight) and VP (a quarter circle) processes, and independence of batching."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from spectral_diffusion.diffusion.process import GaussianProcess
from spectral_diffusion.diffusion.processes import FlowProcess
from spectral_diffusion.diffusion.samplers import ddim, euler, heun
from spectral_diffusion.diffusion.schedules import CosineSchedule
from spectral_diffusion.metrics.straightness import TrajectoryStraightness, sample_trajectory, straightness_figure


def straightness_of(trajectory: torch.Tensor) -> dict:
    meter = TrajectoryStraightness()
    meter.update(trajectory)
    return meter.compute()


def arc(angles: torch.Tensor, radius: float = 3.0) -> torch.Tensor:
    """(K + 1, 1, 2) points on a circle of ``radius`` at ``angles`` (radians)."""
    return radius * torch.stack([angles.cos(), angles.sin()], dim=-1)[:, None].double()


def test_a_straight_path_walked_at_any_speed_has_straightness_zero():
    start, end = torch.randn(2, 3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fractions = torch.tensor([0.0, 0.01, 0.2, 0.21, 0.7, 1.0], dtype=torch.float64)  # very uneven steps
    trajectory = start + fractions[:, None, None, None, None] * (end - start)
    result = straightness_of(trajectory)
    assert abs(result["straightness"]) < 1e-12
    assert result["deviation"].abs().max() < 1e-12 and len(result["deviation"]) == 5


@pytest.mark.parametrize("steps", [1, 4, 50])
def test_a_circular_arc_has_its_closed_form(steps):
    total = math.pi / 2
    result = straightness_of(arc(torch.linspace(0, total, steps + 1, dtype=torch.float64)))
    # K equal chords of angle Φ/K against the chord of Φ: S = (K sin(Φ/2K) / sin(Φ/2))² − 1.
    expected = (steps * math.sin(total / (2 * steps)) / math.sin(total / 2)) ** 2 - 1
    assert result["straightness"] == pytest.approx(expected, rel=1e-12, abs=1e-14)
    # step k points at angle (k + ½)Φ/K + π/2 against the chord's Φ/2 + π/2
    k = torch.arange(steps, dtype=torch.float64)
    torch.testing.assert_close(result["deviation"], 1 - torch.cos((k + 0.5) * total / steps - total / 2))
    if steps == 50:  # the polygon approaches the arc: (Φ/2 / sin(Φ/2))² − 1 = π²/8 − 1 for a quarter circle
        assert result["straightness"] == pytest.approx(math.pi**2 / 8 - 1, rel=1e-3)


def test_a_path_that_overshoots_and_returns_is_not_straight():
    line = torch.tensor([0.0, 1.5, 1.0], dtype=torch.float64)[:, None, None]  # 0 → 1.5 → 1 on one axis
    result = straightness_of(line)
    assert result["straightness"] == pytest.approx(2.0**2 - 1)  # L = 2, |D| = 1
    torch.testing.assert_close(result["deviation"], torch.tensor([0.0, 2.0], dtype=torch.float64))


def test_batches_accumulate_to_the_whole_set():
    generator = torch.Generator().manual_seed(1)
    trajectory = torch.randn(6, 8, 1, 3, 3, generator=generator, dtype=torch.float64)
    whole = straightness_of(trajectory)
    meter = TrajectoryStraightness()
    meter.update(trajectory[:, :3])
    meter.update(trajectory[:, 3:])
    split = meter.compute()
    assert split["straightness"] == pytest.approx(whole["straightness"], rel=1e-12)
    torch.testing.assert_close(split["deviation"], whole["deviation"])
    lengths = (trajectory[1:] - trajectory[:-1]).flatten(2).norm(dim=-1).sum(0)
    chords = (trajectory[-1] - trajectory[0]).flatten(1).norm(dim=-1)
    assert whole["straightness"] == pytest.approx(float((lengths**2).mean() / (chords**2).mean() - 1), rel=1e-12)
    with pytest.raises(ValueError, match="steps"):
        meter.update(trajectory[:4])
    with pytest.raises(ValueError, match="chord"):
        straightness_of(torch.zeros(3, 1, 2))


def oracle(point: torch.Tensor):
    """The optimal denoiser of data that is one point: x̂0 = that point, whatever x_t."""
    return lambda x, t: point.expand_as(x)


@pytest.mark.parametrize("sampler", [partial(ddim, eta=0.0), euler, heun], ids=["ddim", "euler", "heun"])
def test_the_flow_path_of_one_data_point_is_straight(sampler):
    generator = torch.Generator().manual_seed(2)
    point = torch.randn(1, 1, 4, 4, generator=generator, dtype=torch.float64)
    x_T = torch.randn(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    trajectory = sample_trajectory(sampler, oracle(point), FlowProcess(), x_T, 7)
    assert trajectory.shape == (8, 3, 1, 4, 4)
    torch.testing.assert_close(trajectory[-1], point.expand_as(x_T))
    result = straightness_of(trajectory)
    assert abs(result["straightness"]) < 1e-12 and result["deviation"].abs().max() < 1e-12


def test_the_vp_path_of_one_data_point_is_the_arc_of_its_schedule():
    """x_t = α_t x* + σ_t ε with α² + σ² = 1, x* ⊥ ε and |x*| = |ε|: DDIM on the oracle walks the quarter circle
    through the points at angles φ_k = atan2(σ_k, α_k); S follows from those angles alone."""
    process, steps = GaussianProcess(CosineSchedule()), 10
    point = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    point[..., 0, 0] = 2.0
    eps = torch.zeros_like(point)
    eps[..., 1, 1] = 2.0
    grid = process.sampling_times(steps)
    alpha, sigma = (c.flatten() for c in process.coefficients(grid, torch.zeros(len(grid), 1, dtype=torch.float64)))
    x_T = alpha[0] * point + sigma[0] * eps
    trajectory = sample_trajectory(partial(ddim, eta=0.0), oracle(point), process, x_T, steps)
    angles = torch.atan2(sigma, alpha)
    on_path = alpha[:, None, None, None, None] * point + sigma[:, None, None, None, None] * eps
    torch.testing.assert_close(trajectory, on_path)
    length = (2 * torch.sin((angles[:-1] - angles[1:]).abs() / 2)).sum()
    chord = 2 * torch.sin((angles[0] - angles[-1]) / 2)
    result = straightness_of(trajectory)
    assert result["straightness"] == pytest.approx(float((length / chord) ** 2 - 1), rel=1e-9)
    assert 0.05 < result["straightness"] < math.pi**2 / 8 - 1  # curved, but no more than the whole quarter arc
    figure = straightness_figure(grid[:-1], result["deviation"].float())
    assert len(figure.axes[0].lines[0].get_xdata()) == steps


def test_the_bootstrap_interval_over_paths():
    meter = TrajectoryStraightness()
    for radius in (1.0, 2.0, 5.0):  # arcs of one angle: every resample has the same S
        meter.update(arc(torch.linspace(0, 1.0, 6, dtype=torch.float64), radius))
    point = meter.compute()["straightness"]
    assert meter.interval(resamples=200, level=0.9, seed=0) == pytest.approx((point, point), rel=1e-12)
    for angle in (0.2, 1.5, 2.5):  # now the paths differ
        meter.update(arc(torch.linspace(0, angle, 6, dtype=torch.float64)))
    point = meter.compute()["straightness"]
    low, high = meter.interval(resamples=200, level=0.9, seed=0)
    assert low < point < high and (low, high) == meter.interval(resamples=200, level=0.9, seed=0)
    assert meter.interval(resamples=200, level=0.5, seed=0)[1] - meter.interval(resamples=200, level=0.5, seed=0)[0] \
        < high - low
