"""Thin Hydra entry points (``sd-train``, ``sd-sample``); the work lives in ``spectral_diffusion.pipeline``."""

import logging
from pathlib import Path

# conf/ sits at the repository root, beside the package (installed editable, see README).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def route_lightning_logs_through_hydra() -> None:
    """Lightning adds its own console handlers; Hydra's root handlers already print and write train.log,
    so drop Lightning's to avoid every message appearing twice."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
