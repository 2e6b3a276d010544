"""benchmarks/equalized_diagnosis.py (issue 16, "Why does equalized noise lose?") and the loss option it proposes,
``loss.noise_weighting=white``: tiny 8×8 digits, debug configs, untrained or few-step models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from spectral_diffusion.diffusion.predictions import EpsPrediction, VPrediction, X0Prediction
from spectral_diffusion.losses import LossContext, MSELoss
from spectral_diffusion.pipeline import build, instantiate_checked
from spectral_diffusion.utils.validation import ConfigError
from tests.conftest import REPO_ROOT, compose_train

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import cli_runs  # noqa: E402
import equalized_diagnosis as diagnosis  # noqa: E402
from results_csv import read_results  # noqa: E402


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The debug datamodule (8×8 digits) and its prepared gaussian and equalized processes."""
    tmp = tmp_path_factory.mktemp("digits")
    cfg = compose_train(["debug=default"], tmp, tmp)
    datamodule = instantiate_checked(cfg.data)
    datamodule.setup()
    processes = {name: diagnosis.prepared_process(compose_train(["debug=default", f"noise={name}"], tmp, tmp),
                                                  datamodule) for name in ("gaussian", "equalized")}
    return datamodule, processes


def save_untrained(cfg, path: Path, seed: int = 0) -> Path:
    """A checkpoint ``load_module`` reads (config + state dict) of a freshly built, untrained debug module."""
    torch.manual_seed(seed)
    module = build(cfg).module
    torch.save({"state_dict": module.state_dict(),
                "spectral_diffusion_config": OmegaConf.to_container(cfg, resolve=True)}, path)
    return path


# --- analytic part ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gaussian", "equalized"])
def test_band_snr_matches_monte_carlo(digits, name):
    datamodule, processes = digits
    process, images = processes[name], datamodule.train_images
    bands = diagnosis.Bands.of(diagnosis.analysis_basis(process), 8, 8, 4)
    times = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    log_snr, _ = diagnosis.band_log_snr(process, images, bands, times)
    for k, t in enumerate(times.tolist()):
        estimate = diagnosis.monte_carlo_band_snr(process, images, bands, t, draws=400, seed=k)
        assert torch.allclose(estimate.log(), log_snr[k], atol=0.1), (name, t, estimate.log(), log_snr[k])


def test_equalized_band_snr_is_flatter_and_whole_image_snr_equal(digits):
    datamodule, processes = digits
    result = diagnosis.analyse(processes, datamodule.train_images, 4)
    # equal total noise (mean w² = 1): the whole-image log-SNR paths coincide
    assert torch.allclose(result.whole_log_snr["gaussian"], result.whole_log_snr["equalized"], atol=1e-9)
    spread = {name: float((value[:, :-1].amax(1) - value[:, :-1].amin(1)).median())
              for name, value in result.log_snr.items()}
    assert spread["equalized"] < 0.5 * spread["gaussian"]
    crossing = result.crossing["gaussian"]
    assert bool((crossing[:-1] > crossing[1:]).all())  # white noise drowns the high bands first
    assert torch.allclose(result.gains["gaussian"], torch.ones(4, dtype=torch.float64))
    # the prior at t = 1 matches the forward marginal band by band for both processes
    for name in processes:
        assert torch.allclose(result.prior[name]["energy_ratio"], torch.ones(4, dtype=torch.float64), atol=1e-3)


def test_loss_weights_follow_the_prediction_conversions(digits):
    """λ = 1/g² from the prediction objects equals the closed forms: ε A²/S², x0 1, v (A² + S²)²/S²."""
    _, processes = digits
    process = processes["equalized"]
    basis = diagnosis.analysis_basis(process)
    times = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    alpha2, sigma2 = diagnosis.coefficients_on(process, basis, times, (1, 8, 8))
    expected = {"eps": alpha2 / sigma2, "x0": torch.ones_like(alpha2), "v": (alpha2 + sigma2).square() / sigma2}
    for name, closed in expected.items():
        weights = diagnosis.x0_error_weights(process, diagnosis.prediction_object(name), basis, times, (1, 8, 8))
        assert torch.allclose(weights, closed, rtol=1e-9), name


# --- empirical part -----------------------------------------------------------------------------------------
def test_band_energies_sum_to_pixel_energies(digits, tmp_path):
    """Parseval: the band sums of the orthonormal FFT energies are the pixel energies, for data and errors."""
    datamodule, _ = digits
    cfg = compose_train(["debug=default"], tmp_path, tmp_path)
    module = build(cfg).module.eval()
    images = datamodule.val_images[:40]
    bands = diagnosis.Bands.of(diagnosis.make_basis("fft"), 8, 8, 5)
    times = torch.tensor([0.3, 0.7])
    errors, energy = diagnosis.held_out_band_errors(module, images, times, bands, noise_seed=3, batch_size=16)
    assert energy.sum().item() == pytest.approx(images.double().square().sum().item() / len(images), rel=1e-10)
    eps = torch.stack([torch.randn(images.shape[1:], generator=g)
                       for g in diagnosis.sample_generators(3, 0, len(images))])
    for k, time in enumerate(times.tolist()):
        t = torch.full((len(images),), time)
        with torch.no_grad():
            estimate = module.denoise(module.process.q_sample(images, t, eps), t, use_ema=True)
        pixel = (estimate - images).double().square().sum().item() / len(images)
        assert errors[k].sum().item() == pytest.approx(pixel, rel=1e-6)
    assert bool((errors > 0).all()) and bool((energy > 0).all())


def test_same_model_twice_gives_ratio_exactly_one_and_results_resume(tmp_path, monkeypatch):
    cfg = compose_train(["debug=default"], tmp_path, tmp_path)
    first = save_untrained(cfg, tmp_path / "a.ckpt", seed=0)
    other = save_untrained(compose_train(["debug=default", "noise=equalized"], tmp_path, tmp_path),
                           tmp_path / "b.ckpt", seed=1)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--data-override", "data=digits", "--bands", "4", "--t-bins", "3",
            "--eval-images", "24", "--ckpt", f"gaussian={first}", "--ckpt", f"copy={first}",
            "--ckpt", f"equalized={other}", "--compare", "copy"]
    assert diagnosis.main(argv) == 0
    rows = read_results(out / "results.csv")
    assert len(rows) == 3 * 4 * 3  # three models × bands × t-bins (no metrics.json: no FID rows)
    reference, _ = diagnosis.error_grid(rows, "gaussian", 3, 4)
    copy, _ = diagnosis.error_grid(rows, "copy", 3, 4)
    different, _ = diagnosis.error_grid(rows, "equalized", 3, 4)
    assert (copy / reference == 1.0).all()  # same weights, same images, t and ε: exactly one
    assert not (different / reference == 1.0).all()
    text = (out / "diagnosis.md").read_text()
    assert "Ratio `copy` / `gaussian`" in text and "| 1 | 1 | 1 | 1 |" in text
    assert (out / "error_ratio.png").is_file() and (out / "snr_curves.png").is_file()

    # a rerun recomputes nothing and appends nothing
    def refuse(*args, **kwargs):
        raise AssertionError("a finished model was evaluated again")

    monkeypatch.setattr(diagnosis, "held_out_band_errors", refuse)
    assert diagnosis.main(argv) == 0
    assert read_results(out / "results.csv") == rows

    # an interrupted file (the last model missing) gets only the missing model's rows, identical to before
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[: 1 + 2 * 12]))
    monkeypatch.undo()
    calls = []
    original = diagnosis.held_out_band_errors
    monkeypatch.setattr(diagnosis, "held_out_band_errors", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert diagnosis.main(argv) == 0
    assert len(calls) == 1
    assert read_results(out / "results.csv") == rows


def test_train_runs_each_variant_and_seed_once_and_reads_fid(tmp_path, monkeypatch, cache_dir):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--data-override", "data=digits", "--bands", "2", "--t-bins", "2",
            "--eval-images", "16", "--train", "--steps", "6", "--seeds", "0",
            "--variant", "gaussian=noise=gaussian", "--variant", "equalized=noise=equalized sampler.steps=3",
            "--train-override", "debug=default", "evaluation.battery=false", "evaluation.num_samples=32",
            "evaluation.kid_subset_size=16", "evaluation.bootstrap=10", "callbacks.spectral_eval=null",
            f"paths.cache_dir={cache_dir}"]
    assert diagnosis.main(argv) == 0
    rows = read_results(out / "results.csv")
    fids = {row["model"]: row for row in rows if row["kind"] == "fid"}
    assert set(fids) == {"gaussian", "equalized"}
    assert all(float(row["fid"]) > 0 and row["fid_ci_low"] != "" for row in fids.values())
    stored = OmegaConf.load(out / "runs" / "equalized_seed0" / ".hydra" / "config.yaml")
    assert stored.sampler.steps == 3 and "Equalized" in stored.noise._target_ and stored.trainer.max_steps == 6
    assert "### FID per run and over seeds" in (out / "diagnosis.md").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(cli_runs.subprocess, "run", refuse)
    assert diagnosis.main(argv) == 0
    assert read_results(out / "results.csv") == rows


# --- the candidate fix: loss.noise_weighting=white ----------------------------------------------------------
def step_inputs(process, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95])
    output = torch.randn(x0.shape, generator=generator)
    return x0, eps, t, process.q_sample(x0, t, eps), output


@pytest.mark.parametrize("prediction", [EpsPrediction(), X0Prediction(), VPrediction()])
def test_white_weighting_is_exactly_plain_mse_on_gaussian(digits, prediction):
    _, processes = digits
    process = processes["gaussian"]
    x0, eps, t, x_t, output = step_inputs(process)
    target = prediction.target(x0, eps, t, process)
    context = lambda: LossContext(x0=x0, x_t=x_t, t=t, process=process, prediction=prediction)  # noqa: E731
    plain = MSELoss()(output, target, context())
    white = MSELoss(noise_weighting="white")(output, target, context())
    assert torch.equal(plain, white)


def test_white_weighting_on_equalized_weighs_each_coefficient_like_white_noise(digits):
    _, processes = digits
    process = processes["equalized"]
    x0, eps, t, x_t, output = step_inputs(process)
    coefficients = process.to_basis(x0)
    alpha, sigma = process.coefficients(t, coefficients)  # (B,1,1,1), (B,1,H,W): σ(t)·w
    w2 = process.gain(coefficients).double().square()
    a2 = alpha.double().square()
    s2 = (sigma.double() / process.gain(coefficients).double()).square()  # σ(t)²
    closed = {"eps": w2, "x0": torch.ones_like(w2), "v": w2 / (a2 + s2 * w2).square()}
    for prediction in (EpsPrediction(), X0Prediction(), VPrediction()):
        target = prediction.target(x0, eps, t, process)
        context = LossContext(x0=x0, x_t=x_t, t=t, process=process, prediction=prediction)
        white = MSELoss(noise_weighting="white")(output, target, context)
        residual = process.to_basis(output - target).double()
        expected = (closed[prediction.name] * residual.square()).flatten(1).mean(1)
        assert torch.allclose(white.double(), expected, rtol=1e-4), prediction.name
        plain = MSELoss()(output, target, LossContext(x0=x0, x_t=x_t, t=t, process=process, prediction=prediction))
        if prediction.name == "x0":
            assert torch.allclose(white, plain, rtol=1e-5)
        else:
            assert not torch.allclose(white, plain, rtol=1e-2)


def test_white_weighting_gives_gaussian_band_weights(digits):
    _, processes = digits
    datamodule = digits[0]
    result = diagnosis.analyse({"gaussian": processes["gaussian"], "equalized": processes["equalized"]},
                               datamodule.train_images, 4, {"equalized": MSELoss(noise_weighting="white")})
    plain = diagnosis.analyse(processes, datamodule.train_images, 4)
    for prediction in diagnosis.PREDICTIONS:
        reference = result.weights[("gaussian", prediction)]
        assert torch.allclose(result.weights[("equalized", prediction)], reference, rtol=1e-6), prediction
        if prediction in ("eps", "v"):  # x0 and flow errors convert to x0 errors independently of w
            assert not torch.allclose(plain.weights[("equalized", prediction)], reference, rtol=0.1), prediction
        else:
            assert torch.allclose(plain.weights[("equalized", prediction)], reference, rtol=1e-6), prediction


def test_noise_weighting_is_a_config_key_that_changes_training(tmp_path):
    losses = {}
    for value in ("none", "white"):
        cfg = compose_train(["debug=default", "noise=equalized", "prediction=v", f"loss.noise_weighting={value}"],
                            tmp_path, tmp_path)
        torch.manual_seed(0)
        module = build(cfg).module
        x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
        losses[value] = module.per_sample_loss(x0, t=torch.tensor([0.1, 0.3, 0.6, 0.9]), eps=eps, use_ema=False)
    assert not torch.allclose(losses["none"], losses["white"], rtol=1e-2)


@pytest.mark.parametrize("loss", ["mse", "lp", "frequency_balanced", "ffl"])
def test_bad_noise_weighting_is_refused_with_the_key(tmp_path, loss):
    cfg = compose_train(["debug=default", f"loss={loss}", "loss.noise_weighting=whitened"], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=r"loss\.noise_weighting.*none.*white"):
        instantiate_checked(cfg.loss)
