"""Data: sources that load whole image sets into memory, and the LightningDataModule that serves them.

All images are float32 (N, C, H, W) in [-1, 1]; see `sources` for what each source reads.
"""

from spectral_diffusion.data.datamodule import DiffusionDataModule, InMemoryImages
from spectral_diffusion.data.image_set import ImageSet
from spectral_diffusion.data.sources import (
    CIFAR10,
    MNIST,
    MNISTM,
    Digits,
    Faces,
    ImageFolder,
    ImageSource,
    RandomFields,
    Textures,
)

__all__ = [
    "CIFAR10",
    "MNIST",
    "MNISTM",
    "DiffusionDataModule",
    "Digits",
    "Faces",
    "ImageFolder",
    "ImageSet",
    "ImageSource",
    "InMemoryImages",
    "RandomFields",
    "Textures",
]
