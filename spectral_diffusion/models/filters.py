"""Alias-free 2x resampling after StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial Networks",
sec. 3 and appendix D): fixed Kaiser-windowed low-pass filters, filtered down/up-sampling and the filtered
nonlinearity. Every filter is a non-persistent buffer, so these modules add no parameters and no state-dict keys.

Geometry: a low-resolution pixel i sits at the centre of the high-resolution pixels 2i and 2i + 1, so even-length
filters (``taps`` per low-resolution sample, 2 * taps at the high rate) keep both grids aligned. Frequencies are in
cycles per low-resolution sample: the high rate is fs = 2, the low-resolution Nyquist frequency 0.5.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectral_diffusion.utils.validation import ConfigError, check_choice, check_int

FILTER_KINDS = ("kaiser", "jinc")
HIGH_RATE = 2.0  # samples per low-resolution sample at the upsampled rate


@dataclass(frozen=True)
class LowpassDesign:
    """The low-pass filter of every 2x resampling (``model.filter``), checked once here.

    Args:
        kind: ``"kaiser"``: separable, ``scipy.signal.firwin(numtaps, cutoff, width, fs)`` along each axis
            (StyleGAN3 ``design_lowpass_filter``, ``radial=False``); ``"jinc"``: radially symmetric,
            jinc(2 f_c r) times an outer product of Kaiser windows (StyleGAN3 ``radial=True``).
        taps: filter taps per low-resolution sample (StyleGAN3 ``filter_size=6``); the filter has 2 * taps taps
            at the high rate.
        cutoff: cutoff frequency f_c in cycles per low-resolution sample, in (0, 0.5].
        transition: full width of the transition band (firwin ``width``), centred on ``cutoff``, > 0; the
            stop band starts at cutoff + transition / 2. The Kaiser β follows from the attenuation that
            ``2 * taps`` taps reach over this width (``scipy.signal.kaiser_atten``, Kaiser 1974).

    Defaults: StyleGAN3's 6 taps per sample and the cutoff of its critically sampled layers (f_c = 0.5); the
    transition 0.4 (stop band from 0.7, 39.5 dB) keeps the pass band flat to ±0.6 % up to 0.3, where StyleGAN3's
    narrower 0.23 would leave ±8 % ripple with 12 taps. Content folded by decimation from (0.5, 0.7) lands in
    (0.3, 0.5), already in the transition band.
    """

    kind: str = "kaiser"
    taps: int = 6
    cutoff: float = 0.5
    transition: float = 0.4

    def __post_init__(self) -> None:
        check_choice("model.filter.kind", self.kind, FILTER_KINDS)
        check_int("model.filter.taps", self.taps, 2)
        if not isinstance(self.cutoff, (int, float)) or isinstance(self.cutoff, bool) or not 0 < self.cutoff <= 0.5:
            raise ConfigError(f"model.filter.cutoff={self.cutoff!r} is invalid; it must lie in (0, 0.5] "
                              "(cycles per low-resolution sample)")
        if (not isinstance(self.transition, (int, float)) or isinstance(self.transition, bool)
                or not 0 < self.transition < HIGH_RATE / 2):
            raise ConfigError(f"model.filter.transition={self.transition!r} is invalid; it must lie in (0, 1) "
                              "(cycles per low-resolution sample)")

    @property
    def numtaps(self) -> int:
        """Taps of the filter at the high rate (2 * ``taps``)."""
        return 2 * self.taps

    @property
    def attenuation_db(self) -> float:
        """The stop-band attenuation (dB) a Kaiser design reaches with these taps and transition width."""
        return float(scipy.signal.kaiser_atten(self.numtaps, self.transition / (HIGH_RATE / 2)))

    def kernel_1d(self) -> np.ndarray:
        """The separable filter at the high rate, summing to 1 (DC gain 1)."""
        return scipy.signal.firwin(self.numtaps, self.cutoff, width=self.transition, fs=HIGH_RATE)

    def kernel(self) -> np.ndarray:
        """The filter at the high rate: (numtaps,) for ``kaiser``, (numtaps, numtaps) for ``jinc``; sums to 1."""
        if self.kind == "kaiser":
            return self.kernel_1d()
        # StyleGAN3 design_lowpass_filter(radial=True): jinc(x) = 2 J1(πx) / (πx) at x = 2 f_c r, windowed.
        positions = (np.arange(self.numtaps) - (self.numtaps - 1) / 2) / HIGH_RATE
        radius = np.hypot(*np.meshgrid(positions, positions))
        kernel = scipy.special.j1(2 * self.cutoff * np.pi * radius) / (np.pi * radius)
        beta = scipy.signal.kaiser_beta(self.attenuation_db)
        window = np.kaiser(self.numtaps, beta)
        kernel = kernel * np.outer(window, window)
        return kernel / kernel.sum()


class FilteredResample(nn.Module):
    """Shared state of the filtered resamplers: the kernel as a buffer, applied depthwise to any channel count
    (one conv per axis for a separable kernel, one 2-D conv for a radial one)."""

    def __init__(self, design: LowpassDesign, gain_per_axis: float):
        super().__init__()
        if not isinstance(design, LowpassDesign):
            raise ConfigError(f"model.filter must be a LowpassDesign node, got {type(design).__name__}")
        self.design = design
        kernel = torch.as_tensor(design.kernel(), dtype=torch.float32)
        self.register_buffer("kernel", kernel * gain_per_axis**kernel.ndim, persistent=False)
        self.padding = design.numtaps // 2 - 1  # aligns pixel centres; see the module docstring

    def depthwise_weights(self, channels: int, dtype: torch.dtype) -> list[Tensor]:
        """(channels, 1, kh, kw) weights: [vertical, horizontal] for a separable kernel, [2-D] for a radial one."""
        kernel = self.kernel.to(dtype)
        if kernel.ndim == 2:
            return [kernel.expand(channels, 1, *kernel.shape)]
        taps = kernel.numel()
        return [kernel.view(1, 1, taps, 1).expand(channels, 1, taps, 1),
                kernel.view(1, 1, 1, taps).expand(channels, 1, 1, taps)]

    @staticmethod
    def axis_padding(weight: Tensor, padding: int) -> tuple[int, int]:
        """``padding`` along the axes the kernel spans, 0 along a separable kernel's length-1 axis."""
        return (padding if weight.shape[2] > 1 else 0, padding if weight.shape[3] > 1 else 0)

    @staticmethod
    def axis_stride(weight: Tensor) -> tuple[int, int]:
        """Stride 2 along the axes the kernel spans, 1 along a separable kernel's length-1 axis."""
        return (2 if weight.shape[2] > 1 else 1, 2 if weight.shape[3] > 1 else 1)

    def extra_repr(self) -> str:
        return repr(self.design)


class FilteredDownsample2d(FilteredResample):
    """Low-pass then decimate by 2: a strided depthwise convolution with the design's filter (DC gain 1)."""

    def __init__(self, design: LowpassDesign):
        super().__init__(design, gain_per_axis=1.0)

    def forward(self, x: Tensor) -> Tensor:
        # Weights in the input's dtype; under autocast the convolution casts both to the compute dtype.
        for weight in self.depthwise_weights(x.shape[1], x.dtype):
            x = F.conv2d(x, weight, stride=self.axis_stride(weight), padding=self.axis_padding(weight, self.padding),
                         groups=x.shape[1])
        return x


class FilteredUpsample2d(FilteredResample):
    """Zero-insert by 2 then low-pass: a transposed depthwise convolution with the filter times 2 per axis
    (gain 4 in 2-D, which zero-insertion needs to keep the mean: StyleGAN3 ``upfirdn2d`` with gain up²)."""

    def __init__(self, design: LowpassDesign):
        super().__init__(design, gain_per_axis=HIGH_RATE)

    def forward(self, x: Tensor) -> Tensor:
        for weight in self.depthwise_weights(x.shape[1], x.dtype):
            x = F.conv_transpose2d(x, weight, stride=self.axis_stride(weight),
                                   padding=self.axis_padding(weight, self.padding), groups=x.shape[1])
        return x


class FilteredActivation(nn.Module):
    """A pointwise nonlinearity evaluated at twice the resolution (StyleGAN3 sec. 3.2, "filtered nonlinearity"):
    upsample 2x -> activation -> low-pass -> decimate 2x, so the high frequencies it creates are removed
    before they alias."""

    def __init__(self, design: LowpassDesign, activation: Callable[[], nn.Module] = nn.SiLU):
        super().__init__()
        self.up = FilteredUpsample2d(design)
        self.activation = activation()
        self.down = FilteredDownsample2d(design)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(self.up(x)))
