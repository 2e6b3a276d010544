"""One run, as plain functions the CLIs and tests call: build → fit → sample → evaluate → record.

``train(cfg)`` is ``sd-train`` without Hydra's command line; ``load_module(ckpt)`` rebuilds a trained
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
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from spectral_diffusion.callbacks import AtomicCheckpointIO, load_checkpoint, log_figure, log_grid
from spectral_diffusion.diffusion.samplers import deq, validate_sampler
from spectral_diffusion.evaluation import (
    build_extractor,
    evaluate_images,
    is_battery_metric,
    timed_generate,
    validate_evaluation_options,
)
from spectral_diffusion.module import DiffusionModule
from spectral_diffusion.utils.images import save_grid, save_samples_npz
from spectral_diffusion.utils.progress import progress_bar
from spectral_diffusion.utils.summary import append_row, git_commit
from spectral_diffusion.utils.validation import ConfigError

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
    """Instantiate data, process, backbone, loss, optimizer and sampler, validating them all."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    datamodule = instantiate_checked(cfg.data)
    datamodule.setup()
    process = instantiate_checked(cfg.noise)
    # the image size check of the basis and, for equalized noise, w(f) from the datamodule's cached S_data
    process.prepare(datamodule)
    loss = instantiate_checked(cfg.loss)
    process.check_prediction(loss.prediction)
    if hasattr(loss, "prepare"):
        # checks against the image size and the data spectrum S_data, estimated once from the training split
        loss.prepare(datamodule.train_images)
    model = instantiate_checked(cfg.model, **_self_conditioning_channels(cfg, loss, datamodule.image_shape))
    sampler = instantiate_checked(cfg.sampler)
    validate_sampler(sampler, process)
    if getattr(sampler, "func", sampler) is deq and float(getattr(loss, "self_conditioning", 0.0)) > 0:
        raise ConfigError("sampler=deq solves every step at once, so it cannot feed each step the previous x̂0: "
                          "set loss.self_conditioning=0 or choose another sampler (ddim, ddpm, dpm_solver_pp, "
                          "euler, heun)")
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
    )
    return Components(datamodule, module)


def _self_conditioning_channels(cfg: DictConfig, loss, image_shape) -> dict[str, int]:
    """With self-conditioning the backbone sees [x_t, x̂0]: twice the image channels in, the image's out."""
    if float(getattr(loss, "self_conditioning", 0.0)) == 0:
        return {}
    channels = int(image_shape[0])
    return {"in_channels": 2 * channels, "out_channels": cfg.model.get("out_channels") or channels}


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


def _metric_names(cfg: DictConfig, extractor_name: str) -> dict[str, str]:
    n = int(cfg.evaluation.num_samples)
    return {"fid": f"fid_{extractor_name}@{n}", "kid": f"kid_{extractor_name}@{n}", "val_loss": "val_loss"}


def validate_evaluation(evaluation: DictConfig) -> None:
    for key, minimum in (("num_samples", 2), ("batch_size", 1), ("grid_size", 1), ("kid_subset_size", 2)):
        value = evaluation.get(key)
        if key == "kid_subset_size" and value is None:
            continue
        if not isinstance(value, int) or value < minimum:
            raise ConfigError(f"evaluation.{key}={value!r} is invalid; it must be an integer >= {minimum}")


def resolve_optimized_metric(cfg: DictConfig, names: dict[str, str]) -> str | None:
    """The metrics.json key ``optimized_metric`` names: a shorthand of ``names``, one of their values, or
    (with ``evaluation.battery``) a key of the metric battery."""
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name in names:
        return names[name]
    if name in names.values() or (cfg.evaluation.get("battery") and is_battery_metric(name)):
        return name
    allowed = list(names) + [names["fid"], names["kid"]]
    battery = " or a key of the metric battery (metrics/battery.py)" if cfg.evaluation.get("battery") else ""
    raise ConfigError(f"optimized_metric={name!r} is not a metric this run computes; choose one of {allowed}{battery}")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run ``sd-train``: returns the metrics dict (``optimized_metric`` under key ``"objective"``)."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist; pass the last.ckpt of the run to resume")

    components = build(cfg)
    datamodule, module = components.datamodule, components.module

    # Everything that can reject the config happens here, before the first training step.
    validate_evaluation(cfg.evaluation)
    validate_evaluation_options(cfg.evaluation, datamodule.image_shape)
    features = instantiate_checked(cfg.features)
    objective_name = resolve_optimized_metric(cfg, _metric_names(cfg, features.name))
    extractor = build_extractor(features, datamodule)

    callbacks = [instantiate_checked(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    logger = instantiate_checked(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = instantiate_checked(cfg.trainer, callbacks=callbacks, logger=logger,
                                     plugins=[AtomicCheckpointIO()])

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    train_seconds = time.perf_counter() - started
    train_loss = float(trainer.callback_metrics.get("train/loss", math.nan))
    validation = trainer.validate(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}

    steps_done = trainer.global_step - module.first_step
    metrics: dict[str, Any] = {
        "global_step": trainer.global_step,
        "train_seconds": train_seconds,
        "train_images_per_second": steps_done * datamodule.batch_size / train_seconds if train_seconds else math.nan,
        "num_parameters": module.num_parameters(),
        "val_loss": float(validation[0]["val/loss"]) if validation else math.nan,
        "train_loss": train_loss,
    }

    # --- sample from the EMA weights with the configured sampler, then evaluate against held-out images ---
    evaluation = cfg.evaluation
    samples, runtime = timed_generate(module, int(evaluation.num_samples), seed=int(evaluation.seed),
                                      batch_size=int(evaluation.batch_size), progress=progress_bar("sampling"))
    metrics.update(runtime)
    save_samples_npz(samples, output_dir / "samples.npz", seed=int(evaluation.seed))
    save_grid(samples[: int(evaluation.grid_size)], output_dir / "samples.png")
    step = trainer.global_step
    log_grid(trainer, "samples/final", samples[: int(evaluation.grid_size)], step)
    metrics = evaluate_images(samples, datamodule, extractor, cfg, output_dir, module=module, metrics=metrics,
                              objective_name=objective_name, device=module.device,
                              log_figure=lambda name, figure: log_figure(trainer, f"eval/{name}", figure, step))

    for logger_ in trainer.loggers:
        logger_.log_metrics({f"eval/{k}": v for k, v in metrics.items() if _is_scalar(v)}, step=trainer.global_step)
        logger_.finalize("success")
    record(cfg, output_dir, metrics)
    return metrics


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
