"""``sd-taguchi``: re-analyse a finished Taguchi sweep, or print the run table of a design without running it.

``sd-taguchi analyze <sweep dir> [response=KEY] [sn=TYPE] [out=DIR]`` and
``sd-taguchi design <array|auto> key=level,level ... [--interaction A,B] [--replicates N]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spectral_diffusion.cli import report_user_error
from spectral_diffusion.taguchi import DesignError, Factor, choose_array
from spectral_diffusion.taguchi.sweep_folder import (
    ANALYSIS_FILE,
    CONFIRMATION_FILE,
    RESULTS_FILE,
    SWEEP_SN_TYPES,
    JobResult,
    SweepSpec,
    job_folder,
    read_confirmation_csv,
    read_interval,
    read_response,
    read_results_csv,
    write_analysis,
)
from spectral_diffusion.utils.validation import ConfigError

ANALYZE_OPTIONS = ("response", "sn", "out")


def _key_values(items: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise DesignError(f"{item!r}: expected one of {', '.join(f'{k}=...' for k in allowed)}")
        options[key] = value
    return options


def _reread(sweep_dir: Path, results: list[JobResult], response: str) -> list[JobResult]:
    """The same jobs with another key of their metrics.json as the response (failed jobs stay failed)."""
    reread = []
    for r in results:
        if r.status == "failed":
            reread.append(r)
            continue
        folder = job_folder(sweep_dir, r.output_dir)
        status, value, reason = read_response(folder, response)
        reread.append(JobResult(r.job, r.row, r.replicate, r.seed, status, value, r.output_dir, reason,
                                read_interval(folder, response)))
    return reread


def analyze_command(sweep_dir: str | Path, response: str | None = None, sn: str | None = None,
                    out: str | Path | None = None) -> Path:
    """Re-analyse ``sweep_dir``; with the sweep's own response and S/N the outputs are rewritten in
    place (identical to the sweep's), otherwise into ``reanalysis/<response>-<sn>/``. Returns the folder."""
    sweep_dir = Path(sweep_dir)
    spec = SweepSpec.load(sweep_dir)
    if sn is not None and sn not in SWEEP_SN_TYPES:
        raise DesignError(f"sn={sn!r} is not an S/N type; choose one of {list(SWEEP_SN_TYPES)}")
    results = read_results_csv(sweep_dir / RESULTS_FILE)
    settings, confirmation = read_confirmation_csv(sweep_dir / CONFIRMATION_FILE, spec)
    new_response, new_sn = response or spec.response, sn or spec.sn
    if new_response != spec.response:
        results = _reread(sweep_dir, results, new_response)
        confirmation = _reread(sweep_dir, confirmation, new_response)
    same = (new_response, new_sn) == (spec.response, spec.sn)
    if out is None:
        out = sweep_dir if same else sweep_dir / "reanalysis" / f"{new_response}-{new_sn}".replace("/", "_")
    spec = SweepSpec(spec.design, new_response, new_sn, spec.on_failure, spec.overrides, spec.settings)
    write_analysis(out, spec, results, settings, confirmation, sweep_dir=sweep_dir)
    return Path(out)


def design_command(array: str, factor_specs: list[str], interactions: list[str], replicates: int) -> str:
    """The run table of a design as markdown: column assignment, then one line per job with its overrides."""
    factors = []
    for spec in factor_specs:
        key, sep, levels = spec.partition("=")
        if not sep or not key or not levels:
            raise DesignError(f"{spec!r}: a factor is key=level,level,... (e.g. noise=gaussian,equalized)")
        factors.append(Factor(key, levels.split(",")))
    pairs = [tuple(p.split(",")) for p in interactions]
    design = choose_array(factors, pairs, array, replicates)
    names = design.factor_names
    lines = [
        f"{design.array.name}: {design.array.construction}; {design.n_rows} rows × {design.n_replicates} "
        f"replicate(s) = {design.n_jobs} jobs",
        "",
        "| column | holds |",
        "|---|---|",
        *(f"| {number} | {holder} |" for number, holder in design.column_assignment()),
        "",
        "| job | row | seed | " + " | ".join(names) + " | overrides |",
        "|" + "---|" * (len(names) + 4),
    ]
    for run in design.runs():
        overrides = " ".join(f"{n}={run.settings[n]}" for n in names) + f" seed={design.replicate_labels[run.replicate]}"
        lines.append(
            f"| {run.job} | {run.row} | {design.replicate_labels[run.replicate]} | "
            + " | ".join(str(run.settings[n]) for n in names) + f" | {overrides} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sd-taguchi", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser("analyze", help="re-analyse a finished sweep folder")
    analyze.add_argument("sweep_dir")
    analyze.add_argument("options", nargs="*", help="response=KEY sn=TYPE out=DIR")
    design = commands.add_parser("design", help="print the run table of a design without running it")
    design.add_argument("array", help="auto or an array name (L4, L8, L9, L12, L16, L16b, L18, L25, L27)")
    design.add_argument("factors", nargs="+", help="key=level,level,... e.g. noise=gaussian,equalized")
    design.add_argument("--interaction", action="append", default=[], metavar="A,B",
                        help="a pair of factor keys to keep estimable (repeatable)")
    design.add_argument("--replicates", type=int, default=1, help="seeds 0..N-1 per row")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "analyze":
            options = _key_values(args.options, ANALYZE_OPTIONS)
            out = analyze_command(args.sweep_dir, options.get("response"), options.get("sn"), options.get("out"))
            print((out / ANALYSIS_FILE).read_text())
            print(f"written to {out}", file=sys.stderr)
        else:
            print(design_command(args.array, args.factors, args.interaction, args.replicates))
    except (DesignError, ConfigError) as error:
        return report_user_error("sd-taguchi", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
