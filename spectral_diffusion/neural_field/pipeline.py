"""``sd-train``, ``sd-sample`` and ``sd-eval`` for neural-field runs (``model=nf_latent`` on a field dataset).

``spectral_diffusion.pipeline`` dispatches here when ``uses_neural_field(cfg)``: the run is composed, checked
before anything trains, fitted by Lightning, evaluated with ``neural_field.evaluation`` and recorded with the
image path's own ``record`` (metrics.json, the summary row). The image path is untouched.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from spectral_diffusion.diffusion.guidance import guidance_scale_of, instantiate_sampler
from spectral_diffusion.diffusion.samplers import validate_sampler
from spectral_diffusion.evaluation.names import RECOGNISABLE
from spectral_diffusion.neural_field.data import FieldDataModule
from spectral_diffusion.neural_field.evaluation import (
    FIELD_METRICS,
    HEADLINE_METRIC,
    FieldEvaluationConfig,
    evaluate_fields,
    field_report,
    is_finite_number,
)
from spectral_diffusion.neural_field.model import NeuralFieldLatentModel
from spectral_diffusion.neural_field.module import NeuralFieldModule
from spectral_diffusion.utils.validation import ConfigError, check_choice

# The image metrics sd-train's configs default optimized_metric to; a neural-field run replaces them.
IMAGE_OBJECTIVES = ("fid", RECOGNISABLE)

log = logging.getLogger(__name__)


def _target_class(node, key: str):
    target = node.get("_target_") if isinstance(node, (dict, DictConfig)) else None
    if target is None:
        return None
    try:
        return get_class(target)
    except Exception as error:  # an unknown target is the instantiation's error to report
        raise ConfigError(f"{key}._target_={target!r} cannot be imported: {error}") from None


def is_field_data(node) -> bool:
    """Whether a ``data`` config node builds a ``FieldDataModule``."""
    data_class = _target_class(node, "data")
    return data_class is not None and issubclass(data_class, FieldDataModule)


def uses_neural_field(cfg: DictConfig | dict) -> bool:
    """Whether a run config is a neural-field run; a neural-field model on image data (or the reverse) is a
    ConfigError naming ``model`` and ``data``, raised before anything is built."""
    model_class = _target_class(cfg.get("model"), "model")
    data_class = _target_class(cfg.get("data"), "data")
    nf_model = model_class is not None and issubclass(model_class, NeuralFieldLatentModel)
    field_data = is_field_data(cfg.get("data"))
    if nf_model != field_data:
        model_name = model_class.__name__ if model_class else None
        data_name = data_class.__name__ if data_class else None
        if nf_model:
            raise ConfigError(f"model=nf_latent ({model_name}) needs a field dataset (data=signals1d or another "
                              f"FieldDataModule), but data is {data_name}, an image dataset")
        raise ConfigError(f"data is {data_name}, a field dataset for neural-field models: choose model=nf_latent, "
                          f"or an image dataset (data=mnist, ...) for model={model_name}")
    return nf_model


def build(cfg: DictConfig | dict):
    """(datamodule, module) of a neural-field run, every option validated; nothing is trained."""
    from spectral_diffusion.pipeline import instantiate_checked

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    if float(cfg.get("self_conditioning", 0.0) or 0.0) != 0.0:
        raise ConfigError(f"self_conditioning={cfg.self_conditioning} applies to image backbones; neural-field "
                          "latent diffusion has none, leave it at 0")
    features = cfg.get("features")
    if features is not None and getattr(instantiate_checked(features), "name", None) is not None:
        raise ConfigError("features=... builds an image feature extractor; neural-field runs measure Fourier "
                          "magnitudes of the fields instead, so use features=none (model=nf_latent selects it)")
    datamodule = instantiate_checked(cfg.data)
    datamodule.setup()
    model = instantiate_checked(cfg.model, coord_dim=datamodule.coord_dim, value_dim=datamodule.value_dim)
    process = instantiate_checked(cfg.noise)
    prediction = instantiate_checked(cfg.prediction)
    sampler = instantiate_sampler(cfg.sampler, instantiate_checked)
    validate_sampler(sampler, process)
    module = NeuralFieldModule(
        model=model, process=process, prediction=prediction, optimizer=instantiate_checked(cfg.optimizer),
        sampler=sampler, scheduler=instantiate_checked(cfg.scheduler) if cfg.get("scheduler") else None,
        field_shape={"coord_dim": datamodule.coord_dim, "value_dim": datamodule.value_dim,
                     "grid_shape": list(datamodule.grid_shape), "grid_centred": bool(datamodule.grid_centred)},
        ema_decay=cfg.ema.decay, config=OmegaConf.to_container(cfg, resolve=True))
    scale = guidance_scale_of(sampler)
    if scale != 1.0:  # the default scale also serves purely (un)conditional models; others need both
        module.check_guidance(scale, conditional=True)
    return datamodule, module


def objective(cfg: DictConfig, explicit: bool) -> tuple[str, str | None]:
    """The metrics.json key of ``optimized_metric``: a default image metric (no image features here) falls back to
    the held-out reconstruction MSE with a note; any other name must be one of ``FIELD_METRICS``."""
    name = cfg.get("optimized_metric")
    if name in FIELD_METRICS:
        return name, None
    if name in IMAGE_OBJECTIVES and not explicit:
        note = f"optimized_metric={name!r} is an image metric; a neural-field run's objective is {HEADLINE_METRIC!r}"
        return HEADLINE_METRIC, note
    raise ConfigError(f"optimized_metric={name!r} is not a neural-field metric; choose one of {list(FIELD_METRICS)}")


def set_objective(metrics: dict[str, Any], name: str) -> None:
    """``objective``, ``objective_name`` and ``objective_direction`` of ``metrics``: every field metric is
    smaller-is-better but ``coverage``, whose best value is the band's level."""
    metrics["objective_name"] = name
    metrics["objective"] = metrics.get(name, math.nan)
    metrics["objective_direction"] = None if name == "coverage" else "minimize"


def train(cfg: DictConfig) -> dict[str, Any]:
    """``sd-train`` for a neural-field run: fit, evaluate, write metrics.json, report.md and the summary row."""
    from spectral_diffusion.callbacks import log_figure
    from spectral_diffusion.pipeline import _overrides, fit_and_validate, instantiate_checked, record, start_run

    output_dir, ckpt_path = start_run(cfg)
    datamodule, module = build(cfg)
    evaluation = instantiate_checked(cfg.evaluation)
    if not isinstance(evaluation, FieldEvaluationConfig):
        raise ConfigError("evaluation=... is the image evaluation; neural-field runs need evaluation=neural_field "
                          "(model=nf_latent selects it)")
    evaluation.check_resolutions(datamodule.coord_dim)
    explicit = any(o.lstrip("+~").split("=")[0] == "optimized_metric" for o in _overrides(cfg))
    objective_name, objective_note = objective(cfg, explicit)

    trainer, train_seconds, _, train_loss, validation = fit_and_validate(cfg, module, datamodule, ckpt_path)
    if not trainer.is_global_zero:
        return {}
    steps_done = trainer.global_step - module.first_step
    metrics: dict[str, Any] = {
        "global_step": trainer.global_step,
        "train_seconds": train_seconds,
        "train_steps_per_second": steps_done / train_seconds if train_seconds else math.nan,
        "num_parameters": module.num_parameters(),
        "train_loss": train_loss,
        "val_loss": float(validation[0]["val/loss"]) if validation else math.nan,
        "val_recon_mse": float(validation[0]["val/recon_mse"]) if validation else math.nan,
    }
    step = trainer.global_step
    results = evaluate_fields(module, datamodule, evaluation, output_dir=output_dir,
                              log_figure=lambda name, figure: log_figure(trainer, f"eval/{name}", figure, step))
    notes = results.pop("warnings") + ([objective_note] if objective_note else [])
    metrics.update(results)
    metrics["warnings"] = notes
    metrics["data"] = datamodule.info()
    set_objective(metrics, objective_name)
    for logger_ in trainer.loggers:
        logger_.log_metrics({f"eval/{k}": v for k, v in metrics.items() if is_finite_number(v)}, step=step)
        logger_.finalize("success")
    (output_dir / "report.md").write_text(field_report(metrics, "Neural-field latent diffusion"))
    record(cfg, output_dir, metrics)
    return metrics


def evaluate_checkpoint(cfg: DictConfig, checkpoint_config: dict) -> dict[str, Any]:
    """``sd-eval ckpt_path=...`` on a neural-field checkpoint: its own data (held-out split fixed by the data's
    seed) and evaluation options, the sampler of ``cfg`` when one is given; metrics.json and report.md."""
    from spectral_diffusion.pipeline import load_module, record

    if cfg.get("samples") is not None:
        raise ConfigError("samples=... holds images; a neural-field checkpoint is evaluated with ckpt_path= only")
    if not cfg.get("use_ema", True):
        raise ConfigError("use_ema=false: a neural-field checkpoint is evaluated with its EMA weights, as sd-train "
                          "evaluates it; leave use_ema=true")
    device = check_choice("device", cfg.get("device", "auto"), ["auto", "cpu", "cuda"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_module(cfg.ckpt_path).to(device)
    datamodule = build_datamodule(checkpoint_config)
    evaluation = FieldEvaluationConfig(**{k: v for k, v in checkpoint_config["evaluation"].items() if k != "_target_"})
    sampler = instantiate_sampler(cfg.sampler) if cfg.get("sampler") else module.sampler
    validate_sampler(sampler, module.process)
    if guidance_scale_of(sampler) != 1.0:
        module.check_guidance(guidance_scale_of(sampler), conditional=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_fields(module, datamodule, evaluation, sampler=sampler, output_dir=output_dir)
    metrics["ckpt_path"] = str(cfg.ckpt_path)
    name = cfg.get("optimized_metric")
    set_objective(metrics, name if name in FIELD_METRICS else HEADLINE_METRIC)
    (output_dir / "report.md").write_text(field_report(metrics, "Neural-field latent diffusion (sd-eval)"))
    record(cfg, output_dir, metrics)
    return metrics


def build_datamodule(config: dict) -> FieldDataModule:
    from spectral_diffusion.pipeline import instantiate_checked

    datamodule = instantiate_checked(OmegaConf.create(config["data"]))
    datamodule.setup()
    return datamodule


def sample(cfg: DictConfig, module: NeuralFieldModule) -> Path:
    """``sd-sample`` on a neural-field checkpoint: ``n`` unconditional fields decoded on the grid of
    ``resolution`` (null: the data's) into samples.npz (coords, values, seed) and samples.png."""
    import numpy as np

    from spectral_diffusion.neural_field.evaluation import _draw

    rotation = cfg.get("rotation")
    if rotation is not None and (rotation.get("angles") is not None or rotation.get("frames") is not None):
        raise ConfigError("rotation.angles / rotation.frames rotate images; a neural-field checkpoint has none")
    sampler = instantiate_sampler(cfg.sampler) if cfg.get("sampler") else module.sampler
    validate_sampler(sampler, module.process)
    if guidance_scale_of(sampler) != 1.0:
        raise ConfigError(f"sampler.guidance_scale={guidance_scale_of(sampler)} has nothing to guide: sd-sample draws "
                          "unconditional fields; conditional, guided samples are measured by sd-eval ckpt_path=...")
    resolution = cfg.get("resolution")
    if resolution is not None and not isinstance(resolution, int):
        resolution = tuple(resolution)
    coords, values = module.generate(int(cfg.n), resolution=resolution, seed=int(cfg.seed), sampler=sampler,
                                     batch_size=int(cfg.batch_size), use_ema=bool(cfg.use_ema))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output_dir / "samples.npz", coords=coords.numpy(), values=values.numpy(), seed=int(cfg.seed))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(len(values), 16)
    one_d = coords.shape[-1] == 1
    figure, axes = plt.subplots(shown if one_d else 1, 1 if one_d else shown, squeeze=False,
                                figsize=(8, 1.2 * shown) if one_d else (1.2 * shown, 1.4))
    grid_shape = resolution if isinstance(resolution, tuple) else (
        tuple(module.field_shape["grid_shape"]) if resolution is None else (resolution,) * coords.shape[-1])
    for i in range(shown):
        _draw(axes[i, 0] if one_d else axes[0, i], coords, values[i], grid_shape, linewidth=0.8)
    path = output_dir / "samples.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    log.info("wrote %d fields at %d points to %s", len(values), len(coords), output_dir)
    return path
