"""Layers that work per radial frequency band (masks from ``spectral.bands.radial_band_masks``, which sum to
one): band-wise FiLM and attention across bands for the spectral UNet, frequency attention for the pixel UNet
(Taguchi factor B), and band-specific output heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectral_diffusion.spectral.bands import radial_band_masks
from spectral_diffusion.spectral.dft import real_irfft2_packed, real_rfft2_packed
from spectral_diffusion.utils.validation import ConfigError, check_choice

SPECTRAL_ATTENTION = ("bands", "low_rank")


def band_masks(size: int, num_bands: int) -> Tensor:
    """(K, size, size//2+1) float32 masks of the rfft2 grid of a square map; Σ_k mask_k = 1."""
    return radial_band_masks(size, size, num_bands, key="model.num_bands")


def pool_bands(features: Tensor, masks: Tensor) -> Tensor:
    """Mean of (B, C, H, Wf) features over the bins of each band -> (B, K, C); an empty band gives zeros."""
    counts = masks.sum(dim=(-2, -1)).clamp_min(1.0)
    return torch.einsum("bchw,khw->bkc", features, masks) / counts[None, :, None]


def spread_bands(values: Tensor, masks: Tensor) -> Tensor:
    """(B, K, C) one value per band and channel -> (B, C, H, Wf), each bin taking its band's value."""
    return torch.einsum("bkc,khw->bchw", values, masks)


def attend(query: Tensor, key: Tensor, value: Tensor, num_heads: int, key_mask: Tensor | None) -> Tensor:
    """softmax(Q K^T / √d) V per head (Vaswani et al. 2017) on (B, tokens, features) in float32."""
    batch, queries, features = query.shape
    head_dim = features // num_heads

    def heads(tokens: Tensor) -> Tensor:
        return tokens.reshape(batch, tokens.shape[1], num_heads, head_dim).transpose(1, 2)

    mask = None if key_mask is None else key_mask[None, None, None, :]
    attended = F.scaled_dot_product_attention(heads(query), heads(key), heads(value), attn_mask=mask)
    return attended.transpose(1, 2).reshape(batch, queries, features)


class BandFiLM(nn.Module):
    """Time conditioning per radial band (FiLM, Perez et al. 2018): z <- z · (1 + s_{k,c}) + b_c at every bin
    of band k, with a real scale s per band and channel (the denoiser's gain differs by band, as a Wiener
    filter's) and a complex shift b per channel, both a linear map of the sinusoidal + MLP timestep embedding
    (DDPM). Symbols: s ↔ ``scale`` (B, K, C), b ↔ ``shift`` (B, C) complex."""

    def __init__(self, time_embed_dim: int, channels: int, masks: Tensor):
        super().__init__()
        self.channels = channels
        self.register_buffer("masks", masks, persistent=False)
        self.projection = nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, (len(masks) + 2) * channels))

    def forward(self, features: Tensor, time_embedding: Tensor) -> Tensor:
        film = self.projection(time_embedding)
        num_bands = len(self.masks)
        scale = film[:, : num_bands * self.channels].reshape(-1, num_bands, self.channels)
        shift = film[:, num_bands * self.channels:]  # interleaved (Re b_0, Im b_0, Re b_1, ...)
        batch, channels2, height, width = features.shape
        pairs = features.reshape(batch, self.channels, 2, height, width)
        scale_map = spread_bands(scale.to(features.dtype), self.masks)[:, :, None]  # same scale for Re and Im
        shifted = pairs + shift.reshape(batch, self.channels, 2, 1, 1).to(features.dtype)
        return torch.addcmul(shifted, pairs, scale_map).reshape(features.shape)  # z (1 + s) + b


class SpectralBandAttention(nn.Module):
    """Attention over a half-spectrum whose cost grows gently with resolution, residual, zero-initialised.

    ``mode="bands"``: the K radial bands are the tokens (each the mean of the normalised (Re, Im) features over
    its bins, plus a learned band embedding); self-attention across bands costs O(K²) at any resolution, and
    each band's output is added to all its bins. ``mode="low_rank"``: every bin is a query and attends to the K
    band tokens as keys and values, a rank-K factorisation of bin-to-bin attention (as Linformer, Wang et al.
    2020, with band pooling as the fixed projection), O(bins · K) instead of O(bins²).
    """

    def __init__(self, channels: int, masks: Tensor, norm: nn.Module, *, num_heads: int = 1, mode: str = "bands"):
        super().__init__()
        check_choice("model.spectral_attention", mode, SPECTRAL_ATTENTION)
        features = 2 * channels
        if features % num_heads:
            raise ConfigError(f"model.num_heads={num_heads} must divide the {features} real features "
                              f"(2 x {channels} complex channels) of every spectral attention block")
        self.mode = mode
        self.num_heads = num_heads
        self.register_buffer("masks", masks, persistent=False)
        self.norm = norm
        self.band_embedding = nn.Parameter(torch.randn(len(masks), features) / math.sqrt(features))
        self.qkv = nn.Linear(features, 3 * features)
        self.proj_out = nn.Linear(features, features)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, features: Tensor) -> Tensor:
        batch, channels2, height, width = features.shape
        normed = self.norm(features)
        tokens = pool_bands(normed, self.masks) + self.band_embedding
        occupied = self.masks.sum(dim=(-2, -1)) > 0
        query, key, value = self.qkv(tokens).chunk(3, dim=-1)
        if self.mode == "bands":
            attended = self.proj_out(attend(query, key, value, self.num_heads, occupied))
            return features + spread_bands(attended, self.masks)
        bins = normed.flatten(2).transpose(1, 2)  # (B, H·Wf, 2C)
        bin_queries = F.linear(bins, *self._query_projection())
        attended = self.proj_out(attend(bin_queries, key, value, self.num_heads, occupied))
        return features + attended.transpose(1, 2).reshape(batch, channels2, height, width)

    def _query_projection(self) -> tuple[Tensor, Tensor]:
        features = self.proj_out.in_features
        return self.qkv.weight[:features], self.qkv.bias[:features]


class FrequencyAttention(nn.Module):
    """Frequency attention for the pixel UNet (Taguchi factor B of the project's seed README).

    rfft2 (orthonormal) of the feature map -> power pooled into K radial bands per channel -> log, LayerNorm,
    plus a learned band embedding -> self-attention across the K band tokens -> a gain g_{k,c} = 2 σ(·) per band
    and channel -> x + irfft2((g − 1) · rfft2(x)). The output projection starts at zero, so g = 1 and the block
    is exactly the identity at initialisation. Gains depend on |f| only, so the result is real.

    The FFTs are real matrix products (``spectral.dft``), far cheaper than rfft2/irfft2 and their backward
    passes on feature maps of a few to 32 pixels, and run in the input's dtype: under bf16 autocast the
    transforms and the re-weighted inverse are bfloat16 products (the output is bfloat16 either way), while the
    band powers, their log and the attention across band tokens stay in float32.
    """

    def __init__(self, channels: int, resolution: int, num_bands: int, *, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"model.num_heads={num_heads} must divide the channel count {channels} "
                              "of every frequency attention block")
        self.num_heads = num_heads
        self.resolution = resolution
        masks = radial_band_masks(resolution, resolution, num_bands, key="model.freq_attention_bands")
        self.register_buffer("masks", masks, persistent=False)
        self.register_buffer("occupied", masks.sum(dim=(-2, -1)) > 0, persistent=False)
        # Band pooling and spreading as matrices on the packed spectrum (real parts, then imaginary parts), so
        # each is one matrix product: |X|² pooled = (Re² ‖ Im²) @ pooling; a gain per band -> (Re ‖ Im) gains.
        bins = torch.cat([masks, masks], dim=1).flatten(1)  # (K, 2·H·Wf)
        counts = masks.sum(dim=(-2, -1)).clamp_min(1.0)
        self.register_buffer("band_pooling", (bins / counts[:, None]).T.contiguous(), persistent=False)
        self.register_buffer("band_spreading", bins, persistent=False)
        self.token_norm = nn.LayerNorm(channels)
        self.band_embedding = nn.Parameter(torch.randn(num_bands, channels) / math.sqrt(channels))
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        spectrum = real_rfft2_packed(x).reshape(batch, channels, -1)  # (B, C, 2·H·Wf) in x's dtype
        dtype = spectrum.dtype
        with torch.autocast(x.device.type, enabled=False):
            power = ((spectrum * spectrum) @ self.band_pooling.to(dtype)).float().transpose(1, 2)  # (B, K, C)
            tokens = self.token_norm(torch.log(power + 1e-6)) + self.band_embedding
            query, key, value = self.qkv(tokens).chunk(3, dim=-1)
            gains = 2 * torch.sigmoid(self.proj_out(attend(query, key, value, self.num_heads, self.occupied)))
            gain_map = (gains - 1).transpose(1, 2).to(dtype) @ self.band_spreading.to(dtype)  # (B, C, 2·H·Wf)
        change = real_irfft2_packed((spectrum * gain_map).reshape(batch, channels, 2, height, -1), width)
        return x + change


class BandHeadConv2d(nn.Conv2d):
    """K band-specific output heads: one 3x3 conv with K·out channels; head k's output is band-passed with mask
    k (orthonormal rfft2 -> mask -> irfft2) and the K results are summed. The masks sum to one, so K heads with
    equal weights are the plain head. Masks depend on |f| only: the output is real."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, num_heads: int):
        super().__init__(in_channels, num_heads * out_channels, kernel_size=3, padding=1)
        self.num_heads = num_heads
        self.register_buffer("masks", radial_band_masks(resolution, resolution, num_heads, key="model.band_heads"),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        heads = super().forward(x)
        batch, _, height, width = heads.shape
        with torch.autocast(x.device.type, enabled=False):
            spectra = torch.fft.rfft2(heads.float().reshape(batch, self.num_heads, -1, height, width), norm="ortho")
            combined = (spectra * self.masks[None, :, None]).sum(dim=1)
            return torch.fft.irfft2(combined, s=(height, width), norm="ortho")

