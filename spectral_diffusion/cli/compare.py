"""``sd-compare RUN_DIR_OR_GLOB ... [--metric KEY ...] [--level 0.95] [--out DIR]``: runs grouped by their overrides
without the seed, each metric's mean and t interval over seeds, group differences with permutation p-values.
The work is ``spectral_diffusion.evaluation.compare``."""

from __future__ import annotations

import argparse
import sys

from spectral_diffusion.evaluation.compare import compare_runs, comparison_markdown, write_comparison
from spectral_diffusion.utils.validation import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sd-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders, Hydra multirun folders or globs of them")
    parser.add_argument("--metric", action="append", help="compare only this metrics.json key (repeatable)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of the t intervals")
    parser.add_argument("--out", default="comparison", help="folder for comparison.md, .csv and .png")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        comparison = compare_runs(args.runs, metrics=args.metric, level=args.level)
    except ConfigError as error:
        print(f"sd-compare: {error}", file=sys.stderr)
        return 2
    paths = write_comparison(comparison, args.out)
    print(comparison_markdown(comparison))
    print(f"written to {paths['markdown'].parent}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
