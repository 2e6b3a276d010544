"""The in-memory image set every data source returns, and the pixel conversions sources share.

Images are float32 (N, C, H, W) in [-1, 1] with C in {1, 3}; labels are int64 (N,) or absent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spectral_diffusion.utils.validation import check_choice

SUPPORTED_CHANNELS = (1, 3)

# ITU-R BT.601 luma, the weights PIL's convert("L") uses, so folders and arrays agree.
LUMA_WEIGHTS_BT601 = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ImageSet:
    """A whole dataset held in memory, checked against the project's image conventions."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    num_classes: int | None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        images = self.images
        if images.ndim != 4 or images.dtype != torch.float32:
            raise ValueError(f"images must be float32 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] not in SUPPORTED_CHANNELS:
            raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
        if images.numel() and not (images.min() >= -1.0 and images.max() <= 1.0):
            raise ValueError(f"images of {self.name!r} must lie in [-1, 1] (NaN fails too)")
        if (self.labels is None) != (self.num_classes is None):
            raise ValueError("labels and num_classes must be given together")
        if self.labels is not None:
            labels = self.labels
            if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
                raise ValueError(
                    f"labels must be int64 of shape ({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
                )
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"labels must lie in [0, {self.num_classes})")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def check_channels(key: str, value: int) -> int:
    return check_choice(key, value, SUPPORTED_CHANNELS)


def scale_to_unit_range(pixels: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map values in [low, high] linearly onto [-1, 1] as float32 (N, C, H, W)."""
    half_range = (high - low) / 2
    images = pixels.to(torch.float32)
    if low != 0:
        images = images - low
    # x / half_range - 1 keeps 8-bit data bit-exact with the usual x / 127.5 - 1.
    return (images / half_range - 1).clamp_(-1.0, 1.0)


def to_grey(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA_WEIGHTS_BT601, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def resize_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize (N, C, H, W) to image_size x image_size with an antialiased bilinear filter.

    The antialiased triangle filter has non-negative weights that sum to one, so the output stays
    in [-1, 1]; the clamp only removes float rounding.
    """
    if images.shape[-2:] == (image_size, image_size):
        return images
    resized = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp_(-1.0, 1.0)


def fit_images(images: torch.Tensor, *, image_size: int, channels: int) -> torch.Tensor:
    """Convert [-1, 1] images to the requested channel count and square size."""
    if images.shape[1] == 3 and channels == 1:
        images = to_grey(images)
    images = resize_images(images, image_size)
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    return images.contiguous()
