"""The LightningDataModule: loads a source once, holds it in memory and splits off a fixed held-out set.

Batches are sliced from the in-memory tensor in one indexing call, so a training step costs no per-image collation.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from spectral_diffusion.spectral.frequency import floor_spectrum, radial_power_spectrum, radial_profile_on_grid
from spectral_diffusion.utils.validation import ConfigError, check_bool, check_int, check_range


class InMemoryImages(Dataset):
    """A map-style dataset over an (N, C, H, W) tensor whose batches come from `__getitems__`.

    PyTorch's fetcher calls `__getitems__(indices)` with a whole batch of indices (torch >= 2.1),
    so a batch is one tensor index instead of N `__getitem__` calls and a stack. Because it stays a
    plain map-style dataset driven by the DataLoader's own sampler, Lightning's DDP swaps in a
    DistributedSampler exactly as for any dataset, and each rank gets disjoint indices.
    """

    def __init__(self, images: torch.Tensor, hflip: bool = False, labels: torch.Tensor | None = None) -> None:
        self.images = images
        self.hflip = hflip
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch = self.__getitems__([index])
        return (batch[0][0], batch[1][0]) if isinstance(batch, tuple) else batch[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The images at ``indices``; with ``labels`` the pair (images, labels) (class-conditional training)."""
        # index_select, not images[indices]: advanced indexing opens an OpenMP parallel region,
        # which cost ~15 ms per batch on a busy 2-core machine against ~0.01 ms here.
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = self.images.index_select(0, index)
        if self.hflip:
            # Each image is mirrored with probability 1/2; the draw uses the loader process's
            # torch RNG, which Lightning seeds (and reseeds per worker).
            mirrored = torch.rand(batch.shape[0]) < 0.5
            batch = torch.where(mirrored.view(-1, 1, 1, 1), batch.flip(-1), batch)
        return batch if self.labels is None else (batch, self.labels.index_select(0, index))


def whole_batch(batch: torch.Tensor) -> torch.Tensor:
    """Collate function for batches that `__getitems__` already stacked (module level so workers can pickle it)."""
    return batch


class DiffusionDataModule(LightningDataModule):
    """Images from one source, split once into train and a held-out set fixed by `split_seed`.

    The split depends only on the number of images and `split_seed`, never on the run's global
    seed, so every run and every sweep job evaluates against the same held-out images. Data load
    on first use (`setup()` or any property), so `image_shape` can size the model before fitting.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        hflip: bool = False,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        if not callable(getattr(source, "load", None)):
            raise ConfigError(
                f"data.source={source!r} is not a data source; it needs a load() method returning an ImageSet"
            )
        self.source = source
        self.batch_size = check_int("data.batch_size", batch_size, 1)
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else check_int("data.eval_batch_size", eval_batch_size, 1)
        )
        self.val_fraction = float(check_range("data.val_fraction", val_fraction, 0.0, 1.0))
        if self.val_fraction in (0.0, 1.0):
            raise ConfigError(f"data.val_fraction={val_fraction!r} is invalid; it must lie strictly between 0 and 1")
        self.split_seed = check_int("data.split_seed", split_seed)
        self.num_workers = check_int("data.num_workers", num_workers, 0)
        self.hflip = bool(hflip)
        self.conditional = check_bool("data.conditional", conditional)
        self._train_images: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train_images is not None:
            return
        image_set = self.source.load()
        num_images = len(image_set)
        num_val = max(1, round(num_images * self.val_fraction))
        if num_val >= num_images:
            raise ConfigError(f"data.val_fraction={self.val_fraction} leaves no training images out of {num_images}")
        # A private generator: the held-out set must not move with the run's global seed.
        permutation = torch.randperm(num_images, generator=torch.Generator().manual_seed(self.split_seed))
        val_indices, train_indices = permutation[:num_val].sort().values, permutation[num_val:].sort().values
        if self.batch_size > len(train_indices):
            raise ConfigError(
                f"data.batch_size={self.batch_size} exceeds the {len(train_indices)} training images of "
                f"{image_set.name} (after holding out data.val_fraction={self.val_fraction})"
            )
        labels = image_set.labels
        if self.conditional and (labels is None or not image_set.num_classes):
            raise ConfigError(f"data.conditional=true needs class labels, but {image_set.name} has none; use a "
                              "labelled source (mnist, digits, mnist_m, cifar10, faces, textures, image_folder with "
                              "class subfolders) or data.conditional=false")
        self._train_labels = None if labels is None else labels[train_indices]
        self._val_labels = None if labels is None else labels[val_indices]
        self._train_indices, self._val_indices = train_indices, val_indices
        self._name, self._num_classes, self._class_names = image_set.name, image_set.num_classes, image_set.class_names
        # Only the two splits are kept, so a large set is not held twice.
        self._val_images = image_set.images.index_select(0, val_indices)
        self._train_images = image_set.images.index_select(0, train_indices)

    def _loaded(self) -> DiffusionDataModule:
        self.setup()
        return self

    @property
    def train_images(self) -> torch.Tensor:
        return self._loaded()._train_images

    @property
    def val_images(self) -> torch.Tensor:
        return self._loaded()._val_images

    @property
    def train_labels(self) -> torch.Tensor | None:
        return self._loaded()._train_labels

    @property
    def val_labels(self) -> torch.Tensor | None:
        return self._loaded()._val_labels

    @property
    def train_indices(self) -> torch.Tensor:
        """Positions of the training images in the source's image set (sorted)."""
        return self._loaded()._train_indices

    @property
    def val_indices(self) -> torch.Tensor:
        """Positions of the held-out images in the source's image set (sorted)."""
        return self._loaded()._val_indices

    @property
    def num_classes(self) -> int | None:
        return self._loaded()._num_classes

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self._loaded()._class_names

    def radial_power_spectrum(self) -> tuple[torch.Tensor, torch.Tensor]:
        """S_data's radial profile (bin radii in cycles per pixel, power), float64: the training split's radially
        averaged power spectrum (``spectral.radial_power_spectrum``, radii from fftfreq) floored at 1e-8 × max
        (``spectral.frequency.floor_spectrum``). Estimated once per datamodule and cached; processes and losses that
        need S_data read it from here (``prepare(datamodule)``)."""
        if getattr(self, "_radial_power_spectrum", None) is None:
            frequencies, power = radial_power_spectrum(self.train_images)
            self._radial_power_spectrum = frequencies, floor_spectrum(power)
        return self._radial_power_spectrum

    def power_spectrum(self) -> torch.Tensor:
        """S_data on the orthonormal rfft2 grid (H, W//2+1), float64: ``radial_power_spectrum()`` read at every
        coefficient's radius, which equals ``spectral.data_power_spectrum`` of the training split; cached."""
        if getattr(self, "_power_spectrum", None) is None:
            height, width = self.image_shape[-2:]
            self._power_spectrum = radial_profile_on_grid(*self.radial_power_spectrum(), height, width)
        return self._power_spectrum

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def name(self) -> str:
        return self._loaded()._name

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            InMemoryImages(self.train_images, hflip=self.hflip, labels=self.train_labels if self.conditional else None),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=whole_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            InMemoryImages(self.val_images, labels=self.val_labels if self.conditional else None),
            batch_size=self.eval_batch_size,
            shuffle=False,
            drop_last=False,
            collate_fn=whole_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def info(self) -> dict[str, Any]:
        """Plain values describing the data, for loggers and metrics.json."""
        return {
            "name": self.name,
            "source": repr(self.source),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "num_train": len(self.train_indices),
            "num_val": len(self.val_indices),
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "hflip": self.hflip,
            "conditional": self.conditional,
            "num_workers": self.num_workers,
        }
