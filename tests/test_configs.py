"""Every option of every config group composes and instantiates; bad values fail before training."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

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
# Options of the neural-field family, composed with a field dataset rather than the image debug config
# (tests/test_neural_field.py builds tiny neural-field runs).
FIELD_OPTIONS = {("model", "nf_latent"), ("trainer", "neural_field"), ("callbacks", "neural_field")}
FIELD_RUN = ["model=nf_latent", "data=signals1d"]
PLAIN = (bool, int, float, str)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def assert_built_from(node: DictConfig, obj: object, where: str) -> int:
    """``obj`` is what ``node`` asks for: the class its ``_target_`` names (a ``functools.partial`` of the
    target with exactly the node's keys for ``_partial_`` nodes), and every plain value of the node that the
    object exposes under the same name arrived unchanged. Returns how many keys were seen on the object."""
    target = get_object(node._target_)
    values = {key: value for key, value in OmegaConf.to_container(node, resolve=True).items()
              if not key.startswith("_")}
    if node.get("_partial_", False):
        assert isinstance(obj, functools.partial) and obj.func is target, where
        assert set(obj.keywords) == set(values), where
        for key, value in values.items():
            reached = obj.keywords[key]
            assert (list(reached) if isinstance(value, list) else reached) == value or isinstance(value, dict), \
                f"{where}.{key}"
        return len(values)
    assert type(obj) is target, f"{where}: {type(obj)} is not {target}"
    seen = 0
    for key, value in values.items():
        if isinstance(value, PLAIN) and isinstance(getattr(obj, key, None), PLAIN):
            assert getattr(obj, key) == value, f"{where}.{key}: {getattr(obj, key)!r} != {value!r}"
            seen += 1
    return seen


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_instantiates(group, option, tmp_path, cache_dir):
    if (group, option) == ("trainer", "gpu") and not torch.cuda.is_available():
        pytest.skip("trainer=gpu needs a CUDA device")
    field = (group, option) in FIELD_OPTIONS
    overrides = FIELD_RUN + ([] if group == "model" else [f"{group}={option}"]) if field else ["debug=default",
                                                                                                f"{group}={option}"]
    cfg = compose_train(overrides, tmp_path, cache_dir)
    node = cfg[group]
    if (group, option) == ("features", "inception"):
        # no weights file on a fresh machine: rejected when the config is built, naming the key
        with pytest.raises(ConfigError, match="features.weights_path"):
            instantiate_checked(node)
        return
    if group == "callbacks":
        for name, callback in node.items():
            assert_built_from(callback, instantiate(callback), f"callbacks.{name}")
        return
    field_model = group == "model" and field
    obj = instantiate(node, coord_dim=1, value_dim=1) if field_model else instantiate(node)
    seen = assert_built_from(node, obj, group)
    if group in ("model", "optimizer", "scheduler", "sampler", "trainer"):
        assert seen >= 1, f"no key of {group}={option} is visible on the object"
    if group == "optimizer":
        optimizer = obj([torch.nn.Parameter(torch.zeros(1))])
        assert isinstance(optimizer, torch.optim.Optimizer)
        assert optimizer.param_groups[0]["lr"] == node.lr
    elif group == "scheduler":
        scheduler = obj(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
        assert scheduler.get_last_lr()[0] == pytest.approx(1.0 / node.warmup_steps)
    elif field_model:
        z = torch.zeros(2, node.latent_dim)
        assert obj.decode(z, torch.zeros(5, 1)).shape == (2, 5, 1)
        for key, changed in (("decoder_hidden", 2 * node.decoder_hidden), ("encoder_hidden", node.encoder_hidden + 8)):
            other = node.copy()
            other[key] = changed
            assert parameter_count(instantiate(other, coord_dim=1, value_dim=1)) != parameter_count(obj), f"model.{key}"
    elif group == "model":
        shape = (2, cfg.data.source.channels, cfg.data.source.image_size, cfg.data.source.image_size)
        assert obj(torch.zeros(shape), torch.full((2,), 500.0)).shape == shape
        # keys the network does not store reach it too: each one changes its size
        for key, changed in (("base_channels", 2 * node.base_channels), ("num_res_blocks", node.num_res_blocks + 1)):
            other = node.copy()
            other[key] = changed
            assert parameter_count(instantiate(other)) != parameter_count(obj), f"model.{key}"


# Neural-field recipes (model=nf_latent on a field dataset): the image debug config does not apply to them.
FIELD_EXPERIMENTS = {"nf_mnist"}


@pytest.mark.parametrize("option", options("experiment") + [None])
def test_experiments_and_debug_build(option, tmp_path, cache_dir):
    if option in FIELD_EXPERIMENTS:
        module = build(compose_train([f"experiment={option}"], tmp_path, cache_dir)).module
        assert module.field_shape["coord_dim"] >= 1 and not hasattr(module, "image_shape")
        return
    overrides = ["debug=default"] + ([f"experiment={option}"] if option else [])
    cfg = compose_train(overrides, tmp_path, cache_dir)
    components = build(cfg)
    assert components.module.image_shape == (1, 8, 8)


def test_debug_shrinks_every_model(tmp_path, cache_dir):
    for option in options("model"):
        if ("model", option) in FIELD_OPTIONS:
            continue  # no image debug shrink applies; tests/test_neural_field.py builds tiny neural-field models
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
