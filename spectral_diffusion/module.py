"""The LightningModule: trains any backbone under any forward process and samples from its EMA.

It owns the training/validation step (one ``_common_step``), the EMA of the weights, the NaN
guard, the prediction type, self-conditioning and ``generate``; the maths lives in the process, the
prediction object, the sampler and the loss.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor, nn

from spectral_diffusion.diffusion.guidance import guidance_scale_of
from spectral_diffusion.diffusion.predictions import Prediction
from spectral_diffusion.ema import EMA
from spectral_diffusion.losses import DiffusionLoss, LossContext
from spectral_diffusion.utils.random import sample_generators
from spectral_diffusion.utils.validation import ConfigError, check_range


# The EMA copy is in eval mode on purpose; Lightning warns about any such module at fit start.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the run stops and the last good checkpoint stays."""


class DiffusionModule(LightningModule):
    """Trains ``model`` to output ``prediction`` (an ``EpsPrediction``, ``X0Prediction``, ``VPrediction`` or
    ``FlowPrediction``) under ``process`` with ``loss``; ``self_conditioning`` is the probability of a
    self-conditioned training step (Chen et al. 2022), and > 0 means the model sees twice the image channels."""

    def __init__(
        self,
        model: nn.Module,
        process,
        loss: DiffusionLoss,
        optimizer,
        sampler,
        image_shape: tuple[int, int, int],
        scheduler=None,
        ema_decay: float = 0.999,
        config: dict | None = None,
        *,
        prediction: Prediction,
        self_conditioning: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(loss, DiffusionLoss):
            raise ConfigError(f"loss={loss!r} is not a DiffusionLoss; choose a loss config (conf/loss) whose "
                              "_target_ is one of spectral_diffusion.losses")
        # the process refuses, naming `prediction`, anything but a prediction object and a type it cannot
        # convert (eps on the flow path)
        self.prediction = process.check_prediction(prediction)
        self.self_conditioning = float(check_range("self_conditioning", float(self_conditioning), 0.0, 1.0))
        self.model = model
        self.ema = EMA(model, ema_decay)
        self.process = process
        self.loss_fn = loss
        # Learned loss weights (Kendall log-variances) are trained, moved and checkpointed with the module.
        self.loss_weights = loss.learned_weights
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.sampler = sampler
        self.image_shape = tuple(int(v) for v in image_shape)
        self.config = config
        self.network_evaluations = 0
        self.last_sampling_info: dict = {}  # what the sampler reported in the last ``generate`` (nfe, ...)
        self.first_step = 0  # the step training (re)started from: 0, or a resumed checkpoint's step

    # --- network ------------------------------------------------------------------------------
    def forward(self, x_t: Tensor, t: Tensor, use_ema: bool = False, x0_condition: Tensor | None = None) -> Tensor:
        """The network's prediction at (x_t, t). With self-conditioning the backbone (built with twice the
        image channels) also sees an earlier x0 estimate, zeros when there is none (Chen et al. 2022)."""
        network = self.ema.module if use_ema else self.model
        if self.self_conditioning > 0:
            x0_condition = torch.zeros_like(x_t) if x0_condition is None else x0_condition.to(x_t.dtype)
            x_t = torch.cat([x_t, x0_condition], dim=1)
        return network(x_t, self.process.network_time(t))

    def denoise(self, x_t: Tensor, t: Tensor, use_ema: bool = True, x0_condition: Tensor | None = None) -> Tensor:
        """x̂0 at (x_t, t): the network output converted by its prediction type through the process."""
        self.network_evaluations += 1
        output = self(x_t, t, use_ema=use_ema, x0_condition=x0_condition).float()
        return self.prediction.x0_eps(x_t, t, output, self.process)[0]

    def self_conditioned_denoiser(self, use_ema: bool = True):
        """``denoise_fn(x_t, t)`` for one sampling trajectory that feeds each call the previous call's x̂0
        (Chen et al. 2022, Analog Bits, Alg. 2); a plain denoiser when self-conditioning is off."""
        if self.self_conditioning == 0:
            return functools.partial(self.denoise, use_ema=use_ema)
        previous: Tensor | None = None

        def denoise(x_t: Tensor, t: Tensor) -> Tensor:
            nonlocal previous
            x0 = self.denoise(x_t, t, use_ema=use_ema, x0_condition=previous)
            previous = x0.clamp(-1.0, 1.0)
            return x0

        return denoise

    def _self_condition(self, x_t: Tensor, t: Tensor, use_ema: bool, generator: torch.Generator | None) -> Tensor | None:
        """The x0 estimate of a first, gradient-free pass, or None. Training draws it with probability
        ``self_conditioning`` per batch (Chen et al. 2022, Alg. 1); evaluation always uses it, as
        sampling does after its first step."""
        if self.self_conditioning == 0:
            return None
        if self.training and torch.rand((), generator=generator).item() >= self.self_conditioning:
            return None
        with torch.no_grad():
            first = self(x_t, t, use_ema=use_ema).float()
            # Clamped to the data range: an x0 from ε at high noise divides by a tiny α.
            return self.prediction.x0_eps(x_t, t, first, self.process)[0].clamp(-1.0, 1.0)

    # --- steps ----------------------------------------------------------------------------------
    def _common_step(self, x0: Tensor, generator: torch.Generator | None = None, use_ema: bool = False, *,
                     t: Tensor | None = None, eps: Tensor | None = None, reduce: bool = True) -> Tensor:
        """The training objective on a clean batch: t and ε drawn (or given), mean loss (or per sample)."""
        batch = x0.shape[0]
        if t is None:
            t = self.process.training_times(batch, generator, device=x0.device)
        if eps is None:
            eps = self.process.noise(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        x_t = self.process.q_sample(x0, t, eps)
        x0_condition = self._self_condition(x_t, t, use_ema, generator)
        output = self(x_t, t, use_ema=use_ema, x0_condition=x0_condition)
        target = self.prediction.target(x0, eps, t, self.process)
        context = LossContext(x0=x0, x_t=x_t, t=t, process=self.process, prediction=self.prediction)
        losses = self.loss_fn(output, target, context)  # per sample (B,)
        return losses.mean() if reduce else losses

    def per_sample_loss(self, x0: Tensor, *, t: Tensor, eps: Tensor, use_ema: bool = True) -> Tensor:
        """The training objective per sample (B,) at given times ``t`` and noise ``eps``: what evaluation
        reads to compare checkpoints on fixed (t, ε)."""
        return self._common_step(x0, use_ema=use_ema, t=t, eps=eps, reduce=False)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        loss = self._common_step(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}: training stopped "
                "before the optimizer step, so the last saved checkpoint (checkpoints/last.ckpt) holds the "
                "last good weights. Lower optimizer.lr or enable trainer.gradient_clip_val."
            )
        self.log("train/loss", loss, prog_bar=True)
        if len(self.loss_fn.last_values) > 1:
            # per-term values and, with Kendall weighting, the learned log-variances and weights
            self.log_dict({f"train/loss_{name}": value for name, value in self.loss_fn.last_values.items()})
        return loss

    def on_train_start(self) -> None:
        self.first_step = self.global_step  # a resumed checkpoint is restored by now

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
        groups = [{"params": list(self.model.parameters())}]
        if self.loss_weights is not None:
            groups.append({"params": list(self.loss_weights.parameters()), "weight_decay": 0.0})
        optimizer = self.optimizer_factory(groups)
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
        """``num_samples`` images in [-1, 1]; sample i depends only on (seed, i), not on batching.

        Afterwards ``last_sampling_info`` holds what the sampler reported per batch (``"<key>_per_batch"``
        lists) and summaries: ``"nfe"`` (mean network evaluations per sample), ``"batches"`` and, from
        ``deq``, ``"iterations"`` (max) and ``"residual"`` (max).
        """
        sampler = sampler or self.sampler
        if guidance_scale_of(sampler) != 1.0:
            raise ConfigError(f"sampler.guidance_scale={guidance_scale_of(sampler)} needs a conditional model trained "
                              "with condition dropout; this model is unconditional, so leave it at 1.0")
        was_training = self.training
        self.eval()
        batches, reports = [], []
        if progress is not None:
            progress(0, num_samples)
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            generators = sample_generators(seed, start, count)
            x_T = self.process.prior((count, *self.image_shape), generators, device=self.device)
            denoise = self.self_conditioned_denoiser(use_ema=use_ema)
            reports.append({})
            batches.append(sampler(denoise, self.process, x_T, generator=generators, info=reports[-1])
                           .clamp(-1, 1).cpu())
            if progress is not None:
                progress(start + count, num_samples)
        self.last_sampling_info = {"batches": len(reports)}
        for key in sorted({key for report in reports for key in report}):
            values = [report[key] for report in reports if key in report]
            self.last_sampling_info[f"{key}_per_batch"] = values
            self.last_sampling_info[key] = sum(values) / len(values) if key == "nfe" else max(values)
        self.train(was_training)
        return torch.cat(batches) if batches else torch.empty(0, *self.image_shape)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

