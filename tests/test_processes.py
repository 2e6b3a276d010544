"""Orthonormal bases and the frequency-space processes: equalized, banded and flow (issue 3, part 1)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import scipy.fft
import torch

from spectral_diffusion.data.sources import RandomFields
from spectral_diffusion.diffusion import (
    BandedProcess,
    CosineSchedule,
    EpsPrediction,
    EqualizedProcess,
    FlowPrediction,
    FlowProcess,
    GaussianProcess,
    LinearSchedule,
    RectifiedFlowSchedule,
    VPrediction,
    X0Prediction,
)
from spectral_diffusion.diffusion.processes import smooth_log_profile
from spectral_diffusion.pipeline import build
from spectral_diffusion.spectral.bases import DCTBasis, DWTBasis, FFTBasis, make_basis
from spectral_diffusion.spectral.frequency import (
    data_power_spectrum,
    floor_spectrum,
    radial_power_spectrum,
)
from spectral_diffusion.utils.validation import ConfigError

from .conftest import compose_train

DOUBLE = torch.float64
PREDICTIONS = {"eps": EpsPrediction(), "x0": X0Prediction(), "v": VPrediction(), "flow": FlowPrediction()}


class TrainingImages:
    """Stands in for the datamodule in ``prepare``: the image shape and the images' S_data, radial and on
    the grid, estimated as ``DiffusionDataModule`` does."""

    def __init__(self, images: torch.Tensor) -> None:
        self.train_images, self.image_shape = images, tuple(images.shape[1:])

    def radial_power_spectrum(self) -> tuple[torch.Tensor, torch.Tensor]:
        frequencies, power = radial_power_spectrum(self.train_images)
        return frequencies, floor_spectrum(power)

    def power_spectrum(self) -> torch.Tensor:
        return data_power_spectrum(self.train_images)


def basis_matrix(basis, height, width):
    """Rows: the coefficients of each unit image, i.e. the transform as an (HW × HW) matrix."""
    eye = torch.eye(height * width, dtype=DOUBLE).reshape(height * width, 1, height, width)
    return basis.forward(eye).reshape(height * width, -1)


@pytest.fixture(scope="module")
def fields():
    """Gaussian random fields with S(f) ∝ |f|^-2 (exact spectral tests)."""
    return RandomFields(image_size=16, num_images=512, beta=2.0, seed=0).load().images.double()


def radial_profile(images):
    return radial_power_spectrum(images)[1]


# --- bases ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("basis", [FFTBasis(), DCTBasis(), DWTBasis("haar", 3), DWTBasis("db2", 2)], ids=repr)
@pytest.mark.parametrize("size", [(8, 8), (5, 6)])
def test_bases_are_orthogonal(basis, size):
    if basis.name == "dwt" and size != (8, 8):
        with pytest.raises(ConfigError, match="noise.levels"):
            basis.forward(torch.zeros(1, 1, *size))
        return
    q = basis_matrix(basis, *size)
    torch.testing.assert_close(q @ q.T, torch.eye(q.shape[0], dtype=DOUBLE), atol=1e-12, rtol=0)
    x = torch.randn(3, 2, *size, dtype=DOUBLE)
    c = basis.forward(x)
    assert c.shape == x.shape and not c.is_complex()
    torch.testing.assert_close(basis.inverse(c), x)
    torch.testing.assert_close(c.square().sum(), x.square().sum())  # Parseval


def test_fft_packing_puts_each_frequency_where_fftfreq_says():
    height, width = 8, 6
    basis = FFTBasis()
    y, x = torch.meshgrid(torch.arange(height, dtype=DOUBLE), torch.arange(width, dtype=DOUBLE), indexing="ij")
    frequency = basis.frequency(height, width)
    for ky, kx in [(1, 0), (2, 1), (4, 3), (3, 2)]:
        wave = torch.cos(2 * np.pi * (ky * y / height + kx * x / width) + 0.3)
        c = basis.forward(wave[None, None])[0, 0]
        energy = c.square() / c.square().sum()
        radius = np.hypot(ky / height, kx / width)
        assert energy[(frequency - radius).abs() < 1e-12].sum() > 1 - 1e-12
    # white pixel noise stays white in the packed coefficients
    noise = basis.forward(torch.randn(4000, 1, height, width, dtype=DOUBLE))
    assert (noise.var(0) - 1).abs().max() < 0.12


def test_dct_matches_scipy_and_frequency_formula():
    x = torch.randn(2, 3, 6, 8, dtype=DOUBLE)
    reference = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(DCTBasis().forward(x).numpy(), reference, atol=1e-12)
    frequency = DCTBasis().frequency(6, 8)
    assert frequency[3, 5] == pytest.approx(np.hypot(3 / 12, 5 / 16))


@pytest.mark.parametrize("wavelet, levels", [("haar", 1), ("haar", 3), ("db2", 2), ("sym4", 1)])
def test_dwt_matches_pywavelets(wavelet, levels):
    x = torch.randn(2, 16, 16, dtype=DOUBLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pywt warns that long filters wrap around small images
        reference = np.stack([pywt.coeffs_to_array(pywt.wavedec2(image.numpy(), wavelet, mode="periodization",
                                                                 level=levels))[0] for image in x])
    np.testing.assert_allclose(DWTBasis(wavelet, levels).forward(x).numpy(), reference, atol=1e-10)


def test_dwt_level_layout():
    level = DWTBasis("haar", 2).level(8, 8)
    assert (level[:2, :2] == 0).all() and (level[:4, 2:4] == 1).all() and (level[2:4, :2] == 1).all()
    assert (level[4:, :] == 2).all() and (level[:, 4:] == 2).all()
    assert torch.bincount(level.flatten()).tolist() == [4, 12, 48]


def test_bases_are_differentiable():
    for basis in (FFTBasis(), DCTBasis(), DWTBasis("db2", 1)):
        x = torch.randn(1, 1, 4, 4, dtype=DOUBLE, requires_grad=True)
        assert torch.autograd.gradcheck(lambda v, b=basis: b.inverse(b.forward(v) * 2.0), (x,))


def test_basis_bad_input():
    with pytest.raises(ConfigError, match="noise.basis"):
        make_basis("wavelet")
    with pytest.raises(ConfigError, match="noise.basis"):
        GaussianProcess(CosineSchedule(), basis="fourier")
    with pytest.raises(ConfigError, match="noise.wavelet"):
        make_basis("dwt", wavelet="bior2.2")  # not orthogonal
    with pytest.raises(ConfigError, match="noise.levels"):
        make_basis("dwt", levels=0)


# --- schedules and derivatives ------------------------------------------------------------------------------
SCHEDULES = [LinearSchedule(discrete=False), CosineSchedule(discrete=False), RectifiedFlowSchedule()]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_alpha_bar_derivative_matches_finite_differences(schedule):
    t = torch.linspace(0.02, 0.98, 25, dtype=DOUBLE)
    h = 1e-6
    numeric = (schedule.continuous_alpha_bar(t + h) - schedule.continuous_alpha_bar(t - h)) / (2 * h)
    torch.testing.assert_close(schedule.alpha_bar_derivative(t), numeric, rtol=1e-6, atol=1e-9)


def _prepared(process, images):
    process.prepare(TrainingImages(images))
    return process


def _processes(images):
    schedule = CosineSchedule(discrete=False)
    return [
        GaussianProcess(LinearSchedule(discrete=False), "fft"),
        GaussianProcess(schedule, "dwt"),
        _prepared(EqualizedProcess(schedule, gamma=0.7), images),
        _prepared(EqualizedProcess(LinearSchedule(discrete=False), gamma=1.0, basis="dct"), images),
        _prepared(EqualizedProcess(schedule, gamma=1.0, logsnr_shift=2.5), images),
        BandedProcess(schedule, shifts=[1.0, -1.0, -2.5]),
        BandedProcess(schedule, basis="dwt", num_bands=3, shifts=[0.5, 0.0, -3.0]),
        FlowProcess(),
        _prepared(FlowProcess(gamma=1.0, basis="fft"), images),
    ]


def test_coefficient_derivatives_match_finite_differences(fields):
    like = torch.zeros(5, 1, 16, 16, dtype=DOUBLE)
    t = torch.tensor([0.05, 0.3, 0.5, 0.8, 0.97], dtype=DOUBLE)
    h = 1e-6
    for process in _processes(fields[:64]):
        d_alpha, d_sigma = process.coefficient_derivatives(t, like)
        (a_plus, s_plus), (a_minus, s_minus) = process.coefficients(t + h, like), process.coefficients(t - h, like)
        torch.testing.assert_close(torch.broadcast_to(d_alpha, like.shape),
                                   torch.broadcast_to((a_plus - a_minus) / (2 * h), like.shape),
                                   rtol=1e-5, atol=1e-7, msg=repr(process))
        torch.testing.assert_close(torch.broadcast_to(d_sigma, like.shape),
                                   torch.broadcast_to((s_plus - s_minus) / (2 * h), like.shape),
                                   rtol=1e-5, atol=1e-7, msg=repr(process))


def test_discrete_schedules_use_the_continuous_derivative():
    t = torch.tensor([0.25, 0.5], dtype=DOUBLE)
    like = torch.zeros(2, 1, 1, 1)
    for discrete, continuous in [(CosineSchedule(), CosineSchedule(discrete=False)),
                                 (LinearSchedule(), LinearSchedule(discrete=False))]:
        torch.testing.assert_close(GaussianProcess(discrete).coefficient_derivatives(t, like),
                                   GaussianProcess(continuous).coefficient_derivatives(t, like))
        # and that derivative is the slope of the discrete table to O(1/T)
        table = GaussianProcess(discrete).coefficients
        slope = (table(t + 0.01, like)[0] - table(t - 0.01, like)[0]) / 0.02
        torch.testing.assert_close(slope, GaussianProcess(discrete).coefficient_derivatives(t, like)[0], rtol=5e-3,
                                   atol=0)


@pytest.mark.parametrize("prediction", PREDICTIONS.values(), ids=repr)
def test_every_prediction_round_trips_for_every_process(prediction, fields):
    x0 = fields[:6]
    eps = torch.randn_like(x0)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.95], dtype=DOUBLE)
    for process in _processes(fields[:64]):
        x_t = process.q_sample(x0, t, eps)
        output = prediction.target(x0, eps, t, process)
        x0_hat, eps_hat = prediction.x0_eps(x_t, t, output, process)
        torch.testing.assert_close(x0_hat, x0, msg=repr(process))
        torch.testing.assert_close(eps_hat, eps, msg=repr(process))


def test_flow_velocity_is_the_time_derivative_of_x_t():
    process = GaussianProcess(CosineSchedule(discrete=False))
    x0, eps = torch.randn(3, 1, 4, 4, dtype=DOUBLE), torch.randn(3, 1, 4, 4, dtype=DOUBLE)
    t, h = torch.tensor([0.2, 0.5, 0.8], dtype=DOUBLE), 1e-6
    numeric = (process.q_sample(x0, t + h, eps) - process.q_sample(x0, t - h, eps)) / (2 * h)
    torch.testing.assert_close(FlowPrediction().target(x0, eps, t, process), numeric, rtol=1e-5, atol=1e-7)


# --- flow ---------------------------------------------------------------------------------------------------------
def test_flow_path_target_prior_and_times():
    process = FlowProcess(RectifiedFlowSchedule())
    x0, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(process.q_sample(x0, t, eps), (1 - t).view(-1, 1, 1, 1) * x0 + t.view(-1, 1, 1, 1) * eps)
    torch.testing.assert_close(FlowPrediction().target(x0, eps, t, process), eps - x0)
    # sampling starts at t = 1 where A = 0: x0 is still recoverable from v and flow outputs
    ones = torch.ones(4)
    for prediction in (FlowPrediction(), VPrediction(), X0Prediction()):
        out = prediction.target(x0, eps, ones, process)
        torch.testing.assert_close(prediction.x0_eps(eps, ones, out, process)[0], x0)
    torch.testing.assert_close(process.prior((4, 1, 8, 8), torch.Generator().manual_seed(3)),
                               torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(process.sampling_times(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    times = process.training_times(2000, torch.Generator().manual_seed(0))
    assert 0 < times.min() and times.max() <= 1 and abs(times.mean() - 0.5) < 0.02
    # a VP schedule maps its grid to flow times of equal SNR (cosine: Esser et al. 2024 "CosMap")
    cosine = FlowProcess(CosineSchedule(discrete=False)).sampling_times(4)
    u = torch.tensor([0.5])
    expected = 1 - 1 / (torch.tan(np.pi / 2 * (u + 0.008) / 1.008) + 1)
    assert cosine[0] == 1 and cosine[2] == pytest.approx(float(expected), abs=1e-4)


def test_flow_rejects_eps_prediction_and_bad_gamma():
    with pytest.raises(ConfigError, match="prediction=eps"):
        FlowProcess().check_prediction(EpsPrediction())
    assert FlowProcess().check_prediction(FlowPrediction()) == FlowPrediction()
    assert GaussianProcess(CosineSchedule()).check_prediction(EpsPrediction()) == EpsPrediction()
    with pytest.raises(ConfigError, match="prediction='score'"):
        GaussianProcess(CosineSchedule()).check_prediction("score")
    with pytest.raises(ConfigError, match="noise.basis"):
        FlowProcess(gamma=0.5, basis="identity")


def test_equalized_flow_colours_the_prior(fields):
    process = _prepared(FlowProcess(gamma=1.0, basis="fft"), fields)
    shape = (8, 1, 16, 16)
    prior = process.prior(shape, torch.Generator().manual_seed(1), dtype=DOUBLE)
    white = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
    torch.testing.assert_close(process.to_basis(prior), process.gain(white) * process.to_basis(white))


# --- equalized ---------------------------------------------------------------------------------------------------
def test_equalized_needs_prepare_and_validates():
    with pytest.raises(RuntimeError, match="prepare"):
        EqualizedProcess(CosineSchedule()).q_sample(torch.zeros(1, 1, 8, 8), torch.ones(1), torch.zeros(1, 1, 8, 8))
    for kwargs, key in [({"gamma": 1.5}, "noise.gamma"), ({"gamma": -0.1}, "noise.gamma"),
                        ({"basis": "dwt"}, "noise.basis"), ({"smoothing": -1}, "noise.smoothing"),
                        ({"w_min": 2.0}, "noise.w_min"), ({"w_max": 0.5}, "noise.w_max"),
                        ({"logsnr_shift": 14.0}, "noise.logsnr_shift"),
                        ({"logsnr_shift": float("nan")}, "noise.logsnr_shift")]:
        with pytest.raises(ConfigError, match=key):
            EqualizedProcess(CosineSchedule(), **kwargs)


@pytest.mark.parametrize("discrete", [True, False])
def test_equalized_logsnr_shift_adds_to_every_frequency_log_snr(discrete, fields):
    """log(A²/S²) of every coefficient is λ(t) + s − log w², λ = log(ᾱ/(1 − ᾱ)) of the schedule, while A² + S²/w²
    stays 1 (variance preserving in the whitened basis); shift 0 is the unshifted process bit for bit."""
    like = torch.zeros(4, 1, 16, 16, dtype=DOUBLE)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=DOUBLE)
    schedule = CosineSchedule(discrete=discrete)
    plain = _prepared(EqualizedProcess(schedule), fields)
    zero = _prepared(EqualizedProcess(schedule, logsnr_shift=0.0), fields)
    for a, b in zip(plain.coefficients(t, like), zero.coefficients(t, like)):
        assert torch.equal(a, b)
    shift = 3.0
    shifted = _prepared(EqualizedProcess(schedule, logsnr_shift=shift), fields)
    alpha, sigma = shifted.coefficients(t, like)
    w2 = shifted.gain(like).square()
    alpha_bar = schedule.alpha_bar(t).reshape(-1, 1, 1, 1)
    expected = torch.log(alpha_bar / (1 - alpha_bar)) + shift - torch.log(w2)
    torch.testing.assert_close(torch.log(alpha.square() / sigma.square()), torch.broadcast_to(expected, like.shape))
    torch.testing.assert_close(torch.broadcast_to(alpha.square() + sigma.square() / w2, like.shape),
                               torch.ones_like(like))
    # the prior still matches the forward marginal at t = 1: A_1² below 1e-3 for every coefficient
    assert float(shifted.coefficients(torch.ones(1, dtype=DOUBLE), like[:1])[0].square().max()) < 1e-3


def test_equalized_gamma_zero_is_gaussian(fields):
    equalized = _prepared(EqualizedProcess(CosineSchedule(), gamma=0.0), fields)
    gaussian = GaussianProcess(CosineSchedule())
    x0, eps = fields[:4].float(), torch.randn(4, 1, 16, 16)
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    torch.testing.assert_close(equalized.q_sample(x0, t, eps), gaussian.q_sample(x0, t, eps))
    torch.testing.assert_close(VPrediction().target(x0, eps, t, equalized), VPrediction().target(x0, eps, t, gaussian))
    torch.testing.assert_close(equalized.prior((4, 1, 16, 16), torch.Generator().manual_seed(0)),
                               gaussian.prior((4, 1, 16, 16), torch.Generator().manual_seed(0)))


def test_equalized_weights_options_change_w(fields):
    def gain(**kwargs):
        return _prepared(EqualizedProcess(CosineSchedule(), **kwargs), fields).gain(torch.zeros(1, 1, 16, 16,
                                                                                                 dtype=DOUBLE))
    default = gain()
    assert default.square().mean() == pytest.approx(1.0, abs=1e-9)
    assert default.min() >= 0.1 - 1e-12 and default.max() <= 10.0 + 1e-12
    assert not torch.allclose(default, gain(gamma=0.5))
    assert not torch.allclose(default, gain(smoothing=0))
    assert not torch.allclose(default, gain(w_min=0.3))
    assert not torch.allclose(default, gain(w_max=1.5))
    assert not torch.allclose(default, gain(basis="dct"))
    # DC of zero-mean fields carries no power: w is held at the floor there, not at 0
    assert default[0, 0] == pytest.approx(0.1)


@pytest.mark.parametrize("gamma, basis", [(1.0, "fft"), (0.5, "fft"), (1.0, "dct"), (0.5, "dct")])
def test_equalized_noise_has_the_target_power_spectrum(gamma, basis, fields):
    """The noise part S_t ε of x_t has power ∝ S_data(f)^γ: per coefficient in the process basis (rings of the
    basis frequency) and, for the FFT, in the radially averaged power spectrum itself."""
    process = _prepared(EqualizedProcess(CosineSchedule(), gamma=gamma, basis=basis, smoothing=0,
                                         w_min=1e-3, w_max=1e3), fields)
    eps = process.noise((4000, 1, 16, 16), torch.Generator().manual_seed(0), dtype=DOUBLE)
    noise_part = process.q_sample(torch.zeros_like(eps), torch.full((4000,), 0.5, dtype=DOUBLE), eps)
    ring = torch.round(process.basis.frequency(16, 16) * 16).long().flatten()

    def by_ring(values):
        return torch.zeros(int(ring.max()) + 1, dtype=DOUBLE).index_add_(0, ring, values.flatten())[1:]

    noise_variance = by_ring(process.to_basis(noise_part).var(0))
    data_variance = by_ring(process.to_basis(fields).var(0).pow(gamma))  # DC ring excluded: the fields have none
    ratio = noise_variance / data_variance
    tolerance = 0.05 if basis == "fft" else 0.15  # DCT variances of a stationary field only approximate S(f)
    assert (ratio / ratio.mean() - 1).abs().max() < tolerance, ratio / ratio.mean()
    if basis == "fft":
        ratio = radial_profile(noise_part)[1:] / radial_profile(fields)[1:] ** gamma
        assert (ratio / ratio.mean() - 1).abs().max() < 0.05, ratio / ratio.mean()


def test_equalized_gamma_one_makes_the_snr_flat(fields):
    """On random fields (known β = 2) the per-frequency SNR of x_t is flat at γ = 1, steep for gaussian."""
    t = torch.full((len(fields),), 0.5, dtype=DOUBLE)

    def snr_profile(process):
        a, _ = process.coefficients(t, process.to_basis(fields))
        signal = process.from_basis(a * process.to_basis(fields))
        noise = process.q_sample(torch.zeros_like(fields), t, process.noise(fields.shape, dtype=DOUBLE))
        return (radial_profile(signal) / radial_profile(noise))[1:]

    flat = snr_profile(_prepared(EqualizedProcess(CosineSchedule(), gamma=1.0, smoothing=0, w_min=1e-3,
                                                  w_max=1e3), fields))
    steep = snr_profile(GaussianProcess(CosineSchedule(), "fft"))
    assert flat.max() / flat.min() < 1.3, flat
    assert steep.max() / steep.min() > 50, steep


@pytest.mark.parametrize("size", [16, 32])
def test_equalized_defaults_make_the_snr_flat(size):
    """Issue 16: with the shipped defaults (smoothing 1, w_min 0.1, w_max 10) the per-frequency SNR over radial
    rings of β = 2 fields stays within max/min 1.3; the one-sided moving average it replaced gave 2.2."""
    fields = RandomFields(image_size=size, num_images=512, beta=2.0, seed=0).load().images.double()
    process = _prepared(EqualizedProcess(CosineSchedule()), fields)
    t = torch.full((len(fields),), 0.5, dtype=DOUBLE)
    a, _ = process.coefficients(t, process.to_basis(fields))
    signal = process.from_basis(a * process.to_basis(fields))
    noise = process.q_sample(torch.zeros_like(fields), t,
                             process.noise(fields.shape, torch.Generator().manual_seed(0), dtype=DOUBLE))
    snr = (radial_profile(signal) / radial_profile(noise))[1:]
    assert snr.max() / snr.min() < 1.3, snr / snr.mean()


@pytest.mark.parametrize("smoothing", [1, 3])
def test_equalized_smoothing_keeps_a_power_law_and_smooths_noise(smoothing):
    """The smoother is a local line in log-log over a centred window: an exact power law passes unchanged at
    every bin, ends included, and ragged noise on it is reduced."""
    log_power = -2.0 * torch.arange(1, 12, dtype=DOUBLE).log() + 0.3
    torch.testing.assert_close(smooth_log_profile(log_power, smoothing), log_power, rtol=0, atol=1e-12)
    ragged = log_power + 0.2 * torch.tensor([(-1.0) ** k for k in range(11)], dtype=DOUBLE)
    assert (smooth_log_profile(ragged, smoothing) - log_power)[1:-1].abs().max() < 0.2 * 0.7


# --- banded -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("basis", ["fft", "dct"])
def test_banded_single_band_is_gaussian(basis):
    banded = BandedProcess(CosineSchedule(), basis=basis, num_bands=1, shifts=[0.0])
    gaussian = GaussianProcess(CosineSchedule())
    # float64: x0 from ε at t = 1 divides by A = 5e-5, which would magnify float32 rounding of the FFT
    x0, eps = torch.randn(5, 2, 8, 8, dtype=DOUBLE), torch.randn(5, 2, 8, 8, dtype=DOUBLE)
    t = torch.tensor([0.0, 0.001, 0.3, 0.8, 1.0])
    torch.testing.assert_close(banded.q_sample(x0, t, eps), gaussian.q_sample(x0, t, eps))
    x0, eps, t = x0[1:], eps[1:], t[1:]  # the flow velocity is infinite at t = 0 (σ ∝ √t)
    x_t = gaussian.q_sample(x0, t, eps)
    for prediction in PREDICTIONS.values():
        torch.testing.assert_close(prediction.target(x0, eps, t, banded), prediction.target(x0, eps, t, gaussian))
        out = prediction.target(x0, eps, t, gaussian)
        for mine, reference in zip(prediction.x0_eps(x_t, t, out, banded),
                                   prediction.x0_eps(x_t, t, out, gaussian)):
            torch.testing.assert_close(mine, reference, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(banded.prior((3, 2, 8, 8), torch.Generator().manual_seed(0)),
                               gaussian.prior((3, 2, 8, 8), torch.Generator().manual_seed(0)))  # float32: 1e-6


@pytest.mark.parametrize("basis", ["fft", "dct", "dwt"])
def test_banded_endpoints_and_band_order(basis):
    process = BandedProcess(LinearSchedule(), basis=basis, num_bands=3, shifts=[0.0, -1.0, -2.0])
    like = torch.zeros(2, 1, 8, 8)
    a, s = process.coefficients(torch.tensor([0.0, 1.0]), like)
    a, s = torch.broadcast_to(a, like.shape), torch.broadcast_to(s, like.shape)
    assert (a[0] == 1).all() and (s[0] == 0).all()
    assert a[1].square().max() <= 1e-3 and (a[1].square() + s[1].square() - 1).abs().max() < 1e-6
    band = process.band_of_coefficients(8, 8)
    a_mid, s_mid = process.coefficients(torch.tensor([0.4]), like[:1])
    snr = torch.broadcast_to(a_mid.square() / s_mid.square(), (1, 1, 8, 8))[0, 0].double()
    alpha_bar = LinearSchedule().alpha_bar(torch.tensor(0.4))
    for b, shift in enumerate([0.0, -1.0, -2.0]):  # SNR_b = e^{shift_b} · ᾱ/(1 − ᾱ)
        torch.testing.assert_close(snr[band == b], torch.full_like(snr[band == b],
                                   float(np.exp(shift) * alpha_bar / (1 - alpha_bar))), rtol=1e-5, atol=0)


def test_banded_bands_follow_edges_and_wavelet_levels():
    fft = BandedProcess(CosineSchedule(), num_bands=2, edges=[0.2], shifts=[0.0, -1.0])
    assert ((fft.band_of_coefficients(8, 8) == 1) == (FFTBasis().frequency(8, 8) >= 0.2)).all()
    other = BandedProcess(CosineSchedule(), num_bands=2, edges=[0.4], shifts=[0.0, -1.0])
    assert not torch.equal(fft.band_of_coefficients(8, 8), other.band_of_coefficients(8, 8))
    dwt = BandedProcess(CosineSchedule(), basis="dwt", num_bands=3, shifts=[0.0, -1.0, -2.0])
    assert torch.equal(dwt.band_of_coefficients(8, 8), DWTBasis("haar", 2).level(8, 8))
    db2 = BandedProcess(CosineSchedule(), basis="dwt", num_bands=3, shifts=[0.0, -1.0, -2.0], wavelet="db2")
    x0, eps, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([0.5, 0.5])
    assert not torch.allclose(dwt.q_sample(x0, t, eps), db2.q_sample(x0, t, eps))


def test_banded_bad_input():
    cases = [
        ({"num_bands": 3, "edges": [0.3, 0.1]}, "noise.edges"),
        ({"num_bands": 3, "edges": [0.1]}, "noise.edges"),
        ({"num_bands": 0, "shifts": []}, "noise.num_bands"),
        ({"shifts": [0.0, -1.0]}, "noise.shifts"),
        ({"shifts": [0.0, 0.0, 14.0]}, "noise.shifts"),  # cosine ᾱ(1) = 2.4e-9: e^14 ᾱ(1) > 1e-3
        ({"basis": "identity"}, "noise.basis"),
        ({"basis": "dwt", "edges": [0.1, 0.2]}, "noise.edges"),
        ({"basis": "dwt", "num_bands": 1, "shifts": [0.0]}, "noise.num_bands"),
    ]
    for kwargs, key in cases:
        with pytest.raises(ConfigError, match=key):
            BandedProcess(CosineSchedule(), **kwargs)
    with pytest.raises(ConfigError, match="noise.levels"):  # 3 wavelet levels need sides divisible by 8
        process = BandedProcess(CosineSchedule(), basis="dwt", num_bands=4, shifts=[0, 0, 0, 0])
        process.prepare(TrainingImages(torch.zeros(1, 1, 12, 12)))


# --- configs and wiring ---------------------------------------------------------------------------------------
def test_noise_option_changes_training_noise_and_prior(tmp_path, cache_dir):
    spectra = {}
    for option in ("gaussian", "equalized"):
        module = build(compose_train(["debug=default", f"noise={option}"], tmp_path, cache_dir)).module
        process = module.process
        generator = torch.Generator().manual_seed(0)
        eps = process.noise((2000, 1, 8, 8), generator)
        t = torch.full((2000,), 0.5)
        training_noise = process.q_sample(torch.zeros_like(eps), t, eps)
        prior = process.prior((2000, 1, 8, 8), torch.Generator().manual_seed(0))
        spectra[option] = radial_profile(training_noise), radial_profile(prior)
    white_noise, white_prior = spectra["gaussian"]
    coloured_noise, coloured_prior = spectra["equalized"]
    assert (white_prior / white_prior.mean() - 1).abs().max() < 0.1  # N(0, I)
    assert (white_noise / white_noise.mean() - 1).abs().max() < 0.1  # σ_t ε, white
    # digits carry most power at low |f|: equalized noise does too, in training and in the prior alike
    assert coloured_noise[1] / coloured_noise[-1] > 5 and coloured_prior[1] / coloured_prior[-1] > 5
    torch.testing.assert_close(coloured_prior / coloured_prior.sum(), coloured_noise / coloured_noise.sum(),
                               rtol=0.1, atol=0.0)


def test_flow_config_sets_the_velocity_target(tmp_path, cache_dir):
    cfg = compose_train(["debug=default", "noise=flow", "loss=lp"], tmp_path, cache_dir)
    assert cfg.prediction._target_.endswith("FlowPrediction")
    module = build(cfg).module
    assert isinstance(module.process, FlowProcess) and module.prediction == FlowPrediction()
    with pytest.raises(ConfigError, match="prediction=eps"):
        build(compose_train(["debug=default", "noise=flow", "prediction=eps"], tmp_path, cache_dir))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], "VPrediction"),
        (["noise=flow"], "FlowPrediction"),
        # the command line wins over the `override /prediction: flow` of noise/flow.yaml, in either order
        (["noise=flow", "prediction=x0"], "X0Prediction"),
        (["prediction=v", "noise=flow"], "VPrediction"),
        (["loss=lp_ffl_kendall"], "X0Prediction"),  # the lp_ffl_kendall recipe is x0-prediction
        (["noise=equalized"], "X0Prediction"),  # equalized noise trains far better on x0 than on v (README)
        (["noise=equalized", "prediction=v"], "VPrediction"),
        (["noise=equalized", "noise/schedule=linear"], "X0Prediction"),
        (["loss=lp_ffl_kendall", "prediction=eps"], "EpsPrediction"),
        (["experiment=mnist_eps_linear"], "EpsPrediction"),
        (["experiment=mnist_eps_linear", "noise=flow"], "EpsPrediction"),  # an experiment is composed last
        (["experiment=mnist_eps_linear", "prediction=x0"], "X0Prediction"),
    ],
)
def test_which_prediction_a_composition_selects(overrides, expected, tmp_path, cache_dir):
    cfg = compose_train(overrides, tmp_path, cache_dir)
    assert cfg.prediction._target_ == f"spectral_diffusion.diffusion.{expected}"


def test_unknown_prediction_is_refused_with_the_choices(tmp_path, cache_dir):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=r"(?s)prediction/score.*eps.*flow.*v.*x0"):
        compose_train(["prediction=score"], tmp_path, cache_dir)


def test_datamodule_power_spectrum_is_cached(tmp_path, cache_dir):
    datamodule = build(compose_train(["debug=default"], tmp_path, cache_dir)).datamodule
    first = datamodule.power_spectrum()
    assert datamodule.power_spectrum() is first
    assert datamodule.radial_power_spectrum() is datamodule.radial_power_spectrum()
    torch.testing.assert_close(first, data_power_spectrum(datamodule.train_images), rtol=0, atol=0)


def _checksums(weights: torch.Tensor) -> tuple[float, float, float]:
    index = torch.arange(weights.numel(), dtype=DOUBLE).reshape(weights.shape)
    return float((weights.double() * index).sum()), float(weights.min()), float(weights.max())


@pytest.mark.parametrize(
    "overrides, noise_gain, loss_weights",
    [
        # golden values written by the code before S_data was shared (commit 509bca5), same config; the noise
        # gains rewritten when issue 16 replaced the one-sided moving average by ``smooth_log_profile``
        (["noise=equalized", "loss=frequency_balanced"],
         (1371.205348009644, 0.18777645561351988, 3.7568362079035524),
         (1400.7491162493825, 0.014311001636087894, 8.24246597290039)),
        (["noise=flow", "noise.gamma=0.5", "noise.basis=dct", "loss=frequency_balanced", "loss.gamma=0.5"],
         (1626.8695299510844, 0.5376786968802665, 2.084402972109648),
         (1342.0604950785637, 0.13791057467460632, 4.680649280548096)),
    ],
)
def test_data_spectrum_is_estimated_once_for_noise_and_loss(overrides, noise_gain, loss_weights, tmp_path,
                                                             cache_dir, monkeypatch):
    """`noise=equalized loss=frequency_balanced` reads one cached S_data estimate; w(f) and the loss weights are
    those of the earlier code, which estimated S_data once for each."""
    import spectral_diffusion.data.datamodule as datamodule_module
    import spectral_diffusion.spectral.frequency as frequency_module

    estimate, calls = frequency_module.radial_power_spectrum, []

    def counting(*args, **kwargs):
        calls.append(1)
        return estimate(*args, **kwargs)

    monkeypatch.setattr(frequency_module, "radial_power_spectrum", counting)
    monkeypatch.setattr(datamodule_module, "radial_power_spectrum", counting)
    module = build(compose_train(["debug=default"] + overrides, tmp_path, cache_dir)).module
    assert len(calls) == 1
    assert _checksums(module.process.gain.weights) == pytest.approx(noise_gain, rel=1e-12)
    frequency_weights = module.loss_fn.terms["frequency_balanced"].frequency_weights(8, 8)
    assert _checksums(frequency_weights) == pytest.approx(loss_weights, rel=1e-6)
