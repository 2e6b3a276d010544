"""Tests for FID/KID sample quality and the feature extractors (classifier cache, Inception guard)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from torch import nn

from spectral_diffusion.metrics import features as features_module
from spectral_diffusion.metrics.features import (
    ClassifierFeatures,
    InceptionFeatures,
    to_inception_input,
)
from spectral_diffusion.metrics.quality import (
    extract_features,
    feature_distances,
    floor_indices,
    metric_key,
    real_floor,
    sample_quality,
)
from spectral_diffusion.utils.validation import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "features"
FAST = dict(epochs=1, batch_size=128, lr=3e-3, width=8, feature_dim=16)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn 8x8 digits in [-1, 1]: (train images, train labels, held-out images, held-out labels)."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16 * 2 - 1
    labels = torch.tensor(data.target)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, heldout = order[:1500], order[1500:]
    return images[train], labels[train], images[heldout], labels[heldout]


@pytest.fixture(scope="module")
def digits_classifier(digits, tmp_path_factory):
    train_images, train_labels, val_images, val_labels = digits
    config = ClassifierFeatures(tmp_path_factory.mktemp("classifier_cache"))
    return config.build(train_images, train_labels, 10, "digits", val_images=val_images, val_labels=val_labels)


class RandomProjection(nn.Module):
    """A fixed random linear map of the pixels: a cheap, exactly known extractor for the maths tests."""

    name = "projection"

    def __init__(self, in_features: int = 64, num_features: int = 10) -> None:
        super().__init__()
        self.num_features = num_features
        generator = torch.Generator().manual_seed(1)
        self.register_buffer("weight", torch.randn(in_features, num_features, generator=generator) / 8)

    def forward(self, images):
        return images.flatten(1) @ self.weight


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- FID / KID maths


def reference_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6)."""
    mean_real, mean_fake = real.mean(0), fake.mean(0)
    cov_real, cov_fake = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covariance_root = scipy.linalg.sqrtm(cov_real @ cov_fake).real
    return float(((mean_real - mean_fake) ** 2).sum() + np.trace(cov_real + cov_fake - 2 * covariance_root))


def reference_kid(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with the kernel (x·y/d + 1)^3 on the full sets (Bińkowski et al. 2018, eq. 3)."""
    m, n, d = len(real), len(fake), real.shape[1]
    kernel_rr = (real @ real.T / d + 1) ** 3
    kernel_ff = (fake @ fake.T / d + 1) ** 3
    kernel_rf = (real @ fake.T / d + 1) ** 3
    within_real = (kernel_rr.sum() - np.trace(kernel_rr)) / (m * (m - 1))
    within_fake = (kernel_ff.sum() - np.trace(kernel_ff)) / (n * (n - 1))
    return float(within_real + within_fake - 2 * kernel_rf.mean())


def test_fid_matches_scipy_reference(digits):
    images = digits[0]
    extractor = RandomProjection()
    real, fake = images[:300], images[300:500].flip(-1)
    result = sample_quality(real, fake, extractor)
    expected = reference_fid(
        extract_features(real, extractor).numpy(), extract_features(fake, extractor).numpy()
    )
    assert expected > 0.01
    assert result["fid_projection@200"] == pytest.approx(expected, rel=1e-6)


def test_kid_matches_numpy_unbiased_mmd_on_the_full_sets(digits):
    images = digits[0]
    extractor = RandomProjection()
    real, fake = images[:150], images[150:300].flip(-2)
    result = sample_quality(real, fake, extractor, kid_subset_size=150, kid_subsets=5)
    expected = reference_kid(
        extract_features(real, extractor).numpy(), extract_features(fake, extractor).numpy()
    )
    assert expected > 1e-4
    assert result["kid_projection@150"] == pytest.approx(expected, rel=1e-9)
    assert result["kid_std_projection@150"] == 0.0


def test_kid_subsets_are_seeded_and_leave_the_global_stream_alone(digits):
    features = extract_features(digits[0][:300], RandomProjection())
    real, fake = features[:180], features[180:] + 0.05
    state = torch.random.get_rng_state()
    first = feature_distances(real, fake, kid_subset_size=60, kid_subsets=20, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert feature_distances(real, fake, kid_subset_size=60, kid_subsets=20, seed=3) == first
    other_seed = feature_distances(real, fake, kid_subset_size=60, kid_subsets=20, seed=4)
    assert other_seed["kid"] != first["kid"]
    assert other_seed["fid"] == first["fid"]
    # Subsets smaller than the sets vary, so the spread over them is positive.
    assert first["kid_std"] > 0
    # Each KID subset is an unbiased estimate of the same MMD²: the mean lands near the full-set value.
    full = reference_kid(real.numpy(), fake.numpy())
    assert first["kid"] == pytest.approx(full, abs=3 * first["kid_std"])


def test_fid_of_a_set_with_itself_is_zero(digits, digits_classifier):
    images = digits[2]
    result = sample_quality(images, images, digits_classifier)
    assert abs(result[f"fid_classifier@{len(images)}"]) < 1e-6


def test_results_do_not_depend_on_batch_size(digits, digits_classifier):
    real, fake = digits[2], digits[0][:250]
    whole = sample_quality(real, fake, digits_classifier, batch_size=1000, kid_subset_size=100, kid_subsets=10)
    pieces = sample_quality(real, fake, digits_classifier, batch_size=64, kid_subset_size=100, kid_subsets=10)
    assert whole.keys() == pieces.keys()
    for key in whole:
        assert pieces[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-9), key


def test_fid_and_kid_grow_with_noise(digits, digits_classifier):
    heldout = digits[2]
    train = digits[0][: len(heldout)]  # equal sizes: KID is one exact full-set MMD², no subset noise
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(heldout.shape, generator=generator)
    scores = [
        sample_quality(train, (heldout + level * noise).clamp(-1, 1), digits_classifier)
        for level in (0.0, 0.1, 0.3, 0.6, 1.0)
    ]
    fids = [score[f"fid_classifier@{len(heldout)}"] for score in scores]
    kids = [score[f"kid_classifier@{len(heldout)}"] for score in scores]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids


def test_keys_name_extractor_count_and_prefix(digits):
    result = sample_quality(digits[0][:50], digits[0][50:90], RandomProjection(), prefix="ema")
    assert set(result) == {"fid_ema_projection@40", "kid_ema_projection@40", "kid_std_ema_projection@40"}
    assert metric_key("fid", "inception", 1000) == "fid_inception@1000"


def test_real_floor_compares_train_and_heldout_at_the_same_count(digits, digits_classifier):
    train, heldout = digits[0], digits[2]
    floor = real_floor(train, heldout, digits_classifier, 100, seed=5)
    assert set(floor) == {"fid_floor_classifier@100", "kid_floor_classifier@100", "kid_std_floor_classifier@100"}
    generator = torch.Generator().manual_seed(5)
    train_subset = train[torch.randperm(len(train), generator=generator)[:100]]
    heldout_subset = heldout[torch.randperm(len(heldout), generator=generator)[:100]]
    direct = sample_quality(train_subset, heldout_subset, digits_classifier, seed=5)
    assert floor["fid_floor_classifier@100"] == pytest.approx(direct["fid_classifier@100"], rel=1e-9)
    assert floor["kid_floor_classifier@100"] == pytest.approx(direct["kid_classifier@100"], rel=1e-9)
    # More images than the held-out set has: the floor is taken at (and labelled with) the smaller size.
    capped = real_floor(train, heldout, digits_classifier, 5000)
    assert set(capped) == {f"{m}_floor_classifier@{len(heldout)}" for m in ("fid", "kid", "kid_std")}


def test_real_floor_reuses_heldout_features_and_extracts_only_the_training_subset(digits):
    train, heldout = digits[0], digits[2]

    class Counting(RandomProjection):
        def forward(self, images):
            self.seen = getattr(self, "seen", 0) + len(images)
            return super().forward(images)

    extractor = Counting()
    heldout_features = extract_features(heldout, RandomProjection())
    floor = real_floor(train, heldout, extractor, 100, seed=5, heldout_features=heldout_features)
    assert extractor.seen == 100  # the 100 training images; the held-out ones come from heldout_features
    direct = real_floor(train, heldout, RandomProjection(), 100, seed=5)
    for key, value in direct.items():
        assert floor[key] == pytest.approx(value, rel=1e-9), key
    train_index, heldout_index = floor_indices(len(train), len(heldout), 100, seed=5)
    assert len(set(train_index.tolist())) == len(set(heldout_index.tolist())) == 100


# ---------------------------------------------------------------- classifier extractor


def test_classifier_learns_digits_and_is_a_frozen_feature_module(digits, digits_classifier):
    assert digits_classifier.accuracy > 0.9
    assert digits_classifier.name == "classifier"
    assert digits_classifier.num_features == 128
    features = digits_classifier(digits[2][:20])
    assert features.shape == (20, 128)
    assert (features >= 0).all()  # post-ReLU layer
    # Scaled to a mean square of one on the training images, where KID's cubic kernel is meant to work.
    assert digits_classifier(digits[0]).square().mean().item() == pytest.approx(1.0, rel=1e-5)
    assert not any(p.requires_grad for p in digits_classifier.parameters())
    digits_classifier.train()
    assert not digits_classifier.training
    with pytest.raises(ValueError, match="trained on images of shape"):
        digits_classifier(torch.zeros(2, 1, 16, 16))


def test_classifier_cache_is_reused_without_training(digits, tmp_path, monkeypatch):
    train_images, train_labels = digits[0], digits[1]
    first = ClassifierFeatures(tmp_path, **FAST).build(train_images, train_labels, 10, "digits")
    assert not first.loaded_from_cache and first.cache_path.exists()
    modified = first.cache_path.stat().st_mtime_ns

    def must_not_train(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(features_module, "train_classifier", must_not_train)
    second = ClassifierFeatures(tmp_path, **FAST).build(train_images, train_labels, 10, "digits")
    assert second.loaded_from_cache and second.cache_path == first.cache_path
    assert first.cache_path.stat().st_mtime_ns == modified
    probe = digits[2][:30]
    assert torch.equal(first(probe), second(probe))
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_cache_key_changes_with_hyperparameters_and_data():
    base = ClassifierFeatures("cache", **FAST)
    key = base.cache_path("digits", (1, 8, 8), 10, 1500)
    assert ClassifierFeatures("cache", **{**FAST, "epochs": 2}).cache_path("digits", (1, 8, 8), 10, 1500) != key
    assert ClassifierFeatures("cache", **FAST, seed=1).cache_path("digits", (1, 8, 8), 10, 1500) != key
    assert ClassifierFeatures("cache", **{**FAST, "lr": 1e-3}).cache_path("digits", (1, 8, 8), 10, 1500) != key
    assert base.cache_path("mnist", (1, 8, 8), 10, 1500) != key
    assert base.cache_path("digits", (1, 16, 16), 10, 1500) != key
    assert base.cache_path("digits", (3, 8, 8), 10, 1500) != key
    assert base.cache_path("digits", (1, 8, 8), 10, 1000) != key
    assert ClassifierFeatures("cache", **FAST).cache_path("digits", (1, 8, 8), 10, 1500) == key


def test_training_is_deterministic_given_the_seed(digits, tmp_path):
    train_images, train_labels = digits[0], digits[1]
    builds = [
        ClassifierFeatures(tmp_path / folder, **FAST, seed=seed).build(train_images, train_labels, 10, "digits")
        for folder, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    probe = digits[2][:50]
    assert torch.equal(builds[0](probe), builds[1](probe))
    assert not torch.allclose(builds[0](probe), builds[2](probe))


def test_concurrent_builds_train_once(digits, tmp_path, monkeypatch):
    train_images, train_labels = digits[0], digits[1]
    calls = []
    real_training = features_module.train_classifier

    def slow_counted_training(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.3)  # keep the lock held while the other build arrives
        real_training(*args, **kwargs)

    monkeypatch.setattr(features_module, "train_classifier", slow_counted_training)
    start = threading.Barrier(2)
    results = [None, None]

    def build(slot):
        start.wait()
        results[slot] = ClassifierFeatures(tmp_path, **FAST).build(train_images, train_labels, 10, "digits")

    threads = [threading.Thread(target=build, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(r.loaded_from_cache for r in results) == [False, True]
    probe = digits[2][:10]
    assert torch.equal(results[0](probe), results[1](probe))


def test_unlabelled_data_is_a_config_error(digits, tmp_path):
    with pytest.raises(ConfigError, match="features=classifier needs class labels") as error:
        ClassifierFeatures(tmp_path, **FAST).build(digits[0], None, None, "random_fields")
    assert "mnist" in str(error.value) and "features=inception" in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key, value", [("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("width", 0)])
def test_bad_hyperparameters_name_their_key(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"features.{key}="):
        ClassifierFeatures(tmp_path, **{**FAST, key: value})


# ---------------------------------------------------------------- Inception extractor


@pytest.mark.parametrize("weights_path", [None, "/nonexistent/weights-inception-2015-12-05-6726825d.pth"])
def test_inception_without_local_weights_is_a_config_error(no_network, weights_path):
    with pytest.raises(ConfigError, match="features.weights_path") as error:
        InceptionFeatures(weights_path)
    assert "pt_inception-2015-12-05" in str(error.value)


def test_inception_input_conversion():
    images = torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.5]).view(1, 1, 1, 5)
    converted = to_inception_input(images)
    assert converted.dtype == torch.uint8 and converted.shape == (1, 3, 1, 5)
    assert converted[0, :, 0].tolist() == [[0, 64, 128, 255, 255]] * 3
    with pytest.raises(ValueError, match="1- or 3-channel"):
        to_inception_input(torch.zeros(1, 2, 4, 4))


@pytest.mark.slow
def test_inception_extractor_runs_offline_from_a_local_weights_file(tmp_path, monkeypatch, no_network):
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception

    # Random weights stand in for the real file: same layout, written without any download.
    with monkeypatch.context() as patch:
        patch.setattr(fidelity_inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *args, **kwargs: None)
        network = fidelity_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "weights.pth"
    torch.save(network.state_dict(), weights)

    extractor = InceptionFeatures(weights).build()
    assert extractor.name == "inception" and extractor.num_features == 2048
    gray = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = extractor(gray)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert not torch.equal(features[0], features[1])
    # A grey image is the same picture as its three-channel copy.
    assert torch.equal(features[:1], extractor(gray[:1].expand(-1, 3, -1, -1)))


# ---------------------------------------------------------------- configs


def test_classifier_config_instantiates_with_every_key_read(tmp_path):
    options = OmegaConf.load(CONF / "classifier.yaml")
    config = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}, "features": options})
    features = instantiate(config.features)
    assert isinstance(features, ClassifierFeatures)
    assert features.cache_dir == tmp_path
    for key, value in config.features.items():
        if key not in ("_target_", "cache_dir"):
            assert getattr(features, key) == value, key
    default = ClassifierFeatures(tmp_path)
    assert features.hyperparameters() == default.hyperparameters()


def test_inception_config_without_weights_fails_at_instantiation(no_network):
    config = OmegaConf.load(CONF / "inception.yaml")
    assert set(config) == {"_target_", "weights_path"}
    with pytest.raises(Exception, match="features.weights_path"):
        instantiate(config)


def test_extract_features_is_float64_and_checks_inputs(digits):
    features = extract_features(digits[0][:10], RandomProjection(), batch_size=3)
    assert features.dtype == torch.float64 and features.shape == (10, 10)
    with pytest.raises(ValueError, match="float images"):
        extract_features(torch.zeros(4, 64), RandomProjection())
    with pytest.raises(ValueError, match="at least 2"):
        feature_distances(features[:1], features)
