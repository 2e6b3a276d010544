"""Frequency-native denoisers: a complex-valued UNet on the orthonormal rfft2 of x_t, and a hybrid with the
same spectral encoder and a pixel-space decoder. Plain networks ``f(x_t, noise_level) -> prediction``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spectral_diffusion.models.band_layers import (
    SPECTRAL_ATTENTION,
    BandFiLM,
    SpectralBandAttention,
    band_masks,
)
from spectral_diffusion.models.complex_layers import (
    ACTIVATIONS,
    COMPLEX_MODES,
    ComplexConv2d,
    ComplexGroupNorm,
    SpectralMultiplier,
    complex_activation,
    half_spectrum_to_image,
    spectral_downsample,
    spectral_upsample,
    to_complex,
    to_interleaved,
)
from spectral_diffusion.models.layers import (
    AttentionBlock,
    ResBlock,
    TimestepEmbedding,
    Upsample,
    add_class_embedding,
    make_class_embedding,
)
from spectral_diffusion.models.unet import (
    ResAttentionBlock,
    UNet,
    UNetLevel,
    check_inputs,
    check_levels,
    check_unet_sizes,
    output_conv,
)
from spectral_diffusion.spectral.dft import real_irfft2_packed
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_int

BLOCK_TYPES = ("conv", "spectral")
OUTPUTS = ("cartesian", "polar")


class SpectralResBlock(nn.Module):
    """The DDPM ResBlock (Ho et al. 2020) in the complex domain: ComplexGroupNorm -> complex activation ->
    mixing, per-band FiLM of the timestep embedding, ComplexGroupNorm -> activation -> mixing, plus the skip
    path (a complex 1x1 conv when channels change). Mixing is a 3x3 complex conv over neighbouring bins
    (``block_type="conv"``) or an FNO spectral multiplier, one channel-mixing matrix per bin (``"spectral"``)."""

    def __init__(self, in_channels: int, out_channels: int, time_embed_dim: int, masks: Tensor, *, groups: int,
                 activation: str, complex_mode: str, block_type: str, resolution: int, modes: int | None):
        super().__init__()

        def mixing(block_in: int) -> nn.Module:
            if block_type == "conv":
                return ComplexConv2d(block_in, out_channels, 3, mode=complex_mode)
            kept = resolution // 2 if modes is None else min(modes, resolution // 2)
            return SpectralMultiplier(block_in, out_channels, resolution, kept, mode=complex_mode)

        self.in_norm = ComplexGroupNorm(groups, in_channels)
        self.in_activation = complex_activation(activation, in_channels)
        self.in_mixing = mixing(in_channels)
        self.film = BandFiLM(time_embed_dim, out_channels, masks)
        self.out_norm = ComplexGroupNorm(groups, out_channels)
        self.out_activation = complex_activation(activation, out_channels)
        self.out_mixing = mixing(out_channels)
        if in_channels == out_channels:
            self.skip = nn.Identity()
        else:
            self.skip = ComplexConv2d(in_channels, out_channels, 1, mode=complex_mode)

    def forward(self, features: Tensor, time_embedding: Tensor) -> Tensor:
        h = self.in_mixing(self.in_activation(self.in_norm(features)))
        h = self.film(h, time_embedding)
        h = self.out_mixing(self.out_activation(self.out_norm(h)))
        return self.skip(features) + h


def _check_spectral_config(in_channels, out_channels, image_size, base_channels, channel_mults, num_res_blocks,
                           attention_resolutions, num_heads, groups, complex_mode, block_type, spectral_modes,
                           activation, num_bands, spectral_attention, band_heads) -> dict:
    """Validate the keys shared by ``UNetSpectral`` and ``UNetHybrid``; returns the normalised values."""
    sizes = check_unet_sizes(in_channels, out_channels, image_size, base_channels, channel_mults, num_res_blocks,
                             attention_resolutions, num_heads, groups)
    image_size, channel_mults = sizes.image_size, sizes.channel_mults
    check_choice("model.complex_mode", complex_mode, COMPLEX_MODES)
    check_choice("model.block_type", block_type, BLOCK_TYPES)
    check_choice("model.activation", activation, ACTIVATIONS)
    check_choice("model.spectral_attention", spectral_attention, SPECTRAL_ATTENTION)
    num_bands = check_int("model.num_bands", num_bands, 1)
    band_heads = check_int("model.band_heads", band_heads, 1)
    factor = 2 ** len(channel_mults)
    if image_size % factor:
        raise ConfigError(f"model.image_size={image_size} is invalid for {len(channel_mults)} levels "
                          f"(len(model.channel_mults)={len(channel_mults)}): spectral downsampling keeps the block "
                          f"|k| < size/4, so every level's size must be even; it must be a multiple of {factor}")
    if spectral_modes is not None:
        spectral_modes = check_int("model.spectral_modes", spectral_modes, 1)
        if spectral_modes > image_size // 2:
            raise ConfigError(f"model.spectral_modes={spectral_modes} is more than the {image_size}x{image_size} "
                              f"grid holds; it must lie in [1, {image_size // 2}] (or null for every mode)")
    resolutions, level_channels = check_levels(sizes)
    return {**sizes._asdict(), "spectral_modes": spectral_modes, "num_bands": num_bands, "band_heads": band_heads,
            "resolutions": resolutions, "level_channels": level_channels}


class SpectralEncoder(nn.Module):
    """rfft2 (orthonormal) of x_t -> complex conv in -> down path (``num_res_blocks`` SpectralResBlocks per level,
    each followed by spectral attention where asked and kept as a skip, a spectral crop between levels) -> middle
    (block, spectral attention, block).
    Returns the middle features and the skips, interleaved (Re, Im), in the dtype of the surrounding autocast."""

    def __init__(self, settings: dict, time_embed_dim: int, *, mid_attention: bool, complex_mode: str,
                 block_type: str, activation: str, spectral_attention: str):
        super().__init__()
        groups, num_bands = settings["groups"], settings["num_bands"]
        self.make_block = self._block_factory(time_embed_dim, groups, num_bands, settings, complex_mode, block_type,
                                              activation, spectral_attention)
        base = settings["base_channels"]
        self.conv_in = ComplexConv2d(settings["in_channels"], base, 3, mode=complex_mode)
        self.skip_channels = [base]
        channels = base
        self.levels = nn.ModuleList()
        last = len(settings["resolutions"]) - 1
        for level, (level_out, resolution) in enumerate(zip(settings["level_channels"], settings["resolutions"])):
            blocks = nn.ModuleList()
            for _ in range(settings["num_res_blocks"]):
                blocks.append(self.make_block(channels, level_out, resolution,
                                              resolution in settings["attention_resolutions"]))
                channels = level_out
                self.skip_channels.append(channels)
            if level < last:
                self.skip_channels.append(channels)
            self.levels.append(blocks)
        lowest = settings["resolutions"][-1]
        self.middle = nn.ModuleList([self.make_block(channels, channels, lowest, mid_attention),
                                     self.make_block(channels, channels, lowest, False)])
        self.channels = channels

    @staticmethod
    def _block_factory(time_embed_dim, groups, num_bands, settings, complex_mode, block_type, activation,
                       spectral_attention):
        def make_block(block_in: int, block_out: int, resolution: int, attention: bool) -> ResAttentionBlock:
            masks = band_masks(resolution, num_bands)
            res_block = SpectralResBlock(block_in, block_out, time_embed_dim, masks, groups=groups,
                                         activation=activation, complex_mode=complex_mode, block_type=block_type,
                                         resolution=resolution, modes=settings["spectral_modes"])
            attention_block = None
            if attention:
                attention_block = SpectralBandAttention(block_out, masks, ComplexGroupNorm(groups, block_out),
                                                        num_heads=settings["num_heads"], mode=spectral_attention)
            return ResAttentionBlock(res_block, attention_block)

        return make_block

    def forward(self, spectrum: Tensor, time_embedding: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.conv_in(spectrum)
        skips = [h]
        for index, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, time_embedding)
                skips.append(h)
            if index < len(self.levels) - 1:
                h = spectral_downsample(h)
                skips.append(h)
        for block in self.middle:
            h = block(h, time_embedding)
        return h, skips


class UNetSpectral(nn.Module):
    """A UNet that works natively on the orthonormal half-spectrum X = rfft2(x_t): complex convolutions (Trabelsi
    et al. 2018, "Deep Complex Networks") or FNO spectral multipliers (Li et al. 2021), complex group whitening
    (Trabelsi et al. 2018), modReLU (Arjovsky et al. 2016) / CReLU, downsampling by keeping the low-frequency
    block of the spectrum and upsampling by zero-padding it (spectral pooling, Rippel, Snoek & Adams 2015),
    attention across radial bands, per-band FiLM time conditioning (Perez et al. 2018).

    encoder (``SpectralEncoder``) -> up path (``num_res_blocks + 1`` SpectralResBlocks per level, each followed by
    spectral attention where asked and fed the concatenation with one skip, spectral zero-padding between levels)
    -> ComplexGroupNorm, activation,
    complex conv to ``band_heads`` x out_channels half-spectra -> Hermitian projection -> irfft2.
    The prediction is real by construction: the head's spectrum is projected onto spectra of real images, for
    which irfft2 is exact (``rfft2(output) == P(head)``).

    ``output="cartesian"``: the head's complex values are the predicted spectrum Ŷ (zero at initialisation).
    ``output="polar"``: the head gives a log-magnitude gain ℓ and a phase offset δ per bin and
    Ŷ = X_t · exp(ℓ + iδ) (ℓ soft-clipped to ±8 by 8·tanh(ℓ/8)), so magnitude |X_t|e^ℓ and phase ∠X_t + δ are
    predicted separately and δ = 0 keeps the phase of x_t (phase-preserving); output channel c takes its
    reference phase from input channel c mod in_channels. It starts as the identity map x_t.

    Args (beyond those of ``UNet``, which keep their meaning; channel counts count complex channels):
        complex_mode: ``complex`` or ``dual_real`` (every complex linear map replaced by an unconstrained real
            map on the stacked (Re, Im) channels: twice the weights, equal biases).
        block_type: ``conv`` (3x3 complex conv over bins, Hermitian padding) or ``spectral`` (FNO multiplier).
        spectral_modes: modes per axis kept by spectral blocks (|k_y| < m, k_x < m), at most image_size / 2,
            clipped to each level's size / 2; ``None`` keeps every mode.
        activation: ``modrelu`` or ``crelu``.
        num_bands: radial bands of the FiLM conditioning and the spectral attention, at every level.
        spectral_attention: ``bands`` or ``low_rank`` (see ``SpectralBandAttention``), placed after blocks at
            ``attention_resolutions`` and in the middle with ``mid_attention``.
        output: ``cartesian`` or ``polar``.
        band_heads: K output heads, head k restricted to radial band k of the full grid; 1 is the plain head.
        num_classes, condition_dropout: class conditioning with a null class, as in ``UNet``.
    """

    supports_class_labels = True
    DATA_SIZED = UNet.DATA_SIZED

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: int = 16,
        base_channels: int = 16,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        mid_attention: bool = True,
        num_heads: int = 4,
        groups: int = 8,
        complex_mode: str = "complex",
        block_type: str = "conv",
        spectral_modes: int | None = None,
        activation: str = "modrelu",
        num_bands: int = 4,
        spectral_attention: str = "bands",
        output: str = "cartesian",
        band_heads: int = 1,
        num_classes: int | None = None,
        condition_dropout: float = 0.1,
    ):
        super().__init__()
        check_choice("model.output", output, OUTPUTS)
        settings = _check_spectral_config(in_channels, out_channels, image_size, base_channels, channel_mults,
                                          num_res_blocks, attention_resolutions, num_heads, groups, complex_mode,
                                          block_type, spectral_modes, activation, num_bands, spectral_attention,
                                          band_heads)
        self.in_channels, self.out_channels = settings["in_channels"], settings["out_channels"]
        self.image_size = settings["image_size"]
        self.output = output
        self.band_heads = settings["band_heads"]
        time_embed_dim = 4 * settings["base_channels"]
        self.time_embedding = TimestepEmbedding(settings["base_channels"], time_embed_dim)
        self.class_embedding = make_class_embedding(num_classes, condition_dropout, time_embed_dim)
        self.encoder = SpectralEncoder(settings, time_embed_dim, mid_attention=mid_attention,
                                       complex_mode=complex_mode, block_type=block_type, activation=activation,
                                       spectral_attention=spectral_attention)
        make_block = self.encoder.make_block
        skip_channels = list(self.encoder.skip_channels)
        channels = self.encoder.channels
        self.up_levels = nn.ModuleList()
        for level in reversed(range(len(settings["channel_mults"]))):
            level_out, resolution = settings["level_channels"][level], settings["resolutions"][level]
            blocks = nn.ModuleList()
            for _ in range(settings["num_res_blocks"] + 1):
                blocks.append(make_block(channels + skip_channels.pop(), level_out, resolution,
                                         resolution in settings["attention_resolutions"]))
                channels = level_out
            self.up_levels.append(blocks)
        self.out_norm = ComplexGroupNorm(settings["groups"], channels)
        self.out_activation = complex_activation(activation, channels)
        self.out_conv = ComplexConv2d(channels, self.band_heads * self.out_channels, 3, mode=complex_mode,
                                      zero_init=True)
        if self.band_heads > 1:
            self.register_buffer("head_masks", band_masks(self.image_size, self.band_heads), persistent=False)

    def head_spectrum(self, x: Tensor, noise_level: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The predicted complex half-spectrum (B, out_channels, H, W//2+1) before the Hermitian projection."""
        noise_level = check_inputs(self, x, noise_level)
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")
        time_embedding = add_class_embedding(self.class_embedding, self.time_embedding(noise_level.float()),
                                             class_labels)
        h, skips = self.encoder(to_interleaved(spectrum), time_embedding)
        for index, blocks in enumerate(self.up_levels):
            for block in blocks:
                h = block(torch.cat([h, skips.pop().to(h.dtype)], dim=1), time_embedding)
            if index < len(self.up_levels) - 1:
                h = spectral_upsample(h)
        with torch.autocast(x.device.type, enabled=False):
            head = to_complex(self.out_conv(self.out_activation(self.out_norm(h))))
            batch, _, height, width = head.shape
            heads = head.reshape(batch, self.band_heads, self.out_channels, height, width)
            if self.output == "polar":
                reference = spectrum[:, torch.arange(self.out_channels) % self.in_channels]
                log_gain = 8.0 * torch.tanh(heads.real / 8.0)
                heads = reference[:, None] * torch.exp(torch.complex(log_gain, heads.imag))
            if self.band_heads == 1:
                return heads[:, 0]
            return (heads * self.head_masks[None, :, None]).sum(dim=1)

    def forward(self, x: Tensor, noise_level: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """``x``: (B, in_channels, image_size, image_size) real; ``noise_level``: (B,) or a scalar, about
        1000·t; ``class_labels`` as in ``UNet.forward``. Returns the real (B, out_channels, image_size, image_size)
        prediction in float32."""
        head = self.head_spectrum(x, noise_level, class_labels)
        with torch.autocast(x.device.type, enabled=False):
            return half_spectrum_to_image(head, self.image_size)


class UNetHybrid(nn.Module):
    """Spectral encoder, spatial decoder: the frequency-domain encoder of ``UNetSpectral`` with the pixel
    decoder of the DDPM UNet (Ho et al. 2020; Nichol & Dhariwal 2021).

    The ``SpectralEncoder`` of ``UNetSpectral`` runs on rfft2(x_t); its middle features and every skip are
    mapped back to pixels (Hermitian projection + orthonormal irfft2: C complex channels -> C real maps at the
    level's resolution), and the up path of the pixel ``UNet`` decodes them: ``num_res_blocks + 1`` ResBlocks
    per level fed the concatenation with one skip, pixel self-attention at ``attention_resolutions``, nearest +
    conv upsampling, GroupNorm, SiLU and a zero-initialised output conv (``band_heads`` band heads when K > 1).
    Both follow the surrounding autocast, the inverse FFTs to pixels included; the FFT of x_t and the complex
    whitening's statistics run in float32.

    Args: those of ``UNetSpectral`` except ``output`` (the decoder predicts pixels).
    """

    supports_class_labels = True
    DATA_SIZED = UNet.DATA_SIZED

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: int = 16,
        base_channels: int = 16,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        mid_attention: bool = True,
        num_heads: int = 4,
        groups: int = 8,
        complex_mode: str = "complex",
        block_type: str = "conv",
        spectral_modes: int | None = None,
        activation: str = "modrelu",
        num_bands: int = 4,
        spectral_attention: str = "bands",
        band_heads: int = 1,
        num_classes: int | None = None,
        condition_dropout: float = 0.1,
    ):
        super().__init__()
        settings = _check_spectral_config(in_channels, out_channels, image_size, base_channels, channel_mults,
                                          num_res_blocks, attention_resolutions, num_heads, groups, complex_mode,
                                          block_type, spectral_modes, activation, num_bands, spectral_attention,
                                          band_heads)
        self.in_channels, self.out_channels = settings["in_channels"], settings["out_channels"]
        self.image_size = settings["image_size"]
        time_embed_dim = 4 * settings["base_channels"]
        self.time_embedding = TimestepEmbedding(settings["base_channels"], time_embed_dim)
        self.class_embedding = make_class_embedding(num_classes, condition_dropout, time_embed_dim)
        self.encoder = SpectralEncoder(settings, time_embed_dim, mid_attention=mid_attention,
                                       complex_mode=complex_mode, block_type=block_type, activation=activation,
                                       spectral_attention=spectral_attention)
        skip_channels = list(self.encoder.skip_channels)
        channels = self.encoder.channels
        groups = settings["groups"]
        self.up_levels = nn.ModuleList()
        for level in reversed(range(len(settings["channel_mults"]))):
            level_out, resolution = settings["level_channels"][level], settings["resolutions"][level]
            blocks = []
            for _ in range(settings["num_res_blocks"] + 1):
                res_block = ResBlock(channels + skip_channels.pop(), level_out, time_embed_dim, groups=groups)
                attention = None
                if resolution in settings["attention_resolutions"]:
                    attention = AttentionBlock(level_out, num_heads=num_heads, groups=groups)
                blocks.append(ResAttentionBlock(res_block, attention))
                channels = level_out
            self.up_levels.append(UNetLevel(blocks, Upsample(channels) if level > 0 else None))
        self.out = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                 output_conv(channels, self.out_channels, self.image_size, settings["band_heads"]))

    def forward(self, x: Tensor, noise_level: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """Same contract as ``UNet.forward``."""
        noise_level = check_inputs(self, x, noise_level)
        time_embedding = add_class_embedding(self.class_embedding, self.time_embedding(noise_level.float()),
                                             class_labels)
        h, skips = self.encoder(to_interleaved(torch.fft.rfft2(x.float(), norm="ortho")), time_embedding)
        h = _to_pixels(h)
        skips = [_to_pixels(skip) for skip in skips]
        for level in self.up_levels:
            h = level.up(h, skips, time_embedding)
        return self.out(h)


def _to_pixels(features: Tensor) -> Tensor:
    """Interleaved half-spectrum features at resolution M -> C real maps of M x M pixels (Hermitian projection
    and orthonormal irfft2 as real matrix products, ``spectral.dft.real_irfft2_packed``, in the features' dtype):
    the interleaved channels (Re z_c, Im z_c) already are the packed (…, 2, H, Wf) layout."""
    batch, channels2, height, width = features.shape
    return real_irfft2_packed(features.reshape(batch, channels2 // 2, 2, height, width), height)

