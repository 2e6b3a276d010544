"""Building blocks of the DDPM-style UNet backbones: timestep embedding, residual, attention and
resampling layers. They know nothing of noise schedules: the noise level is one number per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectral_diffusion.utils.validation import ConfigError


def sinusoidal_timestep_embedding(
    noise_level: Tensor, dim: int, max_period: float = 10000.0
) -> Tensor:
    """Sinusoidal position encoding of Vaswani et al. 2017 ("Attention Is All You Need", sec. 3.5),
    used for diffusion timesteps by Ho et al. 2020 (DDPM, appendix B).

    Frequency ``i`` of ``dim // 2`` is ``max_period ** (-i / (dim // 2))``; the result is
    ``[cos(t * freqs), sin(t * freqs)]`` (the improved-DDPM ordering), shape ``(B, dim)``, float32.
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"timestep embedding dim={dim} must be a positive even number")
    half = dim // 2
    exponents = torch.arange(half, device=noise_level.device, dtype=torch.float32) / half
    frequencies = torch.exp(-math.log(max_period) * exponents)
    # Float32 regardless of autocast: bf16 cannot resolve t * freq for t near 1000.
    angles = noise_level.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of the noise level followed by a two-layer SiLU MLP (DDPM)."""

    def __init__(self, sinusoid_dim: int, embed_dim: int):
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.mlp = nn.Sequential(
            nn.Linear(sinusoid_dim, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
        )

    def forward(self, noise_level: Tensor) -> Tensor:
        return self.mlp(sinusoidal_timestep_embedding(noise_level, self.sinusoid_dim))


class ClassEmbedding(nn.Module):
    """A learned vector per class, added to the timestep embedding (class-conditional DDPM as in Dhariwal &
    Nichol 2021, with the null class of classifier-free guidance, Ho & Salimans 2022).

    Row ``num_classes`` is the null class ∅: the unconditional model. In training mode each label is replaced by
    ∅ with probability ``condition_dropout`` (drawn from the global torch RNG, which Lightning seeds), so one
    network learns both x̂0(x_t, t, c) and x̂0(x_t, t, ∅); in eval mode labels pass unchanged.
    """

    def __init__(self, num_classes: int, embed_dim: int, condition_dropout: float):
        super().__init__()
        self.num_classes = int(num_classes)
        self.condition_dropout = float(condition_dropout)
        self.embedding = nn.Embedding(self.num_classes + 1, embed_dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def drop(self, labels: Tensor) -> Tensor:
        """``labels`` with each replaced by the null class with probability ``condition_dropout`` in training."""
        if not self.training or self.condition_dropout == 0:
            return labels
        dropped = torch.rand(labels.shape, device=labels.device) < self.condition_dropout
        return torch.where(dropped, torch.full_like(labels, self.null_class), labels)

    def forward(self, labels: Tensor) -> Tensor:
        """(B, embed_dim) embeddings of (B,) integer labels in [0, num_classes] (num_classes: ∅)."""
        if labels.dtype not in (torch.int64, torch.int32) or labels.ndim != 1:
            raise ValueError(f"class labels must be a (B,) integer tensor, got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.null_class):
            raise ValueError(f"class labels must lie in [0, {self.null_class}] ({self.null_class}: the null class), "
                             f"got [{int(labels.min())}, {int(labels.max())}]")
        return self.embedding(self.drop(labels.long()))


def make_class_embedding(num_classes: int | None, condition_dropout: float, embed_dim: int) -> ClassEmbedding | None:
    """A ``ClassEmbedding`` for a model built with ``num_classes`` (set by the pipeline from the data when
    ``data.conditional=true``), None for an unconditional one; ``condition_dropout`` is checked either way."""
    condition_dropout = check_fraction("model.condition_dropout", condition_dropout)
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model.num_classes={num_classes!r} is invalid; it must be an integer >= 1 (the pipeline "
                          "sets it from the data when data.conditional=true)")
    return ClassEmbedding(num_classes, embed_dim, condition_dropout)


def check_fraction(key: str, value) -> float:
    """A probability in [0, 1): 1 would drop every label, leaving nothing conditional to learn."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r} is invalid; it must lie in [0, 1)")
    return float(value)


def add_class_embedding(class_embedding: ClassEmbedding | None, time_embedding: Tensor,
                        class_labels: Tensor | None) -> Tensor:
    """The time embedding plus the class embedding of ``class_labels`` (a conditional model needs them, an
    unconditional one refuses them, so a label is never silently ignored)."""
    if class_embedding is None:
        if class_labels is not None:
            raise ValueError("this model is unconditional (built without num_classes): it takes no class labels")
        return time_embedding
    if class_labels is None:
        raise ValueError(f"this class-conditional model needs class labels, (B,) integers in "
                         f"[0, {class_embedding.null_class}] ({class_embedding.null_class}: the null class)")
    return time_embedding + class_embedding(class_labels).to(time_embedding.dtype)


class ResBlock(nn.Module):
    """Residual block of DDPM (Ho et al. 2020): GroupNorm -> SiLU -> conv, twice, with the timestep
    embedding injected between the two convolutions. ``activation`` builds the nonlinearity of both
    halves (SiLU; the alias-free UNet injects a filtered one).

    With ``use_scale_shift_norm`` the embedding instead modulates the second normalisation,
    ``GroupNorm(h) * (1 + scale) + shift`` (FiLM, Perez et al. 2018; as in improved DDPM,
    Nichol & Dhariwal 2021). A 1x1 convolution matches channels on the skip path when they change.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_embed_dim: int,
        *,
        dropout: float = 0.0,
        groups: int = 8,
        use_scale_shift_norm: bool = False,
        activation: Callable[[], nn.Module] = nn.SiLU,
    ):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        # Parameter-free modules: a filtered activation keeps its filters in non-persistent buffers, so the
        # state dict is the same whichever activation is injected.
        self.in_activation = activation()
        self.out_activation = activation()
        self.in_norm = nn.GroupNorm(groups, in_channels)
        self.in_conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        embed_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, embed_out))
        self.out_norm = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels == out_channels:
            self.skip = nn.Identity()
        else:
            self.skip = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor, time_embedding: Tensor) -> Tensor:
        h = self.in_conv(self.in_activation(self.in_norm(x)))
        embedding = self.time_projection(time_embedding)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = embedding.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + embedding)
        h = self.out_conv(self.dropout(self.out_activation(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels with a residual connection (DDPM / improved DDPM).

    Pixels become tokens in row-major order. ``qkv`` is a linear map whose output features are
    ordered (query, key, value), each split into ``num_heads`` consecutive groups of
    ``channels // num_heads``; attention per head is ``softmax(Q K^T / sqrt(d)) V`` (Vaswani et al.
    2017), computed by ``scaled_dot_product_attention``.

    The projections are linear maps on (batch, pixels, channels) tokens, the same maps as 1x1
    convolutions, because they leave each head's features contiguous, which the fused attention
    kernels require (strided inputs fall back to a slower path).
    """

    def __init__(self, channels: int, *, num_heads: int = 4, groups: int = 8):
        super().__init__()
        if channels % num_heads:
            raise ConfigError(
                f"model.num_heads={num_heads} must divide the channel count {channels} "
                "of every attention block"
            )
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        head_dim = channels // self.num_heads
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (batch, pixels, channels)
        qkv = self.qkv(tokens).reshape(batch, height * width, 3, self.num_heads, head_dim)
        # (batch, heads, pixels, head_dim) each, as scaled_dot_product_attention expects.
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(dim=0)
        # Float32 even under autocast: a safer softmax, and PyTorch's CPU flash-attention kernel
        # measured about 5x slower in bfloat16 than in float32 at these sizes.
        with torch.autocast(x.device.type, enabled=False):
            attended = F.scaled_dot_product_attention(query.float(), key.float(), value.float())
        attended = self.proj_out(attended.transpose(1, 2).reshape(batch, height * width, channels))
        return x + attended.transpose(1, 2).reshape(batch, channels, height, width)


class Downsample(nn.Module):
    """Halve the resolution with a strided 3x3 convolution (DDPM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution by nearest-neighbour repetition, then a 3x3 convolution (DDPM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
