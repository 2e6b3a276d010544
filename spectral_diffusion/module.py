"""The LightningModule: trains any backbone under any forward process and samples from its EMA.

It owns the training/validation step (one ``_common_step``), the EMA of the weights, the NaN
guard and ``generate``; the maths lives in the process, the sampler and the loss it is given.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor, nn

from spectral_diffusion.ema import EMA
from spectral_diffusion.utils.random import sample_generators


# The EMA copy is in eval mode on purpose; Lightning warns about any such module at fit start.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the run stops and the last good checkpoint stays."""


class DiffusionModule(LightningModule):
    def __init__(
        self,
        model: nn.Module,
        process,
        loss,
        optimizer,
        sampler,
        image_shape: tuple[int, int, int],
        scheduler=None,
        ema_decay: float = 0.999,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.ema = EMA(model, ema_decay)
        self.process = process
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.sampler = sampler
        self.image_shape = tuple(int(v) for v in image_shape)
        self.config = config
        self.network_evaluations = 0

    # --- network ------------------------------------------------------------------------------
    def forward(self, x_t: Tensor, t: Tensor, use_ema: bool = False) -> Tensor:
        network = self.ema.module if use_ema else self.model
        return network(x_t, self.process.network_time(t))

    def denoise(self, x_t: Tensor, t: Tensor, use_ema: bool = True) -> Tensor:
        """x̂0 at (x_t, t): the network output converted from its prediction type by the process."""
        self.network_evaluations += 1
        output = self(x_t, t, use_ema=use_ema).float()
        return self.process.x0_eps(x_t, t, output, self.loss_fn.prediction)[0]

    # --- steps ----------------------------------------------------------------------------------
    def _common_step(self, x0: Tensor, generator: torch.Generator | None = None, use_ema: bool = False) -> Tensor:
        batch = x0.shape[0]
        t = self.process.training_times(batch, generator, device=x0.device)
        eps = self.process.noise(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        x_t = self.process.q_sample(x0, t, eps)
        output = self(x_t, t, use_ema=use_ema)
        target = self.process.target(x0, eps, t, self.loss_fn.prediction)
        return self.loss_fn(output, target).mean()

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        loss = self._common_step(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}: training stopped "
                "before the optimizer step, so the last saved checkpoint (checkpoints/last.ckpt) holds the "
                "last good weights. Lower optimizer.lr or enable trainer.gradient_clip_val."
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Update the EMA right after the weights change, inside the step: callbacks such as
        # ModelCheckpoint then save weights and EMA of the same step, and a resume misses nothing.
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.model)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        # The same t and ε for a given held-out batch at every validation, so curves are comparable.
        seed = 10_000 + batch_idx
        for name, use_ema in (("val/loss", True), ("val/loss_online", False)):
            loss = self._common_step(batch, torch.Generator().manual_seed(seed), use_ema=use_ema)
            self.log(name, loss, prog_bar=use_ema, sync_dist=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.config is not None:
            checkpoint["spectral_diffusion_config"] = self.config

    # --- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, num_samples: int, *, sampler=None, seed: int = 0, batch_size: int = 256,
                 use_ema: bool = True, progress=None) -> Tensor:
        """``num_samples`` images in [-1, 1]; sample i depends only on (seed, i), not on batching."""
        sampler = sampler or self.sampler
        was_training = self.training
        self.eval()
        denoise = functools.partial(self.denoise, use_ema=use_ema)
        batches = []
        if progress is not None:
            progress(0, num_samples)
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            generators = sample_generators(seed, start, count)
            x_T = self.process.prior((count, *self.image_shape), generators, device=self.device)
            batches.append(sampler(denoise, self.process, x_T, generator=generators).clamp(-1, 1).cpu())
            if progress is not None:
                progress(start + count, num_samples)
        self.train(was_training)
        return torch.cat(batches) if batches else torch.empty(0, *self.image_shape)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

