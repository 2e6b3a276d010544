"""Tests for the label-free feature extractor (``features=autoencoder``) and ``features=auto``."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from sklearn.datasets import load_digits
from torchvision.transforms.functional import gaussian_blur

from spectral_diffusion.data.sources import RandomFields
from spectral_diffusion.metrics import features as features_module
from spectral_diffusion.metrics.features import (
    AutoencoderFeatureExtractor,
    AutoencoderFeatures,
    AutoFeatures,
    ClassifierFeatureExtractor,
    ClassifierFeatures,
    downsampling_stages,
    reconstruction_loss,
)
from spectral_diffusion.metrics.quality import extract_features, feature_distances, sample_quality
from spectral_diffusion.utils.validation import ConfigError

from .conftest import compose_train

FAST = dict(steps=200, batch_size=64, lr=3e-3, width=8, code_dim=16)
FAST_CLASSIFIER = dict(epochs=1, batch_size=128, lr=3e-3, width=8, feature_dim=16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train on one thread: with other work on a 2-core machine, two threads make these steps ~15x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fields():
    """1,200 Gaussian random fields (16x16, |f|^-2, unlabelled): 1,000 to train on and 200 held out."""
    images = RandomFields(image_size=16, num_images=1200, beta=2.0, seed=3).load().images
    return images[:1000], images[1000:]


@pytest.fixture(scope="module")
def fields_extractor(fields, tmp_path_factory):
    train, heldout = fields
    return AutoencoderFeatures(tmp_path_factory.mktemp("autoencoder_cache"), **FAST).build(
        train, None, None, "random_fields_beta2", val_images=heldout
    )


def fid(real: torch.Tensor, fake: torch.Tensor, extractor) -> float:
    return feature_distances(extract_features(real, extractor), extract_features(fake, extractor))["fid"]


def test_identical_sets_give_zero_fid(fields, fields_extractor):
    heldout = fields[1]
    result = sample_quality(heldout, heldout.clone(), fields_extractor)
    assert abs(result[f"fid_autoencoder@{len(heldout)}"]) < 1e-6


def test_blurred_images_are_far_from_the_real_set(fields, fields_extractor):
    train, heldout = fields
    floor = fid(heldout, train[: len(heldout)], fields_extractor)
    blurred = fid(heldout, gaussian_blur(train[: len(heldout)], kernel_size=5, sigma=1.0), fields_extractor)
    noisy = fid(heldout, (train[: len(heldout)] + 0.1 * torch.randn(len(heldout), 1, 16, 16)).clamp(-1, 1),
                fields_extractor)
    assert blurred > 10 * floor
    assert noisy > floor


def test_features_are_standardised_on_the_training_set_and_the_encoder_reconstructs(fields, fields_extractor):
    train, heldout = fields
    assert isinstance(fields_extractor, AutoencoderFeatureExtractor)
    assert fields_extractor.name == "autoencoder" and fields_extractor.accuracy is None
    # code (16) + the means of the full-resolution stage (8 channels) and one stride-2 stage (16)
    assert fields_extractor.num_features == 16 + 8 + 16
    features = extract_features(train, fields_extractor)
    assert features.shape == (len(train), 40)
    assert torch.allclose(features.mean(dim=0), torch.zeros(40, dtype=torch.float64), atol=1e-4)
    # unit std, except a channel that never fires (a dead ReLU is constant: its std stays 0, not 1/0)
    std = features.std(dim=0)
    assert ((std - 1).abs() < 1e-4).logical_or(std < 1e-6).all() and (std > 0.5).sum() >= 30
    # the trained decoder reconstructs held-out fields better than their mean image (zero) would
    assert fields_extractor.reconstruction_error < 0.75 * heldout.square().mean().item()
    assert not any(p.requires_grad for p in fields_extractor.parameters())
    fields_extractor.train()
    assert not fields_extractor.training
    with pytest.raises(ValueError, match="trained on images of shape"):
        fields_extractor(torch.zeros(2, 1, 8, 8))


def test_cache_is_reused_without_training(fields, tmp_path, monkeypatch):
    train = fields[0][:300]
    calls = []
    real_training = features_module.train_autoencoder

    def counted_training(*args, **kwargs):
        calls.append(1)
        real_training(*args, **kwargs)

    monkeypatch.setattr(features_module, "train_autoencoder", counted_training)
    config = AutoencoderFeatures(tmp_path, **{**FAST, "steps": 20})
    first = config.build(train, None, None, "random_fields_beta2")
    second = AutoencoderFeatures(tmp_path, **{**FAST, "steps": 20}).build(train, None, None, "random_fields_beta2")
    assert len(calls) == 1
    assert not first.loaded_from_cache and second.loaded_from_cache
    assert first.training_seconds is not None and second.training_seconds is None
    assert first.cache_path == second.cache_path and first.cache_path.exists()
    probe = fields[1][:30]
    assert torch.equal(first(probe), second(probe))
    # another data name or resolution trains anew
    AutoencoderFeatures(tmp_path, **{**FAST, "steps": 20}).build(train, None, None, "random_fields_beta1")
    smaller = torch.nn.functional.avg_pool2d(train, 2)
    AutoencoderFeatures(tmp_path, **{**FAST, "steps": 20}).build(smaller, None, None, "random_fields_beta2")
    assert len(calls) == 3
    assert len(list(tmp_path.glob("autoencoder-*.pt"))) == 3


def test_cache_key_changes_with_data_shape_and_hyperparameters():
    base = AutoencoderFeatures("cache", **FAST)
    key = base.cache_path("random_fields_beta2", (1, 16, 16), 1000)
    assert base.cache_path("mnist", (1, 16, 16), 1000) != key
    assert base.cache_path("random_fields_beta2", (1, 32, 32), 1000) != key
    assert base.cache_path("random_fields_beta2", (3, 16, 16), 1000) != key
    assert base.cache_path("random_fields_beta2", (1, 16, 16), 999) != key
    for change in ({"steps": 201}, {"lr": 1e-3}, {"width": 4}, {"code_dim": 8}, {"gradient_weight": 0.0},
                   {"batch_size": 32}, {"seed": 1}):
        assert AutoencoderFeatures("cache", **{**FAST, **change}).cache_path("random_fields_beta2", (1, 16, 16),
                                                                              1000) != key
    assert AutoencoderFeatures("cache", **FAST).cache_path("random_fields_beta2", (1, 16, 16), 1000) == key
    # the classifier's cache files never collide with the autoencoder's
    assert not ClassifierFeatures("cache").cache_path("mnist", (1, 16, 16), 10, 1000).name.startswith("autoencoder")


def test_training_is_deterministic_given_the_seed(fields, tmp_path):
    train = fields[0][:300]
    builds = [
        AutoencoderFeatures(tmp_path / folder, **{**FAST, "steps": 30, "seed": seed}).build(train, None, None, "rf")
        for folder, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    probe = fields[1][:50]
    assert torch.equal(builds[0](probe), builds[1](probe))
    assert not torch.allclose(builds[0](probe), builds[2](probe))


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (3, 12, 20), (1, 64, 64)])
def test_any_channel_count_and_size_from_8_to_64(shape, tmp_path):
    images = torch.rand(40, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    extractor = AutoencoderFeatures(tmp_path, **{**FAST, "steps": 3, "batch_size": 16}).build(images, None, None, "x")
    width, stages = FAST["width"], downsampling_stages(*shape[1:])
    assert extractor.num_features == FAST["code_dim"] + width + 2 * width * stages
    assert extractor(images[:5]).shape == (5, extractor.num_features)
    assert extractor.reconstruct(images[:5]).shape == (5, *shape)


def test_downsampling_brings_the_larger_side_to_at_most_8_pixels():
    assert [downsampling_stages(size, size) for size in (8, 16, 17, 32, 64)] == [1, 1, 2, 2, 3]
    assert downsampling_stages(12, 40) == 3


def test_reconstruction_loss_weights_fine_detail():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 1, 16, 16, generator=generator)
    offset = torch.full_like(images, 0.5)  # a constant error: no finite-difference error
    checker = 0.5 * (-1.0) ** (torch.arange(16)[:, None] + torch.arange(16)[None, :]).float()  # the finest detail
    assert reconstruction_loss(images + offset, images, 1.0).item() == pytest.approx(0.25)
    # a difference of a checkerboard is twice its amplitude in both directions: 0.25 + 2 * 1.0
    assert reconstruction_loss(images + checker, images, 1.0).item() == pytest.approx(2.25)
    assert reconstruction_loss(images + checker, images, 0.0).item() == pytest.approx(0.25)


@pytest.mark.parametrize(
    "key, value",
    [("steps", 0), ("steps", 1.5), ("width", 0), ("code_dim", True), ("batch_size", -1), ("lr", 0.0),
     ("gradient_weight", -1.0), ("seed", "zero")],
)
def test_bad_values_name_their_key(key, value):
    with pytest.raises(ConfigError, match=f"features.{key}"):
        AutoencoderFeatures("cache", **{**FAST, key: value})
    with pytest.raises(ConfigError, match="features.cache_dir"):
        AutoencoderFeatures("", **FAST)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16 * 2 - 1
    return images[:1500], torch.tensor(data.target)[:1500]


def test_auto_picks_the_classifier_for_labelled_data_and_the_autoencoder_otherwise(digits, fields, tmp_path):
    auto = AutoFeatures(ClassifierFeatures(tmp_path, **FAST_CLASSIFIER), AutoencoderFeatures(tmp_path, **FAST))
    with pytest.raises(RuntimeError, match="not chosen"):
        auto.name
    labelled = auto.build(digits[0], digits[1], 10, "digits")
    assert isinstance(labelled, ClassifierFeatureExtractor)
    assert auto.name == labelled.name == "classifier" and auto.chosen is auto.labelled
    assert "10 classes" in auto.reason

    small = {**FAST, "steps": 10}
    auto = AutoFeatures(ClassifierFeatures(tmp_path, **FAST_CLASSIFIER), AutoencoderFeatures(tmp_path, **small))
    unlabelled = auto.build(fields[0][:200], None, None, "random_fields_beta2")
    assert isinstance(unlabelled, AutoencoderFeatureExtractor)
    assert auto.name == unlabelled.name == "autoencoder" and auto.chosen is auto.unlabelled
    assert "no class labels" in auto.reason
    # select alone decides without training anything
    assert AutoFeatures(auto.labelled, auto.unlabelled).select(None, None) is auto.unlabelled
    assert AutoFeatures(auto.labelled, auto.unlabelled).select(digits[1], 10) is auto.labelled


def test_config_options_compose(tmp_path, cache_dir):
    cfg = compose_train(["features=auto", "features.unlabelled.code_dim=8", "features.labelled.epochs=2"],
                        tmp_path, cache_dir)
    auto = instantiate(cfg.features)
    assert isinstance(auto, AutoFeatures)
    assert isinstance(auto.labelled, ClassifierFeatures) and auto.labelled.epochs == 2
    assert isinstance(auto.unlabelled, AutoencoderFeatures) and auto.unlabelled.code_dim == 8
    assert auto.labelled.cache_dir == auto.unlabelled.cache_dir == cache_dir

    cfg = compose_train(["features=autoencoder"], tmp_path, cache_dir)
    config = instantiate(cfg.features)
    assert isinstance(config, AutoencoderFeatures) and config.name == "autoencoder"
    # the YAML sets every constructor argument, so the file and the class defaults cannot drift apart
    assert config.hyperparameters() == AutoencoderFeatures(cache_dir).hyperparameters()
