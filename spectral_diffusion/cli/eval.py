"""``sd-eval``: metrics.json, report.md and figures for a set of samples (.npz or image folder), or for a
checkpoint it samples from first; returns ``optimized_metric``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from spectral_diffusion.cli import CONFIG_DIR, reports_config_errors, route_lightning_logs_through_hydra

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``sd-eval`` without Hydra's command line: every check first, then sample (with ``ckpt_path``),
    evaluate against the held-out split of ``data`` and record; returns the metrics (``objective`` set)."""
    import torch

    from spectral_diffusion import evaluation as ev
    from spectral_diffusion.diffusion.samplers import validate_sampler
    from spectral_diffusion.pipeline import (
        instantiate_checked,
        load_module,
        record,
        resolve_optimized_metric,
        validate_evaluation,
    )
    from spectral_diffusion.utils.images import save_grid, save_samples_npz
    from spectral_diffusion.utils.progress import progress_bar
    from spectral_diffusion.utils.validation import ConfigError, check_choice

    # --- checks, before any work ---------------------------------------------------------------------
    samples_path, ckpt_path = cfg.get("samples"), cfg.get("ckpt_path")
    ev.check_one_source(samples_path, ckpt_path)
    if samples_path is not None:
        ev.check_samples_path(samples_path)
    elif not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} does not exist")
    validate_evaluation(cfg.evaluation)
    device = check_choice("device", cfg.device, ["auto", "cpu", "cuda"])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    datamodule = instantiate_checked(cfg.data)
    datamodule.setup()
    image_shape = datamodule.image_shape
    ev.validate_evaluation_options(cfg.evaluation, image_shape)
    features = instantiate_checked(cfg.features)

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    module, runtime = None, {}
    if samples_path is not None:
        samples = ev.load_samples(samples_path, channels=image_shape[0])
        ev.check_sample_shape(samples, image_shape)
        num_samples = len(samples)
    else:
        module = load_module(ckpt_path).to(device)
        if tuple(module.image_shape) != tuple(image_shape):
            raise ConfigError(f"ckpt_path={str(ckpt_path)!r} generates images of shape {module.image_shape} "
                                 f"but data gives {tuple(image_shape)}; choose the data option it was trained on")
        sampler = instantiate_checked(cfg.sampler) if cfg.get("sampler") else module.sampler
        validate_sampler(sampler, module.process)
        num_samples = int(cfg.evaluation.num_samples)
    objective_name = resolve_optimized_metric(cfg, ev.metric_shorthands(features.name, num_samples))

    # --- work ------------------------------------------------------------------------------------------
    extractor = ev.build_extractor(features, datamodule, device)
    if module is not None:
        seed = int(cfg.evaluation.seed)
        samples, runtime = ev.timed_generate(module, num_samples, sampler=sampler, seed=seed,
                                             batch_size=int(cfg.evaluation.batch_size), use_ema=bool(cfg.use_ema),
                                             progress=progress_bar("sampling"))
        save_samples_npz(samples, output_dir / "samples.npz", seed=seed)
        save_grid(samples[: int(cfg.evaluation.grid_size)], output_dir / "samples.png")
    metrics = ev.evaluate_images(samples, datamodule, extractor, cfg, output_dir, module=module,
                                 metrics={"num_samples": num_samples, **runtime}, objective_name=objective_name,
                                 device=device)
    record(cfg, output_dir, metrics)
    log.info("wrote metrics.json and report.md to %s", output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
@reports_config_errors("sd-eval")
def main(cfg: DictConfig) -> float | None:
    route_lightning_logs_through_hydra()
    return evaluate(cfg).get("objective")


if __name__ == "__main__":
    main()
