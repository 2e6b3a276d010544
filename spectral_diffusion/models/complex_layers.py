"""Complex-valued layers acting on half-spectra (the orthonormal ``rfft2`` grid), for the spectral UNet.

Layout: a complex feature map of C channels is a real tensor (B, 2C, H, W//2+1) whose channels alternate
(Re z_0, Im z_0, Re z_1, Im z_1, ...), so concatenating two feature maps along channels keeps the layout
and every layer runs on real kernels: a complex convolution is one real convolution with the block matrix
[[A, −B], [B, A]], which follows a surrounding bf16 autocast (complex tensors have no bfloat16 path, so only
the FFTs and the whitening stay in float32).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectral_diffusion.spectral.dft import real_irfft2
from spectral_diffusion.utils.validation import ConfigError, check_choice

COMPLEX_MODES = ("complex", "dual_real")
ACTIVATIONS = ("modrelu", "crelu")


# ---------------------------------------------------------------- layout and Hermitian symmetry


def to_interleaved(spectrum: Tensor) -> Tensor:
    """Complex (B, C, H, W) -> real (B, 2C, H, W) with channels (Re, Im) interleaved."""
    batch, channels, height, width = spectrum.shape
    return torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3).reshape(batch, 2 * channels, height, width)


def to_complex(features: Tensor) -> Tensor:
    """Real (B, 2C, H, W) with (Re, Im) interleaved -> complex (B, C, H, W); inverse of ``to_interleaved``."""
    batch, channels2, height, width = features.shape
    pairs = features.float().reshape(batch, channels2 // 2, 2, height, width).permute(0, 1, 3, 4, 2)
    return torch.view_as_complex(pairs.contiguous())


def conjugate(features: Tensor) -> Tensor:
    """Complex conjugate of interleaved features: the imaginary (odd) channels change sign."""
    sign = torch.ones(features.shape[1], device=features.device, dtype=features.dtype)
    sign[1::2] = -1
    return features * sign[:, None, None]


def mirror_rows(spectrum: Tensor) -> Tensor:
    """Row k -> row (−k) mod H: the frequency mirror f_y -> −f_y of the unshifted FFT layout."""
    return spectrum.flip(-2).roll(1, dims=-2)


def hermitian_projection(half_spectrum: Tensor) -> Tensor:
    """Orthogonal projection of a complex half-spectrum (…, H, W//2+1) of an even width W onto the spectra of
    real images.

    Only the self-mirrored columns (0 and W/2) constrain a half-spectrum: Z[k, j] = conj(Z[−k, j]) there. The
    projection replaces them by (Z[k, j] + conj(Z[−k, j])) / 2, which makes the DC and Nyquist bins real. Then
    ``irfft2`` is an exact inverse: ``rfft2(irfft2(P Z)) == P Z`` — nothing is dropped.
    """
    columns = half_spectrum[..., :: half_spectrum.shape[-1] - 1]  # columns 0 and W/2
    symmetric = 0.5 * (columns + mirror_rows(columns).conj())
    return torch.cat([symmetric[..., :1], half_spectrum[..., 1:-1], symmetric[..., 1:]], dim=-1)


def half_spectrum_to_image(half_spectrum: Tensor, size: int) -> Tensor:
    """Real (…, size, size) image of a complex half-spectrum, through the Hermitian projection and the
    orthonormal ``irfft2``: real by construction. Computed by ``spectral.dft.real_irfft2`` (real matrix products,
    much cheaper than ``irfft2`` on small maps), which equals irfft2 of the projection exactly."""
    return real_irfft2(half_spectrum.real, half_spectrum.imag, size)


def hermitian_pad(features: Tensor, padding: int) -> Tensor:
    """Pad interleaved half-spectrum features by ``padding`` bins on every side with their true neighbours.

    Rows wrap around (the DFT is periodic in f_y). Columns left of 0 and right of W/2 are the conjugate mirror
    images, X[k, −j] = conj(X[−k, j]), which is exact for the spectrum of a real map and a fixed, well-defined
    boundary for any other features. A (2p+1)x(2p+1) convolution then sees each bin's real neighbourhood.
    Computed as one gather of the bins (a cached index) and one sign flip of the mirrored imaginary parts.
    """
    if padding == 0:
        return features
    batch, channels2, height, width = features.shape
    if padding >= width - 1:
        raise ValueError(f"padding {padding} needs a half-spectrum wider than {padding + 1} columns")
    index, sign = _hermitian_pad_layout(height, width, padding, str(features.device))
    gathered = features.flatten(2).index_select(2, index)
    padded = gathered.view(batch, channels2 // 2, 2, -1) * sign.to(features.dtype)
    return padded.view(batch, channels2, height + 2 * padding, width + 2 * padding)


@lru_cache(maxsize=64)
def _hermitian_pad_layout(height: int, width: int, padding: int, device: str) -> tuple[Tensor, Tensor]:
    """For the (H + 2p) x (W + 2p) padded grid: the flat source bin of every position (rows wrapped; columns
    beyond the half grid from the mirror X[k, −j] = X[−k, j], X[k, W/2 + j] = X[−k, W/2 − j]) and whether the
    sign of each (Re, Im) part there: −1 for the imaginary part of a mirror image (conjugated), else 1."""
    rows = torch.arange(-padding, height + padding)
    columns = torch.arange(-padding, width + padding)
    last = width - 1
    mirrored_column = (columns < 0) | (columns > last)
    source_column = torch.where(columns < 0, -columns, torch.where(columns > last, 2 * last - columns, columns))
    source_row = torch.where(mirrored_column[None, :], (-rows[:, None]) % height, rows[:, None] % height)
    index = source_row * width + source_column[None, :]
    sign = torch.ones(2, len(rows), len(columns))
    sign[1, :, mirrored_column] = -1.0
    return index.flatten().to(device), sign.flatten(1).to(device)


# ---------------------------------------------------------------- complex linear maps


def _complex_init(weight_real: Tensor, weight_imag: Tensor, fan_in: int) -> None:
    """Variance 1/(2 fan_in) per part, so Var(Re w·z) ≈ Var(z)/fan_in (Glorot-style criterion of Trabelsi et
    al. 2018, sec. 3.6, with a uniform rather than Rayleigh draw)."""
    bound = math.sqrt(3.0 / (2.0 * fan_in))
    nn.init.uniform_(weight_real, -bound, bound)
    nn.init.uniform_(weight_imag, -bound, bound)


def complex_block_matrix(weight_real: Tensor, weight_imag: Tensor) -> Tensor:
    """(out, in, ...) real and imaginary parts -> the (2out, 2in, ...) real matrix of z -> w z on interleaved
    channels: [[Re w, −Im w], [Im w, Re w]] per (out, in) pair."""
    rows_real = torch.stack([weight_real, -weight_imag], dim=2)
    rows_imag = torch.stack([weight_imag, weight_real], dim=2)
    block = torch.stack([rows_real, rows_imag], dim=1)  # (out, 2, in, 2, ...)
    return block.reshape(2 * weight_real.shape[0], 2 * weight_real.shape[1], *weight_real.shape[2:])


class ComplexConv2d(nn.Module):
    """Complex convolution over frequency bins (Trabelsi et al. 2018, "Deep Complex Networks", eq. 2 of sec. 3.2):
    W * z = (A * x − B * y) + i (B * x + A * y) for W = A + iB, z = x + iy, plus a complex bias.

    ``mode="dual_real"`` is the real-valued ablation (as Trabelsi et al.'s real-valued baselines): an
    unconstrained real convolution on the stacked (Re, Im) channels, 4·in·out·k² weights instead of 2·in·out·k²
    (biases: 2·out in both modes).
    Inputs are padded with ``hermitian_pad``; with ``zero_init`` the layer starts as the zero map.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, mode: str = "complex",
                 zero_init: bool = False):
        super().__init__()
        check_choice("model.complex_mode", mode, COMPLEX_MODES)
        self.mode = mode
        self.padding = kernel_size // 2
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        if mode == "complex":
            self.weight_real = nn.Parameter(torch.empty(shape))
            self.weight_imag = nn.Parameter(torch.empty(shape))
            _complex_init(self.weight_real, self.weight_imag, in_channels * kernel_size**2)
        else:
            self.weight = nn.Parameter(torch.empty(2 * out_channels, 2 * in_channels, kernel_size, kernel_size))
            bound = math.sqrt(3.0 / (2.0 * in_channels * kernel_size**2))
            nn.init.uniform_(self.weight, -bound, bound)
        self.bias = nn.Parameter(torch.zeros(2 * out_channels))  # (Re b_0, Im b_0, Re b_1, ...)
        if zero_init:
            with torch.no_grad():
                for parameter in self.parameters():
                    parameter.zero_()

    def real_weight(self) -> Tensor:
        if self.mode == "complex":
            return complex_block_matrix(self.weight_real, self.weight_imag)
        return self.weight

    def forward(self, features: Tensor) -> Tensor:
        if torch.is_autocast_enabled(features.device.type):
            # conv2d would cast to the autocast dtype anyway: cast before padding (exact), so it moves half the bytes
            features = features.to(torch.get_autocast_dtype(features.device.type))
        return F.conv2d(hermitian_pad(features, self.padding), self.real_weight(), self.bias)


class SpectralMultiplier(nn.Module):
    """The Fourier layer of the FNO (Li et al. 2021, "Fourier Neural Operator", eq. 4–5): a learned complex
    channel-mixing matrix R(k) per retained mode k, applied to a half-spectrum; modes outside the kept block
    |k_y| < m, k_x < m give zero (the FNO truncation).

    Symbols: R ↔ ``weight_real + i weight_imag`` of shape (out, in, 2m, m), rows ordered as the FFT lays them out
    (k_y = 0..m−1, then −m..−1); m ↔ ``modes``. ``mode="dual_real"``: a real 2x2 block per (out, in, mode).
    """

    def __init__(self, in_channels: int, out_channels: int, resolution: int, modes: int, *, mode: str = "complex"):
        super().__init__()
        check_choice("model.complex_mode", mode, COMPLEX_MODES)
        if not 1 <= modes <= resolution // 2:
            raise ConfigError(f"model.spectral_modes={modes} is invalid at resolution {resolution}; "
                              f"it must lie in [1, {resolution // 2}] (resolution / 2 modes per axis)")
        self.mode = mode
        self.modes = modes
        self.resolution = resolution
        shape = (out_channels, in_channels, 2 * modes, modes)
        if mode == "complex":
            self.weight_real = nn.Parameter(torch.empty(shape))
            self.weight_imag = nn.Parameter(torch.empty(shape))
            _complex_init(self.weight_real, self.weight_imag, in_channels)
        else:
            self.weight = nn.Parameter(torch.empty(2 * out_channels, 2 * in_channels, 2 * modes, modes))
            bound = math.sqrt(3.0 / (2.0 * in_channels))
            nn.init.uniform_(self.weight, -bound, bound)

    def real_weight(self) -> Tensor:
        if self.mode == "complex":
            return complex_block_matrix(self.weight_real, self.weight_imag)
        return self.weight

    def forward(self, features: Tensor) -> Tensor:
        """Interleaved (B, 2·in, M, M//2+1) -> (B, 2·out, M, M//2+1)."""
        m, height, width = self.modes, features.shape[-2], features.shape[-1]
        kept = torch.cat([features[..., :m, :m], features[..., height - m:, :m]], dim=-2)
        mixed = torch.einsum("bixy,oixy->boxy", kept, self.real_weight())
        middle = mixed.new_zeros(*mixed.shape[:2], height - 2 * m, m)
        full = torch.cat([mixed[..., :m, :], middle, mixed[..., m:, :]], dim=-2)
        return F.pad(full, (0, width - m))


class SpectralConv2d(nn.Module):
    """FNO spectral convolution on real images: rfft2 (orthonormal) -> ``SpectralMultiplier`` -> Hermitian
    projection -> irfft2. With every mode kept and R = rfft2(k) it is the circular convolution x ⊛ k."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, modes: int, *, mode: str = "complex"):
        super().__init__()
        self.multiplier = SpectralMultiplier(in_channels, out_channels, resolution, modes, mode=mode)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-1]
        spectrum = to_interleaved(torch.fft.rfft2(x.float(), norm="ortho"))
        return half_spectrum_to_image(to_complex(self.multiplier(spectrum)), size)


# ---------------------------------------------------------------- normalisation and activations


class ComplexGroupNorm(nn.Module):
    """Complex normalisation of Trabelsi et al. 2018 (sec. 3.5), computed per sample over groups of channels
    (as GroupNorm, Wu & He 2018) so noise levels in a batch never mix.

    For each sample and group: centre z, whiten with the inverse square root of the 2x2 covariance
    V = [[V_rr, V_ri], [V_ri, V_ii]] of (Re z, Im z) (plus ``eps``·I), then the affine map
    γ = [[γ_rr, γ_ri], [γ_ri, γ_ii]] per channel (initialised to I/√2, so E|z|² = 1) and a complex shift β.
    V^{−1/2} in closed form: with s = √det V and t = √(tr V + 2s),
    V^{−1/2} = [[V_ii + s, −V_ri], [−V_ri, V_rr + s]] / (s t).
    """

    def __init__(self, groups: int, channels: int, eps: float = 1e-5):
        super().__init__()
        if channels % groups:
            raise ConfigError(f"model.groups={groups} must divide every channel count, but does not divide {channels}")
        self.groups = groups
        self.eps = eps
        self.gamma_rr = nn.Parameter(torch.full((channels,), 1 / math.sqrt(2)))
        self.gamma_ii = nn.Parameter(torch.full((channels,), 1 / math.sqrt(2)))
        self.gamma_ri = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(2 * channels))

    def forward(self, features: Tensor) -> Tensor:
        batch, channels2, height, width = features.shape
        channels, per_group = channels2 // 2, channels2 // (2 * self.groups)
        # Statistics in float32 under autocast, as nn.GroupNorm's. Rows (Re z_c, Im z_c) per (sample, channel):
        # every full-size step is one (batched) matrix product or one pass, the 2x2 algebra works on small tensors
        # (broadcasting a 2x2 map over the bins element by element is ~9x slower than baddbmm on this CPU).
        pairs = features.float().reshape(batch * channels, 2, height * width)
        count = per_group * height * width
        mean = pairs.sum(dim=-1).reshape(batch, self.groups, per_group, 2).sum(dim=2) / count  # (B, G, 2)
        negative_mean = -mean.repeat_interleave(per_group, dim=1).reshape(batch * channels, 2, 1)
        centred = pairs + negative_mean  # an addition: the backward reduces the gradient before negating it
        moments = torch.bmm(centred, centred.transpose(1, 2))  # (B·C, 2, 2) per channel, summed over bins
        covariance = moments.reshape(batch, self.groups, per_group, 2, 2).sum(dim=2) / count  # (B, G, 2, 2)
        v_rr, v_ii = covariance[..., 0, 0] + self.eps, covariance[..., 1, 1] + self.eps
        v_ri = covariance[..., 0, 1]
        s = torch.sqrt((v_rr * v_ii - v_ri.square()).clamp_min(self.eps**2))
        scale = 1.0 / (s * torch.sqrt(v_rr + v_ii + 2 * s))
        whitening = scale[..., None, None] * torch.stack([torch.stack([v_ii + s, -v_ri], dim=-1),
                                                          torch.stack([-v_ri, v_rr + s], dim=-1)], dim=-2)
        gamma = torch.stack([torch.stack([self.gamma_rr, self.gamma_ri], dim=-1),
                             torch.stack([self.gamma_ri, self.gamma_ii], dim=-1)], dim=-2)  # (C, 2, 2)
        # M = γ V^{−1/2} per (sample, channel); out = M (z − μ) + β as one batched product
        matrix = gamma.reshape(self.groups, per_group, 2, 2) @ whitening[:, :, None]
        beta = self.beta.reshape(1, channels, 2, 1).expand(batch, -1, -1, -1).reshape(batch * channels, 2, 1)
        out = torch.baddbmm(beta, matrix.reshape(batch * channels, 2, 2), centred)
        return out.reshape(batch, channels2, height, width)


class ModReLU(nn.Module):
    """modReLU (Arjovsky et al. 2016, "Unitary Evolution RNNs", eq. 8): ReLU(|z| + b) z / |z|, one learned bias
    b per channel. b starts at −0.5: after the complex norm |z| is Rayleigh with E|z|² = 1, so about a fifth
    of the bins start in the dead zone (b = 0 would make the layer the identity)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.bias = nn.Parameter(torch.full((channels,), -0.5))
        self.eps = eps

    def forward(self, features: Tensor) -> Tensor:
        batch, channels2, height, width = features.shape
        pairs = features.reshape(batch, channels2 // 2, 2, height, width)
        inverse_modulus = torch.rsqrt((pairs * pairs).sum(dim=2, keepdim=True) + self.eps)
        # ReLU(|z| + b) / |z| = ReLU(1 + b / |z|) for |z| > 0: one pass fewer over the features
        gain = F.relu(torch.addcmul(torch.ones((), dtype=features.dtype), self.bias[None, :, None, None, None],
                                    inverse_modulus))
        return (pairs * gain).reshape(features.shape)


class CReLU(nn.Module):
    """CReLU (Trabelsi et al. 2018, sec. 3.4): ReLU(Re z) + i ReLU(Im z)."""

    def forward(self, features: Tensor) -> Tensor:
        return F.relu(features)


def complex_activation(name: str, channels: int) -> nn.Module:
    check_choice("model.activation", name, ACTIVATIONS)
    return ModReLU(channels) if name == "modrelu" else CReLU()


# ---------------------------------------------------------------- resampling by cropping and padding spectra


def spectral_downsample(features: Tensor) -> Tensor:
    """Halve the resolution N -> M = N/2 of interleaved half-spectra: keep the low-frequency block
    |k_y|, k_x < M/2 and zero the new grid's Nyquist row and column.

    Exactly the orthonormal rfft2 of (ideal low-pass keeping |k_y|, |k_x| < M/2) followed by decimation by 2;
    the factor 1/2 = M/N converts between the orthonormal scalings of the two grids.
    """
    size = features.shape[-2]
    half = size // 4  # M / 2
    top = features[..., :half, :half]
    bottom = features[..., size - half + 1:, :half]
    nyquist_row = features.new_zeros(*features.shape[:-2], 1, half)
    block = torch.cat([top, nyquist_row, bottom], dim=-2)
    return 0.5 * F.pad(block, (0, 1))


def spectral_upsample(features: Tensor) -> Tensor:
    """Double the resolution M -> N = 2M by zero-padding the half-spectrum (ideal sinc interpolation), scaled by
    N/M = 2 for the orthonormal grids. The Nyquist row and column of the M grid are left out, so
    ``spectral_upsample(spectral_downsample(X))`` is the ideal low-pass of X."""
    size = features.shape[-2]
    half = size // 2  # M / 2
    top = features[..., :half, :half]
    bottom = features[..., half + 1:, :half]
    middle = features.new_zeros(*features.shape[:-2], 2 * size - 2 * half + 1, half)
    block = torch.cat([top, middle, bottom], dim=-2)
    return 2.0 * F.pad(block, (0, size + 1 - half))
