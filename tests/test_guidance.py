"""Classifier-free guidance: the wrapper's scale 0 / 1 identities, the guided combination, the sampler key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.diffusion import CosineSchedule, GaussianProcess
from spectral_diffusion.diffusion.guidance import guidance_scale_of, guided_denoiser, instantiate_sampler
from spectral_diffusion.diffusion.samplers import ddim, validate_sampler
from spectral_diffusion.utils.validation import ConfigError


def conditional_denoiser(calls: list):
    """x̂0 = 0.5 x_t + condition (one scalar per row), counting calls and batch sizes."""
    def denoise(x_t, t, condition):
        calls.append(x_t.shape[0])
        return 0.5 * x_t + condition.view(-1, 1, 1, 1)
    return denoise


@pytest.mark.parametrize("scale, expected_shift", [(0.0, -1.0), (1.0, 2.0), (3.0, -1.0 + 3.0 * 3.0)])
def test_guided_combination_and_calls(scale, expected_shift):
    calls = []
    x = torch.randn(4, 1, 2, 2)
    condition, null = torch.full((4,), 2.0), torch.full((4,), -1.0)
    out = guided_denoiser(conditional_denoiser(calls), condition, null, scale)(x, torch.full((4,), 0.5))
    torch.testing.assert_close(out, 0.5 * x + expected_shift)
    assert calls == ([4] if scale in (0.0, 1.0) else [8])  # one call; a doubled batch only when guiding


def test_scale_zero_and_one_reproduce_unguided_ddim_sampling_exactly():
    process = GaussianProcess(CosineSchedule())
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    denoise = conditional_denoiser([])
    condition, null = torch.tensor([0.3, -0.2, 0.1]), torch.zeros(3)
    for scale, plain in ((0.0, null), (1.0, condition)):
        guided = ddim(guided_denoiser(denoise, condition, null, scale), process, x_T.clone(), 10)
        reference = ddim(lambda x, t, c=plain: denoise(x, t, c), process, x_T.clone(), 10)
        assert torch.equal(guided, reference)
    # a scale between changes the samples
    halfway = ddim(guided_denoiser(denoise, condition, null, 0.5), process, x_T.clone(), 10)
    assert not torch.allclose(halfway, reference)


def test_every_sampler_config_carries_a_checked_guidance_scale():
    process = GaussianProcess(CosineSchedule())
    for path in sorted((CONFIG_DIR / "sampler").glob("*.yaml")):
        node = OmegaConf.load(path)
        assert node.guidance_scale == 1.0, path.name
        node.guidance_scale = 2.5
        sampler = instantiate_sampler(node)
        validate_sampler(sampler, process)  # the key never reaches the sampler function
        assert guidance_scale_of(sampler) == 2.5 and "guidance_scale" not in sampler.keywords
    for bad in (-1.0, "strong", True):
        node.guidance_scale = bad
        with pytest.raises(ConfigError, match=r"sampler\.guidance_scale"):
            instantiate_sampler(node)
