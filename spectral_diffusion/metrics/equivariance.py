"""Equivariance of a denoiser and of its generation to translations and rotations, in dB as StyleGAN3 defines
them (Karras et al. 2021, sec. 3 and ``metrics/equivariance.py``): EQ = 20 log10(2) − 10 log10(MSE), the peak 2 of
data in [−1, 1], the MSE taken inside a central disc so borders (padding, wrapped content) do not count.

Sub-pixel translations are exact band-limited shifts (a phase ramp on the FFT of a periodic image) and rotations
are three FFT shears (Paeth 1986; Larkin, Oldfield & Klemm 1997, "Fast Fourier method for the accurate rotation
of sampled images"), each a periodic shift of rows or columns, unitary but for the Nyquist row and column
(whose half-pixel shifts keep only their real part), so white noise stays white with nearly its variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from spectral_diffusion.utils.random import sample_generators
from spectral_diffusion.utils.validation import ConfigError

PEAK = 2.0  # the range of data in [-1, 1]
Transform = Callable[[Tensor], Tensor]
DenoiseFn = Callable[[Tensor, Tensor], Tensor]


def check_square(x: Tensor, key: str = "images") -> int:
    """The side of (..., S, S) images; ConfigError for non-square ones (rotation needs a square frame)."""
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ConfigError(f"{key} must be square for rotations, got shape {tuple(x.shape)}")
    return int(x.shape[-1])


def integer_translate(x: Tensor, dx: int, dy: int) -> Tensor:
    """x shifted by whole pixels (periodic): output[..., i, j] = x[..., i − dy, j − dx]."""
    return torch.roll(x, shifts=(int(dy), int(dx)), dims=(-2, -1))


def axis_phase(size: int, shift: Tensor | float, device, dtype=torch.float64) -> Tensor:
    """exp(−2πi k shift / size) for the FFT frequencies k of one axis, the Nyquist bin of an even size set to its
    real part (cos), which keeps a real signal real; ``shift`` may be a tensor broadcasting against k."""
    k = torch.fft.fftfreq(size, d=1.0 / size, device=device).to(dtype)
    angle = -2 * math.pi * k * torch.as_tensor(shift, device=device, dtype=dtype) / size
    phase = torch.polar(torch.ones_like(angle), angle)
    if size % 2 == 0:
        nyquist = angle[..., size // 2]
        phase[..., size // 2] = torch.cos(nyquist).to(phase.dtype)
    return phase


def fractional_translate(x: Tensor, dx: float, dy: float) -> Tensor:
    """x shifted by (dx, dy) pixels as the periodic band-limited signal it samples (the FFT shift theorem)."""
    height, width = x.shape[-2:]
    spectrum = torch.fft.fft2(x.double())
    spectrum = spectrum * axis_phase(height, dy, x.device)[:, None] * axis_phase(width, dx, x.device)[None, :]
    return torch.fft.ifft2(spectrum).real.to(x.dtype)


def shear_rows(x: Tensor, factor: float) -> Tensor:
    """Row i (centred index y) shifted along the width by ``factor * y`` pixels, band-limited and periodic."""
    height, width = x.shape[-2:]
    rows = torch.arange(height, device=x.device, dtype=torch.float64) - (height - 1) / 2
    phase = axis_phase(width, factor * rows[:, None], x.device)  # (height, width)
    return torch.fft.ifft(torch.fft.fft(x.double(), dim=-1) * phase, dim=-1).real.to(x.dtype)


def rotate(x: Tensor, degrees: float) -> Tensor:
    """x rotated counter-clockwise as displayed (the direction of ``torch.rot90`` and ``scipy.ndimage.rotate``) by
    ``degrees`` about the image centre, as three shears X(tan θ/2) Y(−sin θ) X(tan θ/2) in (column, row)
    coordinates with rows downward (R = X(−tan θ/2) Y(sin θ) X(−tan θ/2) with y upward) of a periodic
    band-limited image.

    Exact inside the disc of radius (side / 2) · cos(θ / 2) for |θ| ≤ 90° (only the first shear stretches it), so
    compare rotated images inside ``disc_mask``; larger angles go through a quarter turn (``torch.rot90``) first.
    """
    check_square(x)
    quarter_turns = int(round(degrees / 90.0))
    residual = degrees - 90.0 * quarter_turns
    x = torch.rot90(x, k=quarter_turns, dims=(-2, -1))
    if residual == 0:
        return x
    theta = math.radians(residual)
    x = shear_rows(x, math.tan(theta / 2))
    x = shear_rows(x.transpose(-2, -1), -math.sin(theta)).transpose(-2, -1)
    return shear_rows(x, math.tan(theta / 2))


def disc_mask(size: int, fraction: float = 0.7, device=None) -> Tensor:
    """(size, size) boolean mask of the pixels whose centres lie within ``fraction * size / 2`` of the centre."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"equivariance disc fraction={fraction!r} is invalid; it must lie in (0, 1]")
    coords = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    return coords[:, None].square() + coords[None, :].square() <= (fraction * size / 2) ** 2


class MaskedPSNR:
    """Accumulates the squared error inside a mask over batches (float64) and reports one PSNR in dB with peak 2,
    as StyleGAN3 does: the MSE of all images first, then 20 log10(2) − 10 log10(MSE)."""

    def __init__(self, mask: Tensor):
        self.mask = mask
        self.squared_error = 0.0
        self.count = 0

    def update(self, a: Tensor, b: Tensor) -> None:
        difference = (a.double() - b.double()).square() * self.mask.to(a.device)
        self.squared_error += float(difference.sum())
        self.count += int(self.mask.sum()) * a[..., 0, 0].numel()

    def compute(self) -> float:
        mse = max(self.squared_error / max(self.count, 1), 1e-30)
        return 20 * math.log10(PEAK) - 10 * math.log10(mse)


def standard_transforms(size: int, *, shift: int | None = None, fractional_shift: Sequence[float] = (0.5, 0.25),
                        degrees: float = 30.0) -> dict[str, Transform]:
    """The transforms of ``eq_t`` (a periodic shift by ``shift`` pixels in x and y), ``eq_t_frac`` (a sub-pixel
    shift (dx, dy)) and ``eq_r`` (a rotation by ``degrees``).

    The default shift is odd (a stride-2 network is equivariant to even shifts but for its borders) and about
    size / 16, so the wrap-around seam stays outside the default disc (radius 0.7 · size / 2)."""
    shift = (size // 16) | 1 if shift is None else int(shift)
    dx, dy = (float(value) for value in fractional_shift)
    return {
        "eq_t": lambda x: integer_translate(x, shift, shift),
        "eq_t_frac": lambda x: fractional_translate(x, dx, dy),
        "eq_r": lambda x: rotate(x, degrees),
    }


@torch.no_grad()
def denoiser_equivariance(denoise_fn: DenoiseFn, process, images: Tensor, times: Sequence[float], *,
                          transforms: dict[str, Transform] | None = None, disc_fraction: float = 0.7, seed: int = 0,
                          batch_size: int = 64) -> dict[str, list[float]]:
    """EQ (dB) of ``denoise_fn`` under each transform T at each time t: PSNR between f(T x_t, t) and T f(x_t, t)
    inside the central disc, x_t = ``process.q_sample(x0, t, ε)`` with image i's ε from generator ``seed + i``.

    ``denoise_fn(x_t, t)`` is the network output in whatever prediction the model makes (every prediction of an
    equivariant network is equivariant). Returns {name: [EQ at each t]} for ``transforms`` (default
    ``standard_transforms``).
    """
    size = check_square(images, "data images")
    transforms = standard_transforms(size) if transforms is None else transforms
    mask = disc_mask(size, disc_fraction, device=images.device)
    results: dict[str, list[float]] = {name: [] for name in transforms}
    for time in times:
        meters = {name: MaskedPSNR(mask) for name in transforms}
        for start in range(0, len(images), batch_size):
            x0 = images[start:start + batch_size].float()
            eps = process.noise(x0.shape, sample_generators(seed, start, len(x0)), device=x0.device, dtype=x0.dtype)
            t = torch.full((len(x0),), float(time), device=x0.device)
            x_t = process.q_sample(x0, t, eps)
            output = denoise_fn(x_t, t).float()
            for name, transform in transforms.items():
                meters[name].update(denoise_fn(transform(x_t), t).float(), transform(output))
        for name, meter in meters.items():
            results[name].append(meter.compute())
    return results


@torch.no_grad()
def generation_equivariance(denoise_fn: DenoiseFn, process, sampler, shape: Sequence[int], *, degrees: float = 30.0,
                            disc_fraction: float = 0.7, seed: int = 0, device=None) -> float:
    """``eq_r_generation`` (dB): a deterministic sampler (DDIM with η = 0) run from z and from R_θ z; the PSNR
    between R_θ(x0(z)) and x0(R_θ z) inside the central disc. ``sampler(denoise_fn, process, x_T)`` must be
    deterministic (the ``_partial_`` sampler of ``conf/sampler/ddim.yaml``); z comes from the process prior
    with per-sample generators ``seed + i``. A rotation-equivariant generator scores high."""
    count, *image_shape = shape
    size = check_square(torch.empty(image_shape), "data images")
    z = process.prior((count, *image_shape), sample_generators(seed, 0, count), device=device)
    first = sampler(denoise_fn, process, z).clamp(-1, 1)
    second = sampler(denoise_fn, process, rotate(z, degrees)).clamp(-1, 1)
    meter = MaskedPSNR(disc_mask(size, disc_fraction, device=z.device))
    meter.update(rotate(first, degrees), second)
    return meter.compute()


def equivariance_figure(times: Sequence[float], results: dict[str, list[float]]) -> Figure:
    """EQ (dB) of the denoiser against t, one line per transform."""
    figure = Figure(figsize=(5, 3.2))
    axes = figure.add_subplot()
    for name, values in results.items():
        axes.plot(list(times), values, marker="o", label=name)
    axes.set_xlabel("t")
    axes.set_ylabel("EQ (dB, peak 2, central disc)")
    axes.set_title("denoiser equivariance")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
