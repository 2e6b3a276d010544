"""Samplers: short pure functions with one signature, written once for every process.

``sampler(denoise_fn, process, x_T, steps, *, generator, callback, **options) -> x_0``

- ``denoise_fn(x_t, t) -> x̂0``: the network wrapped with its prediction type (see
  ``DiffusionModule.denoise``); samplers never see ε/x0/v and never clamp x_t.
- ``steps``: a number of steps (the process builds its grid) or an explicit descending grid
  of times ending at 0.
- ``generator``: one ``torch.Generator`` per sample (or one for the batch, or None).
Every update is written with the process's diagonal coefficients (A_t, S_t) in its basis, so the
same code serves white, coloured and per-band processes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from spectral_diffusion.utils.validation import ConfigError, check_positive

DenoiseFn = Callable[[Tensor, Tensor], Tensor]


def time_grid(process, steps: int | Tensor) -> Tensor:
    """The descending grid of times a sampler walks, ending at the clean endpoint t = 0."""
    if isinstance(steps, Tensor):
        grid = steps.float()
        if grid.ndim != 1 or len(grid) < 2 or not bool((grid[1:] < grid[:-1]).all()) or grid[-1] != 0:
            raise ConfigError("an explicit sampler grid must be a strictly decreasing 1-D tensor ending at 0")
        return grid
    return process.sampling_times(steps)


def _estimate(denoise_fn: DenoiseFn, process, x: Tensor, t: Tensor, clip_x0: bool) -> tuple[Tensor, Tensor]:
    """(x̂0, ε̂) at (x, t); with ``clip_x0`` the clean estimate is clipped to [-1, 1] and ε̂ re-derived."""
    x0 = denoise_fn(x, t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    return x0, process.eps_from_x0(x, t, x0)


def _posterior_terms(process, t: Tensor, s: Tensor, like: Tensor):
    """Coefficients of q(x_s | x_t, x0) for s < t, element-wise in the process basis.

    With a_{t|s} = a_t/a_s and σ²_{t|s} = σ_t² − a_{t|s}² σ_s² (Kingma et al. 2021, VDM eq. 22–23):
    mean = (a_s σ²_{t|s}/σ_t²) x0 + (a_{t|s} σ_s²/σ_t²) x_t, variance = σ²_{t|s} σ_s²/σ_t².
    """
    a_t, s_t = process.coefficients(t, like)
    a_s, s_s = process.coefficients(s, like)
    a_ts = a_t / a_s
    var_ts = (s_t * s_t - a_ts * a_ts * s_s * s_s).clamp(min=0)
    coef_x0 = a_s * var_ts / (s_t * s_t)
    coef_xt = a_ts * s_s * s_s / (s_t * s_t)
    variance = var_ts * s_s * s_s / (s_t * s_t)
    return coef_x0, coef_xt, variance


def _batch_time(value: Tensor, x: Tensor) -> Tensor:
    return value.to(x.device).expand(x.shape[0])


@torch.no_grad()
def ddpm(denoise_fn: DenoiseFn, process, x_T: Tensor, steps: int | Tensor, *, generator=None,
         callback=None, clip_x0: bool = False) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) on any grid.

    Each step draws from the exact Gaussian posterior q(x_s | x_t, x̂0) between consecutive grid
    times, so a strided grid uses the posterior of the *strided* step (not single-step betas);
    on the full grid this is DDPM's μ̃_t and σ̃_t² = β̃_t. The last step (s = 0) returns x̂0.
    """
    grid = time_grid(process, steps)
    x = x_T
    for i in range(len(grid) - 1):
        t, s = _batch_time(grid[i], x), _batch_time(grid[i + 1], x)
        x0, _ = _estimate(denoise_fn, process, x, t, clip_x0)
        c_x, c_x0 = process.to_basis(x), process.to_basis(x0)
        coef_x0, coef_xt, variance = _posterior_terms(process, t, s, c_x)
        c_next = coef_x0 * c_x0 + coef_xt * c_x
        if grid[i + 1] > 0:
            noise = process.to_basis(process.noise(x.shape, generator, device=x.device, dtype=x.dtype))
            c_next = c_next + variance.sqrt() * noise
        x = process.from_basis(c_next)
        if callback is not None:
            callback({"step": i, "t": grid[i], "x": x, "x0": x0})
    return x


@torch.no_grad()
def ddim(denoise_fn: DenoiseFn, process, x_T: Tensor, steps: int | Tensor, *, generator=None,
         callback=None, eta: float = 0.0, clip_x0: bool = False) -> Tensor:
    """DDIM (Song, Meng & Ermon 2021, eq. 12), η ≥ 0; η = 0 is deterministic, η = 1 equals DDPM.

    Steps (code ↔ paper): ``x0`` = "predicted x0", ``eps`` = ε_θ(x_t),
    ``c`` = σ_t(η) = η·√(posterior variance), x_s = a_s x̂0 + √(σ_s² − c²) ε̂ + c z.
    """
    if eta < 0:
        raise ConfigError(f"sampler.eta={eta!r} is invalid; it must be >= 0")
    grid = time_grid(process, steps)
    x = x_T
    for i in range(len(grid) - 1):
        t, s = _batch_time(grid[i], x), _batch_time(grid[i + 1], x)
        x0, eps = _estimate(denoise_fn, process, x, t, clip_x0)
        c_x0, c_eps = process.to_basis(x0), process.to_basis(eps)
        a_s, s_s = process.coefficients(s, c_x0)
        c_next = a_s * c_x0
        if eta > 0 and grid[i + 1] > 0:
            _, _, variance = _posterior_terms(process, t, s, c_x0)
            c = eta * variance.sqrt()
            noise = process.to_basis(process.noise(x.shape, generator, device=x.device, dtype=x.dtype))
            c_next = c_next + (s_s * s_s - c * c).clamp(min=0).sqrt() * c_eps + c * noise
        else:
            c_next = c_next + s_s * c_eps
        x = process.from_basis(c_next)
        if callback is not None:
            callback({"step": i, "t": grid[i], "x": x, "x0": x0})
    return x


# Arguments every sampler receives from the caller rather than from its config node.
CALL_ARGUMENTS = ("denoise_fn", "process", "x_T", "generator", "callback")


def validate_sampler(sampler, process) -> None:
    """Check a configured (partial) sampler's options before any training starts."""
    keywords = getattr(sampler, "keywords", {})
    function = getattr(sampler, "func", sampler)
    options = [name for name in inspect.signature(function).parameters if name not in CALL_ARGUMENTS]
    for key in keywords:
        if key not in options:
            raise ConfigError(f"sampler.{key} is not an option of {function.__name__}; its options are {options}")
    if "steps" not in keywords:
        raise ConfigError("sampler.steps is missing; set the number of sampling steps, e.g. sampler.steps=50")
    time_grid(process, keywords["steps"])
    if "eta" in keywords:
        check_positive("sampler.eta", keywords["eta"], strict=False)
