"""report.md of an evaluation: every metric with its definition (``names``), the skipped ones with their reasons,
the figures (saved under figures/) and the resolved configuration."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spectral_diffusion.evaluation.names import describe, interval_of

FIGURES_DIR = "figures"


def is_number(value: Any) -> bool:
    """A metric value that report.md and the summary list (int or float, not bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (definitions write |f| for a magnitude)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_report(path: Path, metrics: Mapping[str, Any], figures: Mapping[str, Path],
                 cfg: DictConfig | None) -> Path:
    """report.md: every metric with its confidence interval (``<key>_ci_low``/``<key>_ci_high`` when present) and
    definition, the skipped ones with reasons, figures, config summary."""
    lines = ["# Evaluation report", ""]
    if "objective" in metrics:
        goals = {"minimize": ", smaller is better", "maximize": ", larger is better"}
        goal = goals.get(metrics.get("objective_direction"), "")
        lines += [f"**{metrics['objective_name']} = {_format(metrics['objective'])}** (optimized_metric{goal})", ""]
    lines += ["## Metrics", "", "Intervals: percentile bootstrap over resamples of the generated and real sets "
              "(evaluation.bootstrap, evaluation.level); — where a metric has none.", "",
              "| metric | value | interval | definition |", "|---|---|---|---|"]
    for key, value in metrics.items():
        if key in ("skipped", "warnings", "objective", "objective_name") or not is_number(value) or interval_of(key):
            continue
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        interval = f"[{_format(low)}, {_format(high)}]" if is_number(low) and is_number(high) else "—"
        lines.append(f"| `{key}` | {_format(value)} | {interval} | {_cell(describe(key))} |")
    warnings = metrics.get("warnings") or []
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {warning}" for warning in warnings]
    skipped = metrics.get("skipped") or {}
    if skipped:
        lines += ["", "## Skipped", "", "| metric | reason |", "|---|---|"]
        lines += [f"| `{name}` | {_cell(reason)} |" for name, reason in skipped.items()]
    if figures:
        lines += ["", "## Figures", ""]
        for name, figure_path in figures.items():
            relative = figure_path.relative_to(path.parent).as_posix()
            lines += [f"### {name}", "", f"![{name}]({relative})", ""]
    if cfg is not None:
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
