"""Losses, objectives and their spectral helpers, checked against references written here from the papers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from spectral_diffusion.diffusion import (
    EpsPrediction,
    FlowPrediction,
    FlowProcess,
    GaussianProcess,
    VPrediction,
    X0Prediction,
)
from spectral_diffusion.diffusion.predictions import per_sample_alpha_sigma, per_sample_flow_determinant
from spectral_diffusion.diffusion.schedules import CosineSchedule
from spectral_diffusion.losses import (
    DiffusionLoss,
    FocalFrequencyError,
    FrequencyBalancedError,
    FrequencyBalancedLoss,
    LossContext,
    LpError,
    LpLoss,
    MSELoss,
    PhaseError,
    SquaredError,
    min_snr_weight,
)
from spectral_diffusion.pipeline import build, train
from spectral_diffusion.spectral import (
    data_power_spectrum,
    hermitian_multiplicity,
    radial_frequency,
    radial_power_spectrum,
)
from spectral_diffusion.utils.validation import ConfigError

from .conftest import compose_train
from .test_configs import options
from .test_processes import TrainingImages


def batch(seed=0, shape=(4, 2, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def fixed_context(seed=0, shape=(6, 1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    process = GaussianProcess(CosineSchedule())
    x0 = torch.rand(shape, generator=g) * 2 - 1
    eps = torch.randn(shape, generator=g)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95])[: shape[0]]
    x_t = process.q_sample(x0, t, eps)
    return process, x0, eps, t, x_t


# --- spectral helpers --------------------------------------------------------------------------------
@pytest.mark.parametrize("height, width", [(8, 8), (6, 9), (7, 4)])
def test_radial_frequency_matches_numpy_fftfreq(height, width):
    fy, fx = np.fft.fftfreq(height), np.fft.rfftfreq(width)
    expected = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    np.testing.assert_allclose(radial_frequency(height, width).numpy(), expected)
    full = np.sqrt(fy[:, None] ** 2 + np.fft.fftfreq(width)[None, :] ** 2)
    np.testing.assert_allclose(radial_frequency(height, width, onesided=False).numpy(), full)


@pytest.mark.parametrize("width", [8, 9])
def test_hermitian_multiplicity_gives_parseval(width):
    x = torch.randn(3, 1, 6, width, dtype=torch.float64)
    spectrum = torch.fft.rfft2(x, norm="ortho")
    energy = (hermitian_multiplicity(6, width) * spectrum.abs().square()).sum(dim=(-2, -1))
    torch.testing.assert_close(energy, x.square().sum(dim=(-2, -1)))


def numpy_radial_spectrum(images: np.ndarray):
    """Reference: full fft2 grid, mean power per integer radius bin round(|f|·N)."""
    n, c, h, w = images.shape
    power = (np.abs(np.fft.fft2(images, norm="ortho")) ** 2).mean(axis=(0, 1))
    radius = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    bins = np.round(radius * max(h, w)).astype(int)
    return {b: power[bins == b].mean() for b in np.unique(bins)}, bins


def test_radial_power_spectrum_matches_numpy_reference_in_float64():
    images = torch.rand(20, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    frequencies, power = radial_power_spectrum(images, batch_size=7)
    assert power.dtype == torch.float64
    reference, _ = numpy_radial_spectrum(images.double().numpy())
    np.testing.assert_allclose(frequencies.numpy() * 8, sorted(reference))
    np.testing.assert_allclose(power.numpy(), [reference[b] for b in sorted(reference)], rtol=1e-10)


def test_radial_power_spectrum_of_white_noise_is_flat_and_of_a_cosine_peaks_at_its_frequency():
    _, power = radial_power_spectrum(torch.randn(4000, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(power.numpy(), 1.0, rtol=0.05)
    x = torch.arange(16, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * 3 * x / 16)[None, None, None, :].expand(1, 1, 16, 16)
    frequencies, power = radial_power_spectrum(wave)
    assert frequencies[power.argmax()].item() == pytest.approx(3 / 16)


def test_data_power_spectrum_is_radial_on_the_rfft_grid():
    images = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    spectrum = data_power_spectrum(images)
    reference, bins = numpy_radial_spectrum(images.double().numpy())
    full = np.vectorize(reference.get)(bins)[:, : 8 // 2 + 1]
    np.testing.assert_allclose(spectrum.numpy(), full, rtol=1e-10)
    assert spectrum.shape == (8, 5) and (spectrum > 0).all()


# --- pixel terms -----------------------------------------------------------------------------------
def test_lp_error_matches_numpy_and_p2_is_mse():
    a, b = batch()
    expected = (np.abs(a.numpy() - b.numpy()) ** 1.5).reshape(4, -1).mean(1)
    np.testing.assert_allclose(LpError(1.5)(a, b).numpy(), expected, rtol=1e-5)
    torch.testing.assert_close(LpError(2.0)(a, b), SquaredError()(a, b))
    torch.testing.assert_close(MSELoss()(a, b), ((a - b) ** 2).flatten(1).mean(1))


# --- frequency balanced ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 2, 8, 8), (3, 1, 6, 9)])
def test_frequency_balanced_at_gamma_zero_is_mse_exactly(shape):
    a, b = batch(shape=shape)
    torch.testing.assert_close(FrequencyBalancedError(0.0)(a, b), SquaredError()(a, b), rtol=1e-6, atol=1e-7)
    loss = FrequencyBalancedLoss(gamma=0.0)
    torch.testing.assert_close(loss(a, b), MSELoss()(a, b), rtol=1e-6, atol=1e-7)


def test_frequency_balanced_matches_full_grid_reference():
    images = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    a, b = batch(shape=(4, 1, 8, 8))
    term = FrequencyBalancedError(gamma=0.7)
    term.prepare(TrainingImages(images))
    reference_power, bins = numpy_radial_spectrum(images.double().numpy())
    weights = np.vectorize(reference_power.get)(bins) ** -0.7
    weights /= weights.mean()  # mean 1 over the full FFT grid
    difference = np.fft.fft2((a - b).double().numpy(), norm="ortho")
    expected = (weights * np.abs(difference) ** 2).reshape(4, -1).mean(1)
    np.testing.assert_allclose(term(a, b).numpy(), expected, rtol=1e-5)
    # a non-zero γ reweights frequencies, so the value moves away from the pixel mse
    assert not np.allclose(term(a, b).numpy(), SquaredError()(a, b).numpy())


# --- focal frequency loss ------------------------------------------------------------------------------
def reference_ffl(pred, target, alpha=1.0, patch_factor=1, ave_spectrum=False, log_matrix=False, batch_matrix=False):
    """Jiang et al. 2021, written from the paper with numpy and explicit patch loops (scalar mean)."""
    pred, target = pred.detach().double().numpy(), target.detach().double().numpy()
    n, c, h, w = pred.shape
    ph, pw = h // patch_factor, w // patch_factor
    def spectra(x):
        patches = [x[:, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw]
                   for i in range(patch_factor) for j in range(patch_factor)]
        return np.fft.fft2(np.stack(patches, axis=1), norm="ortho")
    fp, ft = spectra(pred), spectra(target)
    if ave_spectrum:
        fp, ft = fp.mean(0, keepdims=True), ft.mean(0, keepdims=True)
    distance = np.abs(fp - ft) ** 2
    weight = np.sqrt(distance) ** alpha
    if log_matrix:
        weight = np.log(weight + 1.0)
    if batch_matrix:
        weight = weight / weight.max()
    else:
        weight = weight / weight.max(axis=(-2, -1), keepdims=True)
    weight = np.clip(np.nan_to_num(weight), 0, 1)
    return float((weight * distance).mean())


FFL_OPTIONS = [
    {},
    {"alpha": 2.0},
    {"patch_factor": 2},
    {"patch_factor": 4, "ave_spectrum": True},
    {"log_matrix": True},
    {"batch_matrix": True},
    {"alpha": 0.5, "patch_factor": 2, "log_matrix": True, "batch_matrix": True},
]


@pytest.mark.parametrize("kwargs", FFL_OPTIONS)
def test_ffl_matches_paper_reference(kwargs):
    a, b = batch(shape=(3, 2, 8, 8))
    value = FocalFrequencyError(**kwargs)(a, b)
    assert value.shape == (3,)
    assert value.mean().item() == pytest.approx(reference_ffl(a, b, **kwargs), rel=1e-5)


@pytest.mark.parametrize("kwargs", FFL_OPTIONS)
def test_ffl_matches_official_package(kwargs):
    official = pytest.importorskip("focal_frequency_loss")
    a, b = batch(shape=(3, 2, 8, 8))
    expected = official.FocalFrequencyLoss(loss_weight=1.0, **kwargs)(a, b)
    assert FocalFrequencyError(**kwargs)(a, b).mean().item() == pytest.approx(expected.item(), rel=1e-5)


def test_ffl_at_alpha_zero_is_mse_and_focal_weight_is_not_backpropagated():
    a, b = batch(shape=(3, 1, 8, 8))
    torch.testing.assert_close(FocalFrequencyError(alpha=0.0)(a, b), SquaredError()(a, b), rtol=1e-5, atol=1e-6)

    estimate = a.clone().requires_grad_(True)
    FocalFrequencyError(alpha=1.0)(estimate, b).sum().backward()
    spectrum_difference = torch.fft.fft2(a - b, norm="ortho")
    weight = spectrum_difference.abs() / spectrum_difference.abs().amax(dim=(-2, -1), keepdim=True)
    detached = a.clone().requires_grad_(True)
    (weight * torch.fft.fft2(detached - b, norm="ortho").abs().square()).flatten(1).mean(1).sum().backward()
    torch.testing.assert_close(estimate.grad, detached.grad, rtol=1e-4, atol=1e-6)
    attached = a.clone().requires_grad_(True)
    d = torch.fft.fft2(attached - b, norm="ortho").abs()
    ((d / d.detach().amax(dim=(-2, -1), keepdim=True)) * d.square()).flatten(1).mean(1).sum().backward()
    assert not torch.allclose(estimate.grad, attached.grad, rtol=1e-3)


# --- phase ------------------------------------------------------------------------------------------
def reference_phase(estimate, reference):
    fe, fr = np.fft.fft2(estimate.double().numpy(), norm="ortho"), np.fft.fft2(reference.double().numpy(), norm="ortho")
    weight = np.abs(fr)
    error = weight * (1 - np.cos(np.angle(fe) - np.angle(fr)))
    return error.reshape(len(fe), -1).sum(1) / weight.reshape(len(fe), -1).sum(1)


def test_phase_error_known_values_and_reference():
    a, b = batch(shape=(4, 1, 8, 8))
    phase = PhaseError()
    np.testing.assert_allclose(phase(a, b).numpy(), reference_phase(a, b), rtol=1e-4)
    assert phase(b, b).abs().max().item() < 1e-6                  # equal spectra
    assert phase(3.0 * b, b).abs().max().item() < 1e-6            # same phases, other magnitudes
    np.testing.assert_allclose(phase(-b, b).numpy(), 2.0, rtol=1e-5)  # every phase off by π
    torch.testing.assert_close(phase(a, 5.0 * b), phase(a, b))    # target scaled by a constant: same
    # ... but reweighting the target's magnitudes per frequency (same phases) changes it: |X| weights
    spectrum = torch.fft.rfft2(b, norm="ortho")
    tilt = 1.0 + 4.0 * radial_frequency(8, 8).float()
    reweighted = torch.fft.irfft2(spectrum * tilt, s=(8, 8), norm="ortho")
    assert not torch.allclose(phase(a, reweighted), phase(a, b), rtol=1e-3)


# --- min-SNR-γ --------------------------------------------------------------------------------------
def test_min_snr_weight_is_the_same_effective_weighting_for_every_prediction():
    process, x0, eps, t, x_t = fixed_context()
    x0_hat = x0 + 0.3 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    eps_hat = process.eps_from_x0(x_t, t, x0_hat)
    alpha, sigma = process.coefficients(t, x0)
    outputs = {X0Prediction(): x0_hat, EpsPrediction(): eps_hat, VPrediction(): alpha * eps_hat - sigma * x0_hat}
    gamma = 5.0
    snr = (alpha.square() / sigma.square()).flatten().double()
    expected = torch.clamp(snr, max=gamma) * (x0_hat - x0).square().flatten(1).mean(1).double()
    loss = MSELoss(min_snr_gamma=gamma)
    for prediction, output in outputs.items():
        context = LossContext(x0=x0, x_t=x_t, t=t, process=process, prediction=prediction)
        target = prediction.target(x0, eps, t, process)
        torch.testing.assert_close(loss(output, target, context).double(), expected, rtol=1e-4, atol=1e-6)
    # the paper's closed forms for VP: ε: min(SNR, γ)/SNR, v: min(SNR, γ)/(SNR + 1)
    torch.testing.assert_close(min_snr_weight(EpsPrediction(), t, x0, process, gamma),
                               torch.clamp(snr, max=gamma) / snr)
    torch.testing.assert_close(min_snr_weight(VPrediction(), t, x0, process, gamma),
                               torch.clamp(snr, max=gamma) / (snr + 1))
    assert (snr > gamma).any() and (snr < gamma).any()


def test_flow_velocity_error_scale():
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    alpha, sigma = (1 - t)[:, None], t[:, None]  # rectified-flow path
    x0, eps, x0_hat = (torch.randn(3, 1, 4, 4, dtype=torch.float64) for _ in range(3))
    x_t = (alpha * x0.flatten(1) + sigma * eps.flatten(1)).reshape(x0.shape)
    u, u_hat = eps - x0, (x_t - alpha[..., None, None] * x0_hat) / sigma[..., None, None] - x0_hat
    ratio = (u_hat - u).square().flatten(1).sum(1) / (x0_hat - x0).square().flatten(1).sum(1)
    scale = FlowPrediction().x0_error_scale(t, x0, FlowProcess())
    torch.testing.assert_close(ratio, scale)
    torch.testing.assert_close(scale, 1 / t.square())  # d = A S' − S A' = 1 on the flow path


# --- Kendall weighting ------------------------------------------------------------------------------
def test_kendall_combined_loss_matches_formula_and_log_variances_learn():
    process, x0, eps, t, x_t = fixed_context()
    loss = DiffusionLoss({"lp": LpError(1.5), "ffl": FocalFrequencyError()}, {"lp": 0.5, "ffl": 0.25},
                         weighting="kendall")
    with torch.no_grad():
        loss.kendall.log_variances["lp"].fill_(0.3)
        loss.kendall.log_variances["ffl"].fill_(-0.4)
    output = (x0 + 0.2 * eps).requires_grad_(True)
    value = loss(output, x0, LossContext(x0=x0, x_t=x_t, t=t, process=process, prediction=X0Prediction()))
    lp, ffl = LpError(1.5)(output, x0), FocalFrequencyError()(output, x0)
    expected = 0.5 * math.exp(-0.3) * lp + 0.5 * 0.3 + 0.5 * math.exp(0.4) * ffl + 0.5 * -0.4
    torch.testing.assert_close(value, expected)
    value.mean().backward()
    grads = {name: p.grad for name, p in loss.kendall.log_variances.items()}
    # d/ds (½e^{−s}L + ½s) = ½ − ½e^{−s}L
    torch.testing.assert_close(grads["lp"], 0.5 - 0.5 * math.exp(-0.3) * lp.mean().detach())
    assert output.grad is not None and all(g.abs() > 0 for g in grads.values())
    assert set(loss.last_values) >= {"lp", "ffl", "weight_lp", "log_variance_ffl"}


def test_kendall_initial_weights_equal_fixed_weights():
    kendall = DiffusionLoss({"mse": SquaredError()}, {"mse": 0.25}, weighting="kendall")
    assert kendall.kendall.effective_weights()["mse"].item() == pytest.approx(0.25)


def test_module_optimizes_kendall_log_variances(tmp_path, cache_dir):
    cfg = compose_train(["debug=default", "loss=lp_ffl_kendall", "optimizer=adam"], tmp_path, cache_dir)
    components = build(cfg)
    module = components.module
    optimizer = module.configure_optimizers()["optimizer"]
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[1]["weight_decay"] == 0.0
    before = {k: v.detach().clone() for k, v in module.loss_weights.log_variances.items()}
    batch_ = next(iter(components.datamodule.train_dataloader()))
    module._common_step(batch_).backward()
    optimizer.step()
    assert all(not torch.equal(before[k], v) for k, v in module.loss_weights.log_variances.items())
    assert any(key.startswith("loss_weights.log_variances") for key in module.state_dict())


# --- self-conditioning ------------------------------------------------------------------------------
class RecordingNet(torch.nn.Module):
    def __init__(self, channels=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.inputs = []

    def forward(self, x, noise_level):
        self.inputs.append(x.detach().clone())
        return self.conv(x)


def make_module(self_conditioning, prediction=X0Prediction()):
    from spectral_diffusion.diffusion.samplers import ddim
    from spectral_diffusion.module import DiffusionModule

    net = RecordingNet() if self_conditioning else torch.nn.Conv2d(1, 1, 3, padding=1)
    return DiffusionModule(net, GaussianProcess(CosineSchedule()), MSELoss(), torch.optim.Adam,
                           lambda *a, **k: ddim(*a, steps=3, **k), (1, 8, 8), prediction=prediction,
                           self_conditioning=self_conditioning)


def test_module_takes_only_a_diffusion_loss_and_a_prediction_object():
    from spectral_diffusion.diffusion.samplers import ddim
    from spectral_diffusion.module import DiffusionModule

    def build_module(loss, prediction):
        return DiffusionModule(torch.nn.Conv2d(1, 1, 3, padding=1), GaussianProcess(CosineSchedule()), loss,
                               torch.optim.Adam, ddim, (1, 8, 8), prediction=prediction)

    with pytest.raises(ConfigError, match="loss=.*not a DiffusionLoss"):
        build_module(lambda output, target: (output - target).square().mean(), VPrediction())
    with pytest.raises(ConfigError, match="prediction='v'.*eps, x0, v, flow"):
        build_module(MSELoss(), "v")
    assert build_module(MSELoss(), EpsPrediction()).prediction == EpsPrediction()


def test_self_conditioning_feeds_a_first_estimate_to_the_second_forward():
    torch.manual_seed(0)
    module = make_module(1.0, prediction=VPrediction())
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    module.train()
    module._common_step(x0, torch.Generator().manual_seed(0))
    first, second = module.model.inputs
    assert first.shape[1] == 2 and first[:, 1:].abs().max() == 0           # zeros: no estimate yet
    assert torch.equal(first[:, :1], second[:, :1])                        # same x_t
    x_t, t = first[:, :1], module.process.training_times(4, torch.Generator().manual_seed(0))
    expected = VPrediction().x0_eps(x_t, t, module.model.conv(first), module.process)[0].clamp(-1, 1)
    torch.testing.assert_close(second[:, 1:], expected)


def test_self_conditioning_probability_and_sampling_feed():
    module = make_module(0.5)
    module.train()
    calls = []
    for seed in range(20):
        module.model.inputs.clear()
        module._common_step(torch.zeros(2, 1, 8, 8), torch.Generator().manual_seed(seed))
        calls.append(len(module.model.inputs))
    assert set(calls) == {1, 2}  # some steps self-condition, some do not
    module.model.inputs.clear()
    module.generate(2, batch_size=2)
    inputs = module.ema.module.inputs
    assert inputs[0][:, 1:].abs().max() == 0 and inputs[1][:, 1:].abs().max() > 0
    plain = make_module(0.0)
    assert plain.model(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_pipeline_doubles_input_channels_for_self_conditioning(tmp_path, cache_dir):
    cfg = compose_train(["debug=default", "self_conditioning=0.7"], tmp_path, cache_dir)
    module = build(cfg).module
    assert module.self_conditioning == 0.7
    assert module.model.in_channels == 2 and module.model.out_channels == 1
    assert module.generate(2, batch_size=2).shape == (2, 1, 8, 8)


# --- every option changes the loss ------------------------------------------------------------------
def test_every_knob_changes_the_loss_on_a_fixed_batch():
    process, x0, eps, t, x_t = fixed_context()
    context = LossContext(x0=x0, x_t=x_t, t=t, process=process, prediction=VPrediction())
    output = x0 + 0.3 * eps[torch.randperm(len(eps), generator=torch.Generator().manual_seed(1))]
    images = TrainingImages(torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1)

    def value(loss, prediction=VPrediction()):
        loss.prepare(images)
        fresh = LossContext(x0=x0, x_t=x_t, t=t, process=process, prediction=prediction)
        return loss(output, prediction.target(x0, eps, t, process), fresh).mean().item()

    def combined(**kwargs):
        terms = kwargs.pop("terms", {"mse": SquaredError(), "ffl": FocalFrequencyError()})
        weights = kwargs.pop("weights", {name: 1.0 for name in terms})
        return DiffusionLoss(terms, weights, **kwargs)

    base = value(combined())
    assert value(combined(), X0Prediction()) != pytest.approx(base, rel=1e-4)  # the module's prediction type
    variants = {
        "min_snr_gamma": combined(min_snr_gamma=1.0),
        "frequency_min_snr": combined(frequency_min_snr=1.0),
        "weights": combined(weights={"mse": 1.0, "ffl": 0.5}),
        "kendall": combined(weighting="kendall"),
        "alpha": combined(terms={"mse": SquaredError(), "ffl": FocalFrequencyError(alpha=2.0)}),
        "patch_factor": combined(terms={"mse": SquaredError(), "ffl": FocalFrequencyError(patch_factor=2)}),
        "ave_spectrum": combined(terms={"mse": SquaredError(), "ffl": FocalFrequencyError(ave_spectrum=True)}),
        "log_matrix": combined(terms={"mse": SquaredError(), "ffl": FocalFrequencyError(log_matrix=True)}),
        "batch_matrix": combined(terms={"mse": SquaredError(), "ffl": FocalFrequencyError(batch_matrix=True)}),
        "phase": combined(terms={"mse": SquaredError(), "phase": PhaseError()}),
    }
    for name, loss in variants.items():
        assert value(loss) != pytest.approx(base, rel=1e-4), name
    assert value(LpLoss(p=1.5)) != pytest.approx(value(LpLoss(p=2.5)), rel=1e-4)
    assert value(FrequencyBalancedLoss(gamma=1.0)) != pytest.approx(value(FrequencyBalancedLoss(gamma=0.5)), rel=1e-4)
    assert context.x0_estimate(output) is context.x0_estimate(output)


def test_every_loss_config_gives_a_distinct_finite_loss(tmp_path, cache_dir):
    values = {}
    for option in options("loss"):
        for prediction in ("eps", "x0", "v"):
            cfg = compose_train(["debug=default", f"loss={option}", f"prediction={prediction}"], tmp_path, cache_dir)
            loss, predict = instantiate(cfg.loss), instantiate(cfg.prediction)
            process, x0, eps, t, x_t = fixed_context()
            loss.prepare(TrainingImages(torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1))
            target = predict.target(x0, eps, t, process)
            output = target + 0.2 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(6))
            value = loss(output, target, LossContext(x0, x_t, t, process, predict)).mean()
            assert torch.isfinite(value), (option, prediction)
            if prediction == "v":
                values[option] = round(value.item(), 6)
    assert len(set(values.values())) == len(values), values


def test_pipeline_estimates_the_data_spectrum_once(tmp_path, cache_dir):
    cfg = compose_train(["debug=default", "loss=frequency_balanced"], tmp_path, cache_dir)
    components = build(cfg)
    term = components.module.loss_fn.terms["frequency_balanced"]
    torch.testing.assert_close(term.spectrum, data_power_spectrum(components.datamodule.train_images))


# --- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, key",
    [
        (["loss=lp", "loss.p=0"], "loss.p"),
        (["loss=lp", "loss.p=-1.5"], "loss.p"),
        (["loss=ffl", "loss.weights.ffl=-1"], "loss.weights.ffl"),
        (["loss=lp_ffl_kendall", "loss.weights.lp=0"], "loss.weights.lp"),
        (["loss=ffl", "~prediction"], "prediction"),
        (["loss=ffl", "loss.terms.ffl.patch_factor=3"], "ffl.patch_factor"),
        (["loss=ffl", "loss.weighting=uncertainty"], "loss.weighting"),
        (["loss=frequency_balanced", "loss.gamma=-1"], "loss.gamma"),
        (["loss.min_snr_gamma=0"], "loss.min_snr_gamma"),
        (["self_conditioning=1.5"], "self_conditioning"),
        (["self_conditioning=-0.5"], "self_conditioning"),
        (["loss=phase", "loss.frequency_min_snr=-1"], "loss.frequency_min_snr"),
    ],
)
def test_bad_loss_config_fails_before_training(overrides, key, tmp_path, cache_dir):
    cfg = compose_train(["debug=default"] + overrides, tmp_path, cache_dir)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_weights_must_name_the_terms():
    with pytest.raises(ConfigError, match="loss.weights"):
        DiffusionLoss({"mse": SquaredError()}, {"mse": 1.0, "ffl": 1.0})


# --- optimizer ------------------------------------------------------------------------------------
def test_adaptive_optimizer_needs_no_learning_rate(tmp_path, cache_dir):
    cfg = compose_train(["debug=default", "optimizer=adaptive"], tmp_path, cache_dir)
    torch.manual_seed(0)
    target = torch.randn(20)
    weights = torch.nn.Parameter(torch.zeros(20))
    optimizer = instantiate(cfg.optimizer)([weights])
    start = (weights - target).square().sum().item()
    for _ in range(200):
        optimizer.zero_grad()
        (weights - target).square().sum().backward()
        optimizer.step()
    assert (weights - target).square().sum().item() < 0.05 * start


def test_flow_velocity_error_scale_on_a_vp_path_uses_the_process_derivatives():
    """Under a VP process the velocity u = A' x0 + S' ε; its error is d/σ times the x0 error, d = A S' − S A'."""
    process, flow = GaussianProcess(CosineSchedule()), FlowPrediction()
    t = torch.tensor([0.2, 0.5, 0.9])
    x0, eps, x0_hat = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    x_t = process.q_sample(x0, t, eps)
    u = flow.target(x0, eps, t, process)
    u_hat = flow.target(x0_hat, process.eps_from_x0(x_t, t, x0_hat), t, process)
    ratio = (u_hat - u).square().flatten(1).sum(1) / (x0_hat - x0).square().flatten(1).sum(1)
    alpha, sigma = per_sample_alpha_sigma(process, t, x0)
    expected = flow.x0_error_scale(t, x0, process)
    torch.testing.assert_close(ratio.double(), expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(expected, per_sample_flow_determinant(process, t, x0).square() / sigma.square())
    # not the rectified-flow path's d = α + σ
    assert not torch.allclose(expected, (alpha + sigma).square() / sigma.square())
