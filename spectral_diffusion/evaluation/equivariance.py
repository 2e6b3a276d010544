"""Equivariance of a trained model (``metrics.equivariance`` applied to a module): its EMA denoiser's eq_t,
eq_t_frac and eq_r at fixed times, eq_r_generation through deterministic DDIM, and the figure of EQ against t."""

from __future__ import annotations

from functools import partial

import torch
from matplotlib.figure import Figure
from torch import Tensor

from spectral_diffusion.diffusion.samplers import ddim
from spectral_diffusion.evaluation.timestep_loss import timestep_grid
from spectral_diffusion.metrics.equivariance import (
    denoiser_equivariance,
    equivariance_figure,
    generation_equivariance,
    standard_transforms,
)
from spectral_diffusion.utils.validation import check_int


@torch.no_grad()
def model_equivariance(module, images: Tensor, *, bins: int = 5, degrees: float = 30.0,
                       generation_samples: int = 16, steps: int = 20, seed: int = 0,
                       batch_size: int = 64) -> tuple[dict[str, object], Figure]:
    """``eq_t``, ``eq_t_frac``, ``eq_r`` (dB, mean over the ``bins`` bin centres t_k of ``timestep_grid``) of the
    module's EMA denoiser (with self-conditioning when trained with it) on ``images``, ``eq_by_t`` (each EQ at each
    t_k) and ``eq_r_generation`` (DDIM, η = 0, ``steps`` steps, ``generation_samples`` images rotated by
    ``degrees``); and the figure of EQ against t. The noise of image i comes from generator ``seed + i``."""
    bins = check_int("equivariance bins", bins, 1)
    generation_samples = check_int("equivariance generation_samples", generation_samples, 1)
    was_training = module.training
    module.eval()
    denoise = module.self_conditioned_denoiser(use_ema=True)
    times = timestep_grid(module.process, bins).tolist()
    images = images.to(module.device, torch.float32)
    per_time = denoiser_equivariance(denoise, module.process, images, times,
                                     transforms=standard_transforms(images.shape[-1], degrees=degrees),
                                     seed=seed, batch_size=batch_size)
    metrics: dict[str, object] = {name: sum(values) / len(values) for name, values in per_time.items()}
    metrics["eq_r_generation"] = generation_equivariance(
        denoise, module.process, partial(ddim, steps=steps, eta=0.0), (generation_samples, *module.image_shape),
        degrees=degrees, seed=seed, device=module.device)
    metrics["eq_by_t"] = {"t": times, **per_time}
    module.train(was_training)
    return metrics, equivariance_figure(times, per_time)
