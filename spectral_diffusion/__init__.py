"""spectral-diffusion: frequency-space diffusion models with Lightning + Hydra."""

__version__ = "0.1.0"
