"""Generated images to evaluate: loading a sample .npz or an image folder, and the checks that they fit the data
they are compared with (``sd-eval samples=...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spectral_diffusion.utils.validation import ConfigError

SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def check_one_source(samples: Any, ckpt_path: Any) -> None:
    """``sd-eval`` evaluates either existing samples or a checkpoint it samples from, never both."""
    if (samples is None) == (ckpt_path is None):
        raise ConfigError(
            "give exactly one of samples=<.npz or image folder> and ckpt_path=<checkpoint to sample from>; "
            f"got samples={samples!r}, ckpt_path={ckpt_path!r}"
        )


def check_samples_path(path: str | Path) -> Path:
    """``samples`` must name an existing .npz file or a folder; raises ``ConfigError`` otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".npz":
        return path
    state = "does not exist" if not path.exists() else "is neither a .npz file nor a folder of images"
    raise ConfigError(f"samples={str(path)!r} {state}; give a .npz written by sd-train/sd-sample or an image folder")


def load_samples(path: str | Path, channels: int) -> Tensor:
    """Float images (N, C, H, W) in [-1, 1] from a .npz (key ``images``) or every image file in a folder.

    Folder images are read at their own size (never resized, so a wrong size is reported, not hidden),
    as grey when ``channels`` is 1, else RGB; all must share one size.
    """
    path = check_samples_path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            if "images" not in data:
                raise ConfigError(f"samples={str(path)!r} has no 'images' array (keys: {sorted(data.files)})")
            images = torch.from_numpy(np.asarray(data["images"], dtype=np.float32))
        if images.ndim != 4:
            raise ConfigError(f"samples={str(path)!r}: 'images' must be (N, C, H, W), got {tuple(images.shape)}")
        if images.numel() and (images.min() < -1 - 1e-4 or images.max() > 1 + 1e-4):
            raise ConfigError(f"samples={str(path)!r}: images must lie in [-1, 1], got "
                              f"[{images.min().item():.3g}, {images.max().item():.3g}]")
        return images.clamp(-1, 1)
    from PIL import Image

    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)
    if not files:
        raise ConfigError(f"samples={str(path)!r} holds no image files ({', '.join(SAMPLE_SUFFIXES)})")
    arrays = []
    for file in files:
        with Image.open(file) as image:
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
        arrays.append(pixels.reshape(pixels.shape[0], pixels.shape[1], -1).transpose(2, 0, 1))
    sizes = sorted({a.shape for a in arrays})
    if len(sizes) > 1:
        raise ConfigError(f"samples={str(path)!r} mixes image sizes {sizes}; all samples must have one size")
    return torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0


def check_sample_shape(images: Tensor, image_shape: tuple[int, ...], key: str = "samples") -> None:
    """Generated images must have the (C, H, W) of the data they are compared with."""
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ConfigError(
            f"{key} are images of shape {tuple(images.shape[1:])} but data gives {tuple(image_shape)}; "
            "choose the data option (and data.source.image_size/channels) the samples were generated for"
        )
    if len(images) < 2:
        raise ConfigError(f"{key} holds {len(images)} image(s); FID/KID need at least 2")
