"""Tests for 2-D fields: interpolation baselines against exact answers, observation masks, pixel-centre grids and the
PSNR / SSIM of reconstructions against hand values and an independent reference."""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from scipy.spatial import Delaunay

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.data import ImageSet
from spectral_diffusion.neural_field import regular_grid
from spectral_diffusion.neural_field.baselines import INTERPOLATION_METHODS, interpolate_batch, interpolate_observations
from spectral_diffusion.neural_field.field2d import (
    MnistField,
    field_images,
    image_grid,
    observation_masks,
    pixel_centres,
    pool_to,
    psnr,
    ssim,
)
from spectral_diffusion.pipeline import instantiate_checked
from spectral_diffusion.utils.validation import ConfigError

from .conftest import compose_train


def plane(points: np.ndarray) -> np.ndarray:
    return 0.7 * points[:, 0] - 1.3 * points[:, 1] + 0.25


@pytest.fixture
def scattered() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """80 scattered observations in the square, a 28x28 query grid and which query points lie inside their hull."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (80, 2))
    query = image_grid(28).double().numpy()
    inside = Delaunay(points).find_simplex(query) >= 0
    return points, query, inside


# ----------------------------------------------------------------------------------------------
# Interpolation baselines
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_linear_and_cubic_reproduce_a_plane_inside_the_hull(scattered, method):
    points, query, inside = scattered
    assert 300 < inside.sum() < len(query)  # both regions are exercised
    result = interpolate_observations(points, plane(points), query, method)
    np.testing.assert_allclose(result[inside], plane(query[inside]), atol=1e-10, rtol=0)


def test_nearest_is_exact_at_observed_points_and_copies_the_closest_elsewhere(scattered):
    points, query, _ = scattered
    values = np.random.default_rng(1).normal(size=len(points))
    np.testing.assert_array_equal(interpolate_observations(points, values, points, "nearest"), values)
    closest = np.argmin(((query[:, None, :] - points[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(interpolate_observations(points, values, query, "nearest"), values[closest])


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_points_outside_the_hull_take_the_nearest_observation(scattered, method):
    points, query, inside = scattered
    values = np.random.default_rng(2).normal(size=len(points))
    result = interpolate_observations(points, values, query, method)
    nearest = interpolate_observations(points, values, query, "nearest")
    assert np.isfinite(result).all()
    np.testing.assert_array_equal(result[~inside], nearest[~inside])
    assert not np.allclose(result[inside], nearest[inside])


@pytest.mark.parametrize("method", INTERPOLATION_METHODS)
def test_every_method_interpolates_observed_points_exactly_and_channels_independently(scattered, method):
    points, _, _ = scattered
    values = np.random.default_rng(3).normal(size=(len(points), 2))
    both = interpolate_observations(points, values, points, method)
    np.testing.assert_allclose(both, values, atol=1e-12)
    query = np.random.default_rng(4).uniform(-1, 1, (50, 2))
    both = interpolate_observations(points, values, query, method)
    for channel in range(2):
        np.testing.assert_array_equal(both[:, channel],
                                      interpolate_observations(points, values[:, channel], query, method))


def test_one_dimensional_linear_interpolation_is_exact_on_a_line():
    rng = np.random.default_rng(5)
    points = rng.uniform(-1, 1, (20, 1))  # unsorted on purpose
    query = np.linspace(points.min(), points.max(), 64)[:, None]
    result = interpolate_observations(points, 3.0 * points[:, 0] + 1.0, query, "linear")
    np.testing.assert_allclose(result, 3.0 * query[:, 0] + 1.0, atol=1e-12)
    # beyond the last observation: the end value (nearest), not NaN
    outside = interpolate_observations(points, 3.0 * points[:, 0] + 1.0, np.array([[1.5]]), "linear")
    assert outside[0] == pytest.approx(3.0 * points.max() + 1.0)


def test_cubic_on_1d_and_unknown_methods_are_config_errors():
    with pytest.raises(ConfigError, match="cubic"):
        interpolate_observations(np.zeros((3, 1)), np.zeros(3), np.zeros((2, 1)), "cubic")
    with pytest.raises(ConfigError, match="method='spline'"):
        interpolate_observations(np.zeros((3, 2)), np.zeros(3), np.zeros((2, 2)), "spline")


def test_interpolate_batch_uses_only_the_observed_points_of_each_field():
    grid = image_grid(8)
    field = torch.from_numpy(plane(grid.double().numpy()))
    values = torch.stack([field, -field]).float().unsqueeze(-1)
    masks = observation_masks([0, 1], 8, 8, 0.5, "pixels", 1, seed=0)
    corrupted = torch.where(masks.unsqueeze(-1), values, torch.full_like(values, 100.0))  # hidden values are junk
    batch = {"coords": grid.expand(2, -1, -1), "values": corrupted, "mask": masks}
    result = interpolate_batch(batch, grid, "linear")
    assert result.shape == (2, 64, 1) and result.dtype == torch.float32
    assert result.abs().max() < 5.0  # no junk leaked in
    np.testing.assert_array_equal(result[masks], values[masks])
    with pytest.raises(ValueError, match="no observed point"):
        interpolate_batch({**batch, "mask": torch.zeros_like(masks)}, grid, "nearest")


# ----------------------------------------------------------------------------------------------
# Grids and masks
# ----------------------------------------------------------------------------------------------


def test_pixel_centre_grid_is_row_major_row_then_column_and_nests_across_resolutions():
    np.testing.assert_allclose(pixel_centres(4), [-0.75, -0.25, 0.25, 0.75])
    grid = image_grid(3, 4)
    assert grid.shape == (12, 2) and grid.dtype == torch.float32
    np.testing.assert_allclose(grid[:4, 1], pixel_centres(4))  # coordinate 1 runs along a row
    np.testing.assert_allclose(grid[::4, 0], pixel_centres(3))  # coordinate 0 steps down the rows
    # the same axis order as the base's regular_grid (which puts the points edge to edge instead)
    edges = regular_grid((3, 4), 2)
    assert torch.equal(grid.argsort(dim=0), edges.argsort(dim=0))
    # a coarse pixel's centre is the mean of its 2x2 fine pixels' centres
    fine = image_grid(56).reshape(56, 56, 2).permute(2, 0, 1)
    np.testing.assert_allclose(pool_to(fine, 28).permute(1, 2, 0).reshape(-1, 2), image_grid(28), atol=1e-6)


def test_field_images_put_each_channel_of_each_grid_point_at_its_pixel():
    values = torch.arange(2 * 12 * 3, dtype=torch.float32).reshape(2, 12, 3)  # 3 channels on a 3x4 grid
    images = field_images(values, 3, 4)
    assert images.shape == (2, 3, 3, 4)
    assert images[1, 2, 1, 3] == values[1, 1 * 4 + 3, 2]


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_pixel_masks_observe_exactly_the_fraction(fraction):
    masks = observation_masks(range(20), 28, 28, fraction, "pixels", 1, seed=0)
    assert masks.shape == (20, 784) and masks.dtype == torch.bool
    assert (masks.sum(dim=1) == round(fraction * 784)).all()
    assert len({tuple(row.nonzero().squeeze(1).tolist()) for row in masks}) == 20  # every example differs


@pytest.mark.parametrize("fraction,patch_size", [(0.1, 4), (0.2, 4), (0.5, 7)])
def test_patch_masks_cover_the_fraction_in_square_patches(fraction, patch_size):
    masks = observation_masks(range(20), 28, 28, fraction, "patches", patch_size, seed=0)
    covered = masks.sum(dim=1)
    assert (covered >= math.ceil(fraction * 784)).all()
    assert (covered < fraction * 784 + patch_size**2).all()
    # every observed pixel belongs to a fully observed patch_size x patch_size square
    images = masks.reshape(20, 1, 28, 28).float()
    full_squares = torch.nn.functional.avg_pool2d(images, patch_size, stride=1) > 1 - 1e-6
    dilated = torch.nn.functional.conv_transpose2d(full_squares.float(), torch.ones(1, 1, patch_size, patch_size))
    assert torch.equal(dilated.reshape(20, -1) > 0, masks)


def test_masks_are_deterministic_per_seed_and_example_whatever_the_batch():
    whole = observation_masks(range(10), 28, 28, 0.2, "pixels", 1, seed=3)
    assert torch.equal(observation_masks([7, 2], 28, 28, 0.2, "pixels", 1, seed=3), whole[[7, 2]])
    assert not torch.equal(observation_masks(range(10), 28, 28, 0.2, "pixels", 1, seed=4), whole)
    patches = observation_masks([5], 28, 28, 0.2, "patches", 4, seed=3)
    assert torch.equal(observation_masks(range(6), 28, 28, 0.2, "patches", 4, seed=3)[5:], patches)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, "half", True])
def test_an_observed_fraction_outside_0_1_is_a_config_error(fraction):
    with pytest.raises(ConfigError, match="data.observed_fraction"):
        observation_masks([0], 28, 28, fraction, "pixels", 1, seed=0)


def test_unknown_mask_kind_and_oversized_patches_are_config_errors():
    with pytest.raises(ConfigError, match="data.mask='stripes'"):
        observation_masks([0], 28, 28, 0.2, "stripes", 1, seed=0)
    with pytest.raises(ConfigError, match="data.patch_size=29"):
        observation_masks([0], 28, 28, 0.2, "patches", 29, seed=0)
    with pytest.raises(ConfigError, match="data.patch_size"):
        observation_masks([0], 28, 28, 0.2, "patches", 0, seed=0)


def test_full_observation_observes_everything():
    assert observation_masks([0, 1], 28, 28, 1.0, "pixels", 1, seed=0).all()
    assert observation_masks([0, 1], 28, 28, 1.0, "patches", 5, seed=0).all()


# ----------------------------------------------------------------------------------------------
# PSNR and SSIM
# ----------------------------------------------------------------------------------------------


def test_psnr_against_a_hand_value():
    truth = torch.zeros(1, 4, 4)
    reconstruction = truth.clone()
    reconstruction[0, 0, :] = 0.25  # 4 of 16 pixels off by 0.25: MSE = 0.0625 · 4 / 16 = 1/64
    # 10 log10(2² · 64) = 10 log10(256) = 24.08 dB
    assert psnr(reconstruction, truth).item() == pytest.approx(10 * math.log10(256), abs=1e-12)
    assert psnr(truth, truth).item() == math.inf


def test_psnr_clips_reconstructions_to_the_data_range_and_is_per_image():
    truth = torch.ones(2, 3, 3)
    overshoot = truth + torch.tensor([5.0, 0.0]).view(2, 1, 1)  # clipped back to 1: perfect
    assert psnr(overshoot, truth).isinf().all()
    one = psnr(torch.zeros(1, 3, 3), truth[:1])
    assert one.item() == pytest.approx(10 * math.log10(4.0))  # MSE 1


def test_ssim_of_an_image_with_itself_is_one_and_drops_with_noise():
    truth = torch.rand(3, 28, 28) * 2 - 1
    np.testing.assert_allclose(ssim(truth, truth), 1.0, atol=1e-12)
    noisy = truth + 0.3 * torch.randn(3, 28, 28, generator=torch.Generator().manual_seed(0))
    values = ssim(noisy, truth)
    assert (values < 0.9).all() and (values > 0).all()


def test_ssim_matches_the_formula_on_constant_images():
    # With constant images inside every window: σ = 0, so SSIM = (2 μx μy + C1) / (μx² + μy² + C1),
    # C1 = (0.01 · 2)² for the range [−1, 1].
    c1 = (0.01 * 2.0) ** 2
    value = ssim(torch.full((1, 28, 28), 0.5), torch.full((1, 28, 28), -0.25)).item()
    expected = (2 * 0.5 * -0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert value == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------------------------------------
# MnistField: images served as field batches
# ----------------------------------------------------------------------------------------------


class TinyImages:
    """A source of 40 random 6x5 grey images in [-1, 1] with labels (image k has label k mod 3)."""

    def load(self) -> ImageSet:
        images = torch.rand(40, 1, 6, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
        return ImageSet(images=images, labels=torch.arange(40) % 3, name="tiny", num_classes=3)


def tiny_field(**overrides) -> MnistField:
    arguments = dict(observed_fraction=0.5, num_train=20, num_val=6, batch_size=4, val_fraction=0.25)
    return MnistField(TinyImages(), **{**arguments, **overrides})


def test_field_batches_hold_each_image_on_its_pixel_centre_grid():
    data = tiny_field()
    assert (data.grid_shape, data.value_dim, data.coord_dim, data.num_classes) == ((6, 5), 1, 2, 3)
    fields = data.val_fields
    assert fields["coords"].shape == (6, 30, 2) and fields["values"].shape == (6, 30, 1)
    assert fields["mask"].shape == (6, 30) and fields["label"].shape == (6,)
    chosen = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:6]
    images = data.images.val_images[chosen, 0]
    # the pixel in row i, column j sits at ((2i + 1)/6 - 1, (2j + 1)/5 - 1)
    coords = fields["coords"].reshape(6, 6, 5, 2)
    assert coords[0, 2, 3].tolist() == pytest.approx([(2 * 2 + 1) / 6 - 1, (2 * 3 + 1) / 5 - 1])
    assert torch.equal(fields["values"].reshape(6, 6, 5), images)
    assert torch.equal(field_images(fields["values"], 6, 5), images.unsqueeze(1))
    assert torch.equal(fields["label"], data.images.val_labels[chosen])
    assert torch.equal(data.grid((6, 5)), fields["coords"][0])
    assert data.grid(56).shape == (56 * 56, 2)


def test_masks_are_fixed_per_image_and_the_loaders_cover_the_subsets():
    data = tiny_field()
    assert (data.val_fields["mask"].sum(dim=1) == 15).all()
    batches = list(data.val_dataloader())
    assert [len(batch["values"]) for batch in batches] == [4, 2]
    for key in ("values", "mask", "label"):
        assert torch.equal(torch.cat([batch[key] for batch in batches]), data.val_fields[key])
    # the same image keeps its mask whatever else is loaded: masks follow the image's position in the source
    smaller = tiny_field(num_val=3)
    assert torch.equal(smaller.val_fields["mask"], data.val_fields["mask"][:3])
    assert not torch.equal(tiny_field(seed=1).val_fields["mask"], data.val_fields["mask"])
    # ... and not on the run's global seed
    torch.manual_seed(123)
    assert torch.equal(tiny_field().val_fields["mask"], data.val_fields["mask"])
    train = list(data.train_dataloader())
    assert len(train) == 5 and all(batch["coords"].shape == (4, 30, 2) for batch in train)
    # one epoch serves every training field once (shuffled)
    seen = torch.cat([batch["values"] for batch in train]).flatten(1)
    expected = data.train_fields["values"].flatten(1)
    assert torch.equal(seen[seen[:, 0].argsort()], expected[expected[:, 0].argsort()])


def test_patch_observations_in_the_datamodule():
    data = tiny_field(mask="patches", patch_size=2, observed_fraction=0.3)
    covered = data.val_fields["mask"].sum(dim=1)
    assert (covered >= 9).all() and (covered < 9 + 4).all()


@pytest.mark.parametrize("key,value,match", [
    ("observed_fraction", 0.0, "data.observed_fraction=0.0"),
    ("observed_fraction", 1.01, "data.observed_fraction=1.01"),
    ("mask", "stripes", "data.mask='stripes'"),
    ("patch_size", 0, "data.patch_size=0"),
    ("num_train", 0, "data.num_train=0"),
    ("batch_size", 21, "data.batch_size=21"),
])
def test_bad_field_settings_fail_at_construction_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        tiny_field(**{key: value})


def test_subsets_larger_than_the_split_and_oversized_patches_fail_naming_the_key():
    with pytest.raises(ConfigError, match="data.num_val=11 exceeds the 10 images"):
        tiny_field(num_val=11).setup()
    with pytest.raises(ConfigError, match="data.patch_size=6 exceeds the 6x5 image"):
        tiny_field(mask="patches", patch_size=6).setup()


def test_the_mnist_field_config_has_no_dead_keys():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=["data=mnist_field"])
    assert set(cfg.data) - {"_target_"} == set(inspect.signature(MnistField).parameters)
    data = instantiate_checked(cfg.data)
    assert (data.mask_kind, data.patch_size, data.train_size, data.val_size, data.split_seed) == (
        cfg.data.mask, cfg.data.patch_size, cfg.data.num_train, cfg.data.num_val, cfg.data.split_seed)
    assert (data.observed_fraction, data.batch_size, data.seed, data.num_workers) == (
        cfg.data.observed_fraction, cfg.data.batch_size, cfg.data.seed, cfg.data.num_workers)
    assert data.images.val_fraction == cfg.data.val_fraction and data.images.source.image_size == 28


def test_the_mnist_field_config_serves_28x28_mnist_digits():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=["data=mnist_field", "data.num_train=64", "data.num_val=16",
                                                      "data.mask=patches"])
    data = instantiate_checked(cfg.data)
    assert data.grid_shape == (28, 28) and data.mask_kind == "patches"
    fields = data.val_fields
    chosen = torch.randperm(len(data.images.val_indices), generator=torch.Generator().manual_seed(0))[:16]
    assert torch.equal(fields["values"].reshape(16, 28, 28), data.images.val_images[chosen, 0])
    assert fields["mask"].float().mean() == pytest.approx(0.2, abs=0.02)
    # a random subset of the held-out digits, not the class-sorted source's first ones
    assert len(data.val_fields["label"].unique()) >= 6
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=["data=mnist_field", "data.observed_fraction=0"])
    with pytest.raises(ConfigError, match="data.observed_fraction=0 "):
        instantiate_checked(cfg.data)


# ----------------------------------------------------------------------------------------------
# experiment=nf_mnist: the neural field on 2-D MNIST fields through the pipeline
# ----------------------------------------------------------------------------------------------


def test_nf_mnist_experiment_builds_a_2d_neural_field_that_decodes_at_any_resolution(tmp_path, cache_dir):
    from spectral_diffusion.pipeline import build

    cfg = compose_train(["experiment=nf_mnist", "data.num_train=32", "data.num_val=8", "data.batch_size=8"],
                        tmp_path, cache_dir)
    assert [list(r) for r in cfg.evaluation.resolutions] == [[28, 28], [56, 56], [112, 112]]
    # the setting the README's sparse MNIST table measured
    assert cfg.model.recon_points is None and cfg.model.autoencoder_steps == 0 and cfg.trainer.max_steps == 1500
    components = build(cfg)
    data, module = components.datamodule, components.module
    assert isinstance(data, MnistField) and module.field_shape["coord_dim"] == 2
    fields = data.val_fields
    z = module.encode(fields)
    at_28 = module.decode(z, data.grid(28))
    assert at_28.shape == (8, 784, 1)
    # the training batch's coordinates are the 28 grid: decoding there equals decoding the batch's own coords
    assert torch.allclose(module.decode(z, fields["coords"]), at_28)
    assert module.decode(z, data.grid(112)).shape == (8, 112 * 112, 1)
    # the module's own grid (reconstruction, generation, sd-sample, the run's metrics) is the data's pixel centres
    for resolution in (None, 56):
        assert torch.equal(module.grid(resolution), data.grid(resolution))


@pytest.mark.slow
def test_sd_train_on_mnist_fields_runs_end_to_end(tmp_path, cache_dir):
    from spectral_diffusion.pipeline import train

    cfg = compose_train(["experiment=nf_mnist", "data.num_train=64", "data.num_val=16", "data.batch_size=16",
                         "trainer.max_steps=4", "trainer.val_check_interval=2", "scheduler.warmup_steps=1",
                         "evaluation.conditional_fields=4", "evaluation.conditional_samples=3",
                         "evaluation.resolutions=[[28,28],[56,56]]"], tmp_path, cache_dir)
    metrics = train(cfg)
    assert metrics["global_step"] == 4 and math.isfinite(metrics["recon_mse"])
    assert metrics["data"]["name"] == "MnistField" and metrics["data"]["grid_shape"] == [28, 28]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
