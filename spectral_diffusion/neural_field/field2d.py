"""Images as 2-D fields: pixel-centre coordinate grids at any resolution, sparse observation masks (random pixels or
random square patches) and the PSNR / SSIM that judge a reconstruction on the image's own grid.

Conventions. A (H, W) image is the field sampled at pixel centres: coordinate (x, y) of the pixel in row i, column j
is x = (2j + 1)/W − 1, y = (2i + 1)/H − 1, both in (−1, 1), listed row-major, so ``values.reshape(H, W)`` is the
image. Pixel centres (not ``linspace(-1, 1, W)``) make a finer grid a refinement of the same square: each pixel of
the 28×28 grid covers exactly the 2×2 pixels of the 56×56 grid, and ``pool_to`` (the block mean) takes a reconstruction
decoded at 56 or 112 back to 28 for comparison with the truth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from skimage.metrics import structural_similarity
from torch.utils.data import DataLoader, Dataset

from spectral_diffusion.data.datamodule import DiffusionDataModule
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_int, check_positive

MASK_KINDS = ("pixels", "patches")

# Images live in [−1, 1]; PSNR and SSIM use this peak-to-peak range.
DATA_RANGE = 2.0


def pixel_centres(size: int) -> torch.Tensor:
    """The ``size`` pixel centres of [−1, 1]: (2k + 1)/size − 1, k = 0 … size − 1 (float32)."""
    return (2.0 * torch.arange(size, dtype=torch.float64) + 1.0).div(size).sub(1.0).to(torch.float32)


def image_grid(height: int, width: int | None = None) -> torch.Tensor:
    """Coordinates (height·width, 2) of a (height, width) image's pixel centres as (x, y), row-major."""
    width = height if width is None else width
    rows, cols = torch.meshgrid(pixel_centres(height), pixel_centres(width), indexing="ij")
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=1)


def check_observed_fraction(key: str, fraction: float) -> float:
    """``fraction`` as a float in (0, 1]: no observation at all leaves nothing to reconstruct from."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ConfigError(f"{key}={fraction!r} is invalid; it must lie in (0, 1]")
    return float(fraction)


def example_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of example ``index``'s mask: one numpy SeedSequence stream per (seed, index), so an example's
    mask does not depend on which other examples are drawn, their order or the batch size."""
    return np.random.default_rng([int(seed), int(index)])


def random_pixel_mask(height: int, width: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(height·width,) bool: exactly max(1, round(fraction·height·width)) pixels observed, drawn without
    replacement."""
    count = height * width
    observed = max(1, round(fraction * count))
    mask = np.zeros(count, dtype=bool)
    mask[rng.choice(count, size=observed, replace=False)] = True
    return mask


def random_patch_mask(height: int, width: int, fraction: float, patch_size: int, rng: np.random.Generator
                      ) -> np.ndarray:
    """(height·width,) bool: square ``patch_size`` patches at uniform random positions (wholly inside the image,
    possibly overlapping) are added until they cover at least ``fraction`` of the pixels.

    The last patch overshoots the fraction by less than one patch (patch_size² pixels), so the covered fraction is
    about ``fraction``, never below it.
    """
    if patch_size > min(height, width):
        raise ConfigError(f"data.patch_size={patch_size} exceeds the {height}x{width} image")
    target = max(1, math.ceil(fraction * height * width - 1e-9))
    mask = np.zeros((height, width), dtype=bool)
    while mask.sum() < target:
        top = rng.integers(0, height - patch_size + 1)
        left = rng.integers(0, width - patch_size + 1)
        mask[top:top + patch_size, left:left + patch_size] = True
    return mask.reshape(-1)


def observation_masks(indices: torch.Tensor | list[int], height: int, width: int, fraction: float, kind: str,
                      patch_size: int, seed: int) -> torch.Tensor:
    """Masks (len(indices), height·width) bool of the examples ``indices``, each drawn from ``example_rng(seed,
    index)``: the same example always gets the same mask for a seed. ``kind`` is "pixels" or "patches"."""
    fraction = check_observed_fraction("data.observed_fraction", fraction)
    check_choice("data.mask", kind, MASK_KINDS)
    patch_size = check_int("data.patch_size", patch_size, 1)
    rows = []
    for index in torch.as_tensor(indices).tolist():
        rng = example_rng(seed, index)
        if kind == "pixels":
            rows.append(random_pixel_mask(height, width, fraction, rng))
        else:
            rows.append(random_patch_mask(height, width, fraction, patch_size, rng))
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, height * width, dtype=torch.bool)


def pool_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, S, S) images at a multiple S of ``size``, block-averaged to (B, size, size): each coarse pixel is the
    mean of the fine pixels whose centres lie in it (pixel-centre grids nest exactly)."""
    fine = images.shape[-1]
    if images.shape[-2] != fine or fine % size:
        raise ValueError(f"images {tuple(images.shape)} are not square at a multiple of {size}")
    factor = fine // size
    return images.reshape(*images.shape[:-2], size, factor, size, factor).mean(dim=(-3, -1))


def psnr(reconstruction: torch.Tensor, truth: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (B,) in dB: 10·log10(data_range² / MSE) over each image's pixels.

    Reconstructions are clipped to the data range [−1, 1] first (every method alike), as an image would be for
    display; a perfect reconstruction gives +inf.
    """
    check_positive("data_range", data_range)
    low = -data_range / 2.0
    error = (reconstruction.double().clamp(low, low + data_range) - truth.double()).square()
    mse = error.reshape(error.shape[0], -1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(reconstruction: torch.Tensor, truth: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """Structural similarity per image (B,) of (B, H, W) grey images: scikit-image's ``structural_similarity``
    (Wang et al. 2004, Eq. 13) with its defaults (7×7 uniform window, K1 = 0.01, K2 = 0.03), ``data_range`` 2 for
    [−1, 1], reconstructions clipped to that range as in ``psnr``."""
    check_positive("data_range", data_range)
    low = -data_range / 2.0
    recon = reconstruction.double().clamp(low, low + data_range).cpu().numpy()
    true = truth.double().cpu().numpy()
    return torch.tensor([structural_similarity(true[i], recon[i], data_range=data_range) for i in range(len(true))],
                        dtype=torch.float64)


class FieldBatches(Dataset):
    """Fields held in memory (values (B, N, c), masks (B, N), optional labels) on one shared coordinate grid, whose
    batches come from ``__getitems__`` as one field batch dict (one index per tensor, no per-example collation)."""

    def __init__(self, coords: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                 labels: torch.Tensor | None) -> None:
        self.coords, self.values, self.mask, self.labels = coords, values, mask, labels

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {
            "coords": self.coords.expand(len(index), -1, -1),
            "values": self.values.index_select(0, index),
            "mask": self.mask.index_select(0, index),
        }
        if self.labels is not None:
            batch["label"] = self.labels.index_select(0, index)
        return batch


def whole_field_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Collate function for batches ``__getitems__`` already built (module level so workers can pickle it)."""
    return batch


class MnistField(LightningDataModule):
    """Images of an image source (``data=mnist_field``: the project's MNIST source at 28×28) served as 2-D fields:
    coordinate (x, y) at each pixel centre → intensity in [−1, 1], with a fixed observation mask per example.

    The train / held-out split is the image datamodule's (``DiffusionDataModule``: fixed by ``split_seed``, never by
    the run's seed); the first ``num_train`` and ``num_val`` images of each split are kept, so CPU runs stay small.
    Example i's mask is drawn from ``example_rng(mask_seed, position of i in the source)``: ``mask="pixels"`` observes
    ``observed_fraction`` of the pixels at random, ``mask="patches"`` random ``patch_size`` squares covering about
    that fraction. Every batch holds the whole grid (``coords`` (B, H·W, 2), ``values`` (B, H·W, c), ``mask``
    (B, H·W), ``label`` (B,)), so the hidden pixels are there to score a reconstruction.
    """

    coord_dim = 2

    def __init__(self, source: Any, observed_fraction: float = 0.2, mask: str = "pixels", patch_size: int = 4,
                 num_train: int = 2000, num_val: int = 200, batch_size: int = 32, val_fraction: float = 0.1,
                 split_seed: int = 0, mask_seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.observed_fraction = check_observed_fraction("data.observed_fraction", observed_fraction)
        self.mask_kind = check_choice("data.mask", mask, MASK_KINDS)
        self.patch_size = check_int("data.patch_size", patch_size, 1)
        self.num_train = check_int("data.num_train", num_train, 1)
        self.num_val = check_int("data.num_val", num_val, 1)
        self.batch_size = check_int("data.batch_size", batch_size, 1)
        if self.batch_size > self.num_train:
            raise ConfigError(f"data.batch_size={batch_size} exceeds data.num_train={num_train}")
        self.mask_seed = check_int("data.mask_seed", mask_seed)
        self.num_workers = check_int("data.num_workers", num_workers, 0)
        # Holds the source, the held-out fraction and the split seed (and checks them).
        self.images = DiffusionDataModule(source, batch_size=1, val_fraction=val_fraction, split_seed=split_seed)
        self._train: FieldBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        images = self.images
        channels, height, width = images.image_shape
        for key, wanted, available in (("data.num_train", self.num_train, len(images.train_indices)),
                                       ("data.num_val", self.num_val, len(images.val_indices))):
            if wanted > available:
                raise ConfigError(f"{key}={wanted} exceeds the {available} images of that split of {images.name}")
        self._grid_shape = (height, width)
        self._value_dim = channels
        coords = image_grid(height, width).unsqueeze(0)
        self._train = self._fields(coords, images.train_images, images.train_labels, images.train_indices,
                                   self.num_train)
        self._val = self._fields(coords, images.val_images, images.val_labels, images.val_indices, self.num_val)

    def _fields(self, coords: torch.Tensor, pixels: torch.Tensor, labels: torch.Tensor | None,
                source_indices: torch.Tensor, count: int) -> FieldBatches:
        height, width = self._grid_shape
        values = pixels[:count].flatten(2).transpose(1, 2).contiguous()  # (B, H·W, C), row-major like the grid
        masks = observation_masks(source_indices[:count], height, width, self.observed_fraction, self.mask_kind,
                                  self.patch_size, self.mask_seed)
        return FieldBatches(coords, values, masks, None if labels is None else labels[:count])

    def _loaded(self) -> MnistField:
        self.setup()
        return self

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self._loaded()._grid_shape

    @property
    def value_dim(self) -> int:
        return self._loaded()._value_dim

    @property
    def num_classes(self) -> int | None:
        return self.images.num_classes

    def grid(self, resolution: int | tuple[int, int]) -> torch.Tensor:
        """Pixel-centre coordinates (H·W, 2) of an (H, W) grid over the same square (an int: a square grid)."""
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
        return image_grid(check_int("resolution", height, 1), check_int("resolution", width, 1))

    @property
    def train_fields(self) -> dict[str, torch.Tensor]:
        """The whole training subset as one field batch."""
        train = self._loaded()._train
        return train.__getitems__(list(range(len(train))))

    @property
    def val_fields(self) -> dict[str, torch.Tensor]:
        """The whole held-out subset as one field batch."""
        val = self._loaded()._val
        return val.__getitems__(list(range(len(val))))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._loaded()._train, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          collate_fn=whole_field_batch, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._loaded()._val, batch_size=self.batch_size, shuffle=False, drop_last=False,
                          collate_fn=whole_field_batch, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)
