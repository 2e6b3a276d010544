"""One run, as plain functions the CLIs and tests call: build → fit → sample → evaluate → record.

``train(cfg)`` is ``sd-train`` and ``evaluate(cfg)`` is ``sd-eval`` without Hydra's command line; the evaluation
itself lives in ``spectral_diffusion.evaluation``. ``load_module(ckpt)`` rebuilds a trained
model from the resolved config stored inside its checkpoint (``sd-sample`` uses it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from spectral_diffusion.callbacks import AtomicCheckpointIO, load_checkpoint, log_figure, log_grid
from spectral_diffusion.diffusion.guidance import guidance_scale_of, instantiate_sampler
from spectral_diffusion.diffusion.samplers import deq, validate_sampler
from spectral_diffusion.evaluation import (
    EvaluationConfig,
    build_extractor,
    choose_features,
    check_one_source,
    check_sample_shape,
    check_samples_path,
    evaluate_images,
    load_samples,
    metric_shorthands,
    resolve_objective,
    timed_generate,
)
from spectral_diffusion.metrics.battery import MODEL_GROUPS
from spectral_diffusion.module import DiffusionModule
from spectral_diffusion.neural_field import pipeline as neural_field
from spectral_diffusion.utils.images import save_grid, save_samples_npz
from spectral_diffusion.utils.progress import progress_bar
from spectral_diffusion.utils.summary import append_row, git_commit
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_range

log = logging.getLogger(__name__)


def instantiate_checked(node, *args, **kwargs):
    """``hydra.utils.instantiate`` that re-raises a component's own ``ConfigError`` unwrapped,
    so the user reads "model.image_size=10 ..." rather than Hydra's instantiation traceback."""
    try:
        return instantiate(node, *args, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None:
            if isinstance(cause, ConfigError):
                raise cause from None
            cause = cause.__cause__
        raise


@dataclass
class Components:
    datamodule: Any
    module: DiffusionModule


def build(cfg: DictConfig | dict) -> Components:
    """Instantiate data, process, prediction, backbone, loss, optimizer and sampler, validating them all."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    if neural_field.uses_neural_field(cfg):
        return Components(*neural_field.build(cfg))
    datamodule = instantiate_checked(cfg.data)
    datamodule.setup()
    # Both read what they need from the datamodule, whose S_data is estimated once and cached: the basis's
    # image size check and, for equalized noise, w(f); the loss terms' image size checks and S_data weights.
    process = instantiate_checked(cfg.noise)
    process.prepare(datamodule)
    loss = instantiate_checked(cfg.loss)
    loss.prepare(datamodule)
    # validated here (and again by DiffusionModule) because it sizes the model and restricts the sampler
    self_conditioning = float(check_range("self_conditioning", cfg.get("self_conditioning", 0.0), 0.0, 1.0))
    model = instantiate_checked(cfg.model, **_self_conditioning_channels(cfg, self_conditioning,
                                                                        datamodule.image_shape),
                                **_class_conditioning(cfg, datamodule))
    sampler = instantiate_sampler(cfg.sampler, instantiate_checked)
    validate_sampler(sampler, process)
    if getattr(sampler, "func", sampler) is deq and self_conditioning > 0:
        raise ConfigError(f"sampler=deq solves every step at once, so it cannot feed each step the previous x̂0: "
                          f"set self_conditioning=0 (is {self_conditioning}) or choose another sampler (ddim, ddpm, "
                          "dpm_solver_pp, euler, heun)")
    module = DiffusionModule(
        model=model,
        process=process,
        loss=loss,
        optimizer=instantiate_checked(cfg.optimizer),
        scheduler=instantiate_checked(cfg.scheduler) if cfg.get("scheduler") else None,
        sampler=sampler,
        image_shape=datamodule.image_shape,
        ema_decay=cfg.ema.decay,
        config=OmegaConf.to_container(cfg, resolve=True),
        prediction=instantiate_checked(cfg.prediction) if cfg.get("prediction") else None,
        self_conditioning=self_conditioning,
    )
    module.check_guidance(guidance_scale_of(sampler))
    return Components(datamodule, module)


def _self_conditioning_channels(cfg: DictConfig, self_conditioning: float, image_shape) -> dict[str, int]:
    """With self-conditioning the backbone sees [x_t, x̂0]: twice the image channels in, the image's out."""
    if self_conditioning == 0:
        return {}
    channels = int(image_shape[0])
    return {"in_channels": 2 * channels, "out_channels": cfg.model.get("out_channels") or channels}


def _class_conditioning(cfg: DictConfig, datamodule) -> dict[str, int]:
    """With ``data.conditional=true`` the backbone gets a class embedding sized by the data's classes."""
    if not getattr(datamodule, "conditional", False):
        return {}
    if not getattr(get_class(cfg.model._target_), "supports_class_labels", False):
        raise ConfigError(f"data.conditional=true needs a class-conditional backbone, but model "
                          f"{cfg.model._target_} has no class embedding; use model=unet, unet_tiny, unet_alias_free, "
                          "unet_spectral or unet_hybrid, or data.conditional=false")
    return {"num_classes": int(datamodule.num_classes)}


def load_module(ckpt_path: str | Path, map_location: str = "cpu") -> DiffusionModule:
    """A trained module from a checkpoint written by ``sd-train`` (config stored inside it as plain data).

    The file is read with ``weights_only=True`` (``callbacks.load_checkpoint``): a checkpoint that would
    need any other object is refused with a ``ConfigError`` and nothing in it runs."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} does not exist")
    checkpoint = load_checkpoint(ckpt_path, map_location=map_location)
    config = checkpoint.get("spectral_diffusion_config")
    if config is None:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} was not written by sd-train (no stored config)")
    module = build(config).module
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return module


def start_run(cfg: DictConfig) -> tuple[Path, str | None]:
    """The run folder (created) and the checkpoint to resume from (checked to exist), with the global seed set."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist; pass the last.ckpt of the run to resume")
    return output_dir, ckpt_path


def training_metrics(trainer, module, datamodule, train_seconds: float, train_loss: float, validation, *,
                     num_parameters: int) -> dict[str, Any]:
    """The metrics.json entries of a ``fit_and_validate`` run: steps, wall seconds, training images/s over the
    steps this run trained (``module.first_step`` onwards), parameters, validation and last training loss."""
    steps_done = trainer.global_step - module.first_step
    return {
        "global_step": trainer.global_step,
        "train_seconds": train_seconds,
        "train_images_per_second": steps_done * datamodule.batch_size / train_seconds if train_seconds else math.nan,
        "num_parameters": num_parameters,
        "val_loss": float(validation[0]["val/loss"]) if validation else math.nan,
        "train_loss": train_loss,
    }


def fit_and_validate(cfg: DictConfig, module, datamodule, ckpt_path: str | None):
    """Build the Trainer of ``cfg`` (its callbacks, logger, atomic checkpoints), fit ``module`` (resuming from
    ``ckpt_path``) and validate once; returns (trainer, wall seconds, CPU seconds of fit, the last training loss
    (read before ``validate`` resets the callback metrics), the validation results)."""
    callbacks = [instantiate_checked(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    logger = instantiate_checked(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = instantiate_checked(cfg.trainer, callbacks=callbacks, logger=logger,
                                             plugins=[AtomicCheckpointIO()])
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    train_loss = float(trainer.callback_metrics.get("train/loss", math.nan))
    validation = trainer.validate(module, datamodule=datamodule, verbose=False)
    return trainer, train_seconds, train_cpu_seconds, train_loss, validation


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run ``sd-train``: returns the metrics dict (``optimized_metric`` under key ``"objective"``)."""
    if neural_field.uses_neural_field(cfg):
        return neural_field.train(cfg)
    output_dir, ckpt_path = start_run(cfg)

    components = build(cfg)
    datamodule, module = components.datamodule, components.module

    # Everything that can reject the config happens here, before the first training step.
    evaluation = EvaluationConfig.from_config(cfg.evaluation)
    evaluation.check_image_shape(datamodule.image_shape)
    features = choose_features(instantiate_checked(cfg.features), datamodule)
    objective_name, objective_note = objective(cfg, features, evaluation, evaluation.num_samples, training=True)
    extractor = build_extractor(features, datamodule)

    trainer, train_seconds, _, train_loss, validation = fit_and_validate(cfg, module, datamodule, ckpt_path)
    if not trainer.is_global_zero:
        return {}

    metrics: dict[str, Any] = {
        "warnings": [objective_note] if objective_note else [],
        **training_metrics(trainer, module, datamodule, train_seconds, train_loss, validation,
                           num_parameters=module.num_parameters()),
    }

    return sample_evaluate_record(cfg, trainer, module, datamodule, extractor, evaluation, output_dir, metrics,
                                  objective_name)


def sample_evaluate_record(cfg: DictConfig, trainer: L.Trainer, module, datamodule, extractor,
                           evaluation: EvaluationConfig, output_dir: Path, metrics: dict[str, Any],
                           objective_name: str | None) -> dict[str, Any]:
    """The end of a training run (``sd-train``, ``sd-distill``): sample from the EMA weights with the module's
    sampler (class-balanced labels for a conditional model), evaluate against the held-out images, log the
    scalars and figures, write samples, metrics.json, report.md and the summary row; returns the metrics."""
    samples, runtime = timed_generate(module, evaluation.num_samples, seed=evaluation.seed,
                                      batch_size=evaluation.batch_size, progress=progress_bar("sampling"))
    metrics.update(runtime)
    save_samples_npz(samples, output_dir / "samples.npz", seed=evaluation.seed)
    save_grid(samples[: evaluation.grid_size], output_dir / "samples.png")
    step = trainer.global_step
    log_grid(trainer, "samples/final", samples[: evaluation.grid_size], step)
    metrics = evaluate_images(samples, datamodule, extractor, evaluation, output_dir, run_config=cfg, module=module,
                              metrics=metrics, objective_name=objective_name, device=module.device,
                              log_figure=lambda name, figure: log_figure(trainer, f"eval/{name}", figure, step),
                              class_labels=requested_labels(module))

    for logger_ in trainer.loggers:
        logger_.log_metrics({f"eval/{k}": v for k, v in metrics.items() if _is_scalar(v)}, step=step)
        logger_.finalize("success")
    record(cfg, output_dir, metrics)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``sd-eval``: every check first, then sample (with ``ckpt_path``), evaluate ``samples`` or those
    samples against the held-out split of ``data`` and record; returns the metrics (``objective`` set)."""
    samples_path, ckpt_path = cfg.get("samples"), cfg.get("ckpt_path")
    check_one_source(samples_path, ckpt_path)
    if samples_path is not None:
        check_samples_path(samples_path)
    elif not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} does not exist")
    else:
        stored = load_checkpoint(Path(ckpt_path)).get("spectral_diffusion_config")
        if stored is not None and neural_field.uses_neural_field(stored):
            return neural_field.evaluate_checkpoint(cfg, stored)
    if neural_field.is_field_data(cfg.data):
        raise ConfigError("data is a field dataset: sd-eval samples=... evaluates images; evaluate a neural-field "
                          "run with sd-eval ckpt_path=<its last.ckpt>")
    evaluation = EvaluationConfig.from_config(cfg.evaluation)
    device = check_choice("device", cfg.device, ["auto", "cpu", "cuda"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    datamodule = instantiate_checked(cfg.data)
    datamodule.setup()
    image_shape = datamodule.image_shape
    evaluation.check_image_shape(image_shape)
    features = choose_features(instantiate_checked(cfg.features), datamodule)

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    module, runtime = None, {}
    if samples_path is not None:
        samples = load_samples(samples_path, channels=image_shape[0])
        check_sample_shape(samples, image_shape)
        num_samples = len(samples)
    else:
        module = load_module(ckpt_path).to(device)
        if tuple(module.image_shape) != tuple(image_shape):
            raise ConfigError(f"ckpt_path={str(ckpt_path)!r} generates images of shape {module.image_shape} "
                              f"but data gives {tuple(image_shape)}; choose the data option it was trained on")
        sampler = instantiate_sampler(cfg.sampler, instantiate_checked) if cfg.get("sampler") else module.sampler
        validate_sampler(sampler, module.process)
        module.check_guidance(guidance_scale_of(sampler))
        num_samples = evaluation.num_samples
    objective_name, objective_note = objective(cfg, features, evaluation, num_samples, training=False,
                                               model=module is not None)

    extractor = build_extractor(features, datamodule, device)
    if module is not None:
        samples, runtime = timed_generate(module, num_samples, sampler=sampler, seed=evaluation.seed,
                                          batch_size=evaluation.batch_size, use_ema=bool(cfg.use_ema),
                                          progress=progress_bar("sampling"))
        save_samples_npz(samples, output_dir / "samples.npz", seed=evaluation.seed)
        save_grid(samples[: evaluation.grid_size], output_dir / "samples.png")
    metrics = evaluate_images(samples, datamodule, extractor, evaluation, output_dir, run_config=cfg, module=module,
                              metrics={"warnings": [objective_note] if objective_note else [],
                                       "num_samples": num_samples, **runtime}, objective_name=objective_name,
                              device=device, class_labels=None if module is None else requested_labels(module))
    record(cfg, output_dir, metrics)
    log.info("wrote metrics.json and report.md to %s", output_dir)
    return metrics


def requested_labels(module: DiffusionModule) -> torch.Tensor | None:
    """The class labels the module's last ``generate`` sampled for (None: an unconditional model)."""
    labels = module.last_sampling_info.get("class_labels")
    return None if labels is None else torch.tensor(labels)


def objective(cfg: DictConfig, features, evaluation: EvaluationConfig, num_samples: int, *,
              training: bool, model: bool = True) -> tuple[str | None, str | None]:
    """The metrics.json key of ``optimized_metric`` and a note when it fell back (``features=none`` computes no
    feature metric: a default ``fid`` becomes val_loss for sd-train, spectral_mse for sd-eval; one the user named
    on the command line is refused), checked before any training or sampling. ``model``: whether a network is
    evaluated (the battery's model groups need one)."""
    fallbacks = ["val_loss"] if training else []
    if evaluation.battery and "spectral" in evaluation.battery_groups:
        fallbacks.append("spectral_mse")
    shorthands = ({"val_loss": "val_loss"} if training else {}) if features.name is None else (
        metric_shorthands(features.name, num_samples, val_loss=training))
    explicit = any(override.lstrip("+~").split("=")[0] == "optimized_metric" for override in _overrides(cfg))
    # without a model (sd-eval samples=...) the battery's model groups are skipped: their keys are not objectives
    groups = [group for group in evaluation.battery_groups if model or group not in MODEL_GROUPS]
    return resolve_objective(cfg.get("optimized_metric"), shorthands, groups,
                             features_available=features.name is not None, explicit=explicit, fallbacks=fallbacks)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_safe(value: Any) -> Any:
    """Strict JSON: a non-finite float (e.g. a ratio over a band the real images leave empty) is written as
    the string "inf", "-inf" or "nan" rather than the non-standard Infinity/NaN tokens."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def record(cfg: DictConfig, output_dir: Path, metrics: dict[str, Any]) -> None:
    """metrics.json in the run folder and one row in the summary CSV."""
    (output_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2, sort_keys=True,
                                                        allow_nan=False) + "\n")
    summary_csv = cfg.paths.get("summary_csv")
    if not summary_csv:
        return
    overrides = _overrides(cfg)
    row = {
        "run_id": str(output_dir),
        "timestamp": datetime.now().isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "overrides": " ".join(overrides),
    }
    row.update({k: v for k, v in metrics.items() if _is_scalar(v)})
    append_row(summary_csv, row)


def _overrides(cfg: DictConfig) -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # called outside a Hydra app (tests, notebooks)
        return []
