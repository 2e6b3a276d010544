"""Feature extractors for FID/KID: a small classifier or autoencoder trained once per dataset, or Inception-v3.

Each is a config object (``features`` group) whose ``build(...)`` returns a frozen ``nn.Module`` that
maps our [-1, 1] float images to feature vectors and carries ``name`` and ``num_features``;
``features=auto`` picks the classifier for labelled data and the autoencoder otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor, nn
from torch.nn import functional as F

from spectral_diffusion.utils.validation import ConfigError, check_int, check_positive

log = logging.getLogger(__name__)

# Data options of this project whose images come with class labels (the classifier needs them).
LABELLED_DATA_OPTIONS = ("mnist", "digits", "textures", "faces", "cifar10", "image_folder (one subfolder per class)")

# Bump when a network or its training procedure changes, so old cache files are not reused.
CLASSIFIER_FORMAT_VERSION = 2
AUTOENCODER_FORMAT_VERSION = 1

INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


class FrozenFeatureExtractor(nn.Module):
    """A feature network that stays in eval mode with no gradients, whatever its parent module does."""

    name: str
    num_features: int

    def freeze(self) -> FrozenFeatureExtractor:
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FrozenFeatureExtractor:
        # A Lightning module that owns the extractor calls .train(); BatchNorm/dropout must not switch.
        return super().train(False)


class TrainedFeatureExtractor(FrozenFeatureExtractor):
    """A frozen extractor the project trained on one dataset: it takes only that data's image shape.

    ``build`` fills in the bookkeeping for logging: ``accuracy`` (held-out, classifiers only),
    ``training_seconds`` (None when loaded), ``loaded_from_cache`` and ``cache_path``.
    """

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.accuracy: float | None = None
        self.training_seconds: float | None = None
        self.loaded_from_cache = False
        self.cache_path: Path | None = None

    def record_build(self, path: Path, training_seconds: float | None, quality: str) -> None:
        """Keep where the weights live and how long training took, and log it with ``quality`` (held-out)."""
        self.cache_path, self.training_seconds = path, training_seconds
        self.loaded_from_cache = training_seconds is None
        how = "loaded" if self.loaded_from_cache else f"trained in {training_seconds:.1f}s"
        log.info("%s features %s from %s (%s)", self.name, how, path, quality)

    def _check_input(self, images: Tensor) -> None:
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [-1, 1], got dtype {images.dtype}")
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"the {self.name} was trained on images of shape {self.image_shape}, got {tuple(images.shape[1:])}"
            )


class SmallClassifier(nn.Module):
    """Two conv layers, a 4x4 spatial pool and a ReLU feature layer before the class logits.

    Kept this small on purpose: it must train in seconds on a 2-core CPU. ``features`` divides the
    ReLU layer by one fixed scale (set after training, see ``calibrate_feature_scale``).
    """

    def __init__(self, channels: int, num_classes: int, width: int, feature_dim: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            # A fixed 4x4 grid keeps where strokes are (digits need it) at every input size.
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.trunk(images))

    def features(self, images: Tensor) -> Tensor:
        return self.trunk(images) / self.feature_scale

    @torch.no_grad()
    def calibrate_feature_scale(self, images: Tensor, batch_size: int = 512) -> None:
        """Scale features to a mean square of 1 over ``images`` (the training set).

        KID's kernel (x·y/d + 1)^3 was designed for Inception pool features, whose x·y/d is of order
        one; unscaled ReLU activations of a small classifier can be far larger, and the cubic then lets
        a few large-norm images dominate KID and its variance. One scalar keeps FID's meaning (it
        scales FID by a constant) and makes the kernel behave as intended.
        """
        device = self.head.weight.device
        squares = sum(self.trunk(chunk.to(device)).double().square().sum() for chunk in images.split(batch_size))
        mean_square = squares / (len(images) * self.head.in_features)
        self.feature_scale.fill_(float(mean_square.sqrt().clamp_min(1e-12)))


class ClassifierFeatureExtractor(TrainedFeatureExtractor):
    """The penultimate (post-ReLU) layer of a trained ``SmallClassifier``; takes [-1, 1] float images."""

    name = "classifier"

    def __init__(self, classifier: SmallClassifier, image_shape: tuple[int, int, int]) -> None:
        super().__init__(image_shape)
        self.classifier = classifier
        self.num_features = int(classifier.head.in_features)
        self.num_classes = int(classifier.head.out_features)
        self.freeze()

    def forward(self, images: Tensor) -> Tensor:
        self._check_input(images)
        return self.classifier.features(images)

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 512) -> Tensor:
        self._check_input(images)
        device = self.classifier.head.weight.device
        logits = [self.classifier(chunk.to(device)) for chunk in images.split(batch_size)]
        return torch.cat(logits).argmax(dim=1).cpu()

    @torch.no_grad()
    def probabilities(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """Softmax class probabilities (N, num_classes), float64 on the CPU."""
        self._check_input(images)
        device = self.classifier.head.weight.device
        logits = [self.classifier(chunk.to(device)).double() for chunk in images.split(batch_size)]
        return torch.cat(logits).softmax(dim=1).cpu()


def train_classifier(
    classifier: SmallClassifier,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> None:
    """Adam on cross-entropy with a seeded shuffle; the same seed and device give the same weights."""
    device = classifier.head.weight.device
    order_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    steps_per_epoch = -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=order_generator)
        for batch_indices in order.split(batch_size):
            batch_images = images[batch_indices].to(device)
            batch_labels = labels[batch_indices].to(device)
            loss = F.cross_entropy(classifier(batch_images), batch_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    classifier.eval()


# --- the cache shared by the trained extractors ---------------------------------------------------------
def checked_cache_dir(cache_dir: str | os.PathLike | None, what: str) -> Path:
    if cache_dir is None or str(cache_dir) == "":
        raise ConfigError(f"features.cache_dir is empty; give a folder where the trained {what} is cached")
    return Path(cache_dir)


def cache_file(
    cache_dir: Path, kind: str, dataset_name: str, image_shape: tuple[int, int, int], details: str, hyperparameters: dict
) -> Path:
    """``<kind>-<data>-<C>x<H>x<W>-<details>-<hash of the hyperparameters>.pt`` inside ``cache_dir``."""
    digest = hashlib.sha256(json.dumps(hyperparameters, sort_keys=True).encode()).hexdigest()[:12]
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset_name)
    channels, height, width = image_shape
    return cache_dir / f"{kind}-{safe_name}-{channels}x{height}x{width}-{details}-{digest}.pt"


def load_or_train(
    network: nn.Module, path: Path, train: Callable[[], None], *, config, dataset_name: str, train_images: Tensor
) -> float | None:
    """Load ``network``'s weights from ``path``, or run ``train()`` (once, under a file lock) and cache them
    with ``config.hyperparameters()`` and a description of the data.

    Returns the training seconds, or None when the weights came from the cache. Concurrent runs (a
    sweep's jobs) wait for the one that trains; the file is written beside the target and renamed, so
    a reader never sees half a file.
    """
    metadata = {"hyperparameters": config.hyperparameters(), "dataset_name": dataset_name,
                "image_shape": list(train_images.shape[1:]), "num_train": len(train_images)}
    training_seconds = None
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            # Another run may have finished training while this one waited for the lock.
            if not path.exists():
                start = time.perf_counter()
                train()
                training_seconds = time.perf_counter() - start
                state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
                save_atomically({"state_dict": state, **metadata, "training_seconds": training_seconds}, path)
    if training_seconds is None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(saved["state_dict"])
    return training_seconds


def save_atomically(payload: dict, path: Path) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` under ``torch.manual_seed(seed)`` without disturbing the run's global random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def image_shape_of(train_images: Tensor) -> tuple[int, int, int]:
    if train_images.ndim != 4:
        raise ValueError(f"expected training images (N, C, H, W), got {tuple(train_images.shape)}")
    return tuple(int(size) for size in train_images.shape[1:])


class ClassifierFeatures:
    """Config for the project-trained classifier extractor (``features=classifier``).

    The classifier is trained on the training split's labels the first time a (dataset, image shape,
    classes, training-set size, hyperparameters) combination is seen, and cached in ``cache_dir``.
    The key deliberately holds no hash of the image contents: every run of a sweep on the same data
    option must share one extractor, or their FIDs would not be comparable.
    """

    name = "classifier"  # the extractor's name in metric keys (fid_classifier@N)

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 3e-3,
        width: int = 16,
        feature_dim: int = 128,
        seed: int = 0,
    ) -> None:
        self.cache_dir = checked_cache_dir(cache_dir, "classifier")
        self.epochs = check_int("features.epochs", epochs, 1)
        self.batch_size = check_int("features.batch_size", batch_size, 1)
        self.lr = float(check_positive("features.lr", lr))
        self.width = check_int("features.width", width, 1)
        self.feature_dim = check_int("features.feature_dim", feature_dim, 1)
        self.seed = check_int("features.seed", seed)

    def hyperparameters(self) -> dict:
        return {
            "format_version": CLASSIFIER_FORMAT_VERSION,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "width": self.width,
            "feature_dim": self.feature_dim,
            "seed": self.seed,
        }

    def cache_path(
        self, dataset_name: str, image_shape: tuple[int, int, int], num_classes: int, num_train: int
    ) -> Path:
        details = f"{num_classes}cls-n{num_train}"
        return cache_file(self.cache_dir, "classifier", dataset_name, image_shape, details, self.hyperparameters())

    def build(
        self,
        train_images: Tensor,
        train_labels: Tensor | None,
        num_classes: int | None,
        dataset_name: str,
        *,
        val_images: Tensor | None = None,
        val_labels: Tensor | None = None,
        device: str | torch.device = "cpu",
    ) -> ClassifierFeatureExtractor:
        """Load the cached classifier for this data, or train it (once, under a file lock) and cache it.

        ``val_images``/``val_labels`` (held-out) set ``extractor.accuracy`` for logging.
        """
        if not has_labels(train_labels, num_classes):
            raise ConfigError(
                f"features=classifier needs class labels, but data '{dataset_name}' has none; use a labelled "
                f"data option ({', '.join(LABELLED_DATA_OPTIONS)}), features=autoencoder (needs no labels) "
                "or features=inception with a local weights file"
            )
        num_classes = int(num_classes)
        if num_classes < 2:
            raise ConfigError(f"features=classifier needs at least 2 classes, data '{dataset_name}' has {num_classes}")
        train_labels = torch.as_tensor(train_labels).long().cpu()
        if train_images.ndim != 4 or len(train_images) != len(train_labels):
            raise ValueError(
                f"expected images (N, C, H, W) and N labels, got {tuple(train_images.shape)} and {len(train_labels)}"
            )
        if train_labels.min() < 0 or train_labels.max() >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got [{train_labels.min()}, {train_labels.max()}]")
        image_shape = image_shape_of(train_images)
        path = self.cache_path(dataset_name, image_shape, num_classes, len(train_images))
        classifier = seeded(self.seed, lambda: SmallClassifier(image_shape[0], num_classes, self.width,
                                                               self.feature_dim))

        def train() -> None:
            images = train_images.float().cpu()
            classifier.to(device)
            train_classifier(classifier, images, train_labels, epochs=self.epochs, batch_size=self.batch_size,
                             lr=self.lr, seed=self.seed)
            classifier.calibrate_feature_scale(images)

        training_seconds = load_or_train(classifier, path, train, config=self, dataset_name=dataset_name,
                                         train_images=train_images)
        extractor = ClassifierFeatureExtractor(classifier.to(device), image_shape)
        if val_images is not None and val_labels is not None:
            predictions = extractor.predict(val_images.float())
            extractor.accuracy = (predictions == torch.as_tensor(val_labels).long().cpu()).float().mean().item()
        accuracy = "n/a" if extractor.accuracy is None else f"{extractor.accuracy:.4f}"
        extractor.record_build(path, training_seconds, f"held-out accuracy {accuracy}")
        return extractor


def has_labels(train_labels: Tensor | None, num_classes: int | None) -> bool:
    """Whether the training split carries class labels (what the classifier extractor needs)."""
    return train_labels is not None and num_classes is not None


# --- an extractor that needs no labels: the encoder of a small convolutional autoencoder ---------------
def downsampling_stages(height: int, width: int) -> int:
    """Stride-2 stages that bring the larger side to at most 8 pixels (at least one): 16 -> 1, 32 -> 2, 64 -> 3."""
    return max(1, math.ceil(math.log2(max(height, width) / 8)))


class ConvAutoencoder(nn.Module):
    """A plain convolutional autoencoder (Hinton & Salakhutdinov 2006; Masci et al. 2011) with a linear code.

    Encoder: a 3x3 conv at full resolution and ``downsampling_stages`` stride-2 3x3 convs (ReLU after
    each), then a 4x4 average-pool grid (keeps where structure is, at every input size) and a linear
    layer to ``code_dim``. The decoder mirrors it with nearest upsampling to each encoder size and 3x3
    convs and ends linear (the images are in [-1, 1]).

    ``features`` are the code followed by the spatial mean of every encoder stage's activations, each
    dimension standardised with the training set's mean and std (``calibrate_features``). The code
    says what is where; the spatial means are first-order texture statistics (Gatys et al. 2015 use
    their Gram matrices): they vary little between images of one distribution, so blur, noise or
    wrong textures move them by many standard deviations where the code alone moves by about one.
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int, code_dim: int) -> None:
        super().__init__()
        channels, height, image_width = image_shape
        self.sizes = [(height, image_width)]
        for _ in range(downsampling_stages(height, image_width)):
            self.sizes.append(tuple(-(-size // 2) for size in self.sizes[-1]))
        widths = [width] + [2 * width] * (len(self.sizes) - 1)
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(channels, widths[0], 3, padding=1), nn.ReLU())])
        self.stages.extend(
            nn.Sequential(nn.Conv2d(low, high, 3, stride=2, padding=1), nn.ReLU())
            for low, high in zip(widths[:-1], widths[1:])
        )
        self.to_code = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(widths[-1] * 16, code_dim))
        self.expand = nn.Sequential(nn.Linear(code_dim, widths[-1] * 16), nn.ReLU())
        self.up = nn.ModuleList(
            nn.Conv2d(high, low, 3, padding=1) for low, high in zip(widths[:-1], widths[1:])
        )[::-1]
        self.output = nn.Conv2d(widths[0], channels, 3, padding=1)
        self.num_features = code_dim + sum(widths)
        self.register_buffer("feature_mean", torch.zeros(self.num_features))
        self.register_buffer("feature_std", torch.ones(self.num_features))

    def encode(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The code (N, code_dim) and each stage's activations."""
        activations = []
        hidden = images
        for stage in self.stages:
            hidden = stage(hidden)
            activations.append(hidden)
        return self.to_code(hidden), activations

    def decode(self, code: Tensor) -> Tensor:
        hidden = self.expand(code).view(len(code), -1, 4, 4)
        hidden = F.interpolate(hidden, size=self.sizes[-1], mode="nearest")
        for conv, size in zip(self.up, self.sizes[-2::-1]):
            hidden = F.relu(conv(F.interpolate(hidden, size=size, mode="nearest")))
        return self.output(hidden)

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images)[0])

    def raw_features(self, images: Tensor) -> Tensor:
        code, activations = self.encode(images)
        return torch.cat([code] + [activation.mean(dim=(2, 3)) for activation in activations], dim=1)

    def features(self, images: Tensor) -> Tensor:
        return (self.raw_features(images) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def calibrate_features(self, images: Tensor, batch_size: int = 512) -> None:
        """Set the per-dimension mean and std of ``raw_features`` over ``images`` (the training set), in float64.

        Standardised, every dimension counts alike in FID and KID's kernel (x·y/d + 1)^3 sees x·y/d of
        order one, as for the Inception features it was designed for.
        """
        device = self.feature_mean.device
        features = torch.cat([self.raw_features(chunk.to(device)).double() for chunk in images.split(batch_size)])
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0).clamp_min(1e-6))


def reconstruction_loss(reconstruction: Tensor, images: Tensor, gradient_weight: float) -> Tensor:
    """Pixel MSE plus ``gradient_weight`` times the MSE of horizontal and vertical finite differences.

    Natural images and power-law fields hold little power at high frequencies, so pixel MSE alone lets
    the code ignore fine detail (and the features would not see blur). A difference multiplies the
    power at frequency f by 4 sin²(πf), so the second term weights fine detail up, as in gradient
    (Sobolev) losses.
    """
    loss = F.mse_loss(reconstruction, images)
    if gradient_weight > 0:
        for dim in (-1, -2):
            loss = loss + gradient_weight * F.mse_loss(reconstruction.diff(dim=dim), images.diff(dim=dim))
    return loss


def train_autoencoder(
    autoencoder: ConvAutoencoder,
    images: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    gradient_weight: float,
    seed: int,
) -> None:
    """Adam on ``reconstruction_loss`` for a fixed number of steps (so the time does not grow with the data)
    with a one-cycle schedule and a seeded shuffle; the same seed and device give the same weights."""
    device = autoencoder.feature_mean.device
    order_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    batch_size = min(batch_size, len(images))
    batches: list[Tensor] = []
    autoencoder.train()
    for _ in range(steps):
        if not batches:
            batches = list(torch.randperm(len(images), generator=order_generator).split(batch_size))[::-1]
        batch = images.index_select(0, batches.pop()).to(device)
        loss = reconstruction_loss(autoencoder(batch), batch, gradient_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    autoencoder.eval()


class AutoencoderFeatureExtractor(TrainedFeatureExtractor):
    """Standardised code and stage means of a trained ``ConvAutoencoder``'s encoder; takes [-1, 1] float images."""

    name = "autoencoder"

    def __init__(self, autoencoder: ConvAutoencoder, image_shape: tuple[int, int, int]) -> None:
        super().__init__(image_shape)
        self.autoencoder = autoencoder
        self.num_features = autoencoder.num_features
        self.reconstruction_error: float | None = None  # held-out pixel MSE, filled in by build for logging
        self.freeze()

    def forward(self, images: Tensor) -> Tensor:
        self._check_input(images)
        return self.autoencoder.features(images)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, batch_size: int = 512) -> Tensor:
        self._check_input(images)
        device = self.autoencoder.feature_mean.device
        return torch.cat([self.autoencoder(chunk.to(device)).cpu() for chunk in images.split(batch_size)])


class AutoencoderFeatures:
    """Config for the label-free extractor (``features=autoencoder``): a small autoencoder's encoder.

    Trained on the training split's images (no labels) the first time a (dataset, image shape,
    training-set size, hyperparameters) combination is seen, and cached in ``cache_dir`` beside the
    classifier; like the classifier's, the key holds no hash of the image contents, so every run of a
    sweep on one data option shares one extractor.
    """

    name = "autoencoder"  # the extractor's name in metric keys (fid_autoencoder@N)

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        steps: int = 1500,
        batch_size: int = 64,
        lr: float = 3e-3,
        width: int = 16,
        code_dim: int = 64,
        gradient_weight: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.cache_dir = checked_cache_dir(cache_dir, "autoencoder")
        self.steps = check_int("features.steps", steps, 1)
        self.batch_size = check_int("features.batch_size", batch_size, 1)
        self.lr = float(check_positive("features.lr", lr))
        self.width = check_int("features.width", width, 1)
        self.code_dim = check_int("features.code_dim", code_dim, 1)
        self.gradient_weight = float(check_positive("features.gradient_weight", gradient_weight, strict=False))
        self.seed = check_int("features.seed", seed)

    def hyperparameters(self) -> dict:
        return {
            "format_version": AUTOENCODER_FORMAT_VERSION,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "width": self.width,
            "code_dim": self.code_dim,
            "gradient_weight": self.gradient_weight,
            "seed": self.seed,
        }

    def cache_path(self, dataset_name: str, image_shape: tuple[int, int, int], num_train: int) -> Path:
        return cache_file(self.cache_dir, "autoencoder", dataset_name, image_shape, f"n{num_train}",
                          self.hyperparameters())

    def build(
        self,
        train_images: Tensor,
        train_labels: Tensor | None = None,
        num_classes: int | None = None,
        dataset_name: str = "images",
        *,
        val_images: Tensor | None = None,
        val_labels: Tensor | None = None,
        device: str | torch.device = "cpu",
    ) -> AutoencoderFeatureExtractor:
        """Load the cached autoencoder for this data, or train it (once, under a file lock) and cache it.

        The same signature as ``ClassifierFeatures.build``; labels are not used. ``val_images``
        (held-out) set ``extractor.reconstruction_error`` for logging.
        """
        image_shape = image_shape_of(train_images)
        if len(train_images) < 2:
            raise ValueError(f"the autoencoder needs at least 2 training images, got {len(train_images)}")
        path = self.cache_path(dataset_name, image_shape, len(train_images))
        autoencoder = seeded(self.seed, lambda: ConvAutoencoder(image_shape, self.width, self.code_dim))

        def train() -> None:
            images = train_images.float().cpu()
            autoencoder.to(device)
            train_autoencoder(autoencoder, images, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                              gradient_weight=self.gradient_weight, seed=self.seed)
            autoencoder.calibrate_features(images)

        training_seconds = load_or_train(autoencoder, path, train, config=self, dataset_name=dataset_name,
                                         train_images=train_images)
        extractor = AutoencoderFeatureExtractor(autoencoder.to(device), image_shape)
        if val_images is not None:
            held_out = val_images.float()
            extractor.reconstruction_error = F.mse_loss(extractor.reconstruct(held_out), held_out).item()
        error = "n/a" if extractor.reconstruction_error is None else f"{extractor.reconstruction_error:.4f}"
        extractor.record_build(path, training_seconds, f"held-out reconstruction MSE {error}")
        return extractor


# --- the automatic choice ------------------------------------------------------------------------------
class AutoFeatures:
    """``features=auto``: the classifier when the training split has class labels, else the autoencoder.

    The classifier is preferred where it can be built: on labelled data its features are the usual
    practice (the FID of MNIST papers) and follow the classes; the autoencoder needs nothing but images.
    ``select`` (called by ``build``) records the choice in ``chosen`` and ``reason``; ``name`` is then
    the chosen extractor's name, so metric keys read ``fid_classifier@N`` or ``fid_autoencoder@N``.
    """

    def __init__(self, labelled: ClassifierFeatures, unlabelled: AutoencoderFeatures) -> None:
        self.labelled = labelled
        self.unlabelled = unlabelled
        self.chosen: ClassifierFeatures | AutoencoderFeatures | None = None
        self.reason: str | None = None

    @property
    def name(self) -> str:
        if self.chosen is None:
            raise RuntimeError("features=auto has not chosen an extractor yet; call select(...) or build(...) first")
        return self.chosen.name

    def select(self, train_labels: Tensor | None, num_classes: int | None) -> ClassifierFeatures | AutoencoderFeatures:
        """The config object to build for data with these labels (None: unlabelled); recorded in ``chosen``."""
        if has_labels(train_labels, num_classes) and int(num_classes) >= 2:
            self.chosen, self.reason = self.labelled, f"the data has {int(num_classes)} classes"
        else:
            self.chosen, self.reason = self.unlabelled, "the data has no class labels"
        log.info("features=auto chose %s: %s", self.chosen.name, self.reason)
        return self.chosen

    def build(
        self,
        train_images: Tensor,
        train_labels: Tensor | None = None,
        num_classes: int | None = None,
        dataset_name: str = "images",
        *,
        val_images: Tensor | None = None,
        val_labels: Tensor | None = None,
        device: str | torch.device = "cpu",
    ) -> TrainedFeatureExtractor:
        """``build`` of the selected extractor config (same signature as ``ClassifierFeatures.build``)."""
        return self.select(train_labels, num_classes).build(
            train_images, train_labels, num_classes, dataset_name,
            val_images=val_images, val_labels=val_labels, device=device,
        )


class NoFeatures:
    """``features=none``: build no feature extractor. FID, KID, precision/recall and their real floor are skipped
    (``reason`` is recorded under ``skipped`` in metrics.json); every other metric is computed as usual."""

    name = None  # no extractor, so no feature-metric keys
    reason = ("features=none: no feature extractor was built, so FID, KID, precision/recall and their real floor "
              "are not computed")

    def build(self, *args, **kwargs) -> None:
        """The same call as the other ``features`` options; there is nothing to build."""
        return None


class InceptionFeatureExtractor(FrozenFeatureExtractor):
    """The 2048-d pool features of the FID Inception-v3 (torch-fidelity port of the 2015-12-05 TF graph).

    Takes [-1, 1] float images with 1 or 3 channels; the network resizes to 299x299 itself.
    """

    name = "inception"
    num_features = 2048

    def __init__(self, weights_path: str | os.PathLike) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.network = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights_path)
        )
        self.freeze()

    def forward(self, images: Tensor) -> Tensor:
        return self.network(to_inception_input(images))


def to_inception_input(images: Tensor) -> Tensor:
    """[-1, 1] float (N, 1|3, H, W) -> uint8 RGB in [0, 255], the input the FID Inception expects."""
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [-1, 1], got dtype {images.dtype}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        raise ValueError(f"the Inception extractor takes 1- or 3-channel images, got {images.shape[1]} channels")
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class InceptionFeatures:
    """Config for the Inception-v3 extractor (``features=inception``); never downloads anything."""

    name = "inception"  # the extractor's name in metric keys (fid_inception@N)

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        if weights_path is None or not Path(weights_path).is_file():
            state = "is not set" if weights_path is None else f"={str(weights_path)!r} does not exist"
            raise ConfigError(
                f"features.weights_path {state}. features=inception needs the torch-fidelity Inception-v3 weights "
                f"(pt_inception-2015-12-05) as a local file; download {INCEPTION_WEIGHTS_URL} on a machine with "
                "internet access and pass features.weights_path=/path/to/weights-inception-2015-12-05-6726825d.pth, "
                "or use features=classifier"
            )
        self.weights_path = Path(weights_path)

    def build(
        self,
        train_images: Tensor | None = None,
        train_labels: Tensor | None = None,
        num_classes: int | None = None,
        dataset_name: str | None = None,
        *,
        val_images: Tensor | None = None,
        val_labels: Tensor | None = None,
        device: str | torch.device = "cpu",
    ) -> InceptionFeatureExtractor:
        """The same signature as ``ClassifierFeatures.build``; Inception is fixed, so the data is unused."""
        return InceptionFeatureExtractor(self.weights_path).to(device)
