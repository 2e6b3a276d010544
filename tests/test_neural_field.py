"""Neural-field latent diffusion (seed 002): data, SIREN, encoders, latent diffusion, guidance, entry points."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from omegaconf import open_dict

from spectral_diffusion.diffusion import (
    CosineSchedule,
    EpsPrediction,
    FlowPrediction,
    FlowProcess,
    GaussianProcess,
    VPrediction,
    X0Prediction,
)
from spectral_diffusion.diffusion.guidance import guided_denoiser, instantiate_sampler
from spectral_diffusion.diffusion.samplers import ddim, ddpm, dpm_solver_pp, euler, heun
from spectral_diffusion.neural_field import NeuralFieldLatentModel, NeuralFieldModule, Signals1D, regular_grid
from spectral_diffusion.neural_field.data import check_observed_fraction
from spectral_diffusion.neural_field.evaluation import band_coverage, fourier_magnitudes
from spectral_diffusion.neural_field.model import MLPEncoder, SirenDecoder, TransformerEncoder
from spectral_diffusion.utils.validation import ConfigError
from tests.conftest import compose_train

FIELD_SHAPE = {"coord_dim": 1, "value_dim": 1, "grid_shape": [32]}


def tiny_model(**options) -> NeuralFieldLatentModel:
    settings = dict(latent_dim=8, encoder_hidden=16, encoder_layers=1, num_frequencies=4, decoder_hidden=16,
                    decoder_layers=2, denoiser_hidden=32, denoiser_layers=1)
    settings.update(options)
    return NeuralFieldLatentModel(1, 1, **settings)


def tiny_module(process=None, prediction=None, sampler=None, **options) -> NeuralFieldModule:
    process = process or GaussianProcess(CosineSchedule(timesteps=100))
    return NeuralFieldModule(tiny_model(**options), process, prediction or VPrediction(),
                             functools.partial(torch.optim.Adam, lr=1e-3), sampler or functools.partial(ddim, steps=5),
                             FIELD_SHAPE)


# --- data --------------------------------------------------------------------------------------------
def test_signals_are_deterministic_sized_and_masked():
    first = Signals1D(num_signals=50, num_val=10, seed=3, batch_size=40)
    second = Signals1D(num_signals=50, num_val=10, seed=3, batch_size=40)
    assert torch.equal(first.val_fields["values"], second.val_fields["values"])
    assert torch.equal(first.train_fields["mask"], second.train_fields["mask"])
    other = Signals1D(num_signals=50, num_val=10, seed=4, batch_size=40)
    assert not torch.equal(first.val_fields["values"], other.val_fields["values"])
    batch = next(iter(first.train_dataloader()))
    assert batch["coords"].shape == (40, 256, 1) and batch["values"].shape == (40, 256, 1)
    assert batch["mask"].dtype == torch.bool and (batch["mask"].sum(1) == round(0.2 * 256)).all()
    assert batch["values"].abs().max() <= 1.0 and first.num_val == 10


def test_sine_special_case_is_one_sinusoid():
    """n_terms=1: every signal is a sin(π ν x + φ) with a in the amplitude range: its values satisfy
    max − min ≈ 2a ≤ 2 amplitude_max and, being a pure tone, a second difference proportional to itself."""
    data = Signals1D(num_signals=20, num_val=5, n_terms=1, frequency_min=2.0, frequency_max=2.0, amplitude_min=0.7,
                     amplitude_max=0.7, num_points=512, batch_size=8)
    values = data.train_fields["values"][..., 0].double()
    step = 2.0 / 511
    second = (values[:, 2:] - 2 * values[:, 1:-1] + values[:, :-2]) / step**2
    assert torch.allclose(second, -(2 * math.pi) ** 2 * values[:, 1:-1], atol=1e-2 * (2 * math.pi) ** 2)
    assert values.abs().max() <= 0.7 + 1e-6


def test_grid_at_any_resolution():
    grid = regular_grid(5, 1)
    assert torch.allclose(grid[:, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    grid2 = regular_grid((2, 3), 2)
    # row-major: the last axis runs fastest
    assert grid2.shape == (6, 2) and torch.equal(grid2[1], torch.tensor([-1.0, 0.0]))
    assert Signals1D(num_signals=10, num_val=2, batch_size=4).grid(1024).shape == (1024, 1)


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, "half", True])
def test_observed_fraction_outside_unit_interval_is_refused(fraction):
    with pytest.raises(ConfigError, match="data.observed_fraction"):
        check_observed_fraction(fraction)
    with pytest.raises(ConfigError, match="data.observed_fraction"):
        Signals1D(observed_fraction=fraction)


# --- SIREN and encoders -----------------------------------------------------------------------------
def test_siren_initialisation_ranges():
    """First layer U(−1/n, 1/n) with n = fan-in, later layers U(−√(6/n)/ω0, √(6/n)/ω0) (Sitzmann et al. 2020)."""
    torch.manual_seed(0)
    omega = 30.0
    decoder = SirenDecoder(coord_dim=2, value_dim=1, latent_dim=64, hidden=256, layers=3, omega_0=omega)
    first = decoder.layers[0].linear.weight
    assert first.abs().max() <= 1 / 2 and first.abs().max() > 0.95 / 2
    for layer in decoder.layers[1:]:
        bound = math.sqrt(6 / 256) / omega
        weight = layer.linear.weight
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
        assert abs(weight.var().item() - bound**2 / 3) < 0.05 * bound**2  # uniform: variance bound²/3
    # the latent enters through shifts, never the coordinate layer's fan-in
    assert decoder.layers[0].linear.in_features == 2


def test_decoding_then_subsampling_equals_decoding_the_subset():
    torch.manual_seed(0)
    decoder = SirenDecoder(1, 1, 8, 32, 3, 30.0)
    z = torch.randn(3, 8)
    fine = regular_grid(256, 1)
    dense = decoder(z, fine)
    sparse = decoder(z, fine[::4])
    assert sparse.shape == (3, 64, 1)
    assert torch.allclose(dense[:, ::4], sparse, atol=1e-6)
    # and the shared grid equals per-example coordinates
    assert torch.allclose(decoder(z, fine.expand(3, -1, -1)), dense, atol=1e-6)


@pytest.mark.parametrize("encoder_class", [MLPEncoder, TransformerEncoder])
def test_encoders_are_permutation_invariant_and_ignore_unobserved_points(encoder_class):
    torch.manual_seed(0)
    options = {"heads": 2} if encoder_class is TransformerEncoder else {}
    encoder = encoder_class(1, 1, 8, 16, 2, 4, **options).eval()
    coords = torch.rand(4, 40, 1) * 2 - 1
    values = torch.randn(4, 40, 1)
    mask = torch.rand(4, 40) < 0.4
    mask[:, 0] = True
    z = encoder(coords, values, mask)
    permutation = torch.randperm(40)
    permuted = encoder(coords[:, permutation], values[:, permutation], mask[:, permutation])
    assert torch.allclose(z, permuted, atol=1e-5)
    changed = values.clone()
    changed[~mask] = 5.0  # values the encoder must not see
    assert torch.allclose(encoder(coords, changed, mask), z, atol=1e-5)
    observed = values.clone()
    observed[:, 0] += 1.0  # an observed value does change z
    assert not torch.allclose(encoder(coords, observed, mask), z, atol=1e-3)


@pytest.mark.parametrize("key, options", [("model.latent_dim", {"latent_dim": 0}),
                                          ("model.latent_dim", {"latent_dim": -3}),
                                          ("model.omega_0", {"omega_0": 0.0}),
                                          ("model.omega_0", {"omega_0": -30.0}),
                                          ("model.condition_dropout", {"condition_dropout": 1.5}),
                                          ("model.encoder", {"encoder": "cnn"}),
                                          ("model.autoencoder_steps", {"training_mode": "two_stage"})])
def test_bad_model_options_name_their_key(key, options):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny_model(**options)


# --- latent diffusion -------------------------------------------------------------------------------
def test_latent_process_marginals_follow_the_schedule():
    """q(z_t | z_0) = N(√ᾱ_t z_0, (1 − ᾱ_t) I) on latent vectors (B, D), at several t."""
    process = GaussianProcess(CosineSchedule(timesteps=100))
    generator = torch.Generator().manual_seed(0)
    z0 = torch.linspace(-2, 2, 16)
    draws = 40_000
    for step in (1, 30, 70, 100):
        t = torch.full((draws,), step / 100)
        eps = process.noise((draws, 16), generator)
        z_t = process.q_sample(z0.expand(draws, -1), t, eps)
        alpha_bar = float(process.schedule.alpha_bar(torch.tensor(step / 100)))
        assert torch.allclose(z_t.mean(0), math.sqrt(alpha_bar) * z0, atol=4 * math.sqrt(1 / draws) + 1e-3)
        assert torch.allclose(z_t.var(0), torch.full((16,), 1 - alpha_bar), atol=0.03 * max(1 - alpha_bar, 1e-3) + 1e-4)
    prior = process.prior((draws, 16), generator)
    assert abs(prior.mean().item()) < 0.01 and abs(prior.var().item() - 1) < 0.01


class GaussianPosteriorDenoiser(torch.nn.Module):
    """The exact denoiser of latents z0 ~ N(μ, s² I), emitting what ``prediction`` trains the network to emit:
    x̂0 = μ + a s² (z_t − a μ)/(a² s² + σ²) converted to the prediction's output."""

    def __init__(self, process, prediction, mean: float, std: float) -> None:
        super().__init__()
        self.process, self.prediction, self.mean, self.std = process, prediction, mean, std

    def forward(self, z_t, noise_level, condition):
        t = noise_level / 1000.0
        a, s = self.process.coefficients(t, z_t)
        x0 = self.mean + a * self.std**2 * (z_t - a * self.mean) / (a * a * self.std**2 + s * s)
        eps = self.process.eps_from_x0(z_t, t, x0)
        return self.prediction.target(x0, eps, t, self.process)


CASES = [(GaussianProcess(CosineSchedule(timesteps=100)), prediction)
         for prediction in (EpsPrediction(), X0Prediction(), VPrediction(), FlowPrediction())]
CASES += [(FlowProcess(None), prediction) for prediction in (X0Prediction(), VPrediction(), FlowPrediction())]


@pytest.mark.parametrize("sampler", [ddpm, ddim, dpm_solver_pp, euler, heun], ids=lambda f: f.__name__)
@pytest.mark.parametrize("process, prediction", CASES, ids=lambda v: type(v).__name__)
def test_every_sampler_and_prediction_samples_the_latent_law(sampler, process, prediction):
    """With the exact denoiser of a Gaussian latent law, every sampler × prediction type × process run through
    the module's sampling path draws latents with that law's mean and standard deviation."""
    module = tiny_module(process, prediction, functools.partial(sampler, steps=25))
    module.ema.module.denoiser = GaussianPosteriorDenoiser(process, prediction, mean=0.5, std=0.3)
    z = module.sample_latents(512, seed=0)
    assert z.shape == (512, 8) and torch.isfinite(z).all()
    assert abs(z.mean().item() - 0.5) < 0.03
    assert abs(z.std().item() - 0.3) < 0.05


def test_the_flow_path_refuses_eps_and_images_processes_are_refused():
    with pytest.raises(ConfigError, match="prediction=eps"):
        tiny_module(FlowProcess(None), EpsPrediction())
    from spectral_diffusion.diffusion import EqualizedProcess

    with pytest.raises(ConfigError, match="noise="):
        tiny_module(EqualizedProcess(CosineSchedule(), basis="fft"), VPrediction())


def test_guidance_scale_zero_is_unconditional_and_one_is_conditional_on_latents():
    torch.manual_seed(0)
    module = tiny_module(condition_dropout=0.2)
    torch.nn.init.normal_(module.ema.module.null_condition)
    condition = torch.randn(6, 8)

    def with_scale(scale):
        sampler = functools.partial(ddim, steps=5)
        sampler.guidance_scale = scale
        return module.sample_latents(6, condition=condition, sampler=sampler, seed=3)

    unconditional = module.sample_latents(6, seed=3)
    assert torch.equal(with_scale(0.0), unconditional)
    denoise = module.conditional_denoiser()
    z_T = module.process.prior((6, 8), [torch.Generator().manual_seed(3 + i) for i in range(6)])
    plain = ddim(lambda z, t: denoise(z, t, condition), module.process, z_T, 5)
    assert torch.allclose(with_scale(1.0), plain, atol=1e-6)
    assert not torch.allclose(plain, unconditional, atol=1e-3)
    # scale w: x̂0_u + w (x̂0_c − x̂0_u) at every evaluation
    z_t, t = torch.randn(6, 8), torch.full((6,), 0.5)
    null = module.ema.module.null_conditions(6)
    guided = guided_denoiser(denoise, condition, null, 2.5)(z_t, t)
    expected = denoise(z_t, t, null) + 2.5 * (denoise(z_t, t, condition) - denoise(z_t, t, null))
    assert torch.allclose(guided, expected, atol=1e-5)


def test_guidance_needs_condition_dropout():
    sampler = functools.partial(ddim, steps=3)
    sampler.guidance_scale = 2.0
    module = tiny_module(condition_dropout=0.0)
    with pytest.raises(ConfigError, match="guidance_scale"):
        module.sample_latents(2, condition=torch.zeros(2, 8), sampler=sampler)
    with pytest.raises(ConfigError, match="condition_dropout"):
        module.sample_latents(2)  # never trained on ∅
    with pytest.raises(ConfigError, match="guidance_scale"):
        instantiate_sampler({"_target_": "spectral_diffusion.diffusion.samplers.ddim", "_partial_": True,
                             "steps": 3, "guidance_scale": -1.0})


def test_two_stage_trains_the_autoencoder_then_only_the_denoiser():
    torch.manual_seed(0)
    module = tiny_module(training_mode="two_stage", autoencoder_steps=10)
    data = Signals1D(num_signals=12, num_val=4, num_points=32, batch_size=8)
    batch = next(iter(data.train_dataloader()))
    first = module.losses(batch, step=0)
    assert set(first) == {"recon", "loss"}
    first["loss"].backward()
    assert module.model.decoder.output.weight.grad is not None and module.model.denoiser.output[-1].weight.grad is None
    module.zero_grad(set_to_none=True)
    second = module.losses(batch, step=10)
    assert set(second) == {"diffusion", "loss"}
    second["loss"].backward()
    assert module.model.encoder.head[0].weight.grad is None and module.model.decoder.output.weight.grad is None
    assert module.model.denoiser.output[-1].weight.grad is not None
    dual = tiny_module(training_mode="dual", autoencoder_steps=0).losses(batch, step=0)
    assert set(dual) == {"recon", "diffusion", "loss"}


# --- metrics -----------------------------------------------------------------------------------------
def test_band_coverage_and_fourier_features():
    samples = torch.linspace(0, 1, 101)[:, None, None, None].expand(101, 1, 4, 1)  # quantiles known exactly
    truth = torch.tensor([0.02, 0.5, 0.94, 0.96]).reshape(1, 4, 1)
    assert band_coverage(samples, truth, 0.9) == 0.5  # band [0.05, 0.95]
    x = regular_grid(64, 1)[:, 0]
    tone = torch.cos(2 * math.pi * 3 * torch.arange(64) / 64)[None, :, None]
    features = fourier_magnitudes(tone, (64,), 8)
    assert features.shape == (1, 8) and features[0].argmax() == 3 and x.shape == (64,)


# --- entry points ------------------------------------------------------------------------------------
SMALL = ["model=nf_latent", "data=signals1d", "data.num_signals=120", "data.num_val=40", "data.num_points=64",
         "data.batch_size=16", "model.latent_dim=8", "model.encoder_hidden=16", "model.decoder_hidden=16",
         "model.denoiser_hidden=32", "model.denoiser_layers=1", "model.autoencoder_steps=4",
         "trainer.max_steps=12", "trainer.val_check_interval=6",
         "trainer.log_every_n_steps=2", "scheduler.warmup_steps=2", "sampler.steps=4",
         "callbacks.model_checkpoint.every_n_train_steps=6", "evaluation.conditional_fields=4",
         "evaluation.conditional_samples=4", "evaluation.resolutions=[16,64]", "evaluation.plot_fields=2"]


@pytest.mark.parametrize("overrides, key", [
    (["model=nf_latent", "data=digits"], "model=nf_latent"),
    (["model=unet_tiny", "data=signals1d"], "data is Signals1D"),
    (["model=nf_latent", "data=signals1d", "data.observed_fraction=0"], "data.observed_fraction"),
    (["model=nf_latent", "data=signals1d", "model.latent_dim=0"], "model.latent_dim"),
    (["model=nf_latent", "data=signals1d", "model.omega_0=-1"], "model.omega_0"),
    (["model=nf_latent", "data=signals1d", "sampler.guidance_scale=-0.5"], "sampler.guidance_scale"),
    (["model=nf_latent", "data=signals1d", "sampler.guidance_scale=2", "model.condition_dropout=0"],
     "sampler.guidance_scale"),
    (["model=nf_latent", "data=signals1d", "noise=equalized"], "noise="),
])
def test_pipeline_refuses_bad_input_before_anything_runs(overrides, key, tmp_path, cache_dir):
    from spectral_diffusion.pipeline import build

    cfg = compose_train(overrides + ["data.num_signals=80", "data.num_val=10"] * ("data=signals1d" in overrides),
                        tmp_path, cache_dir)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("=", "=")):
        build(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_checks_the_field_evaluation_before_fitting(tmp_path, cache_dir):
    from spectral_diffusion.pipeline import build, train

    small = ["model=nf_latent", "data=signals1d", "data.num_signals=80", "data.num_val=10"]
    with pytest.raises(ConfigError, match=r"evaluation\.resolutions\[1\]"):
        train(compose_train(small + ["evaluation.resolutions=[64,1]"], tmp_path, cache_dir))
    with pytest.raises(ConfigError, match="optimized_metric"):
        train(compose_train(small + ["optimized_metric=psnr"], tmp_path, cache_dir))
    assert not (tmp_path / "run" / "checkpoints").exists()
    # purely unconditional and purely conditional models build at the default scale 1
    for dropout in (0.0, 1.0):
        module = build(compose_train(small + [f"model.condition_dropout={dropout}"], tmp_path, cache_dir)).module
        assert module.model.condition_dropout == dropout


@pytest.mark.slow
def test_sd_train_sample_eval_and_resume_on_a_field_run(tmp_path, cache_dir):
    from hydra import compose, initialize_config_dir

    from spectral_diffusion.cli import CONFIG_DIR
    from spectral_diffusion.cli.sample import sample
    from spectral_diffusion.pipeline import evaluate, load_module, train

    cfg = compose_train(SMALL, tmp_path, cache_dir)
    metrics = train(cfg)
    run = tmp_path / "run"
    stored = json.loads((run / "metrics.json").read_text())
    assert stored["global_step"] == 12 and stored["objective_name"] == "recon_mse"
    assert stored["objective"] == pytest.approx(stored["recon_mse"]) == pytest.approx(metrics["recon_mse"])
    for key in ("coverage", "conditional_sample_mse", "frechet_fourier", "frechet_fourier_floor", "val_recon_mse"):
        assert math.isfinite(stored[key])
    assert 0 <= stored["coverage"] <= 1
    assert (run / "report.md").read_text().count("figures/") == 2
    assert (run / "figures" / "reconstruction.png").is_file() and (run / "figures" / "resolutions.png").is_file()
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 2
    checkpoint = run / "checkpoints" / "last.ckpt"
    module = load_module(checkpoint)
    assert isinstance(module, NeuralFieldModule)

    # resume: training continues from step 12
    resumed = compose_train(SMALL + ["trainer.max_steps=18", f"ckpt_path={checkpoint}"], tmp_path / "again", cache_dir)
    assert train(resumed)["global_step"] == 18

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        sample_cfg = compose(config_name="sample", overrides=[f"ckpt_path={checkpoint}", "n=3", "resolution=100"])
        eval_cfg = compose(config_name="eval", overrides=[f"ckpt_path={checkpoint}", "sampler=ddim",
                                                          "sampler.steps=3", "sampler.guidance_scale=2"])
    for node in (sample_cfg, eval_cfg):
        with open_dict(node):
            node.paths.output_dir = str(tmp_path / "out")
            node.paths.summary_csv = None
    sample(sample_cfg)
    import numpy as np

    drawn = np.load(tmp_path / "out" / "samples.npz")
    assert drawn["values"].shape == (3, 100, 1) and drawn["coords"].shape == (100, 1)
    evaluated = evaluate(eval_cfg)
    assert math.isfinite(evaluated["coverage"]) and evaluated["objective_name"] == "recon_mse"
    assert evaluated["recon_mse"] == pytest.approx(stored["recon_mse"], rel=1e-4)
