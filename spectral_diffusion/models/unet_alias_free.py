"""The UNet with StyleGAN3's alias-free resampling (``conf/model/unet_alias_free.yaml``; Anjum et al. 2024,
arXiv 2411.09174, after Karras et al. 2021): the plain ``UNet`` with its resampling and nonlinearities swapped
for filtered ones, in four versions that add no trainable parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from spectral_diffusion.models.filters import FilteredActivation, FilteredDownsample2d, FilteredUpsample2d, LowpassDesign
from spectral_diffusion.models.layers import Downsample, Upsample
from spectral_diffusion.models.unet import UNet
from spectral_diffusion.utils.validation import ConfigError, check_int

VERSIONS = {
    0: "the plain UNet: strided-conv downsampling, nearest + conv upsampling, SiLU",
    1: "alias-free resampling: conv, low-pass, decimate / zero-insert (gain 4), low-pass, conv",
    2: "filtered nonlinearities: every SiLU at twice the resolution (up 2x, SiLU, low-pass, down 2x)",
    3: "both",
}


class AliasFreeDownsample(nn.Module):
    """A 3x3 convolution at full resolution, then low-pass and decimate: the parameters of ``Downsample``
    (one 3x3 conv named ``conv``), without the aliasing of its stride."""

    def __init__(self, channels: int, design: LowpassDesign):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.resample = FilteredDownsample2d(design)

    def forward(self, x: Tensor) -> Tensor:
        return self.resample(self.conv(x))


class AliasFreeUpsample(nn.Module):
    """Zero-insert (gain 4) and low-pass, then a 3x3 convolution: the parameters of ``Upsample``, with the
    band-limited interpolation in place of nearest-neighbour repetition."""

    def __init__(self, channels: int, design: LowpassDesign):
        super().__init__()
        self.resample = FilteredUpsample2d(design)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.resample(x))


def lowpass_design(design: LowpassDesign | Mapping | None) -> LowpassDesign:
    """``model.filter`` as a ``LowpassDesign`` (an instantiated node, a mapping of its fields, or None: defaults)."""
    if design is None:
        return LowpassDesign()
    if isinstance(design, LowpassDesign):
        return design
    if isinstance(design, Mapping):
        unknown = sorted(set(design) - {"kind", "taps", "cutoff", "transition", "_target_"})
        if unknown:
            raise ConfigError(f"model.filter has unknown keys {unknown}; allowed: kind, taps, cutoff, transition")
        return LowpassDesign(**{key: value for key, value in design.items() if key != "_target_"})
    raise ConfigError(f"model.filter={design!r} is invalid; give kind, taps, cutoff and transition")


class UNetAliasFree(UNet):
    """``UNet`` whose resampling and nonlinearities follow ``version`` (Anjum et al. 2024's configs A-D):

    0. the plain UNet (the same modules and state dict as ``UNet``);
    1. alias-free resampling (StyleGAN3 sec. 3.1): ``AliasFreeDownsample`` / ``AliasFreeUpsample``;
    2. filtered nonlinearities (StyleGAN3 sec. 3.2): every ResBlock and output-head SiLU becomes
       ``FilteredActivation``;
    3. both.

    Every version has version 0's parameters and state-dict keys (filters are non-persistent buffers), so a
    checkpoint of one version loads into another.

    Args:
        version: 0, 1, 2 or 3.
        filter: the low-pass ``LowpassDesign`` of every resampling (``model.filter``).
        **unet_options: every argument of ``UNet`` (sizes, attention, dropout, frequency attention, band heads).
    """

    def __init__(self, version: int = 3, filter: LowpassDesign | Mapping | None = None, **unet_options):
        self.version = check_int("model.version", version, 0, 3)
        design = lowpass_design(filter)
        resampling = {}
        if self.version in (1, 3):
            resampling["downsample"] = lambda channels: AliasFreeDownsample(channels, design)
            resampling["upsample"] = lambda channels: AliasFreeUpsample(channels, design)
        else:
            resampling["downsample"], resampling["upsample"] = Downsample, Upsample
        if self.version in (2, 3):
            resampling["activation"] = lambda: FilteredActivation(design, nn.SiLU)
        super().__init__(**unet_options, **resampling)
        self.design = design
