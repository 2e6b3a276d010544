"""Lightning callbacks and plugins: sample grids during training, and checkpoint files that are written
crash-safe and read back without running code (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

from spectral_diffusion.utils.images import image_grid
from spectral_diffusion.utils.validation import ConfigError, check_positive


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


class SpectralEvaluation(Callback):
    """Every ``every_n_steps`` training steps, the metric battery and the per-timestep held-out loss of the
    EMA model, as TensorBoard scalars (``battery/<metric>``) and figures; rank zero only.

    Cheap on purpose: ``num_samples`` fixed-seed samples drawn with ``sampler`` (a partial sampler, e.g. DDIM
    with few steps; None: the module's own), compared with at most ``max_val_images`` held-out images, no
    FID feature network; ``battery_options`` configure the battery (turn its costly parts off here).
    """

    def __init__(self, every_n_steps: int = 2000, num_samples: int = 200, sampler=None, seed: int = 0,
                 timestep_bins: int = 10, max_val_images: int = 500, batch_size: int = 256,
                 battery_options: dict | None = None) -> None:
        key = "callbacks.spectral_eval"
        self.every_n_steps = int(check_positive(f"{key}.every_n_steps", every_n_steps))
        self.num_samples = int(check_positive(f"{key}.num_samples", num_samples))
        self.max_val_images = int(check_positive(f"{key}.max_val_images", max_val_images))
        self.batch_size = int(check_positive(f"{key}.batch_size", batch_size))
        self.timestep_bins = int(check_positive(f"{key}.timestep_bins", timestep_bins, strict=False))
        self.sampler = sampler
        self.seed = int(seed)
        from spectral_diffusion.evaluation import battery_config

        self.battery_key = f"{key}.battery_options"
        self.battery_options = battery_config(battery_options, self.battery_key)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Options that depend on the process and the image size fail here, before the first step."""
        from spectral_diffusion.evaluation import battery_config

        if self.sampler is not None:
            from spectral_diffusion.diffusion.samplers import validate_sampler

            validate_sampler(self.sampler, pl_module.process)
        battery_config(self.battery_options, self.battery_key, pl_module.image_shape)

    @rank_zero_only
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps != 0:
            return
        self.log_evaluation(trainer, pl_module, trainer.datamodule.val_images[: self.max_val_images], step)

    def log_evaluation(self, trainer: Trainer, pl_module: LightningModule, real, step: int) -> dict[str, float]:
        """Sample, evaluate against ``real`` and log; returns the logged scalars."""
        from spectral_diffusion.evaluation import (
            validation_loss_by_time,
            validation_loss_figure,
        )
        from spectral_diffusion.metrics.battery import battery_figures, evaluate_battery

        fake = pl_module.generate(self.num_samples, sampler=self.sampler, seed=self.seed, batch_size=self.batch_size)
        result = evaluate_battery(real, fake, features=None, config=self.battery_options, device=str(pl_module.device))
        scalars = {f"battery/{name}": float(value) for name, value in result.metrics.items()}
        figures = dict(battery_figures(real, fake, result))
        if self.timestep_bins > 0:
            times, losses = validation_loss_by_time(pl_module, real, bins=self.timestep_bins, seed=self.seed,
                                                    batch_size=self.batch_size)
            scalars.update({f"val_loss_by_t/t={t:.2f}": float(v) for t, v in zip(times.tolist(), losses.tolist())})
            figures["val_loss_by_t"] = validation_loss_figure(times, losses)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        for name, figure in figures.items():
            log_figure(trainer, f"battery/{name}", figure, step)
        return scalars


def log_figure(trainer: Trainer, tag: str, figure, step: int) -> None:
    """Add a matplotlib figure to every TensorBoard logger of ``trainer``."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_figure"):
            experiment.add_figure(tag, figure, step, close=False)


def log_grid(trainer: Trainer, tag: str, images, step: int) -> None:
    """Add an image grid to every TensorBoard logger of ``trainer``."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            experiment.add_image(tag, image_grid(images), step)


def plain_data(value: Any) -> Any:
    """``value`` with every OmegaConf node inside (dicts, lists, tuples) turned into plain lists and dicts,
    e.g. the ``betas: [0.9, 0.99]`` a Hydra-built optimizer keeps in its param groups. Containers with no
    such node are returned as they are (a ``state_dict`` keeps its type and metadata)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        items = {key: plain_data(item) for key, item in value.items()}
        changed = any(items[key] is not item for key, item in value.items())
        return type(value)(items) if changed else value
    if type(value) in (list, tuple):
        items = type(value)(plain_data(item) for item in value)
        return items if any(new is not old for new, old in zip(items, value)) else value
    return value


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint read with ``torch.load(weights_only=True)``: tensors and plain Python data only, so a
    file from someone else cannot run code while it loads (PyTorch's "weights-only" unpickler).

    A file that needs any other object is refused with a ``ConfigError`` naming the file and the object;
    the unpickler stops before constructing it, so nothing in the file runs."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        needed = re.search(r"GLOBAL ([\w.]+)", str(error))  # the first object the file would construct
        what = f"the Python object {needed.group(1)}" if needed else "objects other than tensors and plain data"
        raise ConfigError(
            f"ckpt_path={str(path)!r} was refused: loading it would need {what}, but a checkpoint may only "
            "hold tensors and plain data (torch.load with weights_only=True), so nothing in it was run; "
            "use a checkpoint written by sd-train"
        ) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place, and reads it back safely.

    A process killed mid-save (SIGKILL, OOM) therefore leaves the previous ``last.ckpt`` intact
    instead of a truncated file, which is what makes ``ckpt_path=.../last.ckpt`` resume safe. What is
    written is plain data (``plain_data``), and resuming reads it with ``load_checkpoint``
    (``weights_only=True`` whatever Lightning asks for), so optimizer, scheduler, callback and loop states
    load without unpickling arbitrary objects.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        fs = get_filesystem(path)
        fs.makedirs(str(path.parent), exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        super().save_checkpoint(plain_data(checkpoint), temporary, storage_options)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def load_checkpoint(self, path, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint(path, map_location)
