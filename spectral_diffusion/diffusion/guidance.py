"""Classifier-free guidance (Ho & Salimans 2022), written once around the denoiser so every sampler gets it.

A conditional network trained with condition dropout predicts both x̂0(x_t, t, c) and, with the null
condition ∅, x̂0(x_t, t, ∅). Guidance with scale w samples with

    x̂0_w = x̂0(x_t, t, ∅) + w · (x̂0(x_t, t, c) − x̂0(x_t, t, ∅)).

ε̂ = (x_t − A_t x̂0) / S_t is affine in x̂0 at fixed (x_t, t), so this is the same rule Ho & Salimans write
for ε̂ (their w + 1 is our w) and holds for every prediction type and process of the project. w = 0 is
unconditional sampling and w = 1 plain conditional sampling; both call the network once per step and
return exactly what the unguided denoiser returns (tested), any other w calls it once on a doubled batch.

The scale is a sampler option, ``sampler.guidance_scale`` (every ``conf/sampler/*.yaml`` has it, default 1):
``instantiate_sampler`` strips it from the config node, instantiates the sampler function as before and
keeps the scale on the returned partial, where ``guidance_scale_of`` reads it. Samplers never see it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from spectral_diffusion.utils.validation import ConfigError

GUIDANCE_KEY = "guidance_scale"
# What a conditional denoiser takes: (x_t, t, condition) -> x̂0, the condition batched like x_t.
ConditionalDenoiseFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def check_guidance_scale(value) -> float:
    """``sampler.guidance_scale`` as a float >= 0, or a ConfigError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"sampler.{GUIDANCE_KEY}={value!r} is invalid; it must be a number >= 0 "
                          "(0: unconditional, 1: plain conditional, > 1: stronger guidance)")
    return float(value)


def guided_denoiser(denoise: ConditionalDenoiseFn, condition: Tensor, null_condition: Tensor,
                    scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """``denoise_fn(x_t, t)`` that guides ``denoise(x_t, t, condition)`` with scale ``scale``.

    ``condition`` and ``null_condition`` have the batch size of x_t as their first dimension (labels (B,),
    latent codes (B, D), ...), or 1: one condition broadcast to every row of whatever x_t the sampler passes
    (``deq`` evaluates chunks and subsets of its stacked trajectories, whose rows are no longer the batch's).
    At scale 0 or 1 one call with the null or the real condition; otherwise one call on the concatenated
    batch [x_t; x_t] with [condition; null_condition].
    """
    scale = check_guidance_scale(scale)
    if condition.shape != null_condition.shape:
        raise ValueError(f"condition {tuple(condition.shape)} and null condition {tuple(null_condition.shape)} "
                         "must have the same shape")

    def rows(value: Tensor, x_t: Tensor) -> Tensor:
        return value.expand(len(x_t), *value.shape[1:]) if len(value) == 1 else value

    if scale == 0.0:
        return lambda x_t, t: denoise(x_t, t, rows(null_condition, x_t))
    if scale == 1.0:
        return lambda x_t, t: denoise(x_t, t, rows(condition, x_t))

    def guided(x_t: Tensor, t: Tensor) -> Tensor:
        both_conditions = torch.cat([rows(condition, x_t), rows(null_condition, x_t)])
        conditional, unconditional = denoise(torch.cat([x_t, x_t]), torch.cat([t, t]), both_conditions).chunk(2)
        return unconditional + scale * (conditional - unconditional)

    return guided


def instantiate_sampler(node: DictConfig | dict, instantiate: Callable | None = None):
    """The sampler partial of a ``conf/sampler`` node, with ``guidance_scale`` (checked, default 1) kept on it.

    ``instantiate`` defaults to ``hydra.utils.instantiate``; ``pipeline`` passes its ConfigError-unwrapping one.
    """
    if instantiate is None:
        from hydra.utils import instantiate
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node)
    scale = check_guidance_scale(node.pop(GUIDANCE_KEY, 1.0))
    sampler = instantiate(node)
    if not isinstance(sampler, functools.partial):  # a bare function: wrap it so the scale has somewhere to live
        sampler = functools.partial(sampler)
    sampler.guidance_scale = scale
    return sampler


def guidance_scale_of(sampler) -> float:
    """The guidance scale a sampler was configured with (1: no guidance)."""
    return float(getattr(sampler, GUIDANCE_KEY, 1.0))
