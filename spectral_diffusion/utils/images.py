"""Turning sample tensors into files a person can look at: grids as PNG, arrays as NPZ."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid


def image_grid(images: Tensor, nrow: int | None = None, padding: int = 1) -> Tensor:
    """A (C, H, W) grid in [0, 1] from images in [-1, 1]; square-ish by default."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    return make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=padding, pad_value=1.0)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, upscale: int = 4) -> Path:
    """Write a PNG grid, each pixel repeated ``upscale`` times so small images stay legible."""
    from PIL import Image

    grid = image_grid(images, nrow)
    if upscale > 1:
        grid = grid.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = array[:, :, 0]
    path = Path(path)
    Image.fromarray(array).save(path)
    return path


def save_samples_npz(images: Tensor, path: str | Path, **metadata) -> Path:
    """Samples as float32 (N, C, H, W) in [-1, 1] under key ``images``, plus scalar metadata."""
    path = Path(path)
    np.savez_compressed(path, images=images.float().cpu().numpy(), **{k: np.asarray(v) for k, v in metadata.items()})
    return path


def load_samples_npz(path: str | Path) -> Tensor:
    with np.load(path) as data:
        return torch.from_numpy(data["images"])
