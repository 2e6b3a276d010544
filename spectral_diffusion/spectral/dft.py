"""The orthonormal ``rfft2`` and its inverse as products with real cosine and sine matrices, for small maps.

For the feature maps of a UNet (4 to 32 pixels a side) matrix products are much cheaper on a CPU than FFT
library calls, above all the inverse real FFT (``irfft2``) and the backward passes, and they stay real, so
autograd works unchanged. Maps of up to ``DENSE_PIXELS`` pixels take the 2-D transform as one dense product
with its (H·W, 2·H·(W//2+1)) matrix: one large GEMM instead of a small product per map and axis (broadcast
over a batch of maps, ``(H, H) @ (…, H, W)`` runs as thousands of tiny batched products: 17 ms against 1.3 ms
for transform, inverse and backward of 64x32 maps of 8x8). Larger maps transform one axis at a time. Every function computes in its
input's dtype whatever the surrounding autocast (as torch.fft does), so a float32 or float64 caller keeps its
precision and a bfloat16 caller gets bfloat16 products. The matrices are the DFT's own (Cooley & Tukey 1965,
eq. 1, orthonormal scaling): X[k, j] = (HW)^−½ Σ_{h,w} x[h, w] e^{−2πi(kh/H + jw/W)}, j = 0..W/2.
"""

from __future__ import annotations

import math
from functools import lru_cache, wraps

import torch
from torch import Tensor

# Largest map (pixels) whose 2-D transform is one dense matrix product (16x16: a 0.3 MB float32 matrix). Beyond
# it the dense product's H·W/(H + W) times more arithmetic outweighs the batched per-axis products (measured on
# the 2-core CPU, 64x16 maps of 32x32, transform + inverse + backward: 65 ms dense against 32 ms per axis).
DENSE_PIXELS = 256


def _in_input_dtype(function):
    """Run ``function`` with autocast off, so its matrix products keep the dtype of the input."""
    @wraps(function)
    def wrapper(first: Tensor, *args, **kwargs):
        with torch.autocast(first.device.type, enabled=False):
            return function(first, *args, **kwargs)

    return wrapper


def _cos_sin(rows: int, columns: int) -> tuple[Tensor, Tensor]:
    """cos and sin of 2π·r·c/N for r < rows, c < columns, divided by √N (N = ``rows``), in float64."""
    angle = 2 * math.pi * torch.outer(torch.arange(rows, dtype=torch.float64),
                                      torch.arange(columns, dtype=torch.float64)).remainder(rows) / rows
    return torch.cos(angle) / math.sqrt(rows), torch.sin(angle) / math.sqrt(rows)


@lru_cache(maxsize=64)
def _full_dft_matrices(height: int, width: int, device: str, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(cos_h, sin_h) (H, H) and (cos_w, sin_w) (W, W) of the full orthonormal 2-D DFT."""
    return tuple(m.to(device=device, dtype=dtype) for m in (*_cos_sin(height, height), *_cos_sin(width, width)))


@_in_input_dtype
def real_fft2(x: Tensor) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of ``torch.fft.fft2(x, norm="ortho")`` (the full grid) for real (…, H, W) ``x``."""
    cos_h, sin_h, cos_w, sin_w = _full_dft_matrices(*x.shape[-2:], str(x.device), x.dtype)
    row_real, row_imag = x @ cos_w, -(x @ sin_w)
    return cos_h @ row_real + sin_h @ row_imag, cos_h @ row_imag - sin_h @ row_real


@_in_input_dtype
def real_ifft2_real_part(real: Tensor, imag: Tensor) -> Tensor:
    """``torch.fft.ifft2(torch.complex(real, imag), norm="ortho").real`` on the full (…, H, W) grid."""
    cos_h, sin_h, cos_w, sin_w = _full_dft_matrices(*real.shape[-2:], str(real.device), real.dtype)
    row_real = cos_h.T @ real - sin_h.T @ imag
    row_imag = cos_h.T @ imag + sin_h.T @ real
    return row_real @ cos_w.T - row_imag @ sin_w.T


@lru_cache(maxsize=64)
def _axis_matrices(height: int, width: int, device: str, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(cos_h, sin_h) of shape (H, H) and (cos_w, sin_w) of shape (W, W//2+1), orthonormal scaling, and the
    inverse's column weights c_j (1 for DC and the Nyquist column of an even width, 2 otherwise) folded into
    (inverse_cos_w, inverse_sin_w) of shape (W//2+1, W)."""
    cos_h, sin_h = _cos_sin(height, height)
    cos_w, sin_w = _cos_sin(width, width)
    cos_w, sin_w = cos_w[:, : width // 2 + 1], sin_w[:, : width // 2 + 1]
    weight = torch.full((width // 2 + 1, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    matrices = (cos_h, sin_h, cos_w, sin_w, weight * cos_w.T, weight * sin_w.T)
    return tuple(m.to(device=device, dtype=dtype) for m in matrices)


def _factored_rfft2(x: Tensor, matrices: tuple[Tensor, ...]) -> Tensor:
    """(…, H, W) -> (…, 2, H, Wf), one axis at a time."""
    cos_h, sin_h, cos_w, sin_w, _, _ = matrices
    row_real, row_imag = x @ cos_w, -(x @ sin_w)  # along W: Σ_w x e^{−2πi jw/W}
    return torch.stack([cos_h @ row_real + sin_h @ row_imag, cos_h @ row_imag - sin_h @ row_real], dim=-3)


def _factored_irfft2(spectrum: Tensor, matrices: tuple[Tensor, ...]) -> Tensor:
    """(…, 2, H, Wf) -> (…, H, W): the real part of the inverse, one axis at a time."""
    cos_h, sin_h, _, _, inverse_cos_w, inverse_sin_w = matrices
    real, imag = spectrum.unbind(dim=-3)
    row_real = cos_h.T @ real - sin_h.T @ imag  # along H: Σ_k Z e^{+2πi kh/H}
    row_imag = cos_h.T @ imag + sin_h.T @ real
    return row_real @ inverse_cos_w - row_imag @ inverse_sin_w  # along W: Re Σ_j c_j U e^{+2πi jw/W}


@lru_cache(maxsize=64)
def _dense_matrices(height: int, width: int, device: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The dense (H·W, 2·H·Wf) matrix of the half-spectrum transform (columns: real parts, then imaginary parts,
    each in (k, j) row-major order) and the (2·H·Wf, H·W) matrix of its inverse, built in float64 by applying
    the one-axis factors to the unit maps and unit spectra."""
    matrices = _axis_matrices(height, width, "cpu", torch.float64)
    half = width // 2 + 1
    forward = _factored_rfft2(torch.eye(height * width, dtype=torch.float64).reshape(-1, height, width), matrices)
    inverse = _factored_irfft2(torch.eye(2 * height * half, dtype=torch.float64).reshape(-1, 2, height, half),
                               matrices)
    return (forward.reshape(height * width, -1).to(device=device, dtype=dtype),
            inverse.reshape(2 * height * half, -1).to(device=device, dtype=dtype))


@_in_input_dtype
def real_rfft2_packed(x: Tensor) -> Tensor:
    """``torch.fft.rfft2(x, norm="ortho")`` of real (…, H, W) ``x`` as one real tensor (…, 2, H, W//2+1) holding
    the real parts, then the imaginary parts."""
    *batch, height, width = x.shape
    shape = (*batch, 2, height, width // 2 + 1)
    if height * width <= DENSE_PIXELS:
        forward, _ = _dense_matrices(height, width, str(x.device), x.dtype)
        return (x.reshape(-1, height * width) @ forward).reshape(shape)
    matrices = _axis_matrices(height, width, str(x.device), x.dtype)
    return _factored_rfft2(x, matrices)


@_in_input_dtype
def real_irfft2_packed(spectrum: Tensor, width: int) -> Tensor:
    """The real (…, H, ``width``) image of a packed half-spectrum (…, 2, H, width//2+1) (real parts, then
    imaginary parts): equal to ``torch.fft.irfft2(hermitian_projection(Z), s=(H, width), norm="ortho")``
    (taking the real part of the inverse is exactly the projection onto spectra of real images)."""
    *batch, _, height, half = spectrum.shape
    if height * width <= DENSE_PIXELS:
        _, inverse = _dense_matrices(height, width, str(spectrum.device), spectrum.dtype)
        return (spectrum.reshape(-1, 2 * height * half) @ inverse).reshape(*batch, height, width)
    matrices = _axis_matrices(height, width, str(spectrum.device), spectrum.dtype)
    return _factored_irfft2(spectrum, matrices)


def real_rfft2(x: Tensor) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of ``torch.fft.rfft2(x, norm="ortho")`` for real (…, H, W) ``x``."""
    spectrum = real_rfft2_packed(x)
    return spectrum[..., 0, :, :], spectrum[..., 1, :, :]


def real_irfft2(real: Tensor, imag: Tensor, width: int) -> Tensor:
    """The real (…, H, ``width``) image of the half-spectrum ``real + i·imag`` (…, H, width//2+1): equal to
    ``torch.fft.irfft2(hermitian_projection(Z), s=(H, width), norm="ortho")``."""
    return real_irfft2_packed(torch.stack([real, imag], dim=-3), width)
