"""The LightningModule of a distillation run: a student ``DiffusionModule`` trained by a ``DistillationMethod``.

The student is an ordinary ``DiffusionModule`` built by ``pipeline.build`` from the student config, so sampling,
EMA, the per-timestep loss and the exported checkpoint are those of any ``sd-train`` model; this module only
replaces its training objective by the method's, keeps the round counter and the method's state in the
checkpoint, and writes the student of every finished round as a plain ``sd-train``-style checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor

from spectral_diffusion.distill.base import DistillationMethod
from spectral_diffusion.module import DiffusionModule, NonFiniteLossError

STATE_KEY = "distillation_state"


class DistillationModule(LightningModule):
    """Trains ``student`` with ``method``; ``export(round_index)`` (set by the run) writes a round's student."""

    def __init__(self, student: DiffusionModule, method: DistillationMethod,
                 export: Callable[[DiffusionModule, int], Any] | None = None) -> None:
        super().__init__()
        self.student = student
        self.method = method
        self.export = export
        self.register_buffer("round_index", torch.tensor(-1))  # the round the saved state belongs to
        self._round_ready = False
        self.first_step = 0  # the step training (re)started from, set when fit starts

    # --- the student's interface, for callbacks (sample grids, spectral evaluation) and evaluation ----------
    @property
    def process(self):
        return self.student.process

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.student.image_shape

    def generate(self, *args, **kwargs) -> Tensor:
        return self.student.generate(*args, **kwargs)

    def per_sample_loss(self, *args, **kwargs) -> Tensor:
        return self.student.per_sample_loss(*args, **kwargs)

    # --- rounds -------------------------------------------------------------------------------------------
    def current_round(self) -> int:
        """Round r of the step about to run: the budget trainer.max_steps split into ``method.rounds`` parts."""
        max_steps = max(1, int(self.trainer.max_steps))
        return min(self.method.rounds - 1, self.global_step * self.method.rounds // max_steps)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        round_index = self.current_round()
        if round_index != int(self.round_index):
            if int(self.round_index) >= 0 and self.export is not None:
                self.export(self.student, int(self.round_index))
            self.method.start_round(self.student, round_index, fresh=True)
            self.round_index.fill_(round_index)
        elif not self._round_ready:  # resumed inside a round
            self.method.start_round(self.student, round_index, fresh=False)
        self._round_ready = True

    def on_train_end(self) -> None:
        if self.export is not None and int(self.round_index) >= 0:
            self.export(self.student, int(self.round_index))

    # --- steps ----------------------------------------------------------------------------------------------
    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        loss = self.method.loss(self.student, batch, self.global_step).mean()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite distillation loss ({loss.item()}) at step {self.global_step}: training stopped before the "
                "optimizer step, so checkpoints/last.ckpt holds the last good weights. Lower optimizer.lr or enable "
                "trainer.gradient_clip_val.")
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/round", float(self.round_index))
        return loss

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        """The student's denoising loss on held-out images at fixed (t, ε) per batch, EMA and online weights:
        the same objective ``sd-train`` logs as val/loss, in the student's prediction space."""
        process = self.student.process
        for name, use_ema in (("val/loss", True), ("val/loss_online", False)):
            generator = torch.Generator().manual_seed(10_000 + batch_idx)
            t = process.training_times(len(batch), generator, device=batch.device)
            eps = process.noise(batch.shape, generator, device=batch.device, dtype=batch.dtype)
            loss = self.student.per_sample_loss(batch, t=t, eps=eps, use_ema=use_ema).mean()
            self.log(name, loss, prog_bar=use_ema)

    def configure_optimizers(self):
        return self.student.configure_optimizers()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.student.ema.update(self.student.model)
        self.method.after_optimizer_step(self.student)

    def on_train_start(self) -> None:
        self.first_step = self.global_step

    # --- checkpoint -----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STATE_KEY] = self.method.extra_state()
        if self.student.config is not None:
            checkpoint["distillation_student_config"] = self.student.config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.method.load_extra_state(checkpoint.get(STATE_KEY, {}))
        self._round_ready = False
