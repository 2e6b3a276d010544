"""Lightning callbacks and plugins: sample grids during training and crash-safe checkpoint files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from spectral_diffusion.utils.images import image_grid
from spectral_diffusion.utils.validation import check_positive


class SampleGrid(Callback):
    """Every ``every_n_steps`` training steps, sample a fixed-noise grid from the EMA weights into TensorBoard.

    The same seeds every time, so successive grids show the same samples improving.
    """

    def __init__(self, every_n_steps: int = 1000, num_samples: int = 64, seed: int = 0) -> None:
        self.every_n_steps = int(check_positive("callbacks.sample_grid.every_n_steps", every_n_steps))
        self.num_samples = int(check_positive("callbacks.sample_grid.num_samples", num_samples))
        self.seed = int(seed)

    @rank_zero_only
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps != 0:
            return
        images = pl_module.generate(self.num_samples, seed=self.seed)
        log_grid(trainer, "samples/during_training", images, step)


def log_grid(trainer: Trainer, tag: str, images, step: int) -> None:
    """Add an image grid to every TensorBoard logger of ``trainer``."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            experiment.add_image(tag, image_grid(images), step)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place.

    A process killed mid-save (SIGKILL, OOM) therefore leaves the previous ``last.ckpt`` intact
    instead of a truncated file, which is what makes ``ckpt_path=.../last.ckpt`` resume safe.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        fs = get_filesystem(path)
        fs.makedirs(str(path.parent), exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        super().save_checkpoint(checkpoint, temporary, storage_options)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
