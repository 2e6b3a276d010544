"""Every option of every config group composes and instantiates; bad values fail before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.pipeline import build, instantiate_checked, train
from spectral_diffusion.utils.validation import ConfigError

from .conftest import compose_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def test_groups_exist():
    expected = {"data", "model", "noise", "loss", "optimizer", "sampler", "trainer", "logger", "callbacks",
                "paths", "experiment", "debug"}
    assert expected <= {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}


@pytest.mark.parametrize("option", options("noise"))
@pytest.mark.parametrize("schedule", options("noise/schedule"))
def test_noise_options(option, schedule, tmp_path, cache_dir):
    cfg = compose_train([f"noise={option}", f"noise/schedule={schedule}"], tmp_path, cache_dir)
    process = instantiate(cfg.noise)
    assert process.schedule.alpha_bar(torch.tensor(0.5)).item() < 1


GROUPS = ["model", "loss", "optimizer", "scheduler", "sampler", "trainer", "logger", "callbacks", "features"]


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_instantiates(group, option, tmp_path, cache_dir):
    if (group, option) == ("trainer", "gpu") and not torch.cuda.is_available():
        pytest.skip("trainer=gpu needs a CUDA device")
    cfg = compose_train(["debug=default", f"{group}={option}"], tmp_path, cache_dir)
    node = cfg[group]
    if (group, option) == ("features", "inception"):
        # no weights file on a fresh machine: rejected when the config is built, naming the key
        with pytest.raises(ConfigError, match="features.weights_path"):
            instantiate_checked(node)
        return
    if group == "callbacks":
        assert [instantiate(c) for c in node.values()]
        return
    obj = instantiate(node)
    if group == "optimizer":
        assert isinstance(obj([torch.nn.Parameter(torch.zeros(1))]), torch.optim.Optimizer)
    elif group == "scheduler":
        scheduler = obj(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert obj is not None


@pytest.mark.parametrize("option", options("experiment") + [None])
def test_experiments_and_debug_build(option, tmp_path, cache_dir):
    overrides = ["debug=default"] + ([f"experiment={option}"] if option else [])
    cfg = compose_train(overrides, tmp_path, cache_dir)
    components = build(cfg)
    assert components.module.image_shape == (1, 8, 8)


def test_debug_shrinks_every_model(tmp_path, cache_dir):
    for option in options("model"):
        cfg = compose_train(["debug=default", f"model={option}"], tmp_path, cache_dir)
        module = build(cfg).module
        assert module.num_parameters() < 100_000, option


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.source.image_size=9"], "model.image_size"),
        (["sampler.steps=0"], "sampler.steps"),
        (["sampler.eta=-0.5"], "sampler.eta"),
        (["~prediction"], "prediction"),
        (["data=image_folder", "data.source.root=/nonexistent/folder"], "data.source.root"),
        (["data=cifar10"], "data.source.root"),
        (["optimized_metric=psnr"], "optimized_metric"),
        (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path"),
        (["evaluation.num_samples=1"], "evaluation.num_samples"),
    ],
)
def test_bad_input_fails_before_training(overrides, key, tmp_path, cache_dir):
    cfg = compose_train(["debug=default"] + overrides, tmp_path, cache_dir)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_config_keys_are_all_read(tmp_path, cache_dir):
    """An unknown key in a group node is rejected by instantiate (no silent dead keys)."""
    cfg = compose_train(["debug=default"], tmp_path, cache_dir)
    with open_dict(cfg):
        cfg.sampler.stepz = 3
    with pytest.raises(ConfigError, match="sampler.stepz"):
        train(cfg)
    with open_dict(cfg):
        cfg.model.widht = 4
    with pytest.raises(Exception, match="widht"):
        instantiate(cfg.model)
