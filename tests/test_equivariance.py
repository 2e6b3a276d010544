"""Equivariance metrics (StyleGAN3 EQ-T, EQ-T_frac, EQ-R in dB): band-limited transforms against scipy, and the
metric on exactly equivariant and non-equivariant maps."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from spectral_diffusion.diffusion.process import GaussianProcess
from spectral_diffusion.diffusion.samplers import ddim
from spectral_diffusion.diffusion.schedules import LinearSchedule
from spectral_diffusion.metrics.equivariance import (
    MaskedPSNR,
    denoiser_equivariance,
    disc_mask,
    equivariance_figure,
    fractional_translate,
    generation_equivariance,
    integer_translate,
    rotate,
)
from spectral_diffusion.utils.validation import ConfigError

SIZE = 32


def smooth_image(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """(1, 1, size, size) sum of Gaussian blobs: smooth, effectively band-limited."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - (size - 1) / 2, indexing="ij")
    image = sum(rng.normal() * np.exp(-((cols - rng.uniform(-6, 6)) ** 2 + (rows - rng.uniform(-6, 6)) ** 2)
                                      / (2 * rng.uniform(2, 4) ** 2)) for _ in range(4))
    return torch.tensor(image)[None, None]


def test_fractional_translation_matches_scipy_fourier_shift_and_integer_roll():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(fractional_translate(x, 3.0, -2.0), integer_translate(x, 3, -2))
    image = smooth_image()
    reference = np.fft.ifft2(scipy.ndimage.fourier_shift(np.fft.fft2(image[0, 0].numpy()), (0.25, 0.5))).real
    np.testing.assert_allclose(fractional_translate(image, 0.5, 0.25)[0, 0].numpy(), reference, atol=1e-9)
    # Two half-pixel shifts are one pixel, but for the Nyquist column, which a half-pixel shift cancels.
    torch.testing.assert_close(fractional_translate(fractional_translate(image, 0.5, 0), 0.5, 0),
                               integer_translate(image, 1, 0), atol=1e-4, rtol=0)


def test_rotation_matches_scipy_and_composes_to_a_quarter_turn():
    image = smooth_image(1)
    mask = disc_mask(SIZE).numpy()
    reference = scipy.ndimage.rotate(image[0, 0].numpy(), 30, reshape=False, order=5)
    assert np.abs(rotate(image, 30)[0, 0].numpy() - reference)[mask].max() < 3e-3
    composed = rotate(rotate(image, 40), 50)
    assert (composed - torch.rot90(image, 1, dims=(-2, -1)))[0, 0][torch.from_numpy(mask)].abs().max() < 1e-3
    # Shears are unitary but for the Nyquist row and column (2/32 of white noise's energy, partly kept).
    noise = torch.randn(4, 1, SIZE, SIZE, dtype=torch.float64)
    kept = float(rotate(noise, 17).square().sum()) / float(noise.square().sum())
    assert 1 - 2 / SIZE - 0.02 < kept < 1
    with pytest.raises(ConfigError, match="square"):
        rotate(torch.zeros(1, 1, 8, 10), 10)


def test_masked_psnr_matches_its_definition():
    a = torch.zeros(2, 1, 8, 8)
    b = torch.full((2, 1, 8, 8), 0.1)
    meter = MaskedPSNR(disc_mask(8, 0.5))
    meter.update(a, b)
    assert meter.compute() == pytest.approx(20 * math.log10(2) - 10 * math.log10(0.01))
    assert int(disc_mask(8, 0.5).sum()) == 12


def gaussian_blur(x: torch.Tensor, t=None, sigma: float = 1.5) -> torch.Tensor:
    """A periodic, radially symmetric Gaussian blur applied in the Fourier domain (exactly equivariant)."""
    frequencies = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64)
    radius2 = frequencies[:, None] ** 2 + frequencies[None, :] ** 2
    transfer = torch.exp(-2 * math.pi**2 * sigma**2 * radius2)
    return torch.fft.ifft2(torch.fft.fft2(x.double()) * transfer).real.to(x.dtype)


def strided_conv(x: torch.Tensor, t=None) -> torch.Tensor:
    """A fixed random 3x3 stride-2 convolution followed by nearest upsampling: not equivariant."""
    weight = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(0)).to(x.dtype)
    return F.interpolate(F.conv2d(x, weight, stride=2, padding=1), scale_factor=2.0, mode="nearest")


@pytest.fixture(scope="module")
def process():
    return GaussianProcess(LinearSchedule(timesteps=100))


def images(count: int = 8) -> torch.Tensor:
    return torch.cat([smooth_image(seed) for seed in range(count)]).float().clamp(-1, 1)


def test_equivariant_maps_score_high_and_a_strided_conv_scores_low(process):
    times = [0.2, 0.8]
    identity = denoiser_equivariance(lambda x, t: x, process, images(), times)
    blur = denoiser_equivariance(gaussian_blur, process, images(), times)
    strided = denoiser_equivariance(strided_conv, process, images(), times)
    assert set(identity) == {"eq_t", "eq_t_frac", "eq_r"}
    for name in identity:
        assert min(identity[name]) > 200 and min(blur[name]) > 50, name
        assert max(strided[name]) < 20, name
        assert min(blur[name]) - max(strided[name]) > 30, name
    figure = equivariance_figure(times, blur)
    assert len(figure.axes[0].lines) == 3


def test_denoiser_equivariance_does_not_depend_on_batch_size(process):
    one = denoiser_equivariance(strided_conv, process, images(6), [0.5], batch_size=6)
    split = denoiser_equivariance(strided_conv, process, images(6), [0.5], batch_size=4)
    for name in one:
        assert one[name] == pytest.approx(split[name], rel=1e-9)


def test_generation_equivariance_of_an_equivariant_denoiser_is_high(process):
    sampler = partial(ddim, steps=5)
    blurred = generation_equivariance(lambda x, t: 0.5 * gaussian_blur(x), process, sampler, (4, 1, SIZE, SIZE))
    strided = generation_equivariance(lambda x, t: strided_conv(x), process, sampler, (4, 1, SIZE, SIZE))
    assert blurred > 40 and blurred - strided > 20


def test_model_equivariance_of_a_built_module(tmp_path, cache_dir):
    from spectral_diffusion.evaluation.equivariance import model_equivariance
    from spectral_diffusion.pipeline import build
    from tests.conftest import compose_train

    cfg = compose_train(["debug=default", "model=unet_alias_free", "data.source.image_size=16"], tmp_path, cache_dir)
    components = build(cfg)
    module, images = components.module, components.datamodule.val_images[:6]
    torch.manual_seed(0)
    with torch.no_grad():  # the head starts at zero, which every transform commutes with; give it weights
        for parameter in module.ema.module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    metrics, figure = model_equivariance(module, images, bins=2, generation_samples=2, steps=2, batch_size=4)
    assert {"eq_t", "eq_t_frac", "eq_r", "eq_r_generation", "eq_by_t"} <= set(metrics)
    assert len(metrics["eq_by_t"]["t"]) == 2 and len(figure.axes[0].lines) == 3
    for name in ("eq_t", "eq_t_frac", "eq_r", "eq_r_generation"):
        assert 0 < metrics[name] < 100, name
    assert metrics["eq_t"] == pytest.approx(sum(metrics["eq_by_t"]["eq_t"]) / 2)
