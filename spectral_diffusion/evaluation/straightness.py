"""Straightness of a trained model's probability-flow trajectories (``metrics.straightness`` applied to a module):
deterministic DDIM (η = 0) from the prior to a sample, straightness, curvature per noise level and the figure."""

from __future__ import annotations

from functools import partial

import torch
from matplotlib.figure import Figure

from spectral_diffusion.diffusion.samplers import ddim, time_grid
from spectral_diffusion.metrics.straightness import TrajectoryStraightness, sample_trajectory, straightness_figure
from spectral_diffusion.utils.random import sample_generators
from spectral_diffusion.utils.validation import check_int


@torch.no_grad()
def model_straightness(module, *, samples: int = 64, steps: int = 20, seed: int = 0, batch_size: int = 64,
                       resamples: int | None = None, level: float = 0.95) -> tuple[dict[str, object], Figure]:
    """``straightness`` of ``samples`` trajectories of the module's EMA denoiser (with self-conditioning when trained
    with it) under DDIM with η = 0 and ``steps`` steps: the discretised probability-flow ODE of its own process,
    whatever sampler the run uses, so checkpoints compare; x_T of trajectory i from generator ``seed + i``.

    Also ``straightness_deviation_peak`` (the largest mean per-step deviation 1 − cos θ from the chord) and
    ``straightness_deviation_peak_t`` (that step's start time), ``straightness_by_t`` ({"t", "deviation"} per step)
    and the figure of the deviation against t. With ``resamples``, ``straightness_ci_low``/``_ci_high``: its
    bootstrap interval at ``level`` over the trajectories (``TrajectoryStraightness.interval``, seeded by ``seed``)."""
    samples = check_int("straightness samples", samples, 1)
    steps = check_int("straightness steps", steps, 1)
    was_training = module.training
    module.eval()
    process = module.process
    sampler = partial(ddim, eta=0.0)
    meter = TrajectoryStraightness()
    for start in range(0, samples, batch_size):
        count = min(batch_size, samples - start)
        x_T = process.prior((count, *module.image_shape), sample_generators(seed, start, count), device=module.device)
        denoise = module.self_conditioned_denoiser(use_ema=True)  # fresh per trajectory batch (its x̂0 memory)
        meter.update(sample_trajectory(sampler, denoise, process, x_T, steps))
    module.train(was_training)
    result = meter.compute()
    times = time_grid(process, steps)[:-1].float().cpu()
    deviation = result["deviation"].float()
    peak = int(deviation.argmax())
    metrics: dict[str, object] = {
        "straightness": result["straightness"],
        "straightness_deviation_peak": float(deviation[peak]),
        "straightness_deviation_peak_t": float(times[peak]),
        "straightness_by_t": {"t": times.tolist(), "deviation": deviation.tolist()},
    }
    if resamples is not None:
        metrics["straightness_ci_low"], metrics["straightness_ci_high"] = meter.interval(
            resamples=resamples, level=level, seed=seed)
    return metrics, straightness_figure(times, deviation)
