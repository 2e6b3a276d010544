"""Evaluation of generated images against the held-out split, shared by ``sd-train`` and ``sd-eval``: the validated
``evaluation`` config, sample loading, metric names, timed sampling, the per-timestep loss, the report and
``evaluate_images``, which computes everything and writes report.md (callers record metrics.json)."""

from spectral_diffusion.evaluation.config import EvaluationConfig, battery_config, name_battery_key
from spectral_diffusion.evaluation.evaluate import build_extractor, choose_features, evaluate_images
from spectral_diffusion.evaluation.names import (
    METRIC_NAMES,
    MetricName,
    describe,
    metric_direction,
    metric_name,
    metric_shorthands,
    resolve_objective,
    resolve_optimized_metric,
)
from spectral_diffusion.evaluation.report import FIGURES_DIR, save_figure, write_report
from spectral_diffusion.evaluation.runtime import peak_memory_mb, timed_generate
from spectral_diffusion.evaluation.samples import (
    SAMPLE_SUFFIXES,
    check_one_source,
    check_sample_shape,
    check_samples_path,
    load_samples,
)
from spectral_diffusion.evaluation.timestep_loss import timestep_grid, validation_loss_by_time, validation_loss_figure

__all__ = [
    "FIGURES_DIR",
    "METRIC_NAMES",
    "SAMPLE_SUFFIXES",
    "EvaluationConfig",
    "MetricName",
    "battery_config",
    "build_extractor",
    "choose_features",
    "check_one_source",
    "check_sample_shape",
    "check_samples_path",
    "describe",
    "evaluate_images",
    "load_samples",
    "metric_direction",
    "metric_name",
    "metric_shorthands",
    "name_battery_key",
    "peak_memory_mb",
    "resolve_objective",
    "resolve_optimized_metric",
    "save_figure",
    "timed_generate",
    "timestep_grid",
    "validation_loss_by_time",
    "validation_loss_figure",
    "write_report",
]
