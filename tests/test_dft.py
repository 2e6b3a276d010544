"""The rfft2 and its inverse as real matrix products (``spectral.dft``), against torch.fft (issue 16)."""

from __future__ import annotations

import pytest
import torch

from spectral_diffusion.models.complex_layers import hermitian_projection
from spectral_diffusion.spectral.dft import real_irfft2, real_rfft2


@pytest.mark.parametrize("height, width", [(16, 16), (8, 8), (4, 4), (6, 5), (5, 6), (20, 18), (17, 16)])
def test_real_rfft2_equals_torch_rfft2(height, width):
    """Maps of up to DENSE_PIXELS pixels (16x16) take the dense product, larger ones the per-axis products."""
    x = torch.randn(3, 2, height, width, dtype=torch.float64)
    real, imag = real_rfft2(x)
    expected = torch.fft.rfft2(x, norm="ortho")
    torch.testing.assert_close(real, expected.real, rtol=0, atol=1e-12)
    torch.testing.assert_close(imag, expected.imag, rtol=0, atol=1e-12)
    torch.testing.assert_close(real_irfft2(real, imag, width), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [4, 8, 16, 20])  # 20x20 is past DENSE_PIXELS: one axis at a time
def test_real_irfft2_is_irfft2_of_the_hermitian_projection(size):
    """Any half-spectrum, Hermitian or not: the real part of the inverse is the projection's exact inverse."""
    spectrum = torch.randn(3, 2, size, size // 2 + 1, dtype=torch.complex128)
    expected = torch.fft.irfft2(hermitian_projection(spectrum), s=(size, size), norm="ortho")
    torch.testing.assert_close(real_irfft2(spectrum.real, spectrum.imag, size), expected, rtol=0, atol=1e-12)


def test_gradients_match_torch_fft():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    gain = torch.rand(8, 5, dtype=torch.float64)
    real, imag = real_rfft2(x)
    (real_irfft2(gain * real, gain * imag, 8).sin().sum()).backward()
    mine, x.grad = x.grad, None
    torch.fft.irfft2(gain * torch.fft.rfft2(x, norm="ortho"), s=(8, 8), norm="ortho").sin().sum().backward()
    torch.testing.assert_close(mine, x.grad, rtol=0, atol=1e-12)
