"""How a neural-field run is judged: held-out reconstruction, conditional samples (error and coverage of their
band) and unconditional samples (a Fréchet distance on Fourier magnitudes next to its real-vs-real floor),
plus the figures of report.md and TensorBoard.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spectral_diffusion.metrics.bootstrap import frechet_distance
from spectral_diffusion.utils.validation import ConfigError, check_int, check_range

# Every scalar key ``evaluate_fields`` can write, for ``optimized_metric``.
FIELD_METRICS = ("val_loss", "val_recon_mse", "recon_mse", "recon_mse_unobserved", "conditional_sample_mse",
                 "conditional_mean_mse", "coverage", "frechet_fourier", "frechet_fourier_floor",
                 "frechet_fourier_ratio")
# Lower is better for all but coverage, whose target is the band's level.
HEADLINE_METRIC = "recon_mse"


class FieldEvaluationConfig:
    """``evaluation=neural_field``: what the end of ``sd-train`` (and ``sd-eval`` on a checkpoint) measures.

    ``conditional_fields`` held-out fields are each sampled ``conditional_samples`` times from their observed
    points; ``band`` is the central probability of the per-point band whose coverage of the truth is reported.
    The unconditional distance compares generated fields with half the held-out set on ``fourier_features``
    Fourier magnitudes; its floor is the same distance between the two halves (equal sample sizes, so the
    Fréchet distance's bias is the same on both sides). ``resolutions`` are the query grids of the figures.
    """

    def __init__(self, conditional_fields: int = 100, conditional_samples: int = 20, band: float = 0.9,
                 fourier_features: int = 16, seed: int = 1234, batch_size: int = 256,
                 resolutions: list | tuple = (64, 256, 1024), plot_fields: int = 4) -> None:
        self.conditional_fields = check_int("evaluation.conditional_fields", conditional_fields, 0)
        self.conditional_samples = check_int("evaluation.conditional_samples", conditional_samples, 2)
        self.band = float(check_range("evaluation.band", band, 0.0, 1.0))
        if self.band in (0.0, 1.0):
            raise ConfigError(f"evaluation.band={band!r} is invalid; it must lie strictly between 0 and 1")
        self.fourier_features = check_int("evaluation.fourier_features", fourier_features, 1)
        self.seed = check_int("evaluation.seed", seed, 0)
        self.batch_size = check_int("evaluation.batch_size", batch_size, 1)
        self.resolutions = [r if isinstance(r, int) else tuple(r) for r in resolutions]
        if not self.resolutions:
            raise ConfigError("evaluation.resolutions=[] is invalid; give at least one query resolution")
        self.plot_fields = check_int("evaluation.plot_fields", plot_fields, 1)

    def check_resolutions(self, coord_dim: int) -> None:
        """Every figure resolution is a valid grid for fields with ``coord_dim`` coordinates (before training)."""
        from spectral_diffusion.neural_field.data import regular_grid

        for i, resolution in enumerate(self.resolutions):
            regular_grid(resolution, coord_dim, key=f"evaluation.resolutions[{i}]")


def fourier_magnitudes(values: Tensor, grid_shape: tuple[int, ...], count: int) -> Tensor:
    """A fixed feature map of fields (B, P, c) on a grid: |rfftn| (orthonormal) of each channel over the grid,
    the ``count`` lowest frequencies per channel in the FFT's order, float64 (B, count · c)."""
    fields = values.double().reshape(len(values), *grid_shape, values.shape[-1]).movedim(-1, 1)
    spectrum = torch.fft.rfftn(fields, dim=tuple(range(2, fields.ndim)), norm="ortho").abs()
    return spectrum.flatten(2)[:, :, :count].flatten(1)


def frechet(features_a: Tensor, features_b: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6)."""
    def moments(features: Tensor) -> tuple[Tensor, Tensor]:
        return features.mean(0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])

    return float(frechet_distance(*moments(features_a), *moments(features_b)))


def band_coverage(samples: Tensor, truth: Tensor, level: float) -> float:
    """Fraction of true values inside the central ``level`` band of the samples (S, B, P, c) per point."""
    low = torch.quantile(samples, (1 - level) / 2, dim=0)
    high = torch.quantile(samples, (1 + level) / 2, dim=0)
    return float(((truth >= low) & (truth <= high)).double().mean())


def evaluate_fields(module, datamodule, evaluation: FieldEvaluationConfig, sampler=None,
                    output_dir: Path | None = None,
                    log_figure: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """The metrics of a trained ``NeuralFieldModule`` against the held-out set; figures into ``output_dir``."""
    metrics: dict[str, Any] = {"warnings": []}
    held_out = datamodule.val_fields
    truth, mask = held_out["values"], held_out["mask"]
    _, reconstruction = module.reconstruct(held_out, batch_size=evaluation.batch_size)
    error = (reconstruction - truth).square()
    metrics["recon_mse"] = float(error.mean())
    unobserved = ~mask
    metrics["recon_mse_unobserved"] = float(error[unobserved].mean()) if unobserved.any() else 0.0
    metrics["observed_fraction"] = datamodule.observed_fraction

    dropout = module.model.condition_dropout
    conditional = None
    count = min(evaluation.conditional_fields, len(truth))
    if dropout < 1.0 and count > 0:
        started = time.perf_counter()
        rows = {key: value[:count] for key, value in held_out.items()}
        repeated = {key: value.repeat_interleave(evaluation.conditional_samples, dim=0) for key, value in rows.items()}
        _, draws = module.generate(len(repeated["values"]), condition=repeated, sampler=sampler,
                                   seed=evaluation.seed, batch_size=evaluation.batch_size)
        conditional = draws.reshape(count, evaluation.conditional_samples, *draws.shape[1:]).transpose(0, 1)
        metrics["conditional_seconds"] = time.perf_counter() - started
        metrics["conditional_sample_mse"] = float((conditional - rows["values"]).square().mean())
        metrics["conditional_mean_mse"] = float((conditional.mean(0) - rows["values"]).square().mean())
        metrics["coverage"] = band_coverage(conditional, rows["values"], evaluation.band)
        metrics["coverage_band"] = evaluation.band
        metrics["conditional_fields"] = count
    else:
        metrics["warnings"].append(
            "conditional metrics skipped: model.condition_dropout=1 trains no conditional model" if dropout == 1.0
            else "conditional metrics skipped: evaluation.conditional_fields=0")

    unconditional = None
    half = len(truth) // 2
    if dropout > 0.0 and half >= 2:
        started = time.perf_counter()
        _, unconditional = module.generate(half, sampler=sampler, seed=evaluation.seed + 1_000_000,
                                           batch_size=evaluation.batch_size)
        metrics["sampling_seconds_per_field"] = (time.perf_counter() - started) / half
        metrics["nfe"] = module.last_sampling_info.get("nfe")
        grid_shape = tuple(datamodule.grid_shape)
        features = lambda values: fourier_magnitudes(values, grid_shape, evaluation.fourier_features)  # noqa: E731
        real_a, real_b = features(truth[:half]), features(truth[half:2 * half])
        metrics["frechet_fourier"] = frechet(features(unconditional), real_a)
        metrics["frechet_fourier_floor"] = frechet(real_b, real_a)
        metrics["frechet_fourier_ratio"] = metrics["frechet_fourier"] / metrics["frechet_fourier_floor"]
        metrics["frechet_samples"] = half
    else:
        metrics["warnings"].append(
            "unconditional metrics skipped: model.condition_dropout=0 never trained the null condition"
            if dropout == 0.0 else "unconditional metrics skipped: too few held-out fields")

    if output_dir is not None:
        figures = field_figures(module, datamodule, evaluation, reconstruction, conditional, sampler)
        folder = Path(output_dir) / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        metrics["figures"] = {}
        for name, figure in figures.items():
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
            metrics["figures"][name] = f"figures/{name}.png"
            if log_figure is not None:
                log_figure(name, figure)
        import matplotlib.pyplot as plt

        for figure in figures.values():
            plt.close(figure)
    return metrics


def _draw(axis, coords: Tensor, values: Tensor, grid_shape, **style) -> None:
    """One field on an axis: a line for 1-D coordinates, an image for 2-D ones (first channel)."""
    if coords.shape[-1] == 1:
        axis.plot(coords[:, 0].numpy(), values[:, 0].numpy(), **style)
    else:
        axis.imshow(values[:, 0].reshape(*grid_shape).numpy(), cmap="gray", vmin=-1, vmax=1)
        axis.set_axis_off()


def field_figures(module, datamodule, evaluation: FieldEvaluationConfig, reconstruction: Tensor,
                  conditional: Tensor | None, sampler=None) -> dict[str, Any]:
    """``reconstruction``: held-out fields with their observed points, truth, reconstruction and the conditional
    samples' band; ``resolutions``: unconditional samples decoded at every ``evaluation.resolutions`` grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held_out = datamodule.val_fields
    count = min(evaluation.plot_fields, len(held_out["values"]))
    coords = held_out["coords"][0]
    grid_shape = tuple(datamodule.grid_shape)
    figures = {}
    one_d = coords.shape[-1] == 1
    columns = 1 if one_d else 4
    figure, axes = plt.subplots(count, columns, figsize=(8 if one_d else 8, 2.2 * count), squeeze=False)
    for i in range(count):
        truth, mask = held_out["values"][i], held_out["mask"][i]
        if one_d:
            axis = axes[i, 0]
            if conditional is not None and i < conditional.shape[1]:
                samples = conditional[:, i, :, 0]
                low = torch.quantile(samples, (1 - evaluation.band) / 2, dim=0)
                high = torch.quantile(samples, (1 + evaluation.band) / 2, dim=0)
                axis.fill_between(coords[:, 0].numpy(), low.numpy(), high.numpy(), color="tab:orange", alpha=0.25,
                                  label=f"{evaluation.band:.0%} band of {samples.shape[0]} conditional samples")
                for sample in samples[:3]:
                    axis.plot(coords[:, 0].numpy(), sample.numpy(), color="tab:orange", linewidth=0.6)
            _draw(axis, coords, truth, grid_shape, color="black", linewidth=1.2, label="truth")
            _draw(axis, coords, reconstruction[i], grid_shape, color="tab:blue", linestyle="--",
                  label="reconstruction")
            axis.scatter(coords[mask, 0].numpy(), truth[mask, 0].numpy(), s=10, color="tab:red", zorder=3,
                         label=f"observed ({int(mask.sum())} points)")
            if i == 0:
                axis.legend(fontsize=6, loc="upper right")
        else:
            observed = torch.where(mask[:, None], truth, torch.full_like(truth, -1.0))
            panels = [truth, observed, reconstruction[i]]
            if conditional is not None and i < conditional.shape[1]:
                panels.append(conditional[0, i])
            for j, panel in enumerate(panels):
                _draw(axes[i, j], coords, panel, grid_shape)
            for j, title in enumerate(["truth", "observed", "reconstruction", "conditional sample"][:len(panels)]):
                axes[0, j].set_title(title, fontsize=8)
    figure.suptitle("held-out fields")
    figures["reconstruction"] = figure

    if module.model.condition_dropout > 0:
        figure, axes = plt.subplots(count, len(evaluation.resolutions) if not one_d else 1,
                                    figsize=(8, 2.2 * count), squeeze=False)
        for k, resolution in enumerate(evaluation.resolutions):
            grid, samples = module.generate(count, resolution=resolution, sampler=sampler, seed=evaluation.seed)
            for i in range(count):
                axis = axes[i, 0 if one_d else k]
                if one_d:
                    axis.plot(grid[:, 0].numpy(), samples[i, :, 0].numpy(), marker="." if len(grid) <= 64 else None,
                              markersize=3, linewidth=0.8, label=f"{len(grid)} points")
                    if i == 0:
                        axis.legend(fontsize=6, loc="upper right")
                else:
                    _draw(axis, grid, samples[i], resolution if not isinstance(resolution, int)
                          else (resolution,) * 2)
        figure.suptitle("unconditional samples, one latent each, decoded at several resolutions")
        figures["resolutions"] = figure
    return figures


def field_report(metrics: dict[str, Any], title: str) -> str:
    """report.md: the scalar metrics and the figures."""
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    for key in sorted(metrics):
        value = metrics[key]
        if isinstance(value, float):
            lines.append(f"| {key} | {value:.6g} |")
        elif isinstance(value, int) and not isinstance(value, bool):
            lines.append(f"| {key} | {value} |")
    if metrics.get("warnings"):
        lines += ["", "Notes:", *(f"- {note}" for note in metrics["warnings"])]
    for name, path in metrics.get("figures", {}).items():
        lines += ["", f"## {name}", "", f"![{name}]({path})"]
    return "\n".join(lines) + "\n"


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
