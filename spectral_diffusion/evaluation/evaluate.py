"""The evaluation shared by ``sd-train`` and ``sd-eval``: generated images against the held-out split, each image
set's features extracted once and shared by FID, KID, precision/recall and the real-data floor; the metric
battery, the per-timestep loss, the figures and report.md."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig
from torch import Tensor

from spectral_diffusion.evaluation.config import EvaluationConfig, name_battery_key
from spectral_diffusion.evaluation.equivariance import model_equivariance
from spectral_diffusion.evaluation.names import metric_direction
from spectral_diffusion.evaluation.report import FIGURES_DIR, is_number, save_figure, write_report
from spectral_diffusion.evaluation.samples import check_sample_shape
from spectral_diffusion.evaluation.straightness import model_straightness
from spectral_diffusion.evaluation.timestep_loss import validation_loss_by_time, validation_loss_figure
from spectral_diffusion.metrics.battery import MODEL_GROUP_REASON, MODEL_GROUPS, battery_figures, evaluate_battery
from spectral_diffusion.metrics.bootstrap import feature_intervals
from spectral_diffusion.metrics.fid_infinity import fid_infinity, subset_sizes
from spectral_diffusion.metrics.figures import sample_grid_figure
from spectral_diffusion.metrics.features import NoFeatures
from spectral_diffusion.metrics.quality import FeaturePair, distance_metrics, floor_features
from spectral_diffusion.metrics.recognisability import class_accuracy, recognisability
from spectral_diffusion.utils.validation import ConfigError

log = logging.getLogger(__name__)


# Below this many held-out images FID and KID say little (their bias and spread grow as N falls).
MIN_REAL_FOR_FEATURE_METRICS = 200


def choose_features(features, datamodule):
    """A ``features`` config object made ready for ``datamodule``: ``features=auto`` picks the classifier when the
    data has class labels, else the autoencoder (its ``name`` is then the chosen one's). Returns ``features``."""
    if hasattr(features, "select"):
        features.select(datamodule.train_labels, datamodule.num_classes)
    return features


def build_extractor(features, datamodule, device: str | torch.device = "cpu"):
    """The FID/KID feature network of a ``features`` config object for ``datamodule``'s data (trained once and
    cached for the classifier; its held-out accuracy from the held-out split)."""
    return features.build(
        train_images=datamodule.train_images,
        train_labels=datamodule.train_labels,
        num_classes=datamodule.num_classes,
        dataset_name=datamodule.name,
        val_images=datamodule.val_images,
        val_labels=datamodule.val_labels,
        device=device,
    )


def _fid_infinity_metric(features: FeaturePair, skipped: dict[str, str], *, seed: int) -> dict:
    """FID∞ of the feature pair (``metrics.fid_infinity``), or its reason in ``skipped`` for too few samples."""
    key = f"fid_inf_{features.name}"
    if len(subset_sizes(len(features.fake))) < 2:
        skipped[key] = "needs at least 3 generated images (two subset sizes)"
        return {}
    return {key: fid_infinity(features.real, features.fake, seed=seed)["fid_inf"]}


def _equivariance_group(module, real: Tensor, evaluation: EvaluationConfig) -> tuple[dict, Figure]:
    """The ``equivariance`` battery group: ``model_equivariance`` with the ``equivariance_*`` battery options."""
    options = evaluation.battery_options
    return model_equivariance(module, real[: options.equivariance_images], bins=options.equivariance_bins,
                              degrees=options.equivariance_degrees, steps=options.equivariance_steps,
                              generation_samples=options.equivariance_generation_samples, seed=evaluation.seed,
                              batch_size=evaluation.batch_size)


def _straightness_group(module, real: Tensor, evaluation: EvaluationConfig) -> tuple[dict, Figure]:
    """The ``straightness`` battery group: ``model_straightness`` with the ``straightness_*`` battery options."""
    options = evaluation.battery_options
    return model_straightness(module, samples=options.straightness_samples, steps=options.straightness_steps,
                              seed=evaluation.seed, batch_size=evaluation.batch_size,
                              resamples=evaluation.bootstrap, level=evaluation.level)


# The battery groups that measure the network (metrics.battery.MODEL_GROUPS): group -> (metrics, figure).
MODEL_GROUP_FUNCTIONS = {"equivariance": _equivariance_group, "straightness": _straightness_group}


def evaluate_images(
    fake: Tensor,
    datamodule,
    extractor,
    evaluation: EvaluationConfig,
    out_dir: str | Path,
    *,
    run_config: DictConfig | None = None,
    module=None,
    metrics: Mapping[str, Any] | None = None,
    objective_name: str | None = None,
    log_figure: Callable[[str, Figure], None] | None = None,
    device: str | torch.device = "cpu",
    class_labels: Tensor | None = None,
) -> dict[str, Any]:
    """Metrics of ``fake`` against ``datamodule.val_images``; writes report.md and figures/*.png into ``out_dir``.

    ``metrics`` (training, runtime) are kept and come first; then FID/KID (by the battery's features group when
    it runs, else here) and their real floor with ``extractor``, FID∞, with a classifier extractor the
    recognisability of generated and held-out images (and, for samples of a class-conditional model with their
    requested ``class_labels``, ``class_accuracy``), with ``evaluation.bootstrap`` the confidence intervals
    ``<key>_ci_low``/``<key>_ci_high`` of these, the metric battery (``evaluation.battery``), and with a ``module``
    the per-timestep validation loss and the battery's model groups (equivariance, straightness; without a module
    they are skipped with the reason). Returns the metrics with ``"skipped": {name: reason}`` and ``objective`` set
    from ``objective_name`` (a ConfigError lists the keys when it names none). ``log_figure(name,
    figure)`` also receives every figure (TensorBoard); ``run_config`` is summarised at the end of report.md.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    real = datamodule.val_images
    check_sample_shape(fake, tuple(real.shape[1:]))
    batch_size = evaluation.batch_size
    options = evaluation.battery_options
    results: dict[str, Any] = dict(metrics or {})
    skipped: dict[str, str] = {}
    warnings: list[str] = list(results.pop("warnings", []))
    if len(real) < MIN_REAL_FOR_FEATURE_METRICS:
        warnings.append(f"the held-out split has {len(real)} images (< {MIN_REAL_FOR_FEATURE_METRICS}): FID and KID "
                        "are strongly biased and noisy at this size; raise data.val_fraction if the source has more")
        log.warning(warnings[-1])
    features = None if extractor is None else FeaturePair.extract(real, fake, extractor, batch_size=batch_size)

    figures: dict[str, Figure] = {}
    if evaluation.battery:
        result = evaluate_battery(real, fake, features=features, config=options, device=device, batch_size=batch_size,
                                  kid_subset_size=evaluation.kid_subset_size, resamples=evaluation.bootstrap,
                                  level=evaluation.level, bootstrap_seed=evaluation.seed)
        results.update(result.metrics)
        skipped.update({name: name_battery_key(reason, "evaluation.battery_options")
                        for name, reason in result.skipped.items()})
        figures.update(battery_figures(real, fake, result, grid_size=evaluation.grid_size))
    else:
        skipped["battery"] = "evaluation.battery=false"
        figures["sample_grids"] = sample_grid_figure(real, fake, evaluation.grid_size)
    if features is None:
        skipped["features"] = NoFeatures.reason
    else:
        if "features" not in evaluation.battery_groups:
            results.update(distance_metrics(features, kid_subset_size=evaluation.kid_subset_size,
                                            kid_subsets=options.kid_subsets, seed=options.seed))
        floor = floor_features(datamodule.train_images, real, extractor, len(real), batch_size=batch_size,
                               heldout_features=features.real)
        results.update(distance_metrics(floor, kid_subset_size=evaluation.kid_subset_size, prefix="floor"))
        results.update(_fid_infinity_metric(features, skipped, seed=evaluation.seed))
        if evaluation.bootstrap is not None:
            bootstrap = {"resamples": evaluation.bootstrap, "level": evaluation.level, "seed": evaluation.seed}
            precision_recall_k = options.precision_recall_k if "features" in evaluation.battery_groups else None
            results.update(feature_intervals(features, precision_recall_k=precision_recall_k, **bootstrap))
            results.update(feature_intervals(floor, prefix="floor", **bootstrap))
    if getattr(extractor, "accuracy", None) is not None:
        results[f"{extractor.name}_accuracy"] = float(extractor.accuracy)
    if getattr(extractor, "probabilities", None) is not None:
        results.update(recognisability(extractor, real, fake, batch_size=batch_size, resamples=evaluation.bootstrap,
                                       level=evaluation.level, seed=evaluation.seed))
    elif features is not None:
        skipped[f"recognisable_{features.name}"] = "needs a classifier feature extractor (features=classifier)"
    if class_labels is not None:
        if getattr(extractor, "predict", None) is None:
            skipped["class_accuracy"] = "needs a classifier feature extractor (features=classifier)"
        else:
            results.update(class_accuracy(extractor, fake, class_labels, batch_size=batch_size,
                                          resamples=evaluation.bootstrap, level=evaluation.level,
                                          seed=evaluation.seed))

    bins = evaluation.timestep_bins
    if module is not None and bins > 0:
        conditional = getattr(module, "num_classes", None) is not None
        times, losses = validation_loss_by_time(module, real, bins=bins, seed=evaluation.seed, batch_size=batch_size,
                                                labels=datamodule.val_labels if conditional else None)
        figures["val_loss_by_t"] = validation_loss_figure(times, losses)
        results["val_loss_by_t"] = {"t": times.tolist(), "loss": losses.tolist()}
    elif bins > 0:
        skipped["val_loss_by_t"] = "needs a model: pass ckpt_path (samples alone have no network)"
    for group in MODEL_GROUPS:
        if group not in evaluation.battery_groups:
            continue
        if module is None:
            skipped[group] = MODEL_GROUP_REASON
            continue
        skipped.pop(group, None)
        group_metrics, figures[f"{group}_by_t"] = MODEL_GROUP_FUNCTIONS[group](module, real, evaluation)
        results.update(group_metrics)

    if objective_name is not None:
        if objective_name not in results:
            available = sorted(k for k, v in results.items() if is_number(v))
            raise ConfigError(f"optimized_metric={objective_name!r} is not a computed metric; "
                              f"choose one of {available}")
        results["objective"] = results[objective_name]
        results["objective_name"] = objective_name
        results["objective_direction"] = metric_direction(objective_name)
    results["skipped"] = skipped
    if warnings:
        results["warnings"] = warnings

    figure_paths = {}
    for name, figure in figures.items():
        figure_paths[name] = save_figure(figure, out_dir / FIGURES_DIR / f"{name}.png")
        if log_figure is not None:
            log_figure(name, figure)
    write_report(out_dir / "report.md", results, figure_paths, run_config)
    return results
