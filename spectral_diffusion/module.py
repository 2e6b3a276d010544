"""The LightningModule: trains any backbone under any forward process and samples from its EMA.

It owns the training/validation step (one ``_common_step``), the EMA of the weights, the NaN
guard, the prediction type, self-conditioning, class conditioning with classifier-free guidance and
``generate``; the maths lives in the process, the prediction object, the sampler and the loss.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor, nn

from spectral_diffusion.diffusion.guidance import guidance_scale_of, guided_denoiser
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
    self-conditioned training step (Chen et al. 2022), and > 0 means the model sees twice the image channels.

    A class-conditional backbone (one built with ``num_classes``: it has a ``class_embedding``) trains on
    (images, labels) batches, each label replaced by the null class with probability ``model.condition_dropout``
    once per training step, and samples with classifier-free guidance (``generate``). Wherever no labels are
    given to the network (``denoise``, ``per_sample_loss`` without them) it is evaluated at the null class,
    i.e. as its unconditional model."""

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
    @property
    def class_embedding(self):
        """The backbone's ``ClassEmbedding`` (None: an unconditional model); not a submodule of this module, so
        the state dict is the backbone's."""
        return getattr(self.model, "class_embedding", None)

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional model (label ``num_classes`` is the null class), None if unconditional."""
        return None if self.class_embedding is None else self.class_embedding.num_classes

    def _network_labels(self, x_t: Tensor, class_labels: Tensor | None) -> Tensor | None:
        """The labels the backbone is called with: None for an unconditional model, the null class when a
        conditional one is given none."""
        if self.class_embedding is None:
            if class_labels is not None:
                raise ValueError("class labels given to an unconditional model (trained with data.conditional=false)")
            return None
        if class_labels is None:
            return torch.full((x_t.shape[0],), self.class_embedding.null_class, dtype=torch.long, device=x_t.device)
        return class_labels.to(x_t.device)

    def forward(self, x_t: Tensor, t: Tensor, use_ema: bool = False, x0_condition: Tensor | None = None,
                class_labels: Tensor | None = None) -> Tensor:
        """The network's prediction at (x_t, t). With self-conditioning the backbone (built with twice the
        image channels) also sees an earlier x0 estimate, zeros when there is none (Chen et al. 2022); a
        class-conditional backbone sees ``class_labels`` (null class when None)."""
        network = self.ema.module if use_ema else self.model
        class_labels = self._network_labels(x_t, class_labels)
        if self.self_conditioning > 0:
            x0_condition = torch.zeros_like(x_t) if x0_condition is None else x0_condition.to(x_t.dtype)
            x_t = torch.cat([x_t, x0_condition], dim=1)
        if class_labels is None:
            return network(x_t, self.process.network_time(t))
        return network(x_t, self.process.network_time(t), class_labels)

    def denoise(self, x_t: Tensor, t: Tensor, use_ema: bool = True, x0_condition: Tensor | None = None,
                class_labels: Tensor | None = None) -> Tensor:
        """x̂0 at (x_t, t): the network output converted by its prediction type through the process."""
        self.network_evaluations += 1
        output = self(x_t, t, use_ema=use_ema, x0_condition=x0_condition, class_labels=class_labels).float()
        return self.prediction.x0_eps(x_t, t, output, self.process)[0]

    def self_conditioned_denoiser(self, use_ema: bool = True):
        """``denoise_fn(x_t, t, class_labels=None)`` for one sampling trajectory that feeds each call the previous
        call's x̂0 (Chen et al. 2022, Analog Bits, Alg. 2); a plain denoiser when self-conditioning is off.

        Under guidance the conditional and the null branch run as one doubled batch, so each branch is fed its
        own previous x̂0: at scales 0 and 1 this is exactly self-conditioned sampling of that one branch."""
        if self.self_conditioning == 0:
            return lambda x_t, t, class_labels=None: self.denoise(x_t, t, use_ema=use_ema, class_labels=class_labels)
        previous: Tensor | None = None

        def denoise(x_t: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
            nonlocal previous
            x0 = self.denoise(x_t, t, use_ema=use_ema, x0_condition=previous, class_labels=class_labels)
            previous = x0.clamp(-1.0, 1.0)
            return x0

        return denoise

    def _self_condition(self, x_t: Tensor, t: Tensor, use_ema: bool, generator: torch.Generator | None,
                        class_labels: Tensor | None = None) -> Tensor | None:
        """The x0 estimate of a first, gradient-free pass, or None. Training draws it with probability
        ``self_conditioning`` per batch (Chen et al. 2022, Alg. 1); evaluation always uses it, as
        sampling does after its first step."""
        if self.self_conditioning == 0:
            return None
        if self.training and torch.rand((), generator=generator).item() >= self.self_conditioning:
            return None
        with torch.no_grad():
            first = self(x_t, t, use_ema=use_ema, class_labels=class_labels).float()
            # Clamped to the data range: an x0 from ε at high noise divides by a tiny α.
            return self.prediction.x0_eps(x_t, t, first, self.process)[0].clamp(-1.0, 1.0)

    # --- steps ----------------------------------------------------------------------------------
    def _common_step(self, x0: Tensor, generator: torch.Generator | None = None, use_ema: bool = False, *,
                     t: Tensor | None = None, eps: Tensor | None = None, reduce: bool = True,
                     class_labels: Tensor | None = None) -> Tensor:
        """The training objective on a clean batch: t and ε drawn (or given), mean loss (or per sample).

        ``class_labels`` (a conditional model) are dropped to the null class once here in training, so the
        self-conditioning pass and the main pass see the same labels."""
        batch = x0.shape[0]
        if class_labels is not None and self.class_embedding is not None and self.training:
            class_labels = self.class_embedding.drop(class_labels)
        if t is None:
            t = self.process.training_times(batch, generator, device=x0.device)
        if eps is None:
            eps = self.process.noise(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        x_t = self.process.q_sample(x0, t, eps)
        x0_condition = self._self_condition(x_t, t, use_ema, generator, class_labels)
        output = self(x_t, t, use_ema=use_ema, x0_condition=x0_condition, class_labels=class_labels)
        target = self.prediction.target(x0, eps, t, self.process)
        context = LossContext(x0=x0, x_t=x_t, t=t, process=self.process, prediction=self.prediction)
        losses = self.loss_fn(output, target, context)  # per sample (B,)
        return losses.mean() if reduce else losses

    def per_sample_loss(self, x0: Tensor, *, t: Tensor, eps: Tensor, use_ema: bool = True,
                        class_labels: Tensor | None = None) -> Tensor:
        """The training objective per sample (B,) at given times ``t`` and noise ``eps``: what evaluation
        reads to compare checkpoints on fixed (t, ε)."""
        return self._common_step(x0, use_ema=use_ema, t=t, eps=eps, reduce=False, class_labels=class_labels)

    @staticmethod
    def _split_batch(batch: Tensor | tuple[Tensor, Tensor] | list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """(images, labels) of a batch: a plain image tensor, or the pair ``data.conditional=true`` serves."""
        if isinstance(batch, (tuple, list)):
            images, labels = batch
            return images, labels
        return batch, None

    def training_step(self, batch: Tensor | tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = self._split_batch(batch)
        loss = self._common_step(images, class_labels=labels)
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

    def validation_step(self, batch: Tensor | tuple[Tensor, Tensor], batch_idx: int) -> None:
        # The same t and ε for a given held-out batch at every validation, so curves are comparable.
        seed = 10_000 + batch_idx
        images, labels = self._split_batch(batch)
        for name, use_ema in (("val/loss", True), ("val/loss_online", False)):
            loss = self._common_step(images, torch.Generator().manual_seed(seed), use_ema=use_ema, class_labels=labels)
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
    def sampling_labels(self, num_samples: int, class_labels=None, *, guidance_scale: float = 1.0) -> Tensor | None:
        """The (num_samples,) labels ``generate`` samples with, checked before any sampling.

        Unconditional model: None (``class_labels`` and a guidance scale != 1 are refused). Conditional model:
        ``class_labels`` as one int or one per sample, in [0, num_classes] (num_classes: the null class, i.e.
        unconditional samples); None cycles through the classes (sample i gets class i mod num_classes), so a
        run's samples are class-balanced like the held-out set FID compares them with. A guidance scale != 1
        needs a model trained with ``model.condition_dropout`` > 0 (else its null class was never trained).
        """
        self.check_guidance(guidance_scale)
        embedding = self.class_embedding
        if embedding is None:
            if class_labels is not None:
                raise ConfigError(f"class_label={_describe(class_labels)} needs a class-conditional model, but this one "
                                  "was trained with data.conditional=false; leave class_label=null")
            return None
        if class_labels is None:
            return torch.arange(num_samples) % embedding.num_classes
        try:
            labels = torch.as_tensor(class_labels)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"class_label={_describe(class_labels)} is invalid; give an integer class index") from None
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim > 1:
            raise ConfigError(f"class_label={_describe(class_labels)} is invalid; give an integer class index")
        labels = labels.long().expand(num_samples) if labels.ndim == 0 else labels.long()
        if labels.shape != (num_samples,):
            raise ConfigError(f"class_label holds {labels.numel()} labels for {num_samples} samples")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > embedding.null_class):
            bad = labels[(labels < 0) | (labels > embedding.null_class)][0].item()
            raise ConfigError(f"class_label={bad} is outside the data's classes 0..{embedding.num_classes - 1}")
        return labels

    def check_guidance(self, guidance_scale: float) -> None:
        """Refuse ``sampler.guidance_scale`` != 1 for a model that cannot be guided: an unconditional one, or a
        conditional one trained with ``model.condition_dropout=0`` (its null class was never trained)."""
        if guidance_scale == 1.0:
            return
        if self.class_embedding is None:
            raise ConfigError(f"sampler.guidance_scale={guidance_scale} needs a conditional model trained "
                              "with condition dropout (data.conditional=true); this model is unconditional, so "
                              "leave it at 1.0")
        if self.class_embedding.condition_dropout == 0:
            raise ConfigError(f"sampler.guidance_scale={guidance_scale} needs a model trained with condition "
                              "dropout, but this one had model.condition_dropout=0, so its null class was never "
                              "trained; leave sampler.guidance_scale=1.0 (plain conditional sampling)")

    @torch.no_grad()
    def generate(self, num_samples: int, *, sampler=None, seed: int = 0, batch_size: int = 256,
                 use_ema: bool = True, progress=None, class_labels=None) -> Tensor:
        """``num_samples`` images in [-1, 1]; sample i depends only on (seed, i), not on batching.

        A class-conditional model samples with ``class_labels`` (see ``sampling_labels``: one int, one per
        sample, or None for classes cycling 0, 1, ..., num_classes - 1, 0, ...) under classifier-free guidance
        with the sampler's ``guidance_scale`` (``diffusion.guidance.guided_denoiser``, the same wrapper for every
        sampler). Each batch runs the sampler once per class present, with that class broadcast to every row,
        so a sampler that evaluates subsets of its rows (``deq``) is guided too; per-sample generators keep
        sample i independent of this grouping. ``last_sampling_info["class_labels"]`` is the list used.

        Afterwards ``last_sampling_info`` holds what the sampler reported per batch (``"<key>_per_batch"``
        lists, one entry per sampler call) and summaries: ``"nfe"`` (mean network evaluations per sample),
        ``"batches"`` and, from ``deq``, ``"iterations"`` (max) and ``"residual"`` (max).
        """
        sampler = sampler or self.sampler
        scale = guidance_scale_of(sampler)
        labels = self.sampling_labels(num_samples, class_labels, guidance_scale=scale)
        was_training = self.training
        self.eval()
        batches, reports = [], []
        if progress is not None:
            progress(0, num_samples)
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            generators = sample_generators(seed, start, count)
            x_T = self.process.prior((count, *self.image_shape), generators, device=self.device)
            if labels is None:
                denoise = self.self_conditioned_denoiser(use_ema=use_ema)
                reports.append({})
                batch = sampler(denoise, self.process, x_T, generator=generators, info=reports[-1])
            else:
                batch = torch.empty_like(x_T)
                batch_labels = labels[start:start + count]
                for label in batch_labels.unique().tolist():
                    rows = (batch_labels == label).nonzero().squeeze(1)
                    condition = torch.tensor([label], device=self.device)
                    null = torch.tensor([self.class_embedding.null_class], device=self.device)
                    denoise = guided_denoiser(self.self_conditioned_denoiser(use_ema=use_ema), condition, null, scale)
                    reports.append({})
                    batch[rows.to(batch.device)] = sampler(denoise, self.process, x_T[rows.to(x_T.device)],
                                                           generator=[generators[i] for i in rows.tolist()],
                                                           info=reports[-1])
            batches.append(batch.clamp(-1, 1).cpu())
            if progress is not None:
                progress(start + count, num_samples)
        self.last_sampling_info = {"batches": len(reports)}
        for key in sorted({key for report in reports for key in report}):
            values = [report[key] for report in reports if key in report]
            self.last_sampling_info[f"{key}_per_batch"] = values
            self.last_sampling_info[key] = sum(values) / len(values) if key == "nfe" else max(values)
        if labels is not None:
            self.last_sampling_info["class_labels"] = labels.tolist()
        self.train(was_training)
        return torch.cat(batches) if batches else torch.empty(0, *self.image_shape)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _describe(class_labels) -> str:
    """A short text of a ``class_label`` value for error messages."""
    if isinstance(class_labels, Tensor) and class_labels.ndim > 0:
        return f"[{class_labels.numel()} labels]"
    return repr(class_labels.item() if isinstance(class_labels, Tensor) else class_labels)
