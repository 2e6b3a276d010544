"""Denoiser backbones: plain networks ``f(x, noise_level) -> prediction`` that know nothing of
noise schedules, and the layers they are built from."""

from spectral_diffusion.models.layers import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepEmbedding,
    Upsample,
    sinusoidal_timestep_embedding,
)
from spectral_diffusion.models.unet import UNet, UNetTiny

__all__ = [
    "AttentionBlock",
    "Downsample",
    "ResBlock",
    "TimestepEmbedding",
    "UNet",
    "UNetTiny",
    "Upsample",
    "sinusoidal_timestep_embedding",
]
