"""Evaluation of generated images against the held-out split, shared by ``sd-eval`` and ``sd-train``:
FID/KID with its real-data floor, the metric battery, runtime, and the report (report.md, figures/*.png).

``timed_generate`` measures sampling; ``validation_loss_by_time`` is the per-timestep held-out loss of the
EMA model; ``evaluate_images`` computes everything and writes the report; callers record metrics.json.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from spectral_diffusion.utils.random import sample_generators
from spectral_diffusion.utils.validation import ConfigError

log = logging.getLogger(__name__)

SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
FIGURES_DIR = "figures"

# One-line definitions for report.md; the first pattern that matches a key wins ({ext}: extractor, {n}: count).
RUN_DEFINITIONS: tuple[tuple[str, str], ...] = (
    (r"fid_floor_(\w+)@(\d+)", "FID between {n} training and {n} held-out real images: a perfect model's score"),
    (r"kid_std_floor_(\w+)@(\d+)", "std of the floor KID over random subsets"),
    (r"kid_floor_(\w+)@(\d+)", "KID between {n} training and {n} held-out real images ({ext} features)"),
    (r"fid_(\w+)@(\d+)", "Fréchet distance (Heusel et al. 2017) of {ext} features, {n} generated vs held-out images"),
    (r"kid_std_(\w+)@(\d+)", "std of KID over random subsets"),
    (r"kid_(\w+)@(\d+)", "kernel inception distance (Bińkowski et al. 2018) of {ext} features, {n} generated"),
    (r"(\w+)_accuracy", "held-out accuracy of the {ext} feature network"),
    (r"objective", "the value returned to the caller (optimized_metric)"),
    (r"global_step", "optimizer steps trained"),
    (r"train_seconds", "wall-clock seconds of Trainer.fit"),
    (r"train_images_per_second", "training images per second"),
    (r"train_loss", "training loss at the last logged step"),
    (r"val_loss", "held-out loss of the EMA model (uniform t, fixed seeds)"),
    (r"num_parameters", "trainable parameters of the backbone"),
    (r"sample_seconds", "wall-clock seconds to generate all samples"),
    (r"sample_seconds_per_image_per_nfe", "sampling seconds per image per network evaluation"),
    (r"sample_seconds_per_image", "sampling seconds per image"),
    (r"sampler_nfe", "network evaluations per sampling trajectory (NFE)"),
    (r"peak_memory_mb", "peak memory (MiB): CUDA memory allocated while sampling, on CPU the process's peak RSS"),
    (r"num_samples", "generated images evaluated"),
)


# --- input checks --------------------------------------------------------------------------------
def check_one_source(samples: Any, ckpt_path: Any) -> None:
    """``sd-eval`` evaluates either existing samples or a checkpoint it samples from, never both."""
    if (samples is None) == (ckpt_path is None):
        raise ConfigError(
            "give exactly one of samples=<.npz or image folder> and ckpt_path=<checkpoint to sample from>; "
            f"got samples={samples!r}, ckpt_path={ckpt_path!r}"
        )


def check_samples_path(path: str | Path) -> Path:
    """``samples`` must name an existing .npz file or a folder; raises ``ConfigError`` otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".npz":
        return path
    state = "does not exist" if not path.exists() else "is neither a .npz file nor a folder of images"
    raise ConfigError(f"samples={str(path)!r} {state}; give a .npz written by sd-train/sd-sample or an image folder")


def load_samples(path: str | Path, channels: int) -> Tensor:
    """Float images (N, C, H, W) in [-1, 1] from a .npz (key ``images``) or every image file in a folder.

    Folder images are read at their own size (never resized, so a wrong size is reported, not hidden),
    as grey when ``channels`` is 1, else RGB; all must share one size.
    """
    path = check_samples_path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            if "images" not in data:
                raise ConfigError(f"samples={str(path)!r} has no 'images' array (keys: {sorted(data.files)})")
            images = torch.from_numpy(np.asarray(data["images"], dtype=np.float32))
        if images.ndim != 4:
            raise ConfigError(f"samples={str(path)!r}: 'images' must be (N, C, H, W), got {tuple(images.shape)}")
        if images.numel() and (images.min() < -1 - 1e-4 or images.max() > 1 + 1e-4):
            raise ConfigError(f"samples={str(path)!r}: images must lie in [-1, 1], got "
                              f"[{images.min().item():.3g}, {images.max().item():.3g}]")
        return images.clamp(-1, 1)
    from PIL import Image

    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)
    if not files:
        raise ConfigError(f"samples={str(path)!r} holds no image files ({', '.join(SAMPLE_SUFFIXES)})")
    arrays = []
    for file in files:
        with Image.open(file) as image:
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
        arrays.append(pixels.reshape(pixels.shape[0], pixels.shape[1], -1).transpose(2, 0, 1))
    sizes = sorted({a.shape for a in arrays})
    if len(sizes) > 1:
        raise ConfigError(f"samples={str(path)!r} mixes image sizes {sizes}; all samples must have one size")
    return torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0


def check_sample_shape(images: Tensor, image_shape: tuple[int, ...], key: str = "samples") -> None:
    """Generated images must have the (C, H, W) of the data they are compared with."""
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ConfigError(
            f"{key} are images of shape {tuple(images.shape[1:])} but data gives {tuple(image_shape)}; "
            "choose the data option (and data.source.image_size/channels) the samples were generated for"
        )
    if len(images) < 2:
        raise ConfigError(f"{key} holds {len(images)} image(s); FID/KID need at least 2")


def validate_evaluation_options(evaluation: DictConfig, image_shape: tuple[int, int, int] | None = None) -> None:
    """Checks of the keys this module reads from the ``evaluation`` node (the pipeline checks the rest);
    with ``image_shape`` also the battery options that depend on the image size."""
    if not isinstance(evaluation.get("battery"), bool):
        raise ConfigError(f"evaluation.battery={evaluation.get('battery')!r} is invalid; it must be true or false")
    if evaluation.battery:
        battery_config(evaluation.get("battery_options"), "evaluation.battery_options", image_shape)
    bins = evaluation.get("timestep_bins")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 0:
        raise ConfigError(f"evaluation.timestep_bins={bins!r} is invalid; it must be an integer >= 0 (0: off)")


def battery_config(options, key: str, image_shape: tuple[int, int, int] | None = None):
    """``metrics.battery.BatteryConfig`` from the config node ``key``, checked by the battery itself (and for
    ``image_shape`` when given); its ConfigError is re-raised naming ``key``."""
    from spectral_diffusion.metrics.battery import BatteryConfig

    if isinstance(options, DictConfig):
        options = OmegaConf.to_container(options, resolve=True)
    try:
        config = BatteryConfig.from_config(options)
        if image_shape is not None:
            config.build_metrics(tuple(image_shape))
    except ConfigError as error:
        raise ConfigError(name_battery_key(str(error), key)) from None
    return config


def name_battery_key(text: str, key: str) -> str:
    """The battery names its options ``battery.<option>``; say where they live in this config instead."""
    return re.sub(r"^battery\b(?!\.)", key, re.sub(r"\bbattery\.", f"{key}.", text))


@functools.cache
def battery_definitions() -> tuple[tuple[str, str], ...]:
    """(regex, definition) of every key the metric battery reports, from its module docstring."""
    from spectral_diffusion.metrics import battery

    return tuple(docstring_definitions(battery.__doc__ or ""))


def is_battery_metric(name: str) -> bool:
    return any(re.fullmatch(pattern, name) for pattern, _ in battery_definitions())


def metric_shorthands(extractor_name: str, num_samples: int) -> dict[str, str]:
    """What ``optimized_metric=fid|kid`` means for this many generated images."""
    from spectral_diffusion.metrics.quality import metric_key

    return {"fid": metric_key("fid", extractor_name, num_samples), "kid": metric_key("kid", extractor_name, num_samples)}


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


# --- sampling with runtime --------------------------------------------------------------------------
def timed_generate(module, num_samples: int, *, sampler=None, seed: int = 0, batch_size: int = 256,
                   use_ema: bool = True, progress=None) -> tuple[Tensor, dict[str, float]]:
    """``module.generate`` with its runtime: seconds per image and per network evaluation, NFE, parameters,
    peak memory (CUDA: allocated while sampling; CPU: the process's peak resident set size)."""
    from spectral_diffusion.metrics.battery import peak_memory_mb

    device = module.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    evaluations_before = module.network_evaluations
    started = time.perf_counter()
    samples = module.generate(num_samples, sampler=sampler, seed=seed, batch_size=batch_size, use_ema=use_ema,
                              progress=progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    info = getattr(module, "last_sampling_info", None) or {}
    if "nfe" in info:  # what the sampler reported (a mean over batches for adaptive solvers)
        nfe = int(info["nfe"]) if float(info["nfe"]).is_integer() else float(info["nfe"])
    else:  # network calls per trajectory: every batch runs one trajectory
        batches = max(1, math.ceil(num_samples / batch_size))
        nfe = (module.network_evaluations - evaluations_before) // batches
    runtime = {
        "sample_seconds": seconds,
        "sample_seconds_per_image": seconds / max(1, len(samples)),
        "sampler_nfe": nfe,
        "sample_seconds_per_image_per_nfe": seconds / max(1, len(samples)) / max(1, nfe),
        "num_parameters": module.num_parameters(),
        "peak_memory_mb": peak_memory_mb(device),
    }
    return samples, runtime


# --- per-timestep validation loss --------------------------------------------------------------------
def timestep_grid(process, bins: int) -> Tensor:
    """The centres of ``bins`` equal bins of (0, 1]; on a discrete schedule snapped to its grid i/T, i >= 1."""
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    timesteps = getattr(getattr(process, "schedule", None), "timesteps", None)
    if getattr(getattr(process, "schedule", None), "discrete", False) and timesteps:
        centres = (centres * timesteps).round().clamp(min=1) / timesteps
    return centres.float()


@torch.no_grad()
def validation_loss_by_time(module, images: Tensor, *, bins: int = 10, seed: int = 0,
                            batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Held-out loss of the EMA model at fixed times: (t_k, mean loss at t_k) for the ``bins`` bin centres.

    The objective of training (the module's loss, prediction type and self-conditioning) with t fixed
    to t_k for every image; image i's noise comes from generator ``seed + i`` (the same ε at every t_k
    and every call), so curves of successive checkpoints differ only by the weights.
    """
    process = module.process
    times = timestep_grid(process, bins)
    totals = torch.zeros(bins, dtype=torch.float64)
    was_training = module.training
    module.eval()
    device = module.device
    for start in range(0, len(images), batch_size):
        x0 = images[start : start + batch_size].to(device, torch.float32)
        count = len(x0)
        eps = process.noise(x0.shape, sample_generators(seed, start, count), device=device, dtype=x0.dtype)
        for k, time_k in enumerate(times.tolist()):
            t = torch.full((count,), time_k, device=device)
            losses = module.per_sample_loss(x0, t=t, eps=eps, use_ema=True)
            totals[k] += losses.double().sum().item()
    module.train(was_training)
    return times, totals / max(1, len(images))


def validation_loss_figure(times: Tensor, losses: Tensor) -> Figure:
    figure = Figure(figsize=(5, 3.2))
    axes = figure.add_subplot()
    axes.plot(times.numpy(), losses.numpy(), marker="o")
    if bool((losses > 0).all()):
        axes.set_yscale("log")
    axes.set_xlabel("t (bin centre)")
    axes.set_ylabel("held-out loss (EMA)")
    axes.set_title("validation loss per timestep")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


# --- the shared evaluation -------------------------------------------------------------------------------
def evaluate_images(
    fake: Tensor,
    datamodule,
    extractor,
    cfg: DictConfig,
    out_dir: str | Path,
    *,
    module=None,
    metrics: Mapping[str, Any] | None = None,
    objective_name: str | None = None,
    log_figure: Callable[[str, Figure], None] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Metrics of ``fake`` against ``datamodule.val_images``; writes report.md and figures/*.png into ``out_dir``.

    ``metrics`` (training, runtime) are kept and come first; then FID/KID and their real floor with
    ``extractor``, the metric battery (``cfg.evaluation.battery``), and with a ``module`` the per-timestep
    validation loss. Returns the metrics with ``"skipped": {name: reason}`` and ``objective`` set from
    ``objective_name`` (a ConfigError lists the keys when it names none). ``log_figure(name, figure)`` also
    receives every figure (TensorBoard).
    """
    from spectral_diffusion.metrics.quality import real_floor, sample_quality

    evaluation = cfg.evaluation
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    real = datamodule.val_images
    check_sample_shape(fake, tuple(real.shape[1:]))
    batch_size = int(evaluation.batch_size)
    results: dict[str, Any] = dict(metrics or {})
    skipped: dict[str, str] = {}

    figures: dict[str, Figure] = {}
    definitions: list[tuple[str, str]] = []
    if evaluation.battery:
        from spectral_diffusion.metrics import battery

        options = battery_config(evaluation.battery_options, "evaluation.battery_options")
        result = battery.evaluate_battery(real, fake, features=extractor, config=options, device=device,
                                          batch_size=batch_size)
        results.update(result.metrics)
        skipped.update({name: name_battery_key(reason, "evaluation.battery_options")
                        for name, reason in result.skipped.items()})
        figures.update(battery.battery_figures(real, fake, result))
        definitions = battery_definitions()
    else:
        skipped["battery"] = "evaluation.battery=false"
    if "sample_grids" not in figures:
        from spectral_diffusion.metrics.figures import sample_grid_figure

        figures["sample_grids"] = sample_grid_figure(real, fake, int(evaluation.grid_size))
    # After the battery: these keys keep sd-train's meaning (evaluation.kid_subset_size) whatever it reports.
    results.update(sample_quality(real, fake, extractor, batch_size=batch_size,
                                  kid_subset_size=evaluation.kid_subset_size))
    results.update(real_floor(datamodule.train_images, real, extractor, len(real), batch_size=batch_size,
                              kid_subset_size=evaluation.kid_subset_size))
    if getattr(extractor, "accuracy", None) is not None:
        results[f"{extractor.name}_accuracy"] = float(extractor.accuracy)

    bins = int(evaluation.timestep_bins)
    if module is not None and bins > 0:
        times, losses = validation_loss_by_time(module, real, bins=bins, seed=int(evaluation.seed),
                                                batch_size=batch_size)
        figures["val_loss_by_t"] = validation_loss_figure(times, losses)
        results["val_loss_by_t"] = {"t": times.tolist(), "loss": losses.tolist()}
    elif bins > 0:
        skipped["val_loss_by_t"] = "needs a model: pass ckpt_path (samples alone have no network)"

    if objective_name is not None:
        if objective_name not in results:
            available = sorted(k for k, v in results.items() if _is_number(v))
            raise ConfigError(f"optimized_metric={objective_name!r} is not a computed metric; choose one of {available}")
        results["objective"] = results[objective_name]
        results["objective_name"] = objective_name
    results["skipped"] = skipped

    figure_paths = {}
    for name, figure in figures.items():
        figure_paths[name] = save_figure(figure, out_dir / FIGURES_DIR / f"{name}.png")
        if log_figure is not None:
            log_figure(name, figure)
    write_report(out_dir / "report.md", results, figure_paths, cfg, definitions)
    return results


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe(key: str, definitions: Sequence[tuple[str, str]] = ()) -> str:
    """The one-line definition of a metric key for report.md ("" when none is known): this module's
    patterns first (FID/KID keys name the extractor and count), then ``definitions`` (pattern, text)."""
    for pattern, text in RUN_DEFINITIONS:
        match = re.fullmatch(pattern, key)
        if match:
            groups = match.groups()
            return text.format(ext=groups[0] if groups else "", n=groups[1] if len(groups) > 1 else "")
    for pattern, text in definitions:
        if re.fullmatch(pattern, key):
            return text
    return ""


def docstring_definitions(docstring: str) -> list[tuple[str, str]]:
    """(regex, text) pairs from a metric module docstring written as ``  <key>[, <key>]   <text>`` entries
    (two-space indent, continuation lines indented deeper); ``{a,b}`` is an alternative, ``<x>`` and ``N``
    any name or count. The battery documents its keys this way once, so the report never repeats them."""
    entries: list[list[str]] = []
    for line in docstring.splitlines():
        entry = re.match(r"^  (\S.*?)\s{2,}(\S.*)$", line)
        if entry:
            entries.append([entry.group(1), entry.group(2)])
        elif entries and re.match(r"^\s{3,}\S", line):
            entries[-1][1] += " " + line.strip()
        else:
            entries.append(["", ""])  # a header or blank line ends the entry
    definitions = []
    for keys, text in entries:
        for key in re.split(r",\s*(?![^{]*})", keys) if keys else []:
            pattern = re.escape(key.strip())
            pattern = re.sub(r"\\{([^}]*)\\}", lambda m: "(?:" + m.group(1).replace(",", "|") + ")", pattern)
            pattern = re.sub(r"<[^>]*>", r"\\w+", pattern).replace("@N", r"@\d+")
            definitions.append((pattern, text))
    return definitions


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (definitions write |f| for a magnitude)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_report(path: Path, metrics: Mapping[str, Any], figures: Mapping[str, Path], cfg: DictConfig,
                 definitions: Sequence[tuple[str, str]] = ()) -> Path:
    """report.md: every metric with its definition, the skipped ones with reasons, figures, config summary."""
    lines = ["# Evaluation report", ""]
    if "objective" in metrics:
        lines += [f"**{metrics['objective_name']} = {_format(metrics['objective'])}** (optimized_metric)", ""]
    lines += ["## Metrics", "", "| metric | value | definition |", "|---|---|---|"]
    for key, value in metrics.items():
        if key in ("skipped", "objective", "objective_name") or not _is_number(value):
            continue
        lines.append(f"| `{key}` | {_format(value)} | {_cell(describe(key, definitions))} |")
    skipped = metrics.get("skipped") or {}
    if skipped:
        lines += ["", "## Skipped", "", "| metric | reason |", "|---|---|"]
        lines += [f"| `{name}` | {_cell(reason)} |" for name, reason in skipped.items()]
    if figures:
        lines += ["", "## Figures", ""]
        for name, figure_path in figures.items():
            relative = figure_path.relative_to(path.parent).as_posix()
            lines += [f"### {name}", "", f"![{name}]({relative})", ""]
    lines += ["## Configuration", "", "```yaml", _config_summary(cfg).rstrip(), "```", ""]
    path.write_text("\n".join(lines))
    return path


def _config_summary(cfg: DictConfig) -> str:
    """The resolved config without Hydra's own node (paths are kept: they say where the run lives)."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except (OmegaConfBaseException, ValueError):  # an interpolation that needs a running Hydra app (${hydra:...}) outside one
        container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    return OmegaConf.to_yaml(OmegaConf.create(container))
