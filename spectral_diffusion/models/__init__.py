"""Denoiser backbones: plain networks ``f(x, noise_level) -> prediction`` that know nothing of
noise schedules, and the layers they are built from."""

from spectral_diffusion.models.band_layers import (
    BandFiLM,
    BandHeadConv2d,
    FrequencyAttention,
    SpectralBandAttention,
)
from spectral_diffusion.models.complex_layers import (
    ComplexConv2d,
    ComplexGroupNorm,
    CReLU,
    ModReLU,
    SpectralConv2d,
    SpectralMultiplier,
    spectral_downsample,
    spectral_upsample,
)
from spectral_diffusion.models.filters import (
    FilteredActivation,
    FilteredDownsample2d,
    FilteredUpsample2d,
    LowpassDesign,
)
from spectral_diffusion.models.layers import (
    AttentionBlock,
    ClassEmbedding,
    Downsample,
    ResBlock,
    TimestepEmbedding,
    Upsample,
    sinusoidal_timestep_embedding,
)
from spectral_diffusion.models.unet import UNet
from spectral_diffusion.models.unet_alias_free import AliasFreeDownsample, AliasFreeUpsample, UNetAliasFree
from spectral_diffusion.models.unet_spectral import UNetHybrid, UNetSpectral

__all__ = [
    "AliasFreeDownsample",
    "AliasFreeUpsample",
    "AttentionBlock",
    "BandFiLM",
    "BandHeadConv2d",
    "CReLU",
    "ClassEmbedding",
    "ComplexConv2d",
    "ComplexGroupNorm",
    "Downsample",
    "FilteredActivation",
    "FilteredDownsample2d",
    "FilteredUpsample2d",
    "FrequencyAttention",
    "LowpassDesign",
    "ModReLU",
    "ResBlock",
    "SpectralBandAttention",
    "SpectralConv2d",
    "SpectralMultiplier",
    "TimestepEmbedding",
    "UNet",
    "UNetAliasFree",
    "UNetHybrid",
    "UNetSpectral",
    "Upsample",
    "sinusoidal_timestep_embedding",
    "spectral_downsample",
    "spectral_upsample",
]
