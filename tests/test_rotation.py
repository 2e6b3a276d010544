"""Rotation-controlled sampling: frames, their consistency after undoing each rotation, strip PNG and GIF."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from PIL import Image

from spectral_diffusion.diffusion.process import GaussianProcess
from spectral_diffusion.diffusion.rotation import (
    frame_angles,
    frame_consistency,
    rotated_samples,
    save_gif,
    save_strip,
)
from spectral_diffusion.diffusion.samplers import ddim
from spectral_diffusion.diffusion.schedules import LinearSchedule
from spectral_diffusion.metrics.equivariance import rotate
from spectral_diffusion.utils.validation import ConfigError
from tests.test_equivariance import gaussian_blur, strided_conv

PROCESS = GaussianProcess(LinearSchedule(timesteps=100))
SAMPLER = partial(ddim, steps=4)


def noise(count: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(count, 1, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("every_step", [False, True])
def test_an_equivariant_denoiser_gives_consistent_frames_and_a_strided_one_does_not(every_step):
    angles = [-45.0, 0.0, 30.0]
    options = dict(every_step=every_step, steps=4)
    smooth = rotated_samples(lambda x, t: 0.5 * gaussian_blur(x), PROCESS, SAMPLER, noise(), angles, **options)
    aliased = rotated_samples(lambda x, t: strided_conv(x), PROCESS, SAMPLER, noise(), angles, **options)
    assert smooth.shape == (3, 2, 1, 16, 16)
    good, bad = frame_consistency(smooth, angles), frame_consistency(aliased, angles)
    assert len(good) == 2 and min(good) > 35 and min(good) - max(bad) > 15


def test_angle_zero_is_the_plain_sample_and_rotation_is_of_x_T():
    denoise = lambda x, t: 0.5 * gaussian_blur(x)  # noqa: E731
    frames = rotated_samples(denoise, PROCESS, SAMPLER, noise(), [0.0, 90.0])
    torch.testing.assert_close(frames[0], SAMPLER(denoise, PROCESS, noise()).clamp(-1, 1))
    torch.testing.assert_close(frames[1], torch.rot90(frames[0], 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    spread = rotated_samples(denoise, PROCESS, SAMPLER, noise(), [90.0], every_step=True, steps=4)
    assert not torch.allclose(spread[0], frames[1])  # rotated along the way, not only at the start
    assert rotate(noise(), 0.0).equal(noise())


def test_strip_png_and_gif_have_the_requested_frames(tmp_path):
    angles = frame_angles(5)
    assert angles == [-90.0, -45.0, 0.0, 45.0, 90.0]
    frames = torch.rand(5, 3, 3, 16, 16) * 2 - 1
    strip = Image.open(save_strip(frames, tmp_path / "strip.png"))
    assert strip.size == (5 * 16, 3 * 16)
    gif = Image.open(save_gif(frames, tmp_path / "frames.gif"))
    assert gif.n_frames == 5 and gif.size == (3 * 16, 16)


@pytest.mark.parametrize("angles", [[], "90", [float("nan")], [True]])
def test_bad_angles_are_rejected_naming_the_key(angles):
    with pytest.raises(ConfigError, match=r"rotation\.angles"):
        rotated_samples(lambda x, t: x, PROCESS, SAMPLER, noise(), angles)


def test_non_square_images_and_too_few_frames_are_rejected():
    with pytest.raises(ConfigError, match="square"):
        rotated_samples(lambda x, t: x, PROCESS, SAMPLER, torch.zeros(1, 1, 8, 12), [10.0])
    with pytest.raises(ConfigError, match=r"rotation\.frames"):
        frame_angles(1)


def test_sd_sample_writes_rotation_frames(tmp_path, cache_dir):
    import json

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from spectral_diffusion.cli import CONFIG_DIR
    from spectral_diffusion.cli.sample import sample
    from spectral_diffusion.pipeline import build
    from tests.conftest import compose_train

    train_cfg = compose_train(["debug=default", "model=unet_alias_free", "model.version=1"], tmp_path, cache_dir)
    module = build(train_cfg).module
    ckpt = tmp_path / "model.ckpt"
    torch.save({"spectral_diffusion_config": OmegaConf.to_container(train_cfg, resolve=True),
                "state_dict": module.state_dict()}, ckpt)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="sample", overrides=[f"ckpt_path={ckpt}", "sampler=ddim", "sampler.steps=3", "n=2",
                                                       "rotation.frames=3", "device=cpu"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "sampled")
    strip = sample(cfg)
    report = json.loads((tmp_path / "sampled" / "rotation.json").read_text())
    assert report["angles"] == [-90.0, 0.0, 90.0] and len(report["frame_psnr"]) == 2
    assert Image.open(strip).size == (3 * 8, 2 * 8)
    assert Image.open(tmp_path / "sampled" / "rotation.gif").n_frames == 3
    with open_dict(cfg):
        cfg.rotation.angles = [10.0]
    with pytest.raises(ConfigError, match="rotation.angles and rotation.frames"):
        sample(cfg)
