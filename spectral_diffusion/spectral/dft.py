"""The orthonormal ``rfft2`` and its inverse as products with real cosine and sine matrices, for small maps.

For the feature maps of a UNet (4 to 32 pixels a side) two small matrix products per axis are much cheaper
on a CPU than FFT library calls, above all the inverse real FFT (``irfft2``) and the backward passes, and they
stay real, so autograd works unchanged. Every function computes in its input's dtype whatever the surrounding
autocast (as torch.fft does), so a float32 or float64 caller keeps its precision. The matrices are the DFT's own (Cooley & Tukey 1965,
eq. 1, orthonormal scaling): X[k, j] = (HW)^−½ Σ_{h,w} x[h, w] e^{−2πi(kh/H + jw/W)}, j = 0..W/2.
"""

from __future__ import annotations

import math
from functools import lru_cache, wraps

import torch
from torch import Tensor


def _in_input_dtype(function):
    """Run ``function`` with autocast off, so its matrix products keep the dtype of the input."""
    @wraps(function)
    def wrapper(first: Tensor, *args, **kwargs):
        with torch.autocast(first.device.type, enabled=False):
            return function(first, *args, **kwargs)

    return wrapper


@lru_cache(maxsize=64)
def _full_dft_matrices(height: int, width: int, device: str, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(cos_h, sin_h) (H, H) and (cos_w, sin_w) (W, W) of the full orthonormal 2-D DFT."""
    def pair(size: int) -> tuple[Tensor, Tensor]:
        index = torch.arange(size, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(index, index).remainder(size) / size
        return torch.cos(angle) / math.sqrt(size), torch.sin(angle) / math.sqrt(size)

    return tuple(m.to(device=device, dtype=dtype) for m in (*pair(height), *pair(width)))


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
def _dft_matrices(height: int, width: int, device: str, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(cos_h, sin_h) of shape (H, H) and (cos_w, sin_w) of shape (W, W//2+1), orthonormal scaling, and the
    inverse's column weights c_j (1 for DC and the Nyquist column of an even width, 2 otherwise) folded into
    (inverse_cos_w, inverse_sin_w) of shape (W//2+1, W)."""
    rows = torch.arange(height, dtype=torch.float64)
    angle_h = 2 * math.pi * torch.outer(rows, rows).remainder(height) / height
    cos_h, sin_h = torch.cos(angle_h) / math.sqrt(height), torch.sin(angle_h) / math.sqrt(height)
    columns, half = torch.arange(width, dtype=torch.float64), torch.arange(width // 2 + 1, dtype=torch.float64)
    angle_w = 2 * math.pi * torch.outer(columns, half).remainder(width) / width
    cos_w, sin_w = torch.cos(angle_w) / math.sqrt(width), torch.sin(angle_w) / math.sqrt(width)
    weight = torch.full((width // 2 + 1,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    inverse_cos_w, inverse_sin_w = (weight[:, None] * cos_w.T), (weight[:, None] * sin_w.T)
    return tuple(m.to(device=device, dtype=dtype) for m in (cos_h, sin_h, cos_w, sin_w, inverse_cos_w, inverse_sin_w))


@_in_input_dtype
def real_rfft2(x: Tensor) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of ``torch.fft.rfft2(x, norm="ortho")`` for real (…, H, W) ``x``."""
    cos_h, sin_h, cos_w, sin_w, _, _ = _dft_matrices(*x.shape[-2:], str(x.device), x.dtype)
    row_real, row_imag = x @ cos_w, -(x @ sin_w)  # along W: Σ_w x e^{−2πi jw/W}
    return cos_h @ row_real + sin_h @ row_imag, cos_h @ row_imag - sin_h @ row_real  # along H


@_in_input_dtype
def real_irfft2(real: Tensor, imag: Tensor, width: int) -> Tensor:
    """The real (…, H, ``width``) image of the half-spectrum ``real + i·imag`` (…, H, width//2+1): equal to
    ``torch.fft.irfft2(hermitian_projection(Z), s=(H, width), norm="ortho")`` (taking the real part of the
    inverse is exactly the projection onto spectra of real images)."""
    cos_h, sin_h, _, _, inverse_cos_w, inverse_sin_w = _dft_matrices(real.shape[-2], width, str(real.device),
                                                                     real.dtype)
    row_real = cos_h.T @ real - sin_h.T @ imag  # along H: Σ_k Z e^{+2πi kh/H}
    row_imag = cos_h.T @ imag + sin_h.T @ real
    return row_real @ inverse_cos_w - row_imag @ inverse_sin_w  # along W: Re Σ_j c_j U e^{+2πi jw/W}
