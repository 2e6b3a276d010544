"""Tests of the denoiser backbones: shapes, maths of the layers against plain references, every
option changing the computation, config validation, the Hydra configs and trainability."""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from spectral_diffusion.models import (
    AttentionBlock,
    ResBlock,
    UNet,
    sinusoidal_timestep_embedding,
)
from spectral_diffusion.utils.validation import ConfigError

from .conftest import compose_train

MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "model"

# Small but complete: two downsamplings, attention at one level and in the middle, FiLM off.
SMALL = dict(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, num_heads=2)
# The sizes of conf/model/unet_tiny.yaml: two levels, one ResBlock each, no attention.
TINY = dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(), mid_attention=False)
# Its parameter count for 1 channel at 16x16, as the README's model table reports it.
TINY_PARAMETERS = 159_697


def tiny_unet(**overrides) -> UNet:
    return UNet(**{**TINY, **overrides})


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def perturb_output_conv(model: UNet, seed: int = 0) -> UNet:
    """The output conv starts at zero, which hides everything before it; give it random weights."""
    generator = torch.Generator().manual_seed(seed)
    conv = model.out[-1]
    with torch.no_grad():
        conv.weight.copy_(0.1 * torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=generator))
    return model


def inputs(batch: int = 2, channels: int = 1, size: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=generator)
    noise_level = 1000 * torch.rand(batch, generator=generator)
    return x, noise_level


def load_model_config(name: str, channels: int = 1, image_size: int = 16):
    data = OmegaConf.create({"data": {"source": {"channels": channels, "image_size": image_size}}})
    merged = OmegaConf.merge(data, {"model": OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml")})
    return merged.model


# ---------------------------------------------------------------- shapes and basic behaviour


@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_matches_input(size, channels):
    torch.manual_seed(0)
    model = UNet(in_channels=channels, image_size=size, attention_resolutions=(size // 2,), **SMALL)
    x, noise_level = inputs(batch=3, channels=channels, size=size)
    assert model(x, noise_level).shape == x.shape


def test_out_channels_sets_the_prediction_channels():
    model = UNet(in_channels=3, out_channels=6, image_size=8, attention_resolutions=(), **SMALL)
    x, noise_level = inputs(channels=3, size=8)
    assert model(x, noise_level).shape == (2, 6, 8, 8)


def test_untrained_model_predicts_zero():
    torch.manual_seed(0)
    x, noise_level = inputs()
    assert torch.count_nonzero(UNet(**SMALL)(x, noise_level)) == 0


def test_output_depends_on_noise_level_and_input():
    torch.manual_seed(0)
    model = perturb_output_conv(UNet(**SMALL))
    x, _ = inputs()
    low, high = torch.full((2,), 10.0), torch.full((2,), 900.0)
    assert torch.equal(model(x, low), model(x, low))
    assert (model(x, low) - model(x, high)).abs().max() > 1e-3
    assert (model(x, low) - model(x + 0.5, low)).abs().max() > 1e-3


def test_each_sample_uses_its_own_noise_level():
    torch.manual_seed(0)
    model = perturb_output_conv(UNet(**SMALL))
    x, _ = inputs(batch=1)
    batched = model(x.expand(2, -1, -1, -1), torch.tensor([10.0, 900.0]))
    torch.testing.assert_close(batched[0:1], model(x, torch.tensor([10.0])), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[1:2], model(x, torch.tensor([900.0])), rtol=1e-4, atol=1e-5)


def test_scalar_noise_level_is_broadcast_to_the_batch():
    torch.manual_seed(0)
    model = perturb_output_conv(tiny_unet())
    x, _ = inputs(batch=3)
    torch.testing.assert_close(model(x, torch.tensor(250.0)), model(x, torch.full((3,), 250.0)))


@pytest.mark.parametrize(
    "shape, noise_shape",
    [((2, 1, 8, 8), (2,)), ((2, 3, 16, 16), (2,)), ((2, 1, 16, 16), (3,)), ((1, 16, 16), (1,))],
)
def test_wrong_input_shapes_are_rejected(shape, noise_shape):
    with pytest.raises(ValueError, match="shape"):
        tiny_unet()(torch.zeros(shape), torch.zeros(noise_shape))


# ---------------------------------------------------------------- layers against references


def test_sinusoidal_embedding_matches_numpy_formula():
    noise_level = np.array([0.0, 1.0, 17.5, 999.0])
    dim, max_period = 32, 10000.0
    half = dim // 2
    expected = np.zeros((len(noise_level), dim))
    for i in range(half):
        frequency = max_period ** (-i / half)
        expected[:, i] = np.cos(noise_level * frequency)
        expected[:, half + i] = np.sin(noise_level * frequency)
    actual = sinusoidal_timestep_embedding(torch.tensor(noise_level), dim, max_period)
    assert actual.dtype == torch.float32
    np.testing.assert_allclose(actual.numpy(), expected, atol=2e-4)
    # t = 0 gives cos = 1, sin = 0 at every frequency.
    np.testing.assert_array_equal(actual[0].numpy(), np.r_[np.ones(half), np.zeros(half)])


def test_sinusoidal_embedding_is_float32_even_from_bfloat16_autocast():
    noise_level = torch.tensor([999.0, 998.0, 3.25])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embedding = sinusoidal_timestep_embedding(noise_level, 16)
    assert embedding.dtype == torch.float32
    outside_autocast = sinusoidal_timestep_embedding(noise_level, 16)
    torch.testing.assert_close(embedding, outside_autocast, rtol=0, atol=0)


def test_sinusoidal_embedding_rejects_odd_dim():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_timestep_embedding(torch.zeros(1), 7)


def reference_attention(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head, written out with einsum from the block's weights."""
    batch, channels, height, width = x.shape
    heads = block.num_heads
    head_dim = channels // heads
    norm = block.norm
    normed = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    tokens = normed.reshape(batch, channels, height * width)  # (B, C, N), pixels in row-major order
    qkv = torch.einsum("oc,bcn->bon", block.qkv.weight, tokens) + block.qkv.bias[None, :, None]
    query, key, value = (
        part.reshape(batch, heads, head_dim, height * width) for part in qkv.split(channels, dim=1)
    )
    scores = torch.einsum("bhdn,bhdm->bhnm", query, key) / math.sqrt(head_dim)
    attended = torch.einsum("bhnm,bhdm->bhdn", torch.softmax(scores, dim=-1), value)
    attended = attended.reshape(batch, channels, height * width)
    projected = torch.einsum("oc,bcn->bon", block.proj_out.weight, attended)
    projected = projected + block.proj_out.bias[None, :, None]
    return x + projected.reshape(batch, channels, height, width)


@pytest.mark.parametrize("num_heads", [1, 4])
def test_attention_block_matches_plain_softmax_reference(num_heads):
    torch.manual_seed(0)
    block = AttentionBlock(16, num_heads=num_heads, groups=4)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0.0, 0.5)
    x = torch.randn(2, 16, 3, 5)  # non-square, to catch a swapped height and width
    torch.testing.assert_close(block(x), reference_attention(block, x), rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision = block(x)
    reference = reference_attention(block, x)
    torch.testing.assert_close(low_precision.float(), reference, rtol=0.05, atol=0.1)


def test_attention_heads_change_the_computation():
    torch.manual_seed(0)
    one_head = AttentionBlock(16, num_heads=1, groups=4)
    with torch.no_grad():
        one_head.qkv.weight.normal_(0.0, 0.5)
    four_heads = AttentionBlock(16, num_heads=4, groups=4)
    four_heads.load_state_dict(one_head.state_dict())
    x = torch.randn(2, 16, 4, 4)
    assert (one_head(x) - four_heads(x)).abs().max() > 1e-3


def test_resblock_additive_embedding_matches_formula():
    torch.manual_seed(0)
    block = ResBlock(8, 16, time_embed_dim=12, groups=4)
    x, embedding = torch.randn(2, 8, 6, 6), torch.randn(2, 12)
    h = block.in_conv(F.silu(block.in_norm(x)))
    h = h + block.time_projection[1](F.silu(embedding))[:, :, None, None]
    h = block.out_conv(F.silu(block.out_norm(h)))
    expected = block.skip(x) + h
    assert isinstance(block.skip, torch.nn.Conv2d)  # channels change: a 1x1 conv on the skip path
    torch.testing.assert_close(block(x, embedding), expected)


def test_resblock_scale_shift_norm_matches_film_formula():
    torch.manual_seed(0)
    block = ResBlock(16, 16, time_embed_dim=12, groups=4, use_scale_shift_norm=True)
    x, embedding = torch.randn(2, 16, 6, 6), torch.randn(2, 12)
    scale, shift = block.time_projection[1](F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
    h = block.in_conv(F.silu(block.in_norm(x)))
    h = block.out_norm(h) * (1 + scale) + shift
    expected = x + block.out_conv(F.silu(h))
    assert isinstance(block.skip, torch.nn.Identity)
    torch.testing.assert_close(block(x, embedding), expected)


def test_scale_shift_norm_changes_the_unet():
    torch.manual_seed(0)
    additive = UNet(**SMALL)
    film = UNet(**SMALL, use_scale_shift_norm=True)
    # FiLM projects the embedding to twice the channels: one extra (time_dim x C + C) per block.
    assert parameter_count(film) > parameter_count(additive)
    perturb_output_conv(film)
    x, noise_level = inputs()
    assert (film(x, noise_level) - film(x, noise_level.flip(0))).abs().max() > 1e-3


# ---------------------------------------------------------------- options change the computation


def test_dropout_is_active_in_train_mode_only():
    torch.manual_seed(0)
    model = perturb_output_conv(tiny_unet(dropout=0.5))
    x, noise_level = inputs()
    model.train()
    assert (model(x, noise_level) - model(x, noise_level)).abs().max() > 1e-4
    model.eval()
    evaluated = model(x, noise_level)
    torch.testing.assert_close(model(x, noise_level), evaluated, rtol=0, atol=0)
    without_dropout = perturb_output_conv(tiny_unet(dropout=0.0)).train()
    without_dropout.load_state_dict(model.state_dict())
    torch.testing.assert_close(without_dropout(x, noise_level), evaluated)


def transplant_without(model_with: UNet, model_without: UNet, attention_names: list[str]) -> None:
    """Copy every weight of ``model_without`` into ``model_with``; the extra attention blocks get a
    zero output projection, which makes them the identity."""
    missing, unexpected = model_with.load_state_dict(model_without.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(any(name in key for name in attention_names) for key in missing)
    with torch.no_grad():
        for module in model_with.modules():
            if isinstance(module, AttentionBlock):
                module.proj_out.weight.zero_()
                module.proj_out.bias.zero_()


def attention_blocks(model: UNet) -> list[AttentionBlock]:
    return [module for module in model.modules() if isinstance(module, AttentionBlock)]


def test_attention_resolutions_add_attention_that_is_used():
    torch.manual_seed(0)
    without = perturb_output_conv(UNet(**SMALL, attention_resolutions=(), mid_attention=False))
    with_attention = UNet(**SMALL, attention_resolutions=(8,), mid_attention=False)
    # 8x8 is level 1: one down block and two up blocks.
    assert len(attention_blocks(with_attention)) == 3
    assert parameter_count(with_attention) > parameter_count(without)
    transplant_without(with_attention, without, ["attention"])
    x, noise_level = inputs()
    torch.testing.assert_close(with_attention(x, noise_level), without(x, noise_level))
    with torch.no_grad():
        attention_blocks(with_attention)[0].proj_out.weight.normal_(0.0, 0.3)
    assert (with_attention(x, noise_level) - without(x, noise_level)).abs().max() > 1e-3


def test_attention_at_each_resolution_lands_at_that_resolution():
    seen: list[int] = []
    model = UNet(**SMALL, attention_resolutions=(16, 4), mid_attention=False)
    for block in attention_blocks(model):
        block.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[-1]))
    model(*inputs())
    assert sorted(seen) == [4, 4, 4, 16, 16, 16]


def test_mid_attention_adds_attention_that_is_used():
    torch.manual_seed(0)
    without = perturb_output_conv(UNet(**SMALL, attention_resolutions=(), mid_attention=False))
    with_mid = UNet(**SMALL, attention_resolutions=(), mid_attention=True)
    assert len(attention_blocks(with_mid)) == 1
    transplant_without(with_mid, without, ["middle.0.attention"])
    x, noise_level = inputs()
    torch.testing.assert_close(with_mid(x, noise_level), without(x, noise_level))
    with torch.no_grad():
        attention_blocks(with_mid)[0].proj_out.weight.normal_(0.0, 0.3)
    assert (with_mid(x, noise_level) - without(x, noise_level)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "change",
    [
        dict(base_channels=24),
        dict(channel_mults=(1, 2)),
        dict(num_res_blocks=2),
        dict(num_heads=4),
        dict(groups=4),
    ],
)
def test_every_structural_option_changes_the_network(change):
    torch.manual_seed(0)
    reference = UNet(**SMALL, attention_resolutions=(8,))
    torch.manual_seed(0)
    changed = UNet(**{**SMALL, "attention_resolutions": (8,), **change})
    same_shapes = [p.shape for p in reference.state_dict().values()] == [
        p.shape for p in changed.state_dict().values()
    ]
    if same_shapes:  # num_heads and groups keep every weight shape but change the function
        changed.load_state_dict(reference.state_dict())
        perturb_output_conv(reference)
        perturb_output_conv(changed)
        x, noise_level = inputs()
        assert (reference(x, noise_level) - changed(x, noise_level)).abs().max() > 1e-4
    else:
        assert parameter_count(changed) != parameter_count(reference)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, key, detail",
    [
        (dict(image_size=10, channel_mults=(1, 2, 2)), "model.image_size", "multiple of 4"),
        (dict(image_size=12, channel_mults=(1, 2, 2, 2)), "model.image_size", "3 downsamplings"),
        (dict(image_size=0), "model.image_size", ">= 1"),
        (dict(groups=5), "model.groups", "does not divide"),
        (dict(base_channels=12, groups=8), "model.groups", "[12]"),
        (dict(attention_resolutions=(5,)), "model.attention_resolutions", "[16, 8, 4]"),
        (dict(attention_resolutions=(32,)), "model.attention_resolutions", "[16, 8, 4]"),
        (dict(attention_resolutions=(8,), num_heads=3), "model.num_heads", "divide"),
        (dict(channel_mults=()), "model.channel_mults", "at least one"),
        (dict(channel_mults=(1, 0)), "model.channel_mults[1]", ">= 1"),
        (dict(channel_mults=(1, 2.5)), "model.channel_mults[1]", "an integer >= 1"),
        (dict(channel_mults="12"), "model.channel_mults", "list"),
        (dict(base_channels=0), "model.base_channels", ">= 1"),
        (dict(num_res_blocks=0), "model.num_res_blocks", ">= 1"),
        (dict(in_channels=0), "model.in_channels", ">= 1"),
        (dict(out_channels=0), "model.out_channels", ">= 1"),
        (dict(num_heads=0), "model.num_heads", ">= 1"),
        (dict(dropout=1.0), "model.dropout", "[0, 1)"),
        (dict(dropout=-0.1), "model.dropout", ">= 0"),
    ],
)
def test_bad_config_raises_config_error_naming_the_key(kwargs, key, detail):
    with pytest.raises(ConfigError) as error:
        UNet(**{"base_channels": 16, **kwargs})
    assert key in str(error.value)
    assert detail in str(error.value)


@pytest.mark.parametrize("image_size", [4, 8, 12, 28])
def test_sizes_that_divide_evenly_are_accepted(image_size):
    """Any multiple of 2^(levels - 1) works, including sizes whose lowest level is odd (12 -> 3, 28 -> 7):
    the up path restores every skip's size, so the prediction has the input's shape and depends on it."""
    torch.manual_seed(0)
    model = perturb_output_conv(UNet(image_size=image_size, base_channels=8, attention_resolutions=()))
    x, noise_level = inputs(size=image_size)
    output = model(x, noise_level)
    assert output.shape == x.shape
    assert torch.isfinite(output).all()
    assert (model(x.flip(-1), noise_level) - output).abs().max() > 1e-4


# ---------------------------------------------------------------- Hydra configs


def test_unet_config_instantiates_with_yaml_lists():
    config = load_model_config("unet")
    model = hydra.utils.instantiate(config)
    assert type(model) is UNet
    x, noise_level = inputs()
    assert model(x, noise_level).shape == x.shape
    # Default sized for the 2-core CPU run (about 0.5-1.5 M parameters, see conf/model/unet.yaml).
    assert 0.5e6 < parameter_count(model) < 1.5e6


def test_unet_tiny_is_a_config_of_unet_with_its_documented_size():
    config = load_model_config("unet_tiny")
    assert {key: tuple(config[key]) if key in ("channel_mults", "attention_resolutions") else config[key]
            for key in TINY} == TINY
    model = hydra.utils.instantiate(config)
    assert type(model) is UNet
    assert parameter_count(model) == TINY_PARAMETERS
    assert len(model.down_levels) == 2 and all(len(level.blocks) == 1 for level in model.down_levels)
    assert not any(isinstance(module, AttentionBlock) for module in model.modules())
    rgb = hydra.utils.instantiate(load_model_config("unet_tiny", channels=3, image_size=8))
    assert rgb(*inputs(channels=3, size=8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("option", ["freq_attention", "band_heads"])
def test_unet_tiny_takes_every_unet_option(option, tmp_path, cache_dir):
    """``model=unet_tiny model.freq_attention=true`` (or ``model.band_heads=2``) builds the tiny UNet with
    the option, which changes the prediction of the same weights."""
    value = {"freq_attention": "true", "band_heads": "2"}[option]
    plain_cfg = compose_train(["model=unet_tiny"], tmp_path, cache_dir)
    cfg = compose_train(["model=unet_tiny", f"model.{option}={value}"], tmp_path, cache_dir)
    torch.manual_seed(0)
    plain = hydra.utils.instantiate(plain_cfg.model)
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model)
    assert type(model) is UNet
    assert parameter_count(model) > parameter_count(plain) == TINY_PARAMETERS
    shared = {key: value for key, value in plain.state_dict().items() if not key.startswith("out.2.")}
    missing, unexpected = model.load_state_dict(shared, strict=False)
    assert not unexpected and all("frequency_attention" in key or key.startswith("out.2.") for key in missing)
    perturb_output_conv(plain)
    head = model.out[-1]
    with torch.no_grad():  # every band head gets the plain head's weights: K equal heads are the plain head
        head.weight.copy_(plain.out[-1].weight.repeat(head.weight.shape[0], 1, 1, 1))
        head.bias.copy_(plain.out[-1].bias.repeat(head.bias.shape[0]))
    x, noise_level = inputs()
    # At initialisation the option is the identity (zero-initialised attention output, equal heads) ...
    torch.testing.assert_close(model(x, noise_level), plain(x, noise_level), rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # ... and its own parameters change the prediction
        if option == "freq_attention":
            for name, parameter in model.named_parameters():
                if "frequency_attention" in name:
                    parameter.add_(0.5 * torch.randn_like(parameter))
        else:
            head.weight[plain.out_channels:].add_(0.5 * torch.randn_like(head.weight[plain.out_channels:]))
    difference = (model(x, noise_level) - plain(x, noise_level)).abs().max()
    assert difference > 1e-3


@pytest.mark.parametrize("name, cls", [("unet", UNet), ("unet_tiny", UNet)])
def test_every_config_key_is_a_constructor_argument(name, cls):
    keys = set(OmegaConf.load(MODEL_CONFIGS / f"{name}.yaml")) - {"_target_"}
    assert keys == set(inspect.signature(cls).parameters) - set(UNet.INJECTED_LAYERS) - set(UNet.DATA_SIZED)


def test_every_alias_free_config_key_is_a_constructor_argument():
    keys = set(OmegaConf.load(MODEL_CONFIGS / "unet_alias_free.yaml")) - {"_target_"}
    unet_keys = set(inspect.signature(UNet).parameters) - set(UNet.INJECTED_LAYERS) - set(UNet.DATA_SIZED)
    assert keys == {"version", "filter"} | unet_keys
    model = hydra.utils.instantiate(load_model_config("unet_alias_free"))
    assert model.version == 3 and model.design.taps == 6


def test_config_overrides_reach_the_model():
    config = load_model_config("unet")
    config.channel_mults = [1, 2]
    config.attention_resolutions = [16]
    model = hydra.utils.instantiate(config)
    assert len(model.down_levels) == 2
    assert isinstance(model.down_levels[0].blocks[0].attention, AttentionBlock)
    assert model.down_levels[1].blocks[0].attention is None  # 8x8: not in attention_resolutions


def test_unet_tiny_is_smaller_than_unet():
    tiny = hydra.utils.instantiate(load_model_config("unet_tiny"))
    full = hydra.utils.instantiate(load_model_config("unet"))
    assert parameter_count(tiny) < parameter_count(full)


# ---------------------------------------------------------------- training


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = UNet(**SMALL, attention_resolutions=(8,), use_scale_shift_norm=True)
    perturb_output_conv(model)
    x, noise_level = inputs()
    loss = (model(x, noise_level) - torch.randn_like(x)).pow(2).mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().max() > 0, name


@pytest.mark.parametrize("autocast", [False, True])
def test_forward_backward_in_float32_and_bfloat16_autocast(autocast):
    torch.manual_seed(0)
    model = perturb_output_conv(UNet(**SMALL, attention_resolutions=(8,)))
    x, noise_level = inputs()
    reference = model(x, noise_level)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        output = model(x, noise_level)
    assert output.dtype == (torch.bfloat16 if autocast else torch.float32)
    relative_error = (output.float() - reference).norm() / reference.norm()
    assert relative_error < (0.05 if autocast else 1e-6)
    output.float().pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_unet(image_size=8, base_channels=8)
    x, noise_level = inputs(batch=4, size=8)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = F.mse_loss(model(x, noise_level), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5


def test_model_copies_and_state_dicts_round_trip():
    torch.manual_seed(0)
    model = perturb_output_conv(UNet(**SMALL))
    clone = copy.deepcopy(model)
    restored = UNet(**SMALL)
    restored.load_state_dict(clone.state_dict())
    x, noise_level = inputs()
    torch.testing.assert_close(restored(x, noise_level), model(x, noise_level), rtol=0, atol=0)
