"""Tests of the spectral backbones and layers: complex and spectral convolutions against numpy complex
arithmetic and circular convolution, spectral resampling against an ideal low-pass + decimation, complex
whitening, Hermitian outputs, documented parameter counts, frequency attention and band heads, validation,
training and the sd-train path."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from spectral_diffusion.models import (
    BandFiLM,
    BandHeadConv2d,
    ComplexConv2d,
    ComplexGroupNorm,
    FrequencyAttention,
    ModReLU,
    SpectralBandAttention,
    SpectralConv2d,
    SpectralMultiplier,
    UNet,
    UNetHybrid,
    UNetSpectral,
    spectral_downsample,
    spectral_upsample,
)
from spectral_diffusion.models.band_layers import attend, band_masks, pool_bands, spread_bands
from spectral_diffusion.models.complex_layers import (
    COMPLEX_MODES,
    hermitian_pad,
    hermitian_projection,
    to_complex,
    to_interleaved,
)
from spectral_diffusion.utils.validation import ConfigError

MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "model"
SMALL_SPECTRAL = {"image_size": 8, "base_channels": 8, "channel_mults": (1, 2), "num_heads": 2, "groups": 4,
                  "num_bands": 3}
SMALL_UNET = {"image_size": 16, "base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1,
              "attention_resolutions": (), "mid_attention": False, "groups": 4}


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def inputs(batch=2, channels=1, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=generator), 1000 * torch.rand(batch, generator=generator)


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised heads hide everything before them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return module


def random_complex(shape, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator))


def numpy_hermitian_extension(z: np.ndarray, padding: int) -> np.ndarray:
    """(C, H, Wf) half-spectrum of an even width W -> (C, H + 2p, Wf + 2p) with rows wrapped and columns
    beyond the half grid taken from the conjugate mirror X[k, j] = conj(X[−k, W − j])."""
    channels, height, half_width = z.shape
    width = 2 * (half_width - 1)
    out = np.zeros((channels, height + 2 * padding, half_width + 2 * padding), dtype=complex)
    for r in range(-padding, height + padding):
        for c in range(-padding, half_width + padding):
            row = r % height
            if 0 <= c < half_width:
                value = z[:, row, c]
            else:
                value = np.conj(z[:, (-row) % height, (-c) % width])
            out[:, r + padding, c + padding] = value
    return out


# ---------------------------------------------------------------- complex and spectral convolutions


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_complex_conv_equals_complex_arithmetic(kernel_size):
    torch.manual_seed(0)
    conv = randomize(ComplexConv2d(3, 2, kernel_size))
    z = random_complex((1, 3, 8, 5))
    actual = to_complex(conv(to_interleaved(z)))[0].detach().numpy()
    weight = (conv.weight_real + 1j * conv.weight_imag).detach().numpy()
    bias = conv.bias.detach().numpy()
    bias = bias[0::2] + 1j * bias[1::2]
    padded = numpy_hermitian_extension(z[0].numpy(), kernel_size // 2)
    expected = np.zeros((2, 8, 5), dtype=complex)
    for o in range(2):
        for r in range(8):
            for c in range(5):
                window = padded[:, r:r + kernel_size, c:c + kernel_size]
                expected[o, r, c] = np.sum(weight[o] * window) + bias[o]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_dual_real_conv_with_complex_block_weights_equals_complex_conv():
    torch.manual_seed(0)
    complex_conv = randomize(ComplexConv2d(3, 2, 3, mode="complex"))
    dual = ComplexConv2d(3, 2, 3, mode="dual_real")
    with torch.no_grad():
        dual.weight.copy_(complex_conv.real_weight())
        dual.bias.copy_(complex_conv.bias)
    features = torch.randn(2, 6, 8, 5)
    torch.testing.assert_close(dual(features), complex_conv(features))
    randomize(dual, seed=3)  # unconstrained real weights leave the complex-linear family
    assert (dual(features) - complex_conv(features)).abs().max() > 1e-2


def _complex_reference_conv(conv: ComplexConv2d, z: torch.Tensor) -> torch.Tensor:
    """W * z + b computed with complex64 tensors (torch's complex conv2d), Hermitian padding as the layer's."""
    padded = to_complex(hermitian_pad(to_interleaved(z), conv.padding))
    weight = torch.complex(conv.weight_real, conv.weight_imag)
    bias = torch.complex(conv.bias[0::2], conv.bias[1::2])
    return torch.nn.functional.conv2d(padded, weight) + bias[:, None, None]


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_packed_real_conv_equals_complex_conv_in_float32_and_bf16(kernel_size):
    """One real convolution on packed (Re, Im) channels is the complex convolution: to 1e-5 in float32, and
    under bf16 autocast (where it runs in bfloat16) within 2 % relative error (bf16 keeps 8 mantissa bits:
    per-product relative error 2^-8 ≈ 0.4 %, accumulated over 2·in·k² terms)."""
    torch.manual_seed(0)
    conv = randomize(ComplexConv2d(16, 8, kernel_size))
    z = random_complex((4, 16, 8, 5))
    expected = _complex_reference_conv(conv, z).detach()
    actual = to_complex(conv(to_interleaved(z))).detach()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed = conv(to_interleaved(z))
    assert packed.dtype == torch.bfloat16
    relative = (to_complex(packed.detach()) - expected).abs().norm() / expected.abs().norm()
    assert 1e-5 < relative < 0.02, relative  # it did run in bf16, and stayed within the tolerance


@pytest.mark.parametrize("in_channels, out_channels, kernel_size", [(3, 5, 3), (4, 2, 1)])
def test_documented_parameter_counts(in_channels, out_channels, kernel_size):
    complex_conv = ComplexConv2d(in_channels, out_channels, kernel_size, mode="complex")
    dual = ComplexConv2d(in_channels, out_channels, kernel_size, mode="dual_real")
    weights = in_channels * out_channels * kernel_size**2
    assert parameter_count(complex_conv) == 2 * weights + 2 * out_channels
    assert parameter_count(dual) == 4 * weights + 2 * out_channels
    modes = 6 * 3  # rows |k_y| < 3, columns k_x < 3
    spectral = SpectralMultiplier(in_channels, out_channels, 8, 3)
    assert parameter_count(spectral) == 2 * in_channels * out_channels * modes
    assert parameter_count(SpectralMultiplier(in_channels, out_channels, 8, 3, mode="dual_real")) == (
        4 * in_channels * out_channels * modes)


@pytest.mark.parametrize("cls", [UNetSpectral, UNetHybrid])
@pytest.mark.parametrize("block_type", ["conv", "spectral"])
def test_dual_real_model_adds_exactly_one_more_weight_set(cls, block_type):
    complex_model = cls(**SMALL_SPECTRAL, block_type=block_type, complex_mode="complex")
    dual = cls(**SMALL_SPECTRAL, block_type=block_type, complex_mode="dual_real")
    complex_weights = sum(p.numel() for name, p in complex_model.named_parameters() if name.endswith("weight_real"))
    assert complex_weights > 0
    assert parameter_count(dual) - parameter_count(complex_model) == 2 * complex_weights


def test_spectral_conv_equals_circular_convolution_with_its_kernel():
    size = 8
    generator = torch.Generator().manual_seed(0)
    kernel = torch.randn(size, size, generator=generator, dtype=torch.float64)
    layer = SpectralConv2d(1, 1, size, size // 2)
    multiplier = torch.fft.rfft2(kernel)  # backward norm: y = irfft2(R · X) is x ⊛ kernel
    rows = torch.cat([multiplier[: size // 2, : size // 2], multiplier[size // 2:, : size // 2]])
    with torch.no_grad():
        layer.multiplier.weight_real.copy_(rows.real[None, None].float())
        layer.multiplier.weight_imag.copy_(rows.imag[None, None].float())
    # The kept block k_x < 4 leaves out the Nyquist column: compare with the kernel's matching part.
    full = torch.fft.rfft2(kernel)
    full[:, size // 2] = 0
    kernel_kept = torch.fft.irfft2(full, s=(size, size)).numpy()
    x = torch.randn(2, 1, size, size, generator=generator)
    actual = layer(x).detach().numpy()
    image = x.numpy().astype(np.float64)
    expected = np.zeros_like(image)
    for a in range(size):
        for b in range(size):
            expected += kernel_kept[a, b] * np.roll(image, shift=(a, b), axis=(-2, -1))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_spectral_multiplier_zeroes_modes_outside_the_kept_block():
    torch.manual_seed(0)
    layer = SpectralMultiplier(2, 3, 8, 2)
    out = to_complex(layer(torch.randn(1, 4, 8, 5)))[0]
    kept = torch.zeros(8, 5, dtype=torch.bool)
    kept[[0, 1, 6, 7], :2] = True
    assert out[:, ~kept].abs().max() == 0
    assert out[:, kept].abs().min() > 0


# ---------------------------------------------------------------- resampling, normalisation, activations


def numpy_lowpass(image: np.ndarray, keep: int) -> np.ndarray:
    """Ideal low-pass of a square image keeping integer frequencies |k_y|, |k_x| < keep."""
    size = image.shape[-1]
    k = np.fft.fftfreq(size) * size
    mask = (np.abs(k)[:, None] < keep) & (np.abs(k)[None, :] < keep)
    return np.fft.ifft2(np.fft.fft2(image) * mask).real


def test_spectral_downsample_equals_lowpass_and_decimation():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 16, 16, generator=generator, dtype=torch.float64)
    down = spectral_downsample(to_interleaved(torch.fft.rfft2(image, norm="ortho")))
    decimated = numpy_lowpass(image.numpy(), keep=4)[..., ::2, ::2]
    expected = np.fft.rfft2(decimated, norm="ortho")
    np.testing.assert_allclose(to_complex(down).numpy(), expected, atol=1e-6)


def test_spectral_upsample_after_downsample_is_the_ideal_lowpass():
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(1, 2, 16, 16, generator=generator, dtype=torch.float64)
    spectrum = to_interleaved(torch.fft.rfft2(image, norm="ortho"))
    round_trip = torch.fft.irfft2(to_complex(spectral_upsample(spectral_downsample(spectrum))), s=(16, 16),
                                  norm="ortho")
    np.testing.assert_allclose(round_trip.numpy(), numpy_lowpass(image.numpy(), keep=4), atol=1e-6)


def test_complex_group_norm_whitens_each_group_of_each_sample():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(3, 4, 6, 4, generator=generator)
    imag = 0.7 * real + 0.3 * torch.randn(3, 4, 6, 4, generator=generator) + 2.0  # correlated, off-centre
    features = to_interleaved(torch.complex(real, imag))
    norm = ComplexGroupNorm(2, 4, eps=1e-8)
    with torch.no_grad():
        norm.gamma_rr.fill_(1.0)
        norm.gamma_ii.fill_(1.0)
    out = to_complex(norm(features)).detach().numpy()
    for sample in range(3):
        for group in range(2):
            values = out[sample, 2 * group:2 * group + 2].ravel()
            pairs = np.stack([values.real, values.imag])
            np.testing.assert_allclose(pairs.mean(axis=1), 0, atol=1e-5)
            np.testing.assert_allclose(pairs @ pairs.T / pairs.shape[1], np.eye(2), atol=1e-4)


def test_complex_group_norm_does_not_mix_samples():
    torch.manual_seed(0)
    norm = randomize(ComplexGroupNorm(2, 4))
    batch = torch.randn(4, 8, 6, 4)
    torch.testing.assert_close(norm(batch)[1:2], norm(batch[1:2]))


def test_modrelu_matches_formula_and_activation_option_changes_the_model():
    modrelu = ModReLU(2)
    with torch.no_grad():
        modrelu.bias.copy_(torch.tensor([-0.5, 0.3]))
    z = random_complex((1, 2, 3, 3))
    out = to_complex(modrelu(to_interleaved(z)))
    modulus = torch.sqrt(z.abs() ** 2 + 1e-6)
    expected = F.relu(modulus + torch.tensor([-0.5, 0.3])[None, :, None, None]) * z / modulus
    torch.testing.assert_close(out, expected)
    torch.manual_seed(0)
    a = randomize(UNetSpectral(**SMALL_SPECTRAL, activation="modrelu"))
    torch.manual_seed(0)
    b = randomize(UNetSpectral(**SMALL_SPECTRAL, activation="crelu"))
    b.load_state_dict(a.state_dict(), strict=False)
    assert (a(*inputs()) - b(*inputs())).abs().max() > 1e-3


# ---------------------------------------------------------------- band layers


def test_band_film_scales_each_band_and_shifts_each_channel():
    masks = band_masks(8, 3)
    film = BandFiLM(4, 2, masks)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        film.projection[1].weight.zero_()
        film.projection[1].bias.copy_(torch.randn((3 + 2) * 2, generator=generator))
    features = torch.randn(1, 4, 8, 5, generator=generator)
    out = to_complex(film(features, torch.zeros(1, 4)))[0]
    values = film.projection[1].bias.detach()
    scales, shifts = values[:6].reshape(3, 2), torch.complex(values[6::2], values[7::2])
    z = to_complex(features)[0]
    for band in range(3):
        inside = masks[band].bool()
        for channel in range(2):
            expected = z[channel][inside] * (1 + scales[band, channel]) + shifts[channel]
            torch.testing.assert_close(out[channel][inside], expected)


@pytest.mark.parametrize("mode", ["bands", "low_rank"])
def test_spectral_attention_updates_bands_or_bins(mode):
    torch.manual_seed(0)
    masks = band_masks(8, 3)
    attention = SpectralBandAttention(4, masks, ComplexGroupNorm(2, 4), num_heads=2, mode=mode)
    features = torch.randn(2, 8, 8, 5)
    torch.testing.assert_close(attention(features), features)  # zero output projection: identity
    randomize(attention)
    update = attention(features) - features
    assert update.abs().max() > 1e-3
    within_band = [update[..., masks[k].bool()].std(dim=-1).max() for k in range(3)]
    if mode == "bands":  # one value per band and channel, spread over the band's bins
        assert max(within_band) < 1e-5
    else:  # every bin is its own query
        assert max(within_band) > 1e-3


def test_frequency_attention_gains_reweight_the_spectrum():
    block = FrequencyAttention(4, 8, 3)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(block(x), x)  # zero output projection: every gain is 1
    with torch.no_grad():
        block.proj_out.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
    gains = 2 * torch.sigmoid(block.proj_out.bias.detach())  # weight zero: the same gain in every band
    torch.testing.assert_close(block(x), x * gains[None, :, None, None], rtol=1e-5, atol=1e-5)


def test_frequency_attention_equals_its_fft_definition():
    """With random weights the block is x + irfft2((g − 1)·rfft2(x)), g from the band power of rfft2(x), to 1e-5
    (the FFTs are real matrix products in the block)."""
    block = randomize(FrequencyAttention(8, 16, 4, num_heads=2))
    x = torch.randn(3, 8, 16, 16)
    spectrum = torch.fft.rfft2(x, norm="ortho")
    power = pool_bands(spectrum.abs().square(), block.masks)
    tokens = block.token_norm(torch.log(power + 1e-6)) + block.band_embedding
    query, key, value = block.qkv(tokens).chunk(3, dim=-1)
    gains = 2 * torch.sigmoid(block.proj_out(attend(query, key, value, 2, block.masks.sum(dim=(-2, -1)) > 0)))
    expected = x + torch.fft.irfft2(spectrum * (spread_bands(gains, block.masks) - 1), s=(16, 16), norm="ortho")
    update = (expected - x).abs().max()
    assert update > 1e-2
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_frequency_attention_under_bf16_autocast_stays_within_tolerance_of_float32():
    """Under bf16 autocast the transforms and the re-weighted inverse are bfloat16 products (band powers and
    attention stay float32). The update x_out − x stays within 3 % relative L2 of the float32 block's: rounding
    the float32 output to bfloat16 alone costs about 1 % of the update here (|update| ≈ 0.2 |x|; bf16 keeps 8
    mantissa bits), the bf16 products about as much again. It differs from float32 (bf16 really ran)."""
    torch.manual_seed(0)
    block = randomize(FrequencyAttention(8, 16, 4, num_heads=2))
    x = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(0)).bfloat16().float()
    expected = block(x) - x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = block(x.bfloat16())
    assert output.dtype == torch.bfloat16
    relative = (output.float() - x - expected).norm() / expected.norm()
    assert 1e-4 < relative < 0.03, relative


def test_freq_attention_false_keeps_the_unet_and_true_changes_it():
    torch.manual_seed(0)
    plain = UNet(**SMALL_UNET)
    torch.manual_seed(0)
    same = UNet(**SMALL_UNET, freq_attention=False, freq_attention_bands=7)
    assert list(plain.state_dict()) == list(same.state_dict())
    torch.manual_seed(0)
    with_attention = UNet(**SMALL_UNET, freq_attention=True)
    extra = set(with_attention.state_dict()) - set(plain.state_dict())
    assert extra and all("frequency_attention" in key for key in extra)
    with_attention.load_state_dict(plain.state_dict(), strict=False)
    for model in (plain, with_attention):
        randomize(model.out[-1])
    x, noise_level = inputs(size=16)
    torch.testing.assert_close(with_attention(x, noise_level), plain(x, noise_level))
    with torch.no_grad():
        with_attention.middle_frequency_attention.proj_out.bias.fill_(1.0)
    assert (with_attention(x, noise_level) - plain(x, noise_level)).abs().max() > 1e-3


def test_band_head_with_equal_heads_is_the_plain_head_and_each_head_owns_its_band():
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(4, 2, 3, padding=1)
    heads = BandHeadConv2d(4, 2, 8, 3)
    with torch.no_grad():
        heads.weight.copy_(plain.weight.repeat(3, 1, 1, 1))
        heads.bias.copy_(plain.bias.repeat(3))
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(heads(x), plain(x), rtol=1e-5, atol=1e-5)
    randomize(heads)
    each = torch.fft.rfft2(F.conv2d(x, heads.weight, heads.bias, padding=1).reshape(2, 3, 2, 8, 8), norm="ortho")
    combined = torch.fft.rfft2(heads(x), norm="ortho")
    for band in range(3):
        inside = heads.masks[band].bool()
        torch.testing.assert_close(combined[..., inside], each[:, band][..., inside], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls, kwargs", [(UNet, SMALL_UNET), (UNetHybrid, SMALL_SPECTRAL)])
def test_one_band_head_is_exactly_the_plain_head(cls, kwargs):
    torch.manual_seed(0)
    plain = cls(**kwargs)
    torch.manual_seed(0)
    one = cls(**kwargs, band_heads=1)
    assert type(one.out[-1]) is torch.nn.Conv2d
    assert {k: v.shape for k, v in one.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    randomize(plain)
    one.load_state_dict(plain.state_dict())
    x, noise_level = inputs(size=kwargs["image_size"])
    torch.testing.assert_close(one(x, noise_level), plain(x, noise_level), rtol=0, atol=0)


@pytest.mark.parametrize("cls, kwargs", [(UNet, SMALL_UNET), (UNetHybrid, SMALL_SPECTRAL),
                                         (UNetSpectral, SMALL_SPECTRAL)])
def test_band_heads_change_the_function(cls, kwargs):
    torch.manual_seed(0)
    one = randomize(cls(**kwargs))
    three = randomize(cls(**kwargs, band_heads=3), seed=1)
    assert parameter_count(three) > parameter_count(one)
    x, noise_level = inputs(size=kwargs["image_size"])
    assert (three(x, noise_level) - one(x, noise_level)).abs().max() > 1e-3


def test_spectral_band_heads_restrict_each_head_to_its_band():
    torch.manual_seed(0)
    model = randomize(UNetSpectral(**SMALL_SPECTRAL, band_heads=2))
    x, noise_level = inputs()
    spectrum = model.head_spectrum(x, noise_level)
    with torch.no_grad():
        model.out_conv.weight_real[1:].zero_()  # silence head 1 (complex output channel 1)
        model.out_conv.weight_imag[1:].zero_()
        model.out_conv.bias[2:].zero_()  # its (Re, Im) bias
    head0 = model.head_spectrum(x, noise_level)
    outer = model.head_masks[1].bool()
    assert head0[..., outer].abs().max() == 0
    torch.testing.assert_close(head0[..., ~outer], spectrum[..., ~outer])


# ---------------------------------------------------------------- the spectral UNet


@pytest.mark.parametrize("output", ["cartesian", "polar"])
def test_output_is_real_with_a_hermitian_spectrum(output):
    torch.manual_seed(0)
    model = randomize(UNetSpectral(**SMALL_SPECTRAL, output=output))
    x, noise_level = inputs(channels=1)
    y = model(x, noise_level)
    assert y.dtype == torch.float32 and y.shape == x.shape
    head = model.head_spectrum(x, noise_level)
    projected = hermitian_projection(head)
    assert (projected - head).abs().max() > 1e-3  # the head alone is not Hermitian
    torch.testing.assert_close(torch.fft.rfft2(y, norm="ortho"), projected, rtol=1e-4, atol=1e-5)
    full = np.fft.fft2(y.detach().numpy().astype(np.float64))
    mirror = np.conj(np.roll(np.flip(full, axis=(-2, -1)), shift=(1, 1), axis=(-2, -1)))
    np.testing.assert_allclose(full, mirror, atol=1e-8)


def test_untrained_outputs_zero_for_cartesian_and_x_t_for_polar():
    x, noise_level = inputs()
    assert torch.count_nonzero(UNetSpectral(**SMALL_SPECTRAL)(x, noise_level)) == 0
    torch.testing.assert_close(UNetSpectral(**SMALL_SPECTRAL, output="polar")(x, noise_level), x, atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("log_gain, phase, factor", [(0.3, 0.0, np.exp(8 * np.tanh(0.3 / 8))), (0.0, np.pi, -1.0)])
def test_polar_output_is_a_gain_and_phase_offset_on_the_spectrum_of_x_t(log_gain, phase, factor):
    torch.manual_seed(0)
    model = randomize(UNetSpectral(**SMALL_SPECTRAL, output="polar"))
    with torch.no_grad():  # a constant head: ℓ = log_gain (soft-clipped by 8·tanh(ℓ/8)), δ = phase at every bin
        model.out_conv.weight_real.zero_()
        model.out_conv.weight_imag.zero_()
        model.out_conv.bias.copy_(torch.tensor([log_gain, phase]))
    x, noise_level = inputs()
    torch.testing.assert_close(model(x, noise_level), factor * x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("change", [{"block_type": "spectral", "spectral_modes": 2}, {"spectral_attention": "low_rank",
                                    "attention_resolutions": (8,)}, {"complex_mode": "dual_real"},
                                    {"output": "polar"}, {"num_bands": 2}])
def test_every_spectral_option_changes_the_network(change):
    torch.manual_seed(0)
    reference = randomize(UNetSpectral(**SMALL_SPECTRAL, attention_resolutions=(8,)))
    torch.manual_seed(0)
    changed = randomize(UNetSpectral(**{**SMALL_SPECTRAL, "attention_resolutions": (8,), **change}))
    x, noise_level = inputs()
    assert (reference(x, noise_level) - changed(x, noise_level)).abs().max() > 1e-3


@pytest.mark.parametrize("cls", [UNetSpectral, UNetHybrid])
def test_each_sample_uses_its_own_noise_level(cls):
    torch.manual_seed(0)
    model = randomize(cls(**SMALL_SPECTRAL))
    x, _ = inputs(batch=1)
    batched = model(x.expand(2, -1, -1, -1), torch.tensor([10.0, 900.0]))
    torch.testing.assert_close(batched[0:1], model(x, torch.tensor([10.0])), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[1:2], model(x, torch.tensor([900.0])), rtol=1e-4, atol=1e-5)
    assert (batched[0] - batched[1]).abs().max() > 1e-3


@pytest.mark.parametrize("cls", [UNetSpectral, UNetHybrid])
@pytest.mark.parametrize("complex_mode", COMPLEX_MODES)
def test_bfloat16_autocast_stays_within_tolerance(cls, complex_mode):
    """Under bf16 autocast the complex convolutions, FiLM and attention run in bfloat16 (the FFTs and the
    complex whitening in float32); the prediction stays within 5 % relative L2 of float32 (measured 1–2 %),
    as the pixel decoder of the hybrid always did, and differs from it (bf16 really ran)."""
    torch.manual_seed(0)
    model = randomize(cls(**{**SMALL_SPECTRAL, "complex_mode": complex_mode}, attention_resolutions=(8,)))
    x, noise_level = inputs()
    reference = model(x, noise_level)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(x, noise_level)
    relative = (output.float() - reference).norm() / reference.norm()
    assert 1e-4 < relative < 0.05, relative
    output.float().pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---------------------------------------------------------------- validation and configs


@pytest.mark.parametrize(
    "kwargs, key, detail",
    [
        ({"groups": 3}, "model.groups", "does not divide"),
        ({"spectral_modes": 5}, "model.spectral_modes", "[1, 4]"),
        ({"activation": "gelu"}, "model.activation", "modrelu"),
        ({"complex_mode": "quaternion"}, "model.complex_mode", "dual_real"),
        ({"block_type": "fno"}, "model.block_type", "spectral"),
        ({"spectral_attention": "full"}, "model.spectral_attention", "low_rank"),
        ({"num_bands": 0}, "model.num_bands", ">= 1"),
        ({"band_heads": 0}, "model.band_heads", ">= 1"),
        ({"image_size": 10}, "model.image_size", "multiple of 4"),
        ({"attention_resolutions": (2,)}, "model.attention_resolutions", "[8, 4]"),
        ({"attention_resolutions": (8,), "num_heads": 3}, "model.num_heads", "divide"),
    ],
)
@pytest.mark.parametrize("cls", [UNetSpectral, UNetHybrid])
def test_bad_config_raises_config_error_naming_the_key(cls, kwargs, key, detail):
    with pytest.raises(ConfigError) as error:
        cls(**{**SMALL_SPECTRAL, **kwargs})
    assert key in str(error.value) and detail in str(error.value)


@pytest.mark.parametrize("kwargs, key", [({"output": "magnitude"}, "model.output")])
def test_bad_output_is_rejected(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        UNetSpectral(**SMALL_SPECTRAL, **kwargs)


@pytest.mark.parametrize("kwargs, key", [({"freq_attention": "yes"}, "model.freq_attention"),
                                         ({"freq_attention_bands": 0}, "model.freq_attention_bands"),
                                         ({"band_heads": 0}, "model.band_heads")])
def test_bad_unet_options_are_rejected(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        UNet(**SMALL_UNET, **kwargs)


def load_model_config(name: str, channels: int = 1, image_size: int = 16):
    data = OmegaConf.create({"data": {"source": {"channels": channels, "image_size": image_size}}})
    return OmegaConf.merge(data, {"model": OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml")}).model


@pytest.mark.parametrize("name, cls", [("unet_spectral", UNetSpectral), ("unet_hybrid", UNetHybrid)])
def test_configs_instantiate_with_every_key_a_constructor_argument(name, cls):
    keys = set(OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml")) - {"_target_"}
    assert keys == set(inspect.signature(cls).parameters) - set(cls.DATA_SIZED)
    model = hydra.utils.instantiate(load_model_config(name))
    assert type(model) is cls
    assert 0.3e6 < parameter_count(model) < 1.0e6  # comparable to unet's 0.64 M
    x, noise_level = inputs(size=16)
    assert model(x, noise_level).shape == x.shape


# ---------------------------------------------------------------- training


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (UNetSpectral, {"complex_mode": "complex"}),
        (UNetSpectral, {"complex_mode": "dual_real", "activation": "crelu", "output": "polar"}),
        (UNetSpectral, {"block_type": "spectral", "spectral_modes": 4, "spectral_attention": "low_rank",
                            "attention_resolutions": (8,), "band_heads": 2}),
        (UNetHybrid, {"band_heads": 2}),
        (UNet, {"freq_attention": True, "band_heads": 2}),
    ],
)
def test_models_train_on_16x16_with_decreasing_loss(cls, kwargs):
    torch.manual_seed(0)
    base = SMALL_UNET if cls is UNet else {**SMALL_SPECTRAL, "image_size": 16}
    model = cls(**base, **kwargs)
    x, noise_level = inputs(batch=4, size=16)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = F.mse_loss(model(x, noise_level), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["model=unet_spectral"], ["model=unet_hybrid", "model.band_heads=2"],
                                       ["model=unet", "model.freq_attention=true"]])
def test_sd_train_debug_trains_samples_and_evaluates(overrides, tmp_path, cache_dir):
    from spectral_diffusion.pipeline import train

    from .conftest import compose_train

    cfg = compose_train(["debug=default", "trainer.max_steps=6", "evaluation.num_samples=16",
                         "evaluation.batch_size=16", "evaluation.kid_subset_size=8", *overrides], tmp_path, cache_dir)
    metrics = train(cfg)
    assert metrics["global_step"] == 6
    assert np.isfinite(metrics["fid_classifier@16"])
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert written["num_parameters"] == metrics["num_parameters"]


@pytest.mark.parametrize("attention_resolutions", [(), (8,)])
def test_hybrid_decoder_is_the_pixel_unet_up_path(attention_resolutions):
    """The hybrid decodes with the pixel UNet's up path (``UNetLevel``s of ResBlocks, pixel attention where
    asked, upsampling): its decoder's weights load into a same-sized ``UNet``'s up levels key for key, and
    the two compute the same features from the same skips."""
    sizes = {"image_size": 16, "base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "groups": 4,
             "num_heads": 2, "attention_resolutions": attention_resolutions}
    torch.manual_seed(0)
    hybrid = randomize(UNetHybrid(**sizes, num_bands=3))
    unet = UNet(**sizes, mid_attention=False)
    unet.up_levels.load_state_dict(hybrid.up_levels.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(1)
    skips = [torch.randn(2, channels, size, size, generator=generator)
             for channels, size in [(8, 16), (8, 16), (8, 8), (16, 8)]]
    h = torch.randn(2, 16, 8, 8, generator=generator)
    time_embedding = torch.randn(2, 32, generator=generator)
    hybrid_h, unet_h = h, h
    hybrid_skips, unet_skips = list(skips), list(skips)
    for hybrid_level, unet_level in zip(hybrid.up_levels, unet.up_levels):
        hybrid_h = hybrid_level.up(hybrid_h, hybrid_skips, time_embedding)
        unet_h = unet_level.up(unet_h, unet_skips, time_embedding)
    assert not hybrid_skips and hybrid_h.shape == (2, 8, 16, 16)
    torch.testing.assert_close(hybrid_h, unet_h)


def test_hybrid_default_parameter_count():
    """conf/model/unet_hybrid.yaml's sizes (the class defaults): 0.39 M parameters, unchanged by building the
    decoder from ``UNetLevel``."""
    assert parameter_count(UNetHybrid()) == 391_121
