"""Orthonormal bases in which a forward process is diagonal.

A basis maps images (B, C, H, W) to REAL coefficients of the same shape and back with an orthogonal
transform, so white Gaussian noise stays white and the diffusion maths can be written once,
element-wise, on the coefficients. Every transform is built from differentiable torch operations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spectral_diffusion.spectral.dft import real_fft2, real_ifft2_real_part
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_int

BASES = ("identity", "fft", "dct", "dwt")


class IdentityBasis:
    """The pixel basis: coefficients are the pixels themselves."""

    name = "identity"
    is_identity = True

    def forward(self, x: Tensor) -> Tensor:
        return x

    def inverse(self, coefficients: Tensor) -> Tensor:
        return coefficients

    def check_shape(self, height: int, width: int) -> None:
        """Every image size is allowed."""

    def __repr__(self) -> str:
        return "IdentityBasis()"


class _MatrixCache:
    """Per-(size, device, dtype) cache of the transform matrices or masks a basis needs every step."""

    def __init__(self) -> None:
        self._cache: dict[tuple, Tensor] = {}

    def get(self, key: tuple, build) -> Tensor:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


class FFTBasis:
    """The orthonormal 2-D DFT (``norm="ortho"``) packed into real coefficients of the image's shape.

    Of the H·W complex coefficients X_k of a real image, the self-conjugate ones (k = −k mod (H, W):
    DC and the Nyquist row/column of even sizes) are real and stored as their value; every Hermitian
    pair (k, −k) is stored as √2·Re X_k at the first position of the pair (row-major) and √2·Im X_{−k}
    at the second. The map is real orthogonal: Σ coef² = Σ pixel² (Parseval) and white pixel noise
    is white in the basis. Each coefficient sits at the FFT position whose |f| it carries.
    """

    name = "fft"
    is_identity = False

    def __init__(self) -> None:
        self._masks = _MatrixCache()

    def _layout(self, height: int, width: int, device) -> Tensor:
        """Int (H, W): 0 self-conjugate, 1 first of a Hermitian pair (holds Re), 2 second (holds Im)."""
        def build() -> Tensor:
            k = torch.arange(height, device=device)[:, None]
            l = torch.arange(width, device=device)[None, :]  # the DFT column index
            index = k * width + l
            mirror = ((-k) % height) * width + (-l) % width
            return torch.where(index == mirror, 0, torch.where(index < mirror, 1, 2))
        return self._masks.get((height, width, str(device)), build)

    def forward(self, x: Tensor) -> Tensor:
        # the DFT as real matrix products (``spectral.dft``): far cheaper than torch.fft on small images
        real, imag = real_fft2(x)
        layout = self._layout(x.shape[-2], x.shape[-1], x.device)
        root2 = math.sqrt(2.0)
        return torch.where(layout == 0, real, torch.where(layout == 1, root2 * real, root2 * imag))

    def inverse(self, coefficients: Tensor) -> Tensor:
        height, width = coefficients.shape[-2:]
        layout = self._layout(height, width, coefficients.device)
        # the coefficient stored at −k: flipping maps k → n−1−k, the roll by one makes it −k mod n
        mirrored = torch.roll(torch.flip(coefficients, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
        root_half = math.sqrt(0.5)
        real = torch.where(layout == 0, coefficients,
                           root_half * torch.where(layout == 1, coefficients, mirrored))
        imag = torch.where(layout == 0, torch.zeros_like(coefficients),
                           root_half * torch.where(layout == 1, -mirrored, coefficients))
        return real_ifft2_real_part(real, imag)

    def frequency(self, height: int, width: int, *, device=None) -> Tensor:
        """(H, W) |f| in cycles per pixel of every packed coefficient (float64, from ``fftfreq``)."""
        fy = torch.fft.fftfreq(height, dtype=torch.float64, device=device)
        fx = torch.fft.fftfreq(width, dtype=torch.float64, device=device)
        return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)

    def check_shape(self, height: int, width: int) -> None:
        """Every image size is allowed."""

    def __repr__(self) -> str:
        return "FFTBasis()"


def dct_matrix(size: int, *, dtype=torch.float64, device=None) -> Tensor:
    """The orthonormal DCT-II matrix D (size × size), D[k, n] = c_k cos(π (2n + 1) k / 2N),
    c_0 = √(1/N), c_k = √(2/N): the transform of ``scipy.fft.dct(norm="ortho")``."""
    n = torch.arange(size, dtype=torch.float64)
    k = n[:, None]
    matrix = torch.cos(math.pi * (2 * n[None, :] + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(dtype=dtype, device=device)


class DCTBasis:
    """The orthonormal 2-D DCT-II, C = D_H x D_Wᵀ (``scipy.fft.dctn(norm="ortho")``), as two matrix products."""

    name = "dct"
    is_identity = False

    def __init__(self) -> None:
        self._matrices = _MatrixCache()

    def _matrix(self, size: int, like: Tensor) -> Tensor:
        return self._matrices.get((size, str(like.device), like.dtype),
                                  lambda: dct_matrix(size, dtype=like.dtype, device=like.device))

    def forward(self, x: Tensor) -> Tensor:
        rows, cols = self._matrix(x.shape[-2], x), self._matrix(x.shape[-1], x)
        return rows @ x @ cols.T

    def inverse(self, coefficients: Tensor) -> Tensor:
        rows, cols = self._matrix(coefficients.shape[-2], coefficients), self._matrix(coefficients.shape[-1],
                                                                                      coefficients)
        return rows.T @ coefficients @ cols

    def frequency(self, height: int, width: int, *, device=None) -> Tensor:
        """(H, W) frequency of DCT coefficient (k_y, k_x): √((k_y/2H)² + (k_x/2W)²) cycles per pixel."""
        fy = torch.arange(height, dtype=torch.float64, device=device) / (2 * height)
        fx = torch.arange(width, dtype=torch.float64, device=device) / (2 * width)
        return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)

    def check_shape(self, height: int, width: int) -> None:
        """Every image size is allowed."""

    def __repr__(self) -> str:
        return "DCTBasis()"


def wavelet_filters(wavelet: str, *, key: str = "noise.wavelet") -> tuple[list[float], list[float]]:
    """Decomposition low- and high-pass filters of an orthogonal PyWavelets wavelet."""
    import pywt

    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ConfigError(f"{key}={wavelet!r} is not a discrete PyWavelets wavelet; e.g. haar, db2, db4, sym4, coif1")
    filters = pywt.Wavelet(wavelet)
    if not filters.orthogonal:
        raise ConfigError(f"{key}={wavelet!r} is not orthogonal; choose an orthogonal wavelet (haar, dbN, symN, coifN)")
    return list(filters.dec_lo), list(filters.dec_hi)


def dwt_matrix(size: int, low: list[float], high: list[float], *, dtype=torch.float64, device=None) -> Tensor:
    """One level of the periodized orthogonal DWT on a signal of even length N as an N × N matrix:
    rows 0..N/2−1 give the approximation, rows N/2..N−1 the detail (PyWavelets ``mode="periodization"``).

    PyWavelets' periodized convolution with a decomposition filter g of even length M is
    c[k] = Σ_j g[j] x[(2k + M/2 − j) mod N].
    """
    half, offset = size // 2, len(low) // 2
    matrix = torch.zeros(size, size, dtype=torch.float64)
    for k in range(half):
        for j, (g_low, g_high) in enumerate(zip(low, high)):
            n = (2 * k + offset - j) % size
            matrix[k, n] += g_low
            matrix[half + k, n] += g_high
    return matrix.to(dtype=dtype, device=device)


class DWTBasis:
    """The orthonormal 2-D discrete wavelet transform (periodization), ``levels`` levels, Mallat layout.

    The approximation of the coarsest level sits in the top-left (H/2^L, W/2^L) block; level j's
    details (j = 1 finest … L coarsest) fill the three blocks beside the level-j approximation
    (top-right: detail along x, bottom-left: detail along y, bottom-right: both) — the layout of
    ``pywt.coeffs_to_array(pywt.wavedec2(x, wavelet, mode="periodization", level=L))``.
    H and W must be divisible by 2^L.
    """

    name = "dwt"
    is_identity = False

    def __init__(self, wavelet: str = "haar", levels: int = 1, *, key: str = "noise") -> None:
        self.wavelet, self.levels, self.key = str(wavelet), check_int(f"{key}.levels", levels, 1), key
        self.low, self.high = wavelet_filters(self.wavelet, key=f"{key}.wavelet")
        self._matrices = _MatrixCache()

    def check_shape(self, height: int, width: int) -> None:
        step = 2 ** self.levels
        if height % step or width % step:
            raise ConfigError(
                f"{self.key}.levels={self.levels} needs image sides divisible by 2^{self.levels} = {step}; "
                f"the images are {height}x{width}"
            )

    def _matrix(self, size: int, like: Tensor) -> Tensor:
        """The one-level 1-D transform of a signal of length ``size``."""
        return self._matrices.get((size, str(like.device), like.dtype),
                                  lambda: dwt_matrix(size, self.low, self.high, dtype=like.dtype, device=like.device))

    @staticmethod
    def _replace_block(c: Tensor, block: Tensor) -> Tensor:
        """``c`` with its top-left corner replaced by ``block`` (out of place, so autograd sees it)."""
        height, width = block.shape[-2:]
        top = torch.cat([block, c[..., :height, width:]], dim=-1)
        return torch.cat([top, c[..., height:, :]], dim=-2)

    def forward(self, x: Tensor) -> Tensor:
        """Mallat's pyramid: each level transforms only the previous level's approximation block."""
        self.check_shape(x.shape[-2], x.shape[-1])
        c = x
        for level in range(self.levels):
            height, width = x.shape[-2] >> level, x.shape[-1] >> level
            block = self._matrix(height, x) @ c[..., :height, :width] @ self._matrix(width, x).T
            c = self._replace_block(c, block)
        return c

    def inverse(self, coefficients: Tensor) -> Tensor:
        height, width = coefficients.shape[-2:]
        self.check_shape(height, width)
        x = coefficients
        for level in reversed(range(self.levels)):
            h, w = height >> level, width >> level
            block = self._matrix(h, x).T @ x[..., :h, :w] @ self._matrix(w, x)
            x = self._replace_block(x, block)
        return x

    def level(self, height: int, width: int, *, device=None) -> Tensor:
        """(H, W) integer scale of every coefficient: 0 the approximation (coarsest), j = 1..L the details
        of level L + 1 − j, so L is the finest detail — ordered like radial bands, low to high frequency."""
        self.check_shape(height, width)
        scale = torch.zeros(height, width, dtype=torch.long, device=device)
        for level in range(self.levels):  # level 0 is the finest: its details lie outside the half-size block
            rows = torch.arange(height, device=device)[:, None] >= height >> (level + 1)
            cols = torch.arange(width, device=device)[None, :] >= width >> (level + 1)
            inside = (torch.arange(height, device=device)[:, None] < height >> level) & (
                torch.arange(width, device=device)[None, :] < width >> level)
            scale = torch.where(inside & (rows | cols), self.levels - level, scale)
        return scale

    def __repr__(self) -> str:
        return f"DWTBasis({self.wavelet!r}, levels={self.levels})"


def make_basis(name: str = "identity", *, key: str = "noise.basis", wavelet: str = "haar", levels: int = 1,
               allowed=BASES):
    """The basis called ``name`` (identity | fft | dct | dwt); ``wavelet`` and ``levels`` are read by dwt only."""
    check_choice(key, name, allowed)
    if name == "identity":
        return IdentityBasis()
    if name == "fft":
        return FFTBasis()
    if name == "dct":
        return DCTBasis()
    return DWTBasis(wavelet, levels, key=key.rsplit(".", 1)[0])
