"""The battery groups that need the model (equivariance, straightness): their keys in metrics.json and their figures
in report.md at the end of a tiny sd-train and in sd-eval from its checkpoint, gone when the groups are off, skipped
with a reason for samples alone, their options checked naming the key, and every backbone measured."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from spectral_diffusion.evaluation import EvaluationConfig
from spectral_diffusion.evaluation.evaluate import MODEL_GROUP_FUNCTIONS
from spectral_diffusion.metrics.battery import MODEL_GROUP_REASON, BatteryConfig
from spectral_diffusion.pipeline import build, evaluate, train
from spectral_diffusion.utils.validation import ConfigError

from .conftest import compose_train
from .test_eval import check_report, compose_eval

SCALARS = {"equivariance": ["eq_t", "eq_t_frac", "eq_r", "eq_r_generation"],
           "straightness": ["straightness", "straightness_deviation_peak", "straightness_deviation_peak_t"]}
PER_T = {"equivariance": "eq_by_t", "straightness": "straightness_by_t"}
TINY_OPTIONS = ["evaluation.battery_options.equivariance_images=8", "evaluation.battery_options.equivariance_bins=2",
                "evaluation.battery_options.equivariance_steps=3",
                "evaluation.battery_options.equivariance_generation_samples=2",
                "evaluation.battery_options.straightness_samples=4", "evaluation.battery_options.straightness_steps=3"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir) -> tuple[Path, dict]:
    """sd-train on 8x8 digits for 4 steps with the statistics and both model groups."""
    tmp_path = tmp_path_factory.mktemp("model_groups")
    cfg = compose_train(["debug=default", "trainer.max_steps=4", "scheduler.warmup_steps=1", "features=none",
                         "evaluation.num_samples=16", "evaluation.bootstrap=null", "evaluation.timestep_bins=0",
                         "evaluation.battery_options.groups=[statistics,equivariance,straightness]",
                         "callbacks.spectral_eval=null", "callbacks.sample_grid=null", *TINY_OPTIONS],
                        tmp_path, cache_dir)
    metrics = train(cfg)
    return Path(cfg.paths.output_dir), metrics


def test_sd_train_writes_the_model_groups_into_metrics_json_and_the_report(tiny_run):
    run_dir, metrics = tiny_run
    stored = json.loads((run_dir / "metrics.json").read_text())
    for group, keys in SCALARS.items():
        for key in keys:
            assert isinstance(stored[key], float) and math.isfinite(stored[key]), key
        assert group not in stored["skipped"]
        assert (run_dir / "figures" / f"{group}_by_t.png").is_file()
    assert len(stored["eq_by_t"]["t"]) == 2 and len(stored["eq_by_t"]["eq_r"]) == 2
    assert len(stored["straightness_by_t"]["t"]) == len(stored["straightness_by_t"]["deviation"]) == 3
    assert stored["straightness"] >= 0 and 0 <= stored["straightness_deviation_peak"] <= 2
    assert stored["straightness_deviation_peak_t"] in stored["straightness_by_t"]["t"]
    assert stored["eq_t"] == pytest.approx(sum(stored["eq_by_t"]["eq_t"]) / 2)
    report = (run_dir / "report.md").read_text()
    assert re.search(r"^\| `eq_r_generation` \| [^|]+ \| [^|]+ \| generation rotation equivariance", report,
                     flags=re.MULTILINE)
    check_report(run_dir, metrics)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"eval/equivariance_by_t", "eval/straightness_by_t"} <= set(events.Tags()["images"])
    assert {"eval/eq_r", "eval/straightness"} <= set(events.Tags()["scalars"])


def test_sd_eval_computes_the_groups_it_is_given_and_no_others(tiny_run, tmp_path, cache_dir):
    run_dir, _ = tiny_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    common = [f"ckpt_path={ckpt}", "features=none", "optimized_metric=js_divergence", "evaluation.num_samples=8",
              "sampler=ddim", "sampler.steps=2", "evaluation.timestep_bins=0", *TINY_OPTIONS]
    only_straightness = evaluate(compose_eval([*common, "evaluation.bootstrap=20",
                                               "evaluation.battery_options.groups=[statistics,straightness]"],
                                              tmp_path / "one", cache_dir))
    stored = json.loads((tmp_path / "one" / "eval" / "metrics.json").read_text())
    assert set(SCALARS["straightness"]) <= set(stored) and "straightness_by_t" in stored
    assert stored["straightness_ci_low"] <= stored["straightness"] <= stored["straightness_ci_high"]
    check_report(tmp_path / "one" / "eval", only_straightness)
    assert not any(key.startswith("eq_") for key in stored)
    off = evaluate(compose_eval([*common, "evaluation.bootstrap=null",
                                 "evaluation.battery_options.groups=[statistics]"], tmp_path / "off", cache_dir))
    for group, keys in SCALARS.items():
        assert not set(keys) & set(off) and PER_T[group] not in off and group not in off["skipped"]
    assert not (tmp_path / "off" / "eval" / "figures" / "straightness_by_t.png").exists()
    # the same model, seed and options give the same straightness in sd-train's and sd-eval's evaluation
    assert only_straightness["straightness"] == pytest.approx(tiny_run[1]["straightness"], rel=1e-5)


def test_samples_alone_skip_the_model_groups_with_the_reason(tiny_run, tmp_path, cache_dir):
    run_dir, _ = tiny_run
    metrics = evaluate(compose_eval([f"samples={run_dir / 'samples.npz'}", "features=none",
                                     "optimized_metric=js_divergence",
                                     "evaluation.bootstrap=null", "evaluation.timestep_bins=0",
                                     "evaluation.battery_options.groups=[statistics,equivariance,straightness]"],
                                    tmp_path, cache_dir))
    assert metrics["skipped"]["equivariance"] == metrics["skipped"]["straightness"] == MODEL_GROUP_REASON
    assert "js_divergence" in metrics and not any(k.startswith(("eq_", "straightness")) for k in metrics)
    # nor can they be the objective: refused before any work, naming the key
    with pytest.raises(ConfigError, match=r"optimized_metric='straightness' is not a metric this run computes"):
        evaluate(compose_eval([f"samples={run_dir / 'samples.npz'}", "features=none", "optimized_metric=straightness",
                               "evaluation.battery_options.groups=[statistics,straightness]"], tmp_path, cache_dir))


@pytest.mark.parametrize(
    ("key", "value"),
    [("equivariance_images", 0), ("equivariance_bins", 0), ("equivariance_bins", 2.5), ("equivariance_degrees", 0),
     ("equivariance_degrees", 270), ("equivariance_degrees", "right"), ("equivariance_steps", 0),
     ("equivariance_generation_samples", 0), ("straightness_samples", 0), ("straightness_steps", -1),
     ("groups", ["equivariance", "curvature"])],
)
def test_bad_model_group_options_name_the_key(key, value, tmp_path, cache_dir):
    options = OmegaConf.to_container(compose_eval([], tmp_path, cache_dir).evaluation)
    options["battery_options"][key] = value
    with pytest.raises(ConfigError, match=rf"evaluation\.battery_options\.{key}"):
        EvaluationConfig.from_config(options)


def test_equivariance_refuses_non_square_images_before_any_work(tmp_path, cache_dir):
    options = OmegaConf.to_container(compose_eval([], tmp_path, cache_dir).evaluation)
    options["battery_options"]["groups"] = ["statistics", "equivariance"]
    config = EvaluationConfig.from_config(options)
    config.check_image_shape((1, 8, 8))
    with pytest.raises(ConfigError, match=r"evaluation\.battery_options\.groups.*equivariance.*8x12"):
        config.check_image_shape((1, 8, 12))
    options["battery_options"]["groups"] = ["statistics", "straightness"]
    EvaluationConfig.from_config(options).check_image_shape((1, 8, 12))  # straightness does not rotate


@pytest.mark.parametrize("model", ["unet", "unet_tiny", "unet_alias_free", "unet_hybrid", "unet_spectral"])
def test_every_backbone_has_both_model_groups(model, tmp_path, cache_dir):
    overrides = ["debug=default", f"model={model}", "data.source.image_size=16"]
    if model == "unet_alias_free":
        overrides.append("model.version=1")
    cfg = compose_train(overrides, tmp_path, cache_dir)
    components = build(cfg)
    module, images = components.module, components.datamodule.val_images
    torch.manual_seed(0)
    with torch.no_grad():  # untrained heads start at zero, which every transform commutes with
        for parameter in module.ema.module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    options = BatteryConfig(equivariance_images=4, equivariance_bins=2, equivariance_steps=2,
                            equivariance_generation_samples=2, straightness_samples=3, straightness_steps=2)
    evaluation = EvaluationConfig(num_samples=2, batch_size=8, kid_subset_size=None, seed=0, grid_size=1,
                                  battery=True, timestep_bins=0, bootstrap=None, level=0.95,
                                  battery_options=options)
    for group, function in MODEL_GROUP_FUNCTIONS.items():
        metrics, figure = function(module, images, evaluation)
        for key in SCALARS[group]:
            assert math.isfinite(metrics[key]), (model, key)
        assert figure.axes
    assert metrics["straightness"] > 0  # a random network's trajectories bend
