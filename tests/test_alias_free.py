"""Alias-free filters, resampling and the alias-free UNet (Anjum et al. 2024): frequency responses against scipy, gains,
shift commutation, and the UNet versions against the plain UNet."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from spectral_diffusion.metrics.equivariance import MaskedPSNR, fractional_translate
from spectral_diffusion.models import (
    Downsample,
    FilteredActivation,
    FilteredDownsample2d,
    FilteredUpsample2d,
    LowpassDesign,
    UNet,
    UNetAliasFree,
)
from spectral_diffusion.utils.validation import ConfigError

SIZES = dict(in_channels=1, image_size=16, base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1,
             attention_resolutions=())


def cosine_image(size: int, frequencies, seed: int = 0) -> torch.Tensor:
    """(1, 1, size, size) sum of periodic cosines at (fx, fy) cycles/pixel (multiples of 1/size) with random
    phases: band-limited to the given frequencies."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = sum(np.cos(2 * np.pi * (fx * cols + fy * rows) + rng.uniform(0, 2 * np.pi)) for fx, fy in frequencies)
    return torch.tensor(image, dtype=torch.float32)[None, None]


def periodic(module, x: torch.Tensor, margin: int, scale: float) -> torch.Tensor:
    """``module`` applied to the periodic extension of ``x`` (circular padding by ``margin``), cropped back."""
    out = module(F.pad(x, (margin,) * 4, mode="circular"))
    crop = int(margin * scale)
    return out[..., crop:-crop, crop:-crop]


@pytest.mark.parametrize("taps,cutoff,transition", [(6, 0.5, 0.4), (6, 0.4, 0.2), (8, 0.35, 0.3), (16, 0.4, 0.2)])
def test_kaiser_response_matches_firwin_and_meets_configured_attenuation(taps, cutoff, transition):
    design = LowpassDesign(taps=taps, cutoff=cutoff, transition=transition)
    # The upsampler's response to a low-resolution impulse is the filter at the high rate, times 2 per axis.
    impulse = torch.zeros(1, 1, 4 * taps, 4 * taps)
    impulse[..., 2 * taps, 2 * taps] = 1
    response = FilteredUpsample2d(design)(impulse)[0, 0].double().numpy()
    rows, cols = np.nonzero(np.abs(response) > 1e-9)
    support = response[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    reference = scipy.signal.firwin(2 * taps, design.cutoff, width=transition, fs=2.0)
    np.testing.assert_allclose(support, 4 * np.outer(reference, reference), atol=1e-6)

    frequencies, gain = scipy.signal.freqz(design.kernel_1d(), worN=4096, fs=2.0)
    ripple = 10 ** (-design.attenuation_db / 20)
    pass_band = frequencies <= design.cutoff - transition / 2
    stop_band = frequencies >= design.cutoff + transition / 2
    # Kaiser's formula (δ = 10^(−A/20) in both bands) is approximate for short filters: within a factor 1.5.
    assert np.abs(np.abs(gain[pass_band]) - 1).max() <= 1.5 * ripple
    assert np.abs(gain[stop_band]).max() <= 1.5 * ripple
    assert abs(gain[0]) == pytest.approx(1.0, abs=1e-9)


def test_jinc_kernel_is_radially_symmetric_lowpass():
    design = LowpassDesign(kind="jinc")
    kernel = design.kernel()
    assert kernel.shape == (12, 12)
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-12)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)
    assert kernel.sum() == pytest.approx(1.0)
    spectrum = np.abs(np.fft.fft2(kernel, s=(64, 64)))
    # fs = 2: bin 16 of 64 is 0.5 cycles per low-resolution sample; bin 32 the high-rate Nyquist frequency.
    assert spectrum[0, 4] > 0.98 and spectrum[0, 32] < 0.05 and spectrum[22, 22] < 0.05


@pytest.mark.parametrize("kind", ["kaiser", "jinc"])
def test_up_then_down_round_trip_has_gain_one(kind):
    design = LowpassDesign(kind=kind)
    x = cosine_image(32, [(3 / 32, 2 / 32), (-5 / 32, 4 / 32), (6 / 32, 0)])
    up, down = FilteredUpsample2d(design), FilteredDownsample2d(design)
    assert up(x).shape == (1, 1, 64, 64)
    round_trip = periodic(lambda image: down(up(image)), x, 8, 1)
    gain = float((round_trip * x).sum() / (x * x).sum())
    # Within the pass-band ripple squared (±0.6 % per pass, two passes per axis); the seed's sum-1 upsampler: 0.27.
    assert gain == pytest.approx(1.0, abs=0.025)
    assert float((round_trip - x).abs().max()) < 0.08
    # A constant keeps its value through either direction (gain 4 of zero insertion, DC gain 1 of the decimator).
    ones = torch.ones(1, 3, 8, 8)
    np.testing.assert_allclose(periodic(up, ones, 4, 2).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(periodic(down, torch.ones(1, 3, 16, 16), 8, 0.5).numpy(), 1.0, atol=1e-5)


def test_filtered_downsampling_commutes_with_half_pixel_shift_far_better_than_strided_conv():
    """A 32x32 image with content below the low-resolution pass band and above its Nyquist frequency, shifted by one
    high-resolution pixel (half a low-resolution pixel): down(shift(x)) against shift(down(x))."""
    frequencies = [(2 / 32, 1 / 32), (3 / 32, -4 / 32), (13 / 32, 3 / 32), (-12 / 32, 14 / 32), (1 / 32, 15 / 32)]
    x = cosine_image(64, [(fx / 2, fy / 2) for fx, fy in frequencies] + [(12 / 32, 13 / 32)])
    torch.manual_seed(0)
    strided = Downsample(1)
    filtered = FilteredDownsample2d(LowpassDesign())

    def eq_db(down) -> float:
        with torch.no_grad():
            shifted_then_down = periodic(down, torch.roll(x, 1, dims=-1), 16, 0.5)
            down_then_shifted = fractional_translate(periodic(down, x, 16, 0.5), 0.5, 0.0)
        meter = MaskedPSNR(torch.ones(32, 32, dtype=torch.bool))
        meter.update(shifted_then_down, down_then_shifted)
        return meter.compute()

    filtered_db, strided_db = eq_db(filtered), eq_db(strided)
    assert filtered_db > 40
    assert filtered_db - strided_db > 25


def test_filtered_activation_of_identity_is_a_lowpass_round_trip():
    design = LowpassDesign()
    x = cosine_image(16, [(1 / 16, 2 / 16), (2 / 16, -1 / 16)])
    identity = periodic(FilteredActivation(design, torch.nn.Identity), x, 8, 1)
    assert float((identity - x).abs().max()) < 0.05 * float(x.abs().max())
    silu = periodic(FilteredActivation(design), x, 8, 1)
    # Close to SiLU pointwise, not equal: the high frequencies SiLU creates are removed.
    assert 0.0 < float((silu - F.silu(x)).abs().max()) < 0.2


@pytest.mark.parametrize("bad", [dict(kind="sinc"), dict(taps=1), dict(taps=2.5), dict(cutoff=0.0),
                                 dict(cutoff=0.6), dict(transition=0.0), dict(transition=1.5)])
def test_lowpass_design_rejects_bad_values_naming_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(ConfigError, match=f"model.filter.{key}"):
        LowpassDesign(**bad)


def test_version_zero_is_the_plain_unet_with_the_same_weights():
    torch.manual_seed(0)
    plain = UNet(**SIZES)
    for module in plain.modules():  # the output conv starts at zero; give it weights so outputs differ
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.1)
    version0 = UNetAliasFree(version=0, **SIZES)
    version0.load_state_dict(plain.state_dict())
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([10.0, 500.0, 990.0])
    torch.testing.assert_close(version0(x, t), plain(x, t), rtol=0, atol=0)
    for version in (1, 2, 3):
        other = UNetAliasFree(version=version, **SIZES)
        assert other.state_dict().keys() == plain.state_dict().keys()
        other.load_state_dict(plain.state_dict())
        assert not torch.allclose(other(x, t), plain(x, t))


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_every_version_has_the_parameter_count_of_version_zero(version):
    count = sum(p.numel() for p in UNetAliasFree(version=0, **SIZES).parameters())
    model = UNetAliasFree(version=version, filter=dict(kind="jinc", taps=4), **SIZES)
    assert sum(p.numel() for p in model.parameters()) == count
    assert count == sum(p.numel() for p in UNet(**SIZES).parameters())


@pytest.mark.parametrize("version", [1, 3])
def test_forward_under_bf16_autocast_and_with_self_conditioning_channels(version):
    model = UNetAliasFree(version=version, **{**SIZES, "in_channels": 2, "out_channels": 1})
    x, t = torch.randn(2, 2, 16, 16), torch.tensor([3.0, 700.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("bad,key", [(dict(version=4), "model.version"), (dict(version="1"), "model.version"),
                                     (dict(filter=dict(taps=1)), "model.filter.taps"),
                                     (dict(filter=dict(cutoff=0.75)), "model.filter.cutoff"),
                                     (dict(filter=dict(width=0.1)), "model.filter"),
                                     (dict(image_size=18), "model.image_size")])
def test_alias_free_unet_rejects_bad_input_naming_the_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        UNetAliasFree(**{**SIZES, **bad})


def test_study_summary_pairs_seeds_and_matches_scipy(tmp_path):
    """benchmarks/alias_free.py's table: the mean and t interval over seeds per version, and the FID difference to
    version 0 paired by seed (scipy.stats.t by hand); a version run without version 0's seeds gets no difference."""
    import importlib.util
    import pathlib

    import scipy.stats

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "alias_free.py"
    spec = importlib.util.spec_from_file_location("alias_free_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fid = {0: [1.0, 1.4, 1.1], 2: [2.0, 2.1, 2.6]}
    runs = [dict(key=f"mnist16_v{v}_s{s}", dataset="mnist16", version=v, seed=s, budget_steps=100, fid=f,
                 eq_t=20.0 + s, eq_r=24.0, eq_r_generation=12.0, train_images_per_second=1.0, num_parameters=10)
            for v, values in fid.items() for s, f in enumerate(values)]
    runs.append(dict(runs[-1], key="mnist_m32_v1_s7", dataset="mnist_m32", version=1, seed=7))
    table = bench.summarise(runs, tmp_path)
    assert (tmp_path / "alias_free.png").is_file() and (tmp_path / "alias_free.md").read_text().strip() == table
    rows = {tuple(line.split(" | ")[:2]): line for line in table.splitlines()[2:]}
    differences = np.subtract(fid[2], fid[0])
    half = scipy.stats.t.ppf(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
    expected = f"{differences.mean():+.2f} [{differences.mean() - half:+.2f}, {differences.mean() + half:+.2f}]"
    assert expected in rows[("| mnist16", "2")]
    mean, low, high = np.mean(fid[0]), *scipy.stats.t.interval(0.95, 2, np.mean(fid[0]), scipy.stats.sem(fid[0]))
    assert f"{mean:.2f} [{low:.2f}, {high:.2f}]" in rows[("| mnist16", "0")]
    assert "| – |" in rows[("| mnist_m32", "1")]  # no version 0 run of seed 7 to pair with
