"""A finished Taguchi analysis as a researcher reads it: a markdown report and main-effect and
interaction plots (PNG, drawn with matplotlib's Agg canvas, so no display and no global backend change).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spectral_diffusion.taguchi.results import ResponseTable, TaguchiResult
from spectral_diffusion.taguchi.design import INTERACTION_SIGN, interaction_name
from spectral_diffusion.taguchi.errors import DesignError


def _number(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if abs(value) >= 1e9:
        return f"{value:.4e}"
    # Large sums of squares read best in full (41310.56), small ones with significant digits.
    return f"{value:.2f}" if abs(value) >= 10 ** (digits - 1) else f"{value:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _design_section(result: TaguchiResult) -> str:
    design = result.design
    names = design.factor_names
    header = ["row", *names]
    header += [f"y (rep {label})" for label in design.replicate_labels]
    header += ["mean"] + (["std"] if result.std is not None else []) + ["S/N (dB)"]
    filled = set(result.missing.filled_rows)
    rows = []
    for row in range(design.n_rows):
        settings = design.settings(row)
        n_observed = int(np.isfinite(result.responses[row]).sum())
        cells = [str(row), *(str(settings[n]) for n in names)]
        cells += ["failed" if math.isnan(y) else _number(y) for y in result.responses[row]]
        cells.append(_number(result.mean[row]) + (" (filled)" if n_observed == 0 else ""))
        if result.std is not None:
            cells.append(_number(result.std[row]) + (" (filled)" if n_observed < 2 else ""))
        cells.append(_number(result.sn[row]) + (" (filled)" if row in filled else ""))
        rows.append(cells)
    assignment = _table(
        ["column", "holds"], [(str(number), holder) for number, holder in design.column_assignment()]
    )
    return (
        "## Design\n\n"
        f"{design.array.name}: {design.array.construction}. {design.n_rows} rows × {design.n_replicates} "
        f"replicate(s) = {design.n_jobs} jobs, run row by row. Column numbers are Taguchi's (from 1).\n\n"
        f"{assignment}\n\n{_table(header, rows)}\n"
    )


def _response_section(table: ResponseTable) -> str:
    most_levels = max(len(v) for v in table.level_values.values())
    header = ["factor", *(f"level {i}" for i in range(most_levels)), "delta", "rank"]
    rows = []
    for factor, means in table.level_means.items():
        values = table.level_values[factor]
        cells = [factor]
        cells += [f"{values[i]}: {_number(means[i])}" if i < len(means) else "" for i in range(most_levels)]
        cells += [_number(table.delta[factor]), str(table.rank[factor])]
        rows.append(cells)
    return f"### {table.characteristic}\n\n{_table(header, rows)}\n"


def _anova_section(result: TaguchiResult) -> str:
    anova = result.anova
    header = ["source", "df", "SS", "MS", "F", "p", "SS'", "ρ (%)"]
    rows = []
    for row in anova.rows:
        if row.pooled:
            rows.append([f"{row.term} (pooled)", str(row.df), _number(row.sum_of_squares), "", "", "", "", ""])
        else:
            rows.append([
                row.term, str(row.df), _number(row.sum_of_squares), _number(row.mean_square),
                _number(row.f_value), _number(row.p_value), _number(row.pure_sum_of_squares),
                _number(row.percent_contribution, 3),
            ])
    rows.append([
        "error", str(anova.error_df), _number(anova.error_sum_of_squares), _number(anova.error_mean_square),
        "", "", _number(anova.error_pure_sum_of_squares), _number(anova.error_percent_contribution, 3),
    ])
    rows.append(["total", str(anova.total_df), _number(anova.total_sum_of_squares), "", "", "", "", "100"])
    composition = "; ".join(f"{label}: df {df}, SS {_number(ss)}" for label, df, ss in anova.error_components)
    significant = [r.term for r in anova.rows if not r.pooled and r.p_value < result.alpha]
    below_error = [r.term for r in anova.rows if not r.pooled and r.pure_sum_of_squares < 0]
    caution = (
        f" Negative SS' for {', '.join(below_error)}: mean square below the error variance (F < 1), "
        "indistinguishable from noise; consider pooling."
        if below_error else ""
    )
    on = "one S/N ratio per row" if result.anova_on == "sn" else "every replicate response"
    return (
        f"## Analysis of variance ({result.quantity}, {on})\n\n{_table(header, rows)}\n\n"
        f"Error is made of: {composition or 'nothing (no error degrees of freedom)'}. "
        f"Pooling: {anova.pooling}; pooled: {', '.join(anova.pooled_terms) or 'none'}. "
        "SS' = SS - df·Ve is the pure sum of squares and ρ = SS'/SS_total its percent contribution. "
        f"Significant at α = {result.alpha}: {', '.join(significant) or 'none'}.{caution}\n"
    )


def _optimum_section(result: TaguchiResult) -> str:
    prediction = result.prediction
    used = set(prediction.terms)
    rows = [
        [name, str(value), "yes" if name in used else "no (pooled: choose on cost or convenience)"]
        for name, value in result.best_levels.items()
    ]
    goal = "largest S/N" if result.anova_on == "sn" else (
        "largest response" if result.sn_type == "larger_is_better" else "smallest response"
    )
    confidence = f"{1 - result.alpha:.0%}"
    if math.isnan(prediction.half_width):
        interval = "no confidence interval (no error degrees of freedom)"
    else:
        low, high = prediction.interval
        interval = (
            f"± {_number(prediction.half_width)} ({confidence} confidence: {_number(low)} to {_number(high)}); "
            f"a single confirmation result should fall within ± {_number(prediction.confirmation_half_width(1))}"
        )
    terms = ", ".join(prediction.terms) or "none (grand mean only)"
    return (
        f"## Best levels ({goal})\n\n{_table(['factor', 'best level', 'in the prediction'], rows)}\n\n"
        "## Predicted optimum\n\n"
        f"{result.quantity} at the best levels, from the terms {terms}: **{_number(prediction.value)}** "
        f"{interval}. n_eff = {_number(prediction.n_eff)} ({prediction.note}); error df {prediction.error_df}, "
        f"Ve = {_number(prediction.error_mean_square)}.\n"
    )


def _interaction_section(result: TaguchiResult) -> str:
    if not result.interactions:
        return ""
    parts = ["## Interactions\n"]
    for name, effect in result.interactions.items():
        a, b = effect.pair
        levels_a, levels_b = result.design.factor(a).levels, result.design.factor(b).levels
        cells, what = (effect.cell_sn, "S/N (dB)") if result.anova_on == "sn" else (effect.cell_mean, "Mean")
        rows = [
            [f"{a} = {levels_a[i]}", *(_number(cells[i, j]) for j in range(len(levels_b)))]
            for i in range(len(levels_a))
        ]
        columns = ", ".join(str(c + 1) for c in effect.columns)
        column_means = "; ".join(
            f"column {c + 1}: " + ", ".join(_number(m) for m in means) for c, means in effect.column_level_means.items()
        )
        corner = f"{a} \\ {b}"
        header = [corner, *(f"{b} = {v}" for v in levels_b)]
        parts.append(
            f"### {name} (column {columns})\n\n{what} for each pair of levels:\n\n"
            f"{_table(header, rows)}\n\n"
            f"Level means of the interaction column(s) ({result.quantity}): {column_means}.\n"
        )
    return "\n".join(parts)


def analysis_markdown(result: TaguchiResult) -> str:
    """The full report: design, response tables, ANOVA (pooled terms marked, SS', ρ), best levels,
    predicted optimum ± confidence interval, interactions and the missing-run note."""
    design = result.design
    title = (
        f"# Taguchi analysis: {design.array.name}, {len(design.factors)} factor(s), "
        f"{design.n_replicates} replicate(s)\n\n"
        f"S/N ratio: {result.sn_type}. Analysed quantity: {result.quantity}. "
        f"Missing runs (policy {result.missing.policy}): {result.missing.note}\n"
    )
    tables = "## Response tables\n\n" + "\n".join(_response_section(t) for t in result.response_tables.values())
    sections = [title, _design_section(result), tables, _anova_section(result), _optimum_section(result)]
    interactions = _interaction_section(result)
    if interactions:
        sections.append(interactions)
    return "\n".join(sections)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _short(value: object, width: int = 14) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_main_effects(result: TaguchiResult, path: str | Path) -> Path:
    """Main-effect plots: one column of panels per factor, S/N (top) and mean (bottom) per level,
    with the grand mean dashed."""
    tables = (result.response_tables["sn"], result.response_tables["mean"])
    factors = result.design.factor_names
    figure = Figure(figsize=(2.4 * len(factors) + 1.0, 5.0), layout="constrained")
    axes = figure.subplots(2, len(factors), sharey="row", sharex="col", squeeze=False)
    for row, (table, label) in enumerate(zip(tables, ("S/N (dB)", "mean"))):
        grand = float(np.mean([table.level_means[f].mean() for f in factors]))
        for column, factor in enumerate(factors):
            ax = axes[row, column]
            means = table.level_means[factor]
            ax.plot(range(len(means)), means, marker="o")
            ax.axhline(grand, linestyle="--", linewidth=0.8, color="grey")
            ax.set_xticks(range(len(means)))
            ax.set_xlim(-0.4, len(means) - 0.6)
            if row == 0:
                ax.set_title(factor)
                ax.tick_params(labelbottom=False)  # level names once, under the bottom row
            else:
                ax.set_xticklabels([_short(v) for v in table.level_values[factor]], rotation=20, ha="right")
        axes[row, 0].set_ylabel(label)
    figure.suptitle(f"Main effects ({result.design.array.name}, {result.sn_type})")
    return _save(figure, path)


def plot_interaction(result: TaguchiResult, pair: tuple[str, str] | str, path: str | Path) -> Path:
    """Interaction plot of an assigned pair (``("A", "B")`` or ``"A×B"``): S/N and mean against the
    first factor's levels, one line per level of the second; parallel lines mean no interaction."""
    name = pair if isinstance(pair, str) else interaction_name(*pair)
    if name not in result.interactions and isinstance(pair, Sequence) and not isinstance(pair, str):
        name = interaction_name(pair[1], pair[0])
    if name not in result.interactions:
        raise DesignError(
            f"{name} is not an assigned interaction of this design (assigned: {list(result.interactions) or 'none'}); "
            "an unassigned interaction is confounded with other columns and cannot be plotted honestly"
        )
    effect = result.interactions[name]
    a, b = effect.pair
    levels_a, levels_b = result.design.factor(a).levels, result.design.factor(b).levels
    figure = Figure(figsize=(8.0, 3.6))
    axes = figure.subplots(1, 2)
    for ax, cells, label in zip(axes, (effect.cell_sn, effect.cell_mean), ("S/N (dB)", "mean")):
        for j, level_b in enumerate(levels_b):
            ax.plot(range(len(levels_a)), cells[:, j], marker="o", label=f"{b} = {_short(level_b)}")
        ax.set_xticks(range(len(levels_a)))
        ax.set_xticklabels([_short(v) for v in levels_a])
        ax.set_xlabel(a)
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
    figure.suptitle(f"Interaction {a} {INTERACTION_SIGN} {b}")
    return _save(figure, path)
