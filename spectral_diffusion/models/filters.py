"""Alias-free 2x resampling after StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial Networks",
sec. 3 and appendix D): fixed Kaiser-windowed low-pass filters, filtered down/up-sampling and the filtered
nonlinearity. Every filter is a non-persistent buffer, so these modules add no parameters and no state-dict keys.

Geometry: a low-resolution pixel i sits at the centre of the high-resolution pixels 2i and 2i + 1, so even-length
filters (``taps`` per low-resolution sample, 2 * taps at the high rate) keep both grids aligned. Frequencies are in
cycles per low-resolution sample: the high rate is fs = 2, the low-resolution Nyquist frequency 0.5.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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


class FilteredResample(nn.Module, ABC):
    """Shared state of the filtered resamplers: the kernel as a buffer, applied to every channel alike.

    A separable kernel is applied along each axis as the banded matrix of its strided (down) or transposed
    (up) 1-D convolution, built once per size by convolving the identity: ``rows @ x @ cols.T`` over the batch and
    channels is the same linear map as the depthwise convolutions, and BLAS runs it many times faster than
    PyTorch's CPU depthwise kernels at these sizes. A radial (2-D) kernel is a strided / transposed depthwise
    ``conv2d`` with ``groups`` = channels.
    """

    def __init__(self, design: LowpassDesign, gain_per_axis: float):
        super().__init__()
        if not isinstance(design, LowpassDesign):
            raise ConfigError(f"model.filter must be a LowpassDesign node, got {type(design).__name__}")
        self.design = design
        kernel = torch.as_tensor(design.kernel(), dtype=torch.float32)
        self.register_buffer("kernel", kernel * gain_per_axis**kernel.ndim, persistent=False)
        self.padding = design.numtaps // 2 - 1  # aligns pixel centres; see the module docstring
        self.matrices: dict[tuple, Tensor] = {}

    @abstractmethod
    def convolve_1d(self, signals: Tensor, kernel: Tensor) -> Tensor:
        """The resampling of (N, 1, n) signals along their last axis (a strided or transposed conv1d)."""

    @abstractmethod
    def convolve_2d(self, x: Tensor, weight: Tensor) -> Tensor:
        """The resampling of (B, C, H, W) images with a (C, 1, k, k) depthwise weight."""

    def axis_matrix(self, size: int, like: Tensor) -> Tensor:
        """(output length, ``size``) matrix of the 1-D resampling: column j is the response to an impulse at j."""
        key = (size, like.device, like.dtype)
        if key not in self.matrices:
            identity = torch.eye(size, device=like.device, dtype=torch.float32)[:, None, :]
            with torch.no_grad(), torch.autocast(like.device.type, enabled=False):
                responses = self.convolve_1d(identity, self.kernel.float().view(1, 1, -1))
            self.matrices[key] = responses[:, 0, :].T.contiguous().to(like.dtype)
        return self.matrices[key]

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel.ndim == 2:
            weight = self.kernel.to(x.dtype).expand(x.shape[1], 1, *self.kernel.shape)
            return self.convolve_2d(x, weight)
        return self.axis_matrix(x.shape[-2], x) @ x @ self.axis_matrix(x.shape[-1], x).T

    def extra_repr(self) -> str:
        return repr(self.design)


class FilteredDownsample2d(FilteredResample):
    """Low-pass then decimate by 2: the strided convolution with the design's filter (DC gain 1)."""

    def __init__(self, design: LowpassDesign):
        super().__init__(design, gain_per_axis=1.0)

    def convolve_1d(self, signals: Tensor, kernel: Tensor) -> Tensor:
        return F.conv1d(signals, kernel, stride=2, padding=self.padding)

    def convolve_2d(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(x, weight, stride=2, padding=self.padding, groups=x.shape[1])


class FilteredUpsample2d(FilteredResample):
    """Zero-insert by 2 then low-pass: the transposed convolution with the filter times 2 per axis (gain 4 in
    2-D, which zero-insertion needs to keep the mean: StyleGAN3 ``upfirdn2d`` with gain up²)."""

    def __init__(self, design: LowpassDesign):
        super().__init__(design, gain_per_axis=HIGH_RATE)

    def convolve_1d(self, signals: Tensor, kernel: Tensor) -> Tensor:
        return F.conv_transpose1d(signals, kernel, stride=2, padding=self.padding)

    def convolve_2d(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.conv_transpose2d(x, weight, stride=2, padding=self.padding, groups=x.shape[1])


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
