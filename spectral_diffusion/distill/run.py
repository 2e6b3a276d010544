"""One distillation run, as a plain function ``sd-distill`` and tests call: check → load the teacher → build the
student → fit → export the student → sample with its few-step sampler → evaluate → record.

The evaluation, metrics.json, report.md and the summary row are exactly ``sd-train``'s (``pipeline`` and
``evaluation``), so a student's FID sits next to its teacher's in the same table.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from spectral_diffusion.callbacks import load_checkpoint
from spectral_diffusion.distill.base import DistillationMethod
from spectral_diffusion.distill.module import DistillationModule
from spectral_diffusion.evaluation import EvaluationConfig, build_extractor, choose_features
from spectral_diffusion.pipeline import (
    build,
    fit_and_validate,
    instantiate_checked,
    load_module,
    objective,
    sample_evaluate_record,
    training_metrics,
)
from spectral_diffusion.utils.validation import ConfigError, check_int

log = logging.getLogger(__name__)

CONFIG_KEY = "spectral_diffusion_config"


def check_teacher_checkpoint(path: Any) -> dict:
    """The stored ``sd-train`` config of the checkpoint at ``teacher_ckpt``, or a ConfigError naming the key."""
    if path is None:
        raise ConfigError("teacher_ckpt is missing: pass the checkpoint of an sd-train run, e.g. "
                          "teacher_ckpt=outputs/<date>/<time>/checkpoints/last.ckpt")
    if not Path(str(path)).is_file():
        raise ConfigError(f"teacher_ckpt={str(path)!r} does not exist; "
                          "pass the checkpoints/last.ckpt of an sd-train run")
    try:
        checkpoint = load_checkpoint(path)
    except ConfigError as error:
        raise ConfigError(str(error).replace("ckpt_path=", "teacher_ckpt=", 1)) from None
    config = checkpoint.get(CONFIG_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"teacher_ckpt={str(path)!r} was not written by sd-train (it holds no {CONFIG_KEY}); a "
                          "distillation run's last.ckpt is not a teacher, its checkpoints/student.ckpt is")
    return config


def student_config(teacher_config: dict, method: DistillationMethod, cfg: DictConfig, teacher_ckpt: Path) -> dict:
    """The teacher's ``sd-train`` config with the student's prediction, process and sampler (the method's), this
    run's optimizer, scheduler and EMA, and where it came from (``distillation``, read by nobody but people)."""
    config = copy.deepcopy(teacher_config)
    config.update(method.student_config(teacher_config))
    config["optimizer"] = OmegaConf.to_container(cfg.optimizer, resolve=True)
    config["scheduler"] = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None
    config["ema"] = {"decay": float(cfg.ema.decay)}
    config["self_conditioning"] = 0.0
    if cfg.get("batch_size") is not None:
        config["data"]["batch_size"] = check_int("batch_size", cfg.batch_size, 1)
    config["distillation"] = {"method": method.name, "teacher_ckpt": str(teacher_ckpt),
                              "options": OmegaConf.to_container(cfg.method, resolve=True)}
    return config


def save_student(student, config: dict, sampler: dict, path: Path, global_step: int) -> Path:
    """A plain ``sd-train``-style checkpoint of ``student`` (state dict and stored config with ``sampler``), written
    atomically: ``sd-sample``, ``sd-eval ckpt_path=`` and ``pipeline.load_module`` read it, and it can be the
    teacher of a further distillation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": {key: value.detach().cpu() for key, value in student.state_dict().items()},
                  CONFIG_KEY: {**config, "sampler": sampler}, "global_step": int(global_step)}
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(checkpoint, temporary)
    os.replace(temporary, path)
    return path


def distill(cfg: DictConfig) -> dict[str, Any]:
    """Run ``sd-distill``: returns the metrics dict (``optimized_metric`` under ``"objective"``)."""
    output_dir = Path(cfg.paths.output_dir)
    # --- every check before anything runs ---
    teacher_ckpt = Path(str(cfg.get("teacher_ckpt"))) if cfg.get("teacher_ckpt") is not None else None
    teacher_config = check_teacher_checkpoint(cfg.get("teacher_ckpt"))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist; pass the checkpoints/last.ckpt of the distillation "
                          "run to resume (teacher_ckpt is the sd-train checkpoint it started from)")
    method: DistillationMethod = instantiate_checked(cfg.method)
    check_int("trainer.max_steps", cfg.trainer.max_steps, method.rounds)  # at least one step per round
    evaluation = EvaluationConfig.from_config(cfg.evaluation)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)

    teacher = load_module(teacher_ckpt)
    method.check_teacher(teacher)
    config = student_config(teacher_config, method, cfg, teacher_ckpt.resolve())
    components = build(config)
    datamodule, student = components.datamodule, components.module
    weights = teacher.ema.module.state_dict()
    student.model.load_state_dict(weights)
    student.ema.module.load_state_dict(weights)
    method.attach(teacher, student, seed=int(cfg.get("seed") or 0))
    del teacher

    evaluation.check_image_shape(datamodule.image_shape)
    features = choose_features(instantiate_checked(cfg.features), datamodule)
    objective_name, objective_note = objective(cfg, features, evaluation, evaluation.num_samples, training=True)
    extractor = build_extractor(features, datamodule)

    checkpoints = output_dir / "checkpoints"

    def export(trained_student, round_index: int) -> None:
        if module.trainer is None or module.trainer.is_global_zero:
            save_student(trained_student, config, method.student_sampler_at(round_index),
                         checkpoints / f"student_round{round_index}.ckpt", module.global_step)

    module = DistillationModule(student, method, export=export)
    trainer, train_seconds, train_cpu_seconds, train_loss, validation = fit_and_validate(cfg, module, datamodule,
                                                                                         ckpt_path)
    if not trainer.is_global_zero:
        return {}
    save_student(student, config, method.student_sampler, checkpoints / "student.ckpt", trainer.global_step)

    metrics: dict[str, Any] = {
        "warnings": [objective_note] if objective_note else [],
        "distillation_method": method.name,
        "teacher_ckpt": str(teacher_ckpt),
        "distillation_rounds": method.rounds,
        "train_cpu_minutes": train_cpu_seconds / 60.0,
        **training_metrics(trainer, module, datamodule, train_seconds, train_loss, validation,
                           num_parameters=student.num_parameters()),
    }
    return sample_evaluate_record(cfg, trainer, student, datamodule, extractor, evaluation, output_dir, metrics,
                                  objective_name)
