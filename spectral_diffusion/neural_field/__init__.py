"""Neural-field latent diffusion (seed 002): field data, sparse-observation encoders, a SIREN decoder, diffusion
on the latents with the project's processes and samplers, classifier-free guidance, metrics and plots."""

from spectral_diffusion.neural_field.data import (
    FieldDataModule,
    FieldSplits,
    Signals1D,
    check_observed_fraction,
    field_batch,
    random_masks,
    regular_grid,
)
from spectral_diffusion.neural_field.model import NeuralFieldLatentModel, SirenDecoder
from spectral_diffusion.neural_field.module import NeuralFieldModule

__all__ = [
    "NeuralFieldLatentModel",
    "NeuralFieldModule",
    "SirenDecoder",
    "FieldDataModule",
    "FieldSplits",
    "Signals1D",
    "check_observed_fraction",
    "field_batch",
    "random_masks",
    "regular_grid",
]
