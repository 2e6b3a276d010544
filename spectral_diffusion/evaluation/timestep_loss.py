"""The held-out loss of the EMA model per timestep: the training objective at fixed times t_k on fixed noise,
so curves of successive checkpoints differ only by the weights; and its figure."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor

from spectral_diffusion.utils.random import sample_generators


def timestep_grid(process, bins: int) -> Tensor:
    """The centres of ``bins`` equal bins of (0, 1]; on a discrete schedule snapped to its grid i/T, i >= 1."""
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    timesteps = getattr(getattr(process, "schedule", None), "timesteps", None)
    if getattr(getattr(process, "schedule", None), "discrete", False) and timesteps:
        centres = (centres * timesteps).round().clamp(min=1) / timesteps
    return centres.float()


@torch.no_grad()
def validation_loss_by_time(module, images: Tensor, *, bins: int = 10, seed: int = 0,
                            batch_size: int = 256, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Held-out loss of the EMA model at fixed times: (t_k, mean loss at t_k) for the ``bins`` bin centres.

    The objective of training (the module's public ``per_sample_loss``: its loss, prediction type and
    self-conditioning) with t fixed to t_k for every image; image i's noise comes from generator ``seed + i``
    (the same ε at every t_k and every call), so curves of successive checkpoints differ only by the weights.
    A class-conditional module is evaluated at the images' ``labels``, or at its null class when None.
    """
    process = module.process
    times = timestep_grid(process, bins)
    totals = torch.zeros(bins, dtype=torch.float64)
    was_training = module.training
    module.eval()
    device = module.device
    for start in range(0, len(images), batch_size):
        x0 = images[start : start + batch_size].to(device, torch.float32)
        count = len(x0)
        eps = process.noise(x0.shape, sample_generators(seed, start, count), device=device, dtype=x0.dtype)
        for k, time_k in enumerate(times.tolist()):
            t = torch.full((count,), time_k, device=device)
            if labels is None:
                losses = module.per_sample_loss(x0, t=t, eps=eps, use_ema=True)
            else:
                losses = module.per_sample_loss(x0, t=t, eps=eps, use_ema=True,
                                                class_labels=labels[start : start + batch_size].to(device))
            totals[k] += losses.double().sum().item()
    module.train(was_training)
    return times, totals / max(1, len(images))


def validation_loss_figure(times: Tensor, losses: Tensor) -> Figure:
    """The per-timestep held-out loss against t (log scale when every loss is positive)."""
    figure = Figure(figsize=(5, 3.2))
    axes = figure.add_subplot()
    axes.plot(times.numpy(), losses.numpy(), marker="o")
    if bool((losses > 0).all()):
        axes.set_yscale("log")
    axes.set_xlabel("t (bin centre)")
    axes.set_ylabel("held-out loss (EMA)")
    axes.set_title("validation loss per timestep")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
