"""Feature extractors for FID/KID: a small classifier trained once per dataset, or Inception-v3.

Both are config objects (``features`` group) whose ``build(...)`` returns a frozen ``nn.Module`` that
maps our [-1, 1] float images to feature vectors and carries ``name`` and ``num_features``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor, nn
from torch.nn import functional as F

from spectral_diffusion.utils.validation import ConfigError, check_positive

log = logging.getLogger(__name__)

# Data options of this project whose images come with class labels (the classifier needs them).
LABELLED_DATA_OPTIONS = ("mnist", "digits", "textures", "faces", "cifar10", "image_folder (one subfolder per class)")

# Bump when the network or the training procedure changes, so old cache files are not reused.
CLASSIFIER_FORMAT_VERSION = 2

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


class ClassifierFeatureExtractor(FrozenFeatureExtractor):
    """The penultimate (post-ReLU) layer of a trained ``SmallClassifier``; takes [-1, 1] float images."""

    name = "classifier"

    def __init__(self, classifier: SmallClassifier, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.classifier = classifier
        self.image_shape = tuple(image_shape)
        self.num_features = int(classifier.head.in_features)
        self.num_classes = int(classifier.head.out_features)
        # Filled in by ClassifierFeatures.build for logging.
        self.accuracy: float | None = None
        self.training_seconds: float | None = None
        self.loaded_from_cache = False
        self.cache_path: Path | None = None
        self.freeze()

    def _check_input(self, images: Tensor) -> None:
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [-1, 1], got dtype {images.dtype}")
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"the classifier was trained on images of shape {self.image_shape}, got {tuple(images.shape[1:])}"
            )

    def forward(self, images: Tensor) -> Tensor:
        self._check_input(images)
        return self.classifier.features(images)

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 512) -> Tensor:
        self._check_input(images)
        device = self.classifier.head.weight.device
        logits = [self.classifier(chunk.to(device)) for chunk in images.split(batch_size)]
        return torch.cat(logits).argmax(dim=1).cpu()


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
        if cache_dir is None or str(cache_dir) == "":
            raise ConfigError("features.cache_dir is empty; give a folder where the trained classifier is cached")
        self.cache_dir = Path(cache_dir)
        self.epochs = int(check_positive("features.epochs", epochs))
        self.batch_size = int(check_positive("features.batch_size", batch_size))
        self.lr = float(check_positive("features.lr", lr))
        self.width = int(check_positive("features.width", width))
        self.feature_dim = int(check_positive("features.feature_dim", feature_dim))
        self.seed = int(seed)

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
        digest = hashlib.sha256(json.dumps(self.hyperparameters(), sort_keys=True).encode()).hexdigest()[:12]
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset_name)
        channels, height, width = image_shape
        filename = f"classifier-{safe_name}-{channels}x{height}x{width}-{num_classes}cls-n{num_train}-{digest}.pt"
        return self.cache_dir / filename

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
        if train_labels is None or num_classes is None:
            raise ConfigError(
                f"features=classifier needs class labels, but data '{dataset_name}' has none; use a labelled "
                f"data option ({', '.join(LABELLED_DATA_OPTIONS)}) or features=inception with a local weights file"
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
        image_shape = tuple(int(size) for size in train_images.shape[1:])
        path = self.cache_path(dataset_name, image_shape, num_classes, len(train_images))
        # Initialise from the config seed without disturbing the run's global random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            classifier = SmallClassifier(image_shape[0], num_classes, self.width, self.feature_dim)

        training_seconds = None
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock"):
                # Another run may have finished training while this one waited for the lock.
                if not path.exists():
                    training_seconds = self._train_and_save(
                        classifier, train_images, train_labels, path, dataset_name, image_shape, device
                    )
        if training_seconds is None:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            classifier.load_state_dict(saved["state_dict"])

        extractor = ClassifierFeatureExtractor(classifier.to(device), image_shape)
        extractor.cache_path = path
        extractor.training_seconds = training_seconds
        extractor.loaded_from_cache = training_seconds is None
        if val_images is not None and val_labels is not None:
            predictions = extractor.predict(val_images.float())
            extractor.accuracy = (predictions == torch.as_tensor(val_labels).long().cpu()).float().mean().item()
        log.info(
            "classifier features %s from %s (held-out accuracy %s)",
            "loaded" if extractor.loaded_from_cache else f"trained in {training_seconds:.1f}s",
            path,
            "n/a" if extractor.accuracy is None else f"{extractor.accuracy:.4f}",
        )
        return extractor

    def _train_and_save(
        self,
        classifier: SmallClassifier,
        images: Tensor,
        labels: Tensor,
        path: Path,
        dataset_name: str,
        image_shape: tuple[int, int, int],
        device: str | torch.device,
    ) -> float:
        start = time.perf_counter()
        classifier.to(device)
        train_classifier(
            classifier,
            images.float().cpu(),
            labels,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
        )
        classifier.calibrate_feature_scale(images.float().cpu())
        seconds = time.perf_counter() - start
        payload = {
            "state_dict": {key: value.detach().cpu() for key, value in classifier.state_dict().items()},
            "hyperparameters": self.hyperparameters(),
            "dataset_name": dataset_name,
            "image_shape": list(image_shape),
            "num_train": len(images),
            "training_seconds": seconds,
        }
        # Write beside the target and rename: readers never see a half-written file.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(handle)
        try:
            torch.save(payload, temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return seconds


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
