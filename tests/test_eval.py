"""sd-eval and the shared evaluation: metrics of known sets, the report, runtime, the per-timestep loss,
input checks before any work, sd-train's battery in metrics.json/report.md and the TensorBoard callback."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.diffusion.samplers import deq
from spectral_diffusion.evaluation import (
    METRIC_NAMES,
    EvaluationConfig,
    describe,
    evaluate_images,
    load_samples,
    metric_direction,
    metric_name,
    metric_shorthands,
    resolve_optimized_metric,
    timed_generate,
    timestep_grid,
    validation_loss_by_time,
)
from spectral_diffusion.metrics.battery import GROUPS, BatteryConfig
from spectral_diffusion.metrics.quality import real_floor, sample_quality
from spectral_diffusion.pipeline import build, evaluate, load_module, train
from spectral_diffusion.utils.images import save_samples_npz
from spectral_diffusion.utils.validation import ConfigError

from .conftest import cli_env, compose_train

# The debug battery: everything but LPIPS (no weights offline) and with a one-epoch real-vs-fake classifier.
TRAIN_STEPS = 6


def compose_eval(overrides: list[str], tmp_path: Path, cache_dir: Path) -> DictConfig:
    """``conf/eval.yaml`` on 8x8 digits with ``overrides``, its folders redirected into ``tmp_path``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="eval", overrides=["data=digits", "evaluation.batch_size=64",
                                                     "evaluation.kid_subset_size=16", "evaluation.bootstrap=100",
                                                     *overrides])
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "eval")
        cfg.paths.summary_csv = str(tmp_path / "summary.csv")
        cfg.paths.cache_dir = str(cache_dir)
        cfg.device = "cpu"
    return cfg


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory, cache_dir) -> tuple[Path, dict]:
    """A tiny sd-train run (debug=default, 6 steps) with the battery on and the callback every 3 steps."""
    tmp_path = tmp_path_factory.mktemp("train")
    cfg = compose_train(["debug=default", f"trainer.max_steps={TRAIN_STEPS}", "scheduler.warmup_steps=2",
                         "callbacks.model_checkpoint.every_n_train_steps=3", "callbacks.spectral_eval.every_n_steps=3",
                         "callbacks.sample_grid.every_n_steps=1000"], tmp_path, cache_dir)
    metrics = train(cfg)
    return Path(cfg.paths.output_dir), metrics


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, cache_dir) -> tuple[torch.Tensor, Path]:
    """The held-out digits sd-eval compares with, saved as sd-train saves samples."""
    cfg = compose_eval([], tmp_path_factory.mktemp("heldout"), cache_dir)
    images = instantiate(cfg.data).val_images
    path = save_samples_npz(images, tmp_path_factory.mktemp("npz") / "heldout.npz", seed=0)
    return images, path


def numeric_keys(metrics: dict) -> set[str]:
    return {k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_report(run_dir: Path, metrics: dict) -> None:
    """report.md lists every scalar of metrics.json and links figures that exist."""
    report = (run_dir / "report.md").read_text()
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert stored["objective"] == metrics["objective"]
    rows = {key: (interval, definition) for key, interval, definition in
            re.findall(r"^\| `([^`]+)` \| [^|]+ \| ([^|]+) \| (.*) \|$", report, flags=re.MULTILINE)}
    intervals = {key for key in numeric_keys(stored) if key.endswith(("_ci_low", "_ci_high"))}
    for key in numeric_keys(stored) - {"objective"} - intervals:
        assert rows.get(key) and rows[key][1], key  # listed, with a definition
    for key in intervals:  # in the interval column of its metric
        metric = key.rsplit("_ci_", 1)[0]
        low, high = stored[f"{metric}_ci_low"], stored[f"{metric}_ci_high"]
        assert rows[metric][0] == f"[{low:.6g}, {high:.6g}]", key
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links and all((run_dir / link).is_file() for link in links)
    assert {Path(link).name for link in links} == {p.name for p in (run_dir / "figures").glob("*.png")}


# --- sd-eval on known sets ---------------------------------------------------------------------------------
def test_heldout_images_against_themselves(heldout, tmp_path, cache_dir):
    images, npz = heldout
    cfg = compose_eval([f"samples={npz}"], tmp_path, cache_dir)
    metrics = evaluate(cfg)
    n = len(images)
    # Identical sets: FID 0 (up to the matrix square root), far under the real-data floor, JS divergence 0.
    assert abs(metrics[f"fid_classifier@{n}"]) < 1e-3 < metrics[f"fid_floor_classifier@{n}"]
    # the default objective, recognisability (larger is better), of the held-out set is the real one
    recognisable = metrics[f"recognisable_classifier@{n}"]
    assert metrics["objective"] == recognisable == metrics[f"recognisable_real_classifier@{n}"]
    assert metrics["objective_direction"] == "maximize"
    assert metrics["js_divergence"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["wasserstein"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["spectral_mse"] == pytest.approx(0.0, abs=1e-9)
    # Bootstrap intervals hold the point values; identical sets are equally recognisable.
    for metric in ("fid", "kid", "precision", "recall", "fid_floor", "recognisable"):
        key = f"{metric}_classifier@{n}"
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    assert metrics[f"recognisable_classifier@{n}"] == metrics[f"recognisable_real_classifier@{n}"]
    assert "fid_inf_classifier" in metrics
    # No network: the per-timestep loss and runtime are skipped with a reason, not invented.
    assert "val_loss_by_t" in metrics["skipped"] and "sampler_nfe" not in metrics
    run_dir = Path(cfg.paths.output_dir)
    check_report(run_dir, metrics)
    assert "val_loss_by_t" in (run_dir / "report.md").read_text()  # listed under Skipped


def test_battery_switch_and_optimized_metric(heldout, tmp_path, cache_dir):
    _, npz = heldout
    metrics = evaluate(compose_eval([f"samples={npz}", "evaluation.battery=false", "optimized_metric=kid"],
                                    tmp_path, cache_dir))
    n = metrics["num_samples"]
    assert metrics["objective_name"] == f"kid_classifier@{n}"
    assert "js_divergence" not in metrics and metrics["skipped"]["battery"] == "evaluation.battery=false"


def test_image_folder_equals_its_8bit_npz(heldout, tmp_path):
    from PIL import Image

    images, _ = heldout
    folder = tmp_path / "pngs"
    folder.mkdir()
    pixels = ((images[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    for index, array in enumerate(pixels):
        Image.fromarray(array).save(folder / f"{index:04d}.png")
    loaded = load_samples(folder, channels=1)
    torch.testing.assert_close(loaded, torch.from_numpy(pixels).float().unsqueeze(1) / 127.5 - 1, rtol=0, atol=1e-6)
    assert (loaded - images).abs().max() <= 0.5 / 127.5 + 1e-6


# --- sd-eval from a checkpoint (sd-train's own output) -----------------------------------------------------
def test_eval_from_checkpoint(debug_run, tmp_path, cache_dir):
    run_dir, _ = debug_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose_eval([f"ckpt_path={ckpt}", "evaluation.num_samples=16", "sampler=ddim", "sampler.steps=3",
                        "evaluation.timestep_bins=4", "optimized_metric=spectral_mse"], tmp_path, cache_dir)
    metrics = evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    assert metrics["objective"] == metrics["spectral_mse"] and np.isfinite(metrics["fid_classifier@16"])
    assert metrics["sampler_nfe"] == 3  # the override, not the checkpoint's sampler (5 steps)
    assert metrics["sample_seconds_per_image_per_nfe"] == pytest.approx(metrics["sample_seconds"] / 16 / 3)
    assert metrics["num_parameters"] == load_module(ckpt).num_parameters()
    assert metrics["peak_memory_mb"] > 0
    assert len(metrics["val_loss_by_t"]["t"]) == 4 and all(np.isfinite(metrics["val_loss_by_t"]["loss"]))
    for name in ["metrics.json", "report.md", "samples.npz", "figures/val_loss_by_t.png",
                 "figures/radial_power_spectrum.png"]:
        assert (out / name).is_file(), name
    with np.load(out / "samples.npz") as data:
        assert data["images"].shape == (16, 1, 8, 8)
    check_report(out, metrics)


@pytest.mark.slow
def test_sd_eval_command_line(heldout, tmp_path, cache_dir):
    _, npz = heldout
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "spectral_diffusion.cli.eval", f"samples={npz}", "data=digits",
               "evaluation.battery=false", "evaluation.kid_subset_size=16", f"hydra.run.dir={out}"]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(cache_dir), capture_output=True, text=True, check=False,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"metrics.json", "report.md"} <= {p.name for p in out.iterdir()}
    bad = subprocess.run(command[:3] + [f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path, env=cli_env(cache_dir),
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0 and "give exactly one of samples" in bad.stderr


# --- bad input: ConfigError naming the key, before any work ----------------------------------------------------
def test_bad_inputs(heldout, debug_run, tmp_path, cache_dir):
    _, npz = heldout
    ckpt = debug_run[0] / "checkpoints" / "last.ckpt"
    wrong_size = save_samples_npz(torch.zeros(4, 1, 16, 16), tmp_path / "16x16.npz")
    cases = {
        "exactly one of samples": [],
        "exactly one of samples=": [f"samples={npz}", f"ckpt_path={ckpt}"],
        "samples=.*does not exist": [f"samples={tmp_path / 'missing.npz'}"],
        "samples=.*neither a .npz": [f"samples={tmp_path / '16x16.npz'}x"],
        r"samples are images of shape \(1, 16, 16\) but data gives \(1, 8, 8\)": [f"samples={wrong_size}"],
        r"ckpt_path=.*generates images of shape \(1, 8, 8\) but data gives \(1, 16, 16\)":
            [f"ckpt_path={ckpt}", "data.source.image_size=16"],
        "ckpt_path=.*does not exist": [f"ckpt_path={tmp_path / 'none.ckpt'}"],
        "evaluation.battery=": [f"samples={npz}", "evaluation.battery=maybe"],
        "evaluation.timestep_bins=": [f"samples={npz}", "evaluation.timestep_bins=-1"],
        "sampler.steps": [f"ckpt_path={ckpt}", "sampler=ddim", "sampler.steps=0"],
        r"evaluation.battery_options.glcm_distances=\[9\] must be below the image size 8x8":
            [f"samples={npz}", "+evaluation.battery_options.glcm_distances=[9]"],
        "device=": [f"samples={npz}"],
    }
    (tmp_path / "16x16.npzx").write_text("not samples")
    for message, overrides in cases.items():
        cfg = compose_eval(overrides, tmp_path, cache_dir)
        if message == "device=":
            cfg.device = "tpu"
        with pytest.raises(ConfigError, match=message):
            evaluate(cfg)
        assert not (Path(cfg.paths.output_dir) / "metrics.json").exists(), message
    for metric in ["no_such_metric", "val_loss", "spectral_mse"]:  # sd-eval has no validation loss
        battery = "evaluation.battery=false" if metric == "spectral_mse" else "evaluation.battery=true"
        with pytest.raises(ConfigError, match=f"optimized_metric='{metric}' is not a metric this run computes"):
            evaluate(compose_eval([f"samples={npz}", battery, f"optimized_metric={metric}"], tmp_path, cache_dir))


def test_callback_options_are_checked_at_construction():
    from spectral_diffusion.callbacks import SpectralEvaluation

    with pytest.raises(ConfigError, match=r"callbacks.spectral_eval.battery_options.groups='fid' is not allowed"):
        SpectralEvaluation(battery_options={"groups": ["fid"]})
    with pytest.raises(ConfigError, match="callbacks.spectral_eval.every_n_steps=0"):
        SpectralEvaluation(every_n_steps=0)


# --- the pieces ------------------------------------------------------------------------------------------------
def test_timestep_grid_snaps_to_the_discrete_schedule(cfg_debug):
    process = build(cfg_debug).module.process
    torch.testing.assert_close(timestep_grid(process, 10), torch.arange(0.05, 1.0, 0.1))
    torch.testing.assert_close(timestep_grid(process, 3), torch.tensor([167, 500, 833]) / 1000.0)
    assert timestep_grid(process, 2000)[0] == pytest.approx(1e-3)  # never the clean endpoint t = 0


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_validation_loss_of_a_zero_network(tmp_path, cache_dir, prediction):
    """A network that outputs 0 has MSE = mean ε² (eps) or mean x0² (x0) at every t: known values."""
    cfg = compose_train(["debug=default", f"prediction={prediction}"], tmp_path, cache_dir)
    components = build(cfg)
    module, images = components.module, components.datamodule.val_images[:20]
    for parameter in module.ema.module.parameters():
        parameter.data.zero_()
    _, losses = validation_loss_by_time(module, images, bins=4, seed=7, batch_size=6)
    if prediction == "eps":
        noise = torch.stack([torch.randn((1, 8, 8), generator=torch.Generator().manual_seed(7 + i))
                             for i in range(len(images))])
        expected = noise.double().square().mean()
    else:
        expected = images.double().square().mean()
    torch.testing.assert_close(losses, torch.full((4,), expected.item(), dtype=torch.float64))
    _, whole = validation_loss_by_time(module, images, bins=4, seed=7, batch_size=20)
    torch.testing.assert_close(whole, losses)  # batching does not change it


def test_runtime_counts_network_evaluations_per_trajectory(cfg_debug):
    module = build(cfg_debug).module
    samples, runtime = timed_generate(module, 10, seed=0, batch_size=4)
    assert samples.shape == (10, 1, 8, 8)
    assert runtime["sampler_nfe"] == 5  # debug sampler: DDIM, 5 steps; 3 batches must not triple it
    assert runtime["num_parameters"] == module.num_parameters()
    assert runtime["sample_seconds_per_image"] == pytest.approx(runtime["sample_seconds"] / 10)
    assert "sampler_iterations" not in runtime
    _, runtime = timed_generate(module, 3, seed=0, batch_size=2, sampler=functools.partial(deq, steps=4))
    assert runtime["sampler_iterations"] == 4 and 4 <= runtime["sampler_nfe"] <= 10  # 4 sweeps, ≤ 4·5/2 states


def test_definitions_name_extractor_and_count():
    assert "classifier" in describe("fid_classifier@64") and "64" in describe("fid_classifier@64")
    assert "perfect model" in describe("fid_floor_inception@500")
    assert describe("kid_std_classifier@64").startswith("std of KID")
    assert describe("no_such_metric") == ""
    assert describe("js_divergence").startswith("Jensen–Shannon divergence")
    # Alternatives and placeholders match exactly what they list, nothing more.
    assert metric_name("wavelet_hl_ratio_l3").group == "wavelet" and metric_name("wavelet_xx_ratio_l3") is None
    assert metric_name("glcm_correlation_diff").group == "texture" and metric_name("glcm_contrast_diff") is None
    assert metric_name("fid_classifier@many") is None  # the count is a number


def test_metric_directions():
    """Which way each metric improves (the sweeper's sn=auto and metrics.json's objective_direction read it)."""
    assert {row.direction for row in METRIC_NAMES} == {"minimize", "maximize", None}
    for key in ["fid_classifier@1000", "kid_autoencoder@64", "fid_inf_classifier", "val_loss", "spectral_mse",
                "classifier_auc", "texture_ks", "severity", "straightness"]:
        assert metric_direction(key) == "minimize", key
    for key in ["recognisable_classifier@1000", "precision_classifier@64", "recall_classifier@64", "class_accuracy",
                "eq_r", "eq_t_frac"]:
        assert metric_direction(key) == "maximize", key
    for key in ["hf_energy_ratio", "wavelet_energy_ratio_l1", "spectral_slope_fake", "num_samples", "no_such_key"]:
        assert metric_direction(key) is None, key


def test_the_default_objective_is_recognisability():
    """README: the shipped default optimized_metric is recognisability (the metric that resolved most pairs)."""
    for name in ("train", "eval", "distill"):
        cfg = OmegaConf.load(Path(CONFIG_DIR) / f"{name}.yaml")
        assert cfg.optimized_metric == "recognisable", name
    assert metric_direction(metric_shorthands("classifier", 1000)["recognisable"]) == "maximize"


def test_optimized_metric_accepts_only_keys_of_the_groups_that_run():
    shorthands = metric_shorthands("classifier", 64)
    assert resolve_optimized_metric("fid", shorthands) == "fid_classifier@64"
    assert resolve_optimized_metric("kid_classifier@64", shorthands) == "kid_classifier@64"
    assert resolve_optimized_metric(None, shorthands) is None
    groups = ["features", "statistics"]
    for key in ["js_divergence", "precision_classifier@64", "severity", "severity_js"]:
        assert resolve_optimized_metric(key, shorthands, groups) == key
    for key, battery_groups in [("spectral_mse", groups), ("js_divergence", []), ("val_loss", groups),
                                ("fid_floor_classifier@64", groups), ("sample_seconds", groups)]:
        with pytest.raises(ConfigError, match=f"optimized_metric='{key}' is not a metric this run computes"):
            resolve_optimized_metric(key, shorthands, battery_groups)
    assert resolve_optimized_metric("val_loss", metric_shorthands("classifier", 64, val_loss=True)) == "val_loss"
    # recognisability (larger is better) only with the classifier extractor, whose probabilities it needs
    assert resolve_optimized_metric("recognisable", shorthands) == "recognisable_classifier@64"
    assert resolve_optimized_metric("recognisable_classifier@64", shorthands) == "recognisable_classifier@64"
    with pytest.raises(ConfigError, match="optimized_metric='recognisable' is not a metric this run computes"):
        resolve_optimized_metric("recognisable", metric_shorthands("autoencoder", 64))


# --- the evaluation config group -------------------------------------------------------------------------------
def test_one_evaluation_group_for_sd_train_and_sd_eval(tmp_path, cache_dir):
    train_node = compose_train([], tmp_path, cache_dir).evaluation
    eval_node = compose_eval(["evaluation.batch_size=500", "evaluation.kid_subset_size=100",
                              "evaluation.bootstrap=1000"], tmp_path,
                             cache_dir).evaluation  # undo compose_eval's shrinking
    assert train_node == eval_node
    config = EvaluationConfig.from_config(train_node)
    assert config == instantiate(train_node)  # the node's _target_ builds the same validated object
    assert isinstance(config.battery_options, BatteryConfig) and config.battery_options.classifier_epochs == 5
    debug = EvaluationConfig.from_config(compose_train(["debug=default"], tmp_path, cache_dir).evaluation)
    assert (debug.num_samples, debug.kid_subset_size, debug.battery_options.classifier_epochs) == (64, 32, 1)
    assert config.battery_groups == list(GROUPS)
    assert EvaluationConfig.from_config({**train_node, "battery": False}).battery_groups == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_samples", 1), ("batch_size", 0), ("kid_subset_size", 1), ("seed", "x"), ("grid_size", 0),
     ("battery", "maybe"), ("timestep_bins", -1), ("timestep_bins", 2.5), ("num_samples", True),
     ("battery_options.kid_subsets", 0), ("battery_options.groups", ["fid"]), ("no_such_key", 1),
     ("bootstrap", 9), ("bootstrap", 100.0), ("level", 0.0), ("level", 1.0), ("level", "high")],
)
def test_evaluation_config_names_the_bad_key(key, value, tmp_path, cache_dir):
    options = OmegaConf.to_container(compose_eval([], tmp_path, cache_dir).evaluation)
    node, *path = key.split(".")
    if path:
        options[node][path[0]] = value
    else:
        options[node] = value
    with pytest.raises(ConfigError, match=rf"evaluation\.{re.escape(key)}"):
        EvaluationConfig.from_config(options)


def test_size_dependent_battery_options_fail_for_the_data_shape(tmp_path, cache_dir):
    options = OmegaConf.to_container(compose_eval([], tmp_path, cache_dir).evaluation)
    options["battery_options"]["wavelet_levels"] = 4
    config = EvaluationConfig.from_config(options)  # fine until the image size is known
    config.check_image_shape((1, 16, 16))
    with pytest.raises(ConfigError, match=r"evaluation\.battery_options\.wavelet_levels=4"):
        config.check_image_shape((1, 8, 8))
    EvaluationConfig.from_config({**options, "battery": False}).check_image_shape((1, 8, 8))  # no battery, no check


# --- features: each image set goes through the extractor once ----------------------------------------------------
class CountingProjection(nn.Module):
    """A fixed random linear feature map that records the size of every batch it sees."""

    name = "projection"

    def __init__(self, in_features: int = 64, num_features: int = 8) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(in_features, num_features,
                                                   generator=torch.Generator().manual_seed(1)) / 8)
        self.calls: list[int] = []

    def forward(self, images):
        self.calls.append(len(images))
        return images.flatten(1) @ self.weight


@pytest.mark.parametrize("battery", [True, False])
def test_each_image_set_is_extracted_once(battery, tmp_path, cache_dir):
    cfg = compose_eval([f"evaluation.battery={str(battery).lower()}", "evaluation.timestep_bins=0",
                        "evaluation.battery_options.groups=[features,statistics]", "evaluation.batch_size=1000",
                        "evaluation.kid_subset_size=20"], tmp_path, cache_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    real = datamodule.val_images
    fake = (datamodule.train_images[:40] + 0.1).clamp(-1, 1)
    extractor = CountingProjection()
    evaluation = EvaluationConfig.from_config(cfg.evaluation)
    metrics = evaluate_images(fake, datamodule, extractor, evaluation, tmp_path / "out", run_config=cfg)
    floor_count = min(len(real), len(datamodule.train_images))
    # Held-out, generated and the floor's training subset: one batch each (batch_size exceeds every set).
    assert sorted(extractor.calls) == sorted([len(real), len(fake), floor_count])
    # FID/KID from those features, KID on subsets of evaluation.kid_subset_size (battery or not).
    expected = sample_quality(real, fake, CountingProjection(), kid_subset_size=20)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9), key
    assert (f"precision_projection@{len(fake)}" in metrics) == battery
    floor = real_floor(datamodule.train_images, real, CountingProjection(), len(real), kid_subset_size=20)
    for key, value in floor.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6), key


# --- sd-train: the battery in metrics.json and report.md, the callback in TensorBoard ---------------------------
def test_sd_train_records_battery_and_report(debug_run):
    run_dir, metrics = debug_run
    stored = json.loads((run_dir / "metrics.json").read_text())
    for key in ["fid_classifier@64", "fid_floor_classifier@180", "kid_classifier@64", "sampler_nfe", "objective",
                "js_divergence", "spectral_mse", "severity"]:
        assert key in stored, key
    assert stored["objective"] == stored["recognisable_classifier@64"] and stored["sampler_nfe"] == 5
    assert stored["objective_direction"] == "maximize"
    assert "= {:.6g}** (optimized_metric, larger is better)".format(stored["objective"]) in (run_dir / "report.md").read_text()
    # LPIPS runs only with local backbone weights; otherwise it is skipped with a reason, never silently
    if "lpips_diversity" not in stored:  # the reason names this config's key
        assert "evaluation.battery_options.lpips_weights" in stored["skipped"]["lpips"]
    check_report(run_dir, metrics)


def test_callback_logs_battery_and_timestep_loss(debug_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = debug_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert [e.step for e in events.Scalars("battery/spectral_mse")] == [3, 6]
    assert all(np.isfinite(e.value) for e in events.Scalars("battery/js_divergence"))
    timestep_tags = sorted(tag for tag in scalars if tag.startswith("val_loss_by_t/"))
    assert len(timestep_tags) == 10
    assert {"battery/val_loss_by_t", "battery/radial_power_spectrum", "eval/val_loss_by_t"} <= images
    assert not any(tag.startswith("battery/classifier_auc") for tag in scalars)  # off in the callback's options
