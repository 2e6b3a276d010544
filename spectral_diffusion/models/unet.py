"""The DDPM / improved-DDPM UNet denoiser in pixel space (``conf/model/unet.yaml``; ``unet_tiny.yaml`` is
the same class at its smallest, for smoke runs).
A plain network ``f(x, noise_level) -> prediction``; what the prediction means is the loss's affair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from spectral_diffusion.models.band_layers import BandHeadConv2d, FrequencyAttention
from spectral_diffusion.models.layers import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepEmbedding,
    Upsample,
    add_class_embedding,
    make_class_embedding,
)
from spectral_diffusion.utils.validation import ConfigError, check_bool, check_int, check_int_list, check_positive


class UNetSizes(NamedTuple):
    """The sizes shared by every UNet of this package (``UNet``, ``UNetSpectral``, ``UNetHybrid``), checked."""

    in_channels: int
    out_channels: int
    image_size: int
    base_channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    num_heads: int
    groups: int


def check_unet_sizes(in_channels, out_channels, image_size, base_channels, channel_mults, num_res_blocks,
                     attention_resolutions, num_heads, groups) -> UNetSizes:
    """Every size an integer >= 1 (``out_channels`` ``None`` means ``in_channels``), naming the ``model.`` key."""
    in_channels = check_int("model.in_channels", in_channels, 1)
    return UNetSizes(
        in_channels=in_channels,
        out_channels=check_int("model.out_channels", in_channels if out_channels is None else out_channels, 1),
        image_size=check_int("model.image_size", image_size, 1),
        base_channels=check_int("model.base_channels", base_channels, 1),
        channel_mults=tuple(check_int_list("model.channel_mults", channel_mults, 1, allow_empty=False)),
        num_res_blocks=check_int("model.num_res_blocks", num_res_blocks, 1),
        attention_resolutions=tuple(check_int_list("model.attention_resolutions", attention_resolutions, 1)),
        num_heads=check_int("model.num_heads", num_heads, 1),
        groups=check_int("model.groups", groups, 1),
    )


def check_levels(sizes: UNetSizes) -> tuple[list[int], list[int]]:
    """The resolution and channel count of each level (level i: image_size / 2^i pixels,
    base_channels * channel_mults[i] channels), after checking that ``attention_resolutions`` names levels
    that exist and that ``groups`` divides every channel count. Call it once ``image_size`` is known to
    divide evenly."""
    resolutions = [sizes.image_size // 2**level for level in range(len(sizes.channel_mults))]
    unknown = sorted(set(sizes.attention_resolutions) - set(resolutions))
    if unknown:
        raise ConfigError(
            f"model.attention_resolutions={list(sizes.attention_resolutions)} contains {unknown}, "
            f"which no level has; the resolutions of this network are {resolutions}"
        )
    level_channels = [sizes.base_channels * mult for mult in sizes.channel_mults]
    bad_counts = sorted({channels for channels in level_channels if channels % sizes.groups})
    if bad_counts:
        raise ConfigError(
            f"model.groups={sizes.groups} must divide every channel count, but does not divide "
            f"{bad_counts} (level channels model.base_channels * model.channel_mults = {level_channels})"
        )
    return resolutions, level_channels


def check_inputs(model: nn.Module, x: Tensor, noise_level: Tensor | float) -> Tensor:
    """Validate ``x`` against the model's (in_channels, image_size, image_size) and return the noise level as
    a (B,) tensor (a scalar is broadcast to the batch)."""
    expected = (model.in_channels, model.image_size, model.image_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{type(model).__name__} expects input of shape (B, {', '.join(map(str, expected))}), "
                         f"got {tuple(x.shape)}")
    noise_level = torch.as_tensor(noise_level, device=x.device)
    if noise_level.ndim == 0:
        noise_level = noise_level.expand(x.shape[0])
    if noise_level.shape != (x.shape[0],):
        raise ValueError(f"noise_level must have shape ({x.shape[0]},) or be a scalar, got {tuple(noise_level.shape)}")
    return noise_level


def output_conv(channels: int, out_channels: int, image_size: int, band_heads: int) -> nn.Conv2d:
    """The zero-initialised output conv (improved DDPM: training starts from the zero prediction); with
    ``band_heads`` K > 1, K band-specific heads (``BandHeadConv2d``), each restricted to one radial band."""
    if band_heads == 1:
        conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
    else:
        conv = BandHeadConv2d(channels, out_channels, image_size, band_heads)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResAttentionBlock(nn.Module):
    """A residual block, followed by attention where the network asks for it (pixel self-attention in the
    UNet, spectral attention in the spectral UNet)."""

    def __init__(self, res_block: nn.Module, attention: nn.Module | None):
        super().__init__()
        self.res_block = res_block
        self.attention = attention

    def forward(self, x: Tensor, time_embedding: Tensor) -> Tensor:
        h = self.res_block(x, time_embedding)
        return h if self.attention is None else self.attention(h)


class UNetLevel(nn.Module):
    """The blocks of one resolution of the down or up path, optional frequency attention after them, and the
    resampling that ends it."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None,
                 frequency_attention: nn.Module | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.frequency_attention = frequency_attention
        self.resample = resample

    def up(self, h: Tensor, skips: list[Tensor], time_embedding: Tensor) -> Tensor:
        """This level as part of an up path: every block is fed the concatenation of ``h`` with the skip
        popped from the end of ``skips`` (the matching down-path output), then frequency attention and the
        upsampling. Concatenation promotes to the wider dtype of ``h`` and the skip."""
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), time_embedding)
        if self.frequency_attention is not None:
            h = self.frequency_attention(h)
        if self.resample is not None:
            h = self.resample(h)
        return h


class UNet(nn.Module):
    """DDPM UNet (Ho et al. 2020, appendix B) in the improved-DDPM layout (Nichol & Dhariwal 2021).

    conv in -> down path (``num_res_blocks`` ResBlocks per level, each output kept as a skip, a
    strided-conv downsampling between levels) -> middle (ResBlock, attention, ResBlock) -> up path
    (``num_res_blocks + 1`` ResBlocks per level, each fed the concatenation with one skip,
    nearest + conv upsampling) -> GroupNorm, SiLU, conv out. The output conv starts at zero so the
    untrained network predicts zeros.

    Args:
        in_channels: image channels.
        out_channels: predicted channels; ``None`` means ``in_channels``.
        image_size: side of the square input in pixels; it must be divisible by
            ``2 ** (len(channel_mults) - 1)``.
        base_channels: channels of the first level; level ``i`` has
            ``base_channels * channel_mults[i]``. The time embedding has ``4 * base_channels``.
        channel_mults: channel multiplier per level; one downsampling between consecutive levels.
        num_res_blocks: ResBlocks per level of the down path.
        attention_resolutions: resolutions, in pixels, whose levels get self-attention after
            every ResBlock (e.g. ``(8,)`` for the 8x8 level of a 16x16 input).
        mid_attention: whether the middle block has attention between its two ResBlocks.
        num_heads: attention heads; must divide the channels of every attention block.
        dropout: dropout probability inside every ResBlock, in [0, 1).
        groups: GroupNorm groups; must divide every channel count.
        use_scale_shift_norm: FiLM conditioning of the ResBlocks instead of an additive embedding.
        freq_attention: insert a ``FrequencyAttention`` block (attention across radial bands of each channel's
            power spectrum, re-weighting the bands) after the blocks of every level of the down and up paths,
            before the resampling, and after the middle block. ``False`` leaves the network as without it.
        freq_attention_bands: radial bands K of every frequency attention block (equal width in |f|).
        band_heads: K band-specific output heads (``BandHeadConv2d``); 1 is the plain output conv.
        downsample, upsample: build the resampling between levels from a channel count (``Downsample``,
            ``Upsample``); subclasses inject others (``UNetAliasFree``), never the config.
        activation: builds every pointwise nonlinearity of the ResBlocks and the output head (``nn.SiLU``).
        num_classes: ``None`` (unconditional) or the number of classes of a class-conditional model, set by the
            pipeline from the data with ``data.conditional=true``: a ``ClassEmbedding`` of ``num_classes + 1`` rows
            (the last the null class of classifier-free guidance) is added to the time embedding, and ``forward``
            takes ``class_labels``. Unconditional, the network is exactly what it was without this option.
        condition_dropout: probability that a training label is replaced by the null class (Ho & Salimans 2022).
    """

    # The pipeline gives it ``num_classes`` when ``data.conditional=true``.
    supports_class_labels = True

    # Constructor arguments through which subclasses inject layers; not config keys.
    INJECTED_LAYERS = ("downsample", "upsample", "activation")
    # Constructor arguments the pipeline sets from the data (``data.conditional=true``); not config keys.
    DATA_SIZED = ("num_classes",)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: int = 16,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (8,),
        mid_attention: bool = True,
        num_heads: int = 4,
        dropout: float = 0.0,
        groups: int = 8,
        use_scale_shift_norm: bool = False,
        freq_attention: bool = False,
        freq_attention_bands: int = 4,
        band_heads: int = 1,
        downsample: Callable[[int], nn.Module] = Downsample,
        upsample: Callable[[int], nn.Module] = Upsample,
        activation: Callable[[], nn.Module] = nn.SiLU,
        num_classes: int | None = None,
        condition_dropout: float = 0.1,
    ):
        super().__init__()
        sizes = check_unet_sizes(in_channels, out_channels, image_size, base_channels, channel_mults,
                                 num_res_blocks, attention_resolutions, num_heads, groups)
        (in_channels, out_channels, image_size, base_channels, channel_mults, num_res_blocks,
         attention_resolutions, num_heads, groups) = sizes
        check_bool("model.freq_attention", freq_attention)
        freq_attention_bands = check_int("model.freq_attention_bands", freq_attention_bands, 1)
        band_heads = check_int("model.band_heads", band_heads, 1)
        check_positive("model.dropout", dropout, strict=False)
        if dropout >= 1:
            raise ConfigError(f"model.dropout={dropout!r} is invalid; it must lie in [0, 1)")

        num_downsamplings = len(channel_mults) - 1
        factor = 2**num_downsamplings
        if image_size % factor:
            raise ConfigError(
                f"model.image_size={image_size} is invalid for {num_downsamplings} downsamplings "
                f"(len(model.channel_mults)={len(channel_mults)}); "
                f"it must be a multiple of {factor}"
            )
        resolutions, level_channels = check_levels(sizes)
        time_embed_dim = 4 * base_channels

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = image_size

        def make_block(block_in: int, block_out: int, attention: bool) -> ResAttentionBlock:
            res_block = ResBlock(
                block_in,
                block_out,
                time_embed_dim,
                dropout=dropout,
                groups=groups,
                use_scale_shift_norm=use_scale_shift_norm,
                activation=activation,
            )
            if not attention:
                return ResAttentionBlock(res_block, None)
            attention_block = AttentionBlock(block_out, num_heads=num_heads, groups=groups)
            return ResAttentionBlock(res_block, attention_block)

        def make_frequency_attention(block_channels: int, resolution: int) -> FrequencyAttention | None:
            if not freq_attention:
                return None
            return FrequencyAttention(block_channels, resolution, freq_attention_bands)

        self.time_embedding = TimestepEmbedding(base_channels, time_embed_dim)
        self.class_embedding = make_class_embedding(num_classes, condition_dropout, time_embed_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, kernel_size=3, padding=1)

        skip_channels = [base_channels]
        channels = base_channels
        self.down_levels = nn.ModuleList()
        for level, (level_out, resolution) in enumerate(zip(level_channels, resolutions)):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(make_block(channels, level_out, resolution in attention_resolutions))
                channels = level_out
                skip_channels.append(channels)
            downsample_layer = None
            if level < num_downsamplings:
                downsample_layer = downsample(channels)
                skip_channels.append(channels)
            self.down_levels.append(UNetLevel(blocks, downsample_layer, make_frequency_attention(channels, resolution)))

        self.middle = nn.ModuleList(
            [
                make_block(channels, channels, mid_attention),
                make_block(channels, channels, False),
            ]
        )
        self.middle_frequency_attention = make_frequency_attention(channels, resolutions[-1])

        self.up_levels = nn.ModuleList()
        for level in reversed(range(len(channel_mults))):
            level_out, resolution = level_channels[level], resolutions[level]
            blocks = []
            for _ in range(num_res_blocks + 1):
                block_in = channels + skip_channels.pop()
                blocks.append(make_block(block_in, level_out, resolution in attention_resolutions))
                channels = level_out
            upsample_layer = upsample(channels) if level > 0 else None
            self.up_levels.append(UNetLevel(blocks, upsample_layer, make_frequency_attention(channels, resolution)))

        self.out = nn.Sequential(nn.GroupNorm(groups, channels), activation(),
                                 output_conv(channels, out_channels, image_size, band_heads))

    def forward(self, x: Tensor, noise_level: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """``x``: (B, in_channels, image_size, image_size); ``noise_level``: (B,) or a scalar,
        roughly in [0, 1000]; ``class_labels``: (B,) integers for a class-conditional model, else None.
        Returns (B, out_channels, image_size, image_size)."""
        noise_level = check_inputs(self, x, noise_level)
        time_embedding = add_class_embedding(self.class_embedding, self.time_embedding(noise_level), class_labels)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down_levels:
            for block in level.blocks:
                h = block(h, time_embedding)
                skips.append(h)
            if level.frequency_attention is not None:
                h = level.frequency_attention(h)
                skips[-1] = h
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        for block in self.middle:
            h = block(h, time_embedding)
        if self.middle_frequency_attention is not None:
            h = self.middle_frequency_attention(h)
        for level in self.up_levels:
            h = level.up(h, skips, time_embedding)
        return self.out(h)

