"""The LightningModule of neural-field latent diffusion: trains encoder, SIREN decoder and latent denoiser,
reconstructs fields from sparse observations and generates fields, unconditionally or guided by observations.

The diffusion maths is the project's own: the process (``noise``), the prediction type and the sampler run on
latent vectors (B, D) exactly as on images; guidance is ``diffusion.guidance.guided_denoiser``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor

from spectral_diffusion.diffusion.guidance import guidance_scale_of, guided_denoiser
from spectral_diffusion.diffusion.predictions import Prediction
from spectral_diffusion.diffusion.process import GaussianProcess
from spectral_diffusion.diffusion.processes import FlowProcess
from spectral_diffusion.ema import EMA
from spectral_diffusion.module import NonFiniteLossError
from spectral_diffusion.neural_field.model import NeuralFieldLatentModel
from spectral_diffusion.utils.random import sample_generators
from spectral_diffusion.utils.validation import ConfigError


def check_latent_process(process, prediction: Prediction) -> None:
    """Latents are plain vectors: only a process that is white in the identity basis applies (gaussian, flow
    without equalization); coloured or per-band processes are defined on image spectra."""
    white = type(process) is GaussianProcess or (type(process) is FlowProcess and process.gain is None)
    if not white or not process.basis.is_identity:
        raise ConfigError(f"noise={type(process).__name__} does not apply to neural-field latents: choose "
                          "noise=gaussian or noise=flow with basis identity (and gamma 0)")
    process.check_prediction(prediction)


class NeuralFieldModule(LightningModule):
    """Owns a ``NeuralFieldLatentModel``, its EMA copy, the latent ``process``, ``prediction`` and ``sampler``.

    Training step (see the model's ``training_mode``): z = E(observed points); reconstruction loss = MSE of
    D(z) against the field at all grid points, observed or not (sparse-to-dense, the seed's task), or at
    ``model.recon_points`` of them drawn afresh each step; diffusion loss = MSE of
    the network output against the prediction target on (z_t, t) with condition c = E(another random set of
    observations of the same field, as many as the mask holds), replaced by ∅ with probability
    ``condition_dropout``. z and c are two independent views of one field, so p(z | c) carries the
    uncertainty a new field's observations leave.
    """

    def __init__(self, model: NeuralFieldLatentModel, process, prediction: Prediction, optimizer, sampler,
                 field_shape: dict[str, Any], scheduler=None, ema_decay: float = 0.999,
                 config: dict | None = None) -> None:
        super().__init__()
        check_latent_process(process, prediction)
        self.model = model
        self.ema = EMA(model, ema_decay)
        self.process = process
        self.prediction = prediction
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.sampler = sampler
        self.field_shape = dict(field_shape)  # coord_dim, value_dim, grid_shape of the training data
        self.config = config
        self.first_step = 0
        self.last_sampling_info: dict = {}

    # --- pieces ---------------------------------------------------------------------------------
    def network(self, use_ema: bool) -> NeuralFieldLatentModel:
        return self.ema.module if use_ema else self.model

    def other_view(self, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A fresh random mask with as many observed points per example as ``mask``."""
        counts = mask.sum(dim=1)
        ranks = torch.rand(mask.shape, generator=generator).to(mask.device).argsort(dim=1).argsort(dim=1)
        return ranks < counts[:, None]

    def diffusion_loss(self, network: NeuralFieldLatentModel, z0: Tensor, condition: Tensor,
                       generator: torch.Generator | None = None) -> Tensor:
        """Mean squared error of the prediction on (z_t, t) drawn from the process (Ho et al. 2020, eq. 14, for
        any prediction type); rows of ``condition`` are replaced by ∅ with probability ``condition_dropout``."""
        batch = z0.shape[0]
        drop = torch.rand(batch, generator=generator).to(z0.device) < network.condition_dropout
        condition = torch.where(drop[:, None], network.null_conditions(batch), condition)
        t = self.process.training_times(batch, generator, device=z0.device)
        eps = self.process.noise(z0.shape, generator, device=z0.device, dtype=z0.dtype)
        z_t = self.process.q_sample(z0, t, eps)
        output = network.denoise_output(z_t, self.process.network_time(t), condition)
        return (output - self.prediction.target(z0, eps, t, self.process)).square().mean()

    def reconstruction_points(self, network: NeuralFieldLatentModel, coords: Tensor, values: Tensor,
                              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The (coords, values) the reconstruction loss compares: all grid points, or ``recon_points`` drawn
        uniformly per field (observed or not) when the model asks for fewer."""
        count = network.recon_points
        if count is None or count >= coords.shape[1]:
            return coords, values
        order = torch.rand(coords.shape[:2], generator=generator).to(coords.device).argsort(dim=1)[:, :count]
        pick = lambda tensor: torch.gather(tensor, 1, order[..., None].expand(-1, -1, tensor.shape[-1]))  # noqa: E731
        return pick(coords), pick(values)

    def stage(self, step: int) -> tuple[bool, bool]:
        """(train the autoencoder, train the diffusion) at global step ``step``."""
        before = step < self.model.autoencoder_steps
        if self.model.training_mode == "two_stage":
            return before, not before
        return True, not before

    def losses(self, batch: dict[str, Tensor], step: int, use_ema: bool = False,
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The training objective's terms on a field batch: ``recon`` and/or ``diffusion`` and ``loss``."""
        network = self.network(use_ema)
        coords, values, mask = batch["coords"], batch["values"], batch["mask"]
        autoencoder, diffusion = self.stage(step)
        terms: dict[str, Tensor] = {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and autoencoder):
            z = network.encode(coords, values, mask)
            if autoencoder:
                query, target = self.reconstruction_points(network, coords, values, generator)
                terms["recon"] = (network.decode(z, query) - target).square().mean()
        if diffusion:
            with torch.set_grad_enabled(torch.is_grad_enabled() and autoencoder):
                condition = network.encode(coords, values, self.other_view(mask, generator))
            terms["diffusion"] = self.diffusion_loss(network, z, condition, generator)
        weight = self.model.diffusion_weight if autoencoder else 1.0
        terms["loss"] = terms.get("recon", 0.0) + weight * terms.get("diffusion", 0.0)
        return terms

    # --- Lightning ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.losses(batch, self.global_step)
        if not torch.isfinite(terms["loss"]):
            raise NonFiniteLossError(f"non-finite training loss ({terms['loss'].item()}) at step {self.global_step}: "
                                     "the last saved checkpoint holds the last good weights; lower optimizer.lr")
        self.log_dict({f"train/{name}": value for name, value in terms.items()}, prog_bar=True)
        return terms["loss"]

    def on_train_start(self) -> None:
        self.first_step = self.global_step

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.model)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Held-out reconstruction MSE and the objective with the EMA weights, on fixed draws per batch."""
        generator = torch.Generator().manual_seed(10_000 + batch_idx)
        step = max(self.global_step, self.model.autoencoder_steps)  # judge the diffusion too, once it exists
        terms = self.losses(batch, step, use_ema=True, generator=generator)
        self.log("val/loss", terms["loss"], prog_bar=True)
        self.log("val/diffusion", terms["diffusion"])
        network = self.network(True)
        z = network.encode(batch["coords"], batch["values"], batch["mask"])
        self.log("val/recon_mse", (network.decode(z, batch["coords"]) - batch["values"]).square().mean(),
                 prog_bar=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([{"params": list(self.model.parameters())}])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.config is not None:
            checkpoint["spectral_diffusion_config"] = self.config

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # --- inference ------------------------------------------------------------------------------
    def grid(self, resolution=None) -> Tensor:
        from spectral_diffusion.neural_field.data import regular_grid

        shape = self.field_shape["grid_shape"] if resolution is None else resolution
        return regular_grid(shape if isinstance(shape, int) else tuple(shape), self.field_shape["coord_dim"],
                            centred=bool(self.field_shape.get("grid_centred", False)))

    @torch.no_grad()
    def encode(self, batch: dict[str, Tensor], use_ema: bool = True) -> Tensor:
        return self.network(use_ema).encode(batch["coords"].to(self.device), batch["values"].to(self.device),
                                            batch["mask"].to(self.device))

    @torch.no_grad()
    def decode(self, z: Tensor, coords: Tensor, use_ema: bool = True) -> Tensor:
        return self.network(use_ema).decode(z.to(self.device), coords.to(self.device))

    def conditional_denoiser(self, use_ema: bool = True):
        """``denoise(z_t, t, condition) -> ẑ0``: the denoiser's output converted by the prediction type."""
        network = self.network(use_ema)

        def denoise(z_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
            output = network.denoise_output(z_t, self.process.network_time(t), condition).float()
            return self.prediction.x0_eps(z_t, t, output, self.process)[0]

        return denoise

    def check_guidance(self, scale: float, conditional: bool) -> None:
        """Refuse sampling the model was not trained for, naming the key."""
        dropout = self.model.condition_dropout
        if scale != 1.0 and not 0.0 < dropout < 1.0:
            raise ConfigError(f"sampler.guidance_scale={scale} needs a model trained with condition dropout in (0, 1); "
                              f"this one has model.condition_dropout={dropout}, so leave the scale at 1.0")
        if not conditional and dropout == 0.0:
            raise ConfigError("unconditional sampling needs a model trained with model.condition_dropout > 0; this "
                              "one never saw the null condition")
        if conditional and scale > 0 and dropout == 1.0:
            raise ConfigError("conditional sampling needs a model trained with model.condition_dropout < 1; this one "
                              "only saw the null condition")

    @torch.no_grad()
    def sample_latents(self, count: int, *, condition: Tensor | None = None, sampler=None, seed: int = 0,
                       batch_size: int = 256, use_ema: bool = True) -> Tensor:
        """``count`` latents (count, D): unconditional (∅) when ``condition`` is None, else guided by the rows of
        ``condition`` (count, D) with the sampler's ``guidance_scale``. Latent i depends only on (seed, i)."""
        sampler = sampler or self.sampler
        scale = guidance_scale_of(sampler)
        self.check_guidance(scale, condition is not None)
        denoise = self.conditional_denoiser(use_ema)
        network = self.network(use_ema)
        latents, reports = [], []
        for start in range(0, count, batch_size):
            rows = min(batch_size, count - start)
            generators = sample_generators(seed, start, rows)
            z_T = self.process.prior((rows, self.model.latent_dim), generators, device=self.device)
            null = network.null_conditions(rows)
            if condition is None:
                denoise_fn = lambda z_t, t, null=null: denoise(z_t, t, null)  # noqa: E731
            else:
                denoise_fn = guided_denoiser(denoise, condition[start:start + rows].to(self.device), null, scale)
            reports.append({})
            latents.append(sampler(denoise_fn, self.process, z_T, generator=generators, info=reports[-1]))
        self.last_sampling_info = {"nfe": sum(r.get("nfe", 0) for r in reports) / max(len(reports), 1)}
        return torch.cat(latents) if latents else torch.empty(0, self.model.latent_dim)

    @torch.no_grad()
    def generate(self, count: int, *, resolution=None, condition: dict[str, Tensor] | None = None, sampler=None,
                 seed: int = 0, batch_size: int = 256, use_ema: bool = True) -> tuple[Tensor, Tensor]:
        """(coords (P, d), values (count, P, c)) of ``count`` generated fields decoded on the regular grid of
        ``resolution`` (default the data's). With a field batch ``condition`` its observed points condition the
        samples (row i of the output follows row i of the batch, which must hold ``count`` rows)."""
        was_training = self.training
        self.eval()
        latent_condition = None if condition is None else self.encode(condition, use_ema)
        if latent_condition is not None and len(latent_condition) != count:
            raise ValueError(f"{len(latent_condition)} conditioning fields for {count} samples")
        z = self.sample_latents(count, condition=latent_condition, sampler=sampler, seed=seed,
                                batch_size=batch_size, use_ema=use_ema)
        coords = self.grid(resolution)
        values = torch.cat([self.decode(part, coords, use_ema).cpu() for part in z.split(batch_size)]) if count \
            else torch.empty(0, len(coords), self.field_shape["value_dim"])
        self.train(was_training)
        return coords, values

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Tensor], resolution=None, use_ema: bool = True,
                    batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """(coords, values (B, P, c)) decoded from each field's observed points, on the grid of ``resolution``."""
        was_training = self.training
        self.eval()
        coords = self.grid(resolution)
        parts = []
        for start in range(0, len(batch["values"]), batch_size):
            rows = {key: value[start:start + batch_size] for key, value in batch.items()}
            parts.append(self.decode(self.encode(rows, use_ema), coords, use_ema).cpu())
        self.train(was_training)
        return coords, torch.cat(parts)

