"""MNIST padded to 32x32 and MNIST-M (Ganin & Lempitsky 2015) built from scikit-image photographs."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from spectral_diffusion.data.sources import MNIST, MNISTM
from spectral_diffusion.utils.validation import ConfigError
from tests.conftest import compose_train


def test_mnist_at_32_is_zero_padded_not_resized():
    raw = MNIST(image_size=28).load()
    padded = MNIST(image_size=32).load()
    assert padded.images.shape[1:] == (1, 32, 32)
    torch.testing.assert_close(padded.images[:, :, 2:30, 2:30], raw.images)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert bool((padded.images[..., border] == -1).all())


def test_blend_is_the_absolute_difference_of_digit_and_photo_crop():
    source = MNISTM(seed=3)
    background = source.blend(torch.full((5, 1, 32, 32), -1.0))  # digit 0 everywhere: the crop itself
    stroke = source.blend(torch.full((5, 1, 32, 32), 1.0))       # digit 1 everywhere: 1 - crop
    crop = (background + 1) / 2
    torch.testing.assert_close((stroke + 1) / 2, 1 - crop)
    assert background.shape == (5, 3, 32, 32) and crop.std() > 0.05  # coloured, textured crops
    assert not torch.equal(source.blend(torch.zeros(5, 1, 32, 32)), MNISTM(seed=4).blend(torch.zeros(5, 1, 32, 32)))


def test_mnist_m_is_deterministic_cached_and_keeps_labels(tmp_path):
    built = MNISTM(seed=1, cache_dir=str(tmp_path)).load()
    assert built.images.shape == (5000, 3, 32, 32) and built.num_classes == 10
    assert -1 <= float(built.images.min()) and float(built.images.max()) <= 1
    assert len(list(tmp_path.glob("mnist_m_*seed1.npz"))) == 1
    cached = MNISTM(seed=1, cache_dir=str(tmp_path)).load()
    torch.testing.assert_close(cached.images, built.images, atol=1 / 127.5, rtol=0)  # stored as uint8
    fresh = MNISTM(seed=1).load()
    torch.testing.assert_close(fresh.images, built.images, atol=1 / 127.5, rtol=0)
    torch.testing.assert_close(built.labels, MNIST().load().labels)


def test_mnist_m_config_and_bad_photos(tmp_path, cache_dir):
    cfg = compose_train(["data=mnist_m", "model=unet_alias_free", "model.version=1"], tmp_path, cache_dir)
    source = instantiate(cfg.data.source)
    assert isinstance(source, MNISTM) and source.image_size == 32 and source.cache_dir == str(cache_dir)
    with pytest.raises(ConfigError, match="data.source.photos"):
        MNISTM(photos=["moon"])
