"""Which metric tells good models apart? Separation of adjacent checkpoints of one default run at 95 % (issue 15).

    python benchmarks/resolving_power.py --out bench-resolving                     # default run, 1k…6k steps, N = 1000
    python benchmarks/resolving_power.py --out bench-resolving --num-samples 1000 2000 --compare-tiny
    python benchmarks/resolving_power.py --out /tmp/r --milestones 10 20 --num-samples 64 -- debug=default

1. Trains the default config once (``sd-train``'s pipeline, any extra Hydra overrides after ``--``) to the last
   milestone, keeping a checkpoint at every milestone step (default 1k, 2k, 3k, 4k, 6k: the default run's 3,000
   and 6,000 included). With ``--compare-tiny`` it also trains ``model=unet_tiny`` the same way.
2. Evaluates every checkpoint as ``sd-eval ckpt_path=...`` does (the run's sampler, EMA weights, the same sample
   seeds for every checkpoint) with ``--num-samples`` generated images, the ``features`` battery group (FID, KID,
   precision, recall), FID∞, recognisability, each with its bootstrap interval (``evaluation.bootstrap``).
3. For every metric with an interval (``<key>_ci_low`` / ``<key>_ci_high`` in metrics.json) and every pair of
   adjacent checkpoints (and unet_tiny against unet at each milestone): the difference Δ, the combined
   half-width h = √(h₁² + h₂²) of the two independent intervals (each half-width taken on the side facing the
   other value), "separated" when |Δ| > h, and the samples needed to separate the pair,
   N · (h / |Δ|)² (intervals shrink as 1/√N; FID's bias also moves with N, so treat it as an estimate).

Independent intervals are conservative: both checkpoints are evaluated with the same sample seeds, so their
errors are positively correlated and the paired difference is better determined than h says.
Writes ``resolving_power.json`` and ``resolving_power.md`` (one table per N) into ``--out`` and prints the metric
that separates the most pairs (ties: fewest samples needed for the 3k-6k pair), the candidate for the default
``optimized_metric``. Resumable: a checkpoint already evaluated at an N (its metrics.json exists) is not redone.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.pipeline import evaluate, train

INTERVAL = re.compile(r"(.+)_ci_low$")


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name=name, overrides=overrides)


def train_config(out: Path, label: str, milestones: list[int], overrides: list[str]):
    """The training run's config: the default (plus ``overrides``) to the last milestone, a checkpoint at each."""
    run_dir = out / "train" / label
    cfg = compose_config("train", [
        f"trainer.max_steps={max(milestones)}", "~callbacks.sample_grid", "~callbacks.spectral_eval",
        "evaluation.num_samples=100", "evaluation.battery=false", "evaluation.timestep_bins=0",
        f"callbacks.model_checkpoint.dirpath={run_dir / 'milestones'}",
        "+callbacks.model_checkpoint.filename='step_{step:06d}'",
        "+callbacks.model_checkpoint.auto_insert_metric_name=false", "callbacks.model_checkpoint.save_top_k=-1",
        f"callbacks.model_checkpoint.every_n_train_steps={math.gcd(*milestones)}",
        *overrides,
    ])
    with open_dict(cfg):
        cfg.paths.root_dir = str(out)
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.summary_csv = str(out / "summary.csv")
    return cfg


def train_with_milestones(cfg, milestones: list[int]) -> dict[int, Path]:
    """Train once (unless every milestone checkpoint exists); {step: checkpoint}."""
    folder = Path(cfg.callbacks.model_checkpoint.dirpath)
    wanted = {step: folder / f"step_{step:06d}.ckpt" for step in milestones}
    if not all(path.is_file() for path in wanted.values()):
        train(cfg)
    missing = [str(path) for path in wanted.values() if not path.is_file()]
    if missing:
        raise SystemExit(f"training finished without the milestone checkpoints {missing}")
    return wanted


def evaluate_checkpoint(out: Path, label: str, step: int, checkpoint: Path, num_samples: int, train_cfg) -> dict:
    """``sd-eval ckpt_path=checkpoint`` on the training run's data, features and evaluation settings."""
    run_dir = out / "eval" / f"n{num_samples}" / f"{label}_{step:06d}"
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        return json.loads(metrics_path.read_text())
    cfg = compose_config("eval", [f"ckpt_path={checkpoint}"])
    with open_dict(cfg):
        cfg.data, cfg.features, cfg.evaluation = train_cfg.data, train_cfg.features, train_cfg.evaluation.copy()
        cfg.evaluation.num_samples = num_samples
        cfg.evaluation.timestep_bins = 0
        cfg.evaluation.battery = True
        cfg.evaluation.battery_options.groups = ["features"]
        cfg.paths.root_dir = str(out)
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.summary_csv = str(out / "summary.csv")
    evaluate(cfg)
    return json.loads(metrics_path.read_text())


def interval_metrics(metrics: dict) -> dict[str, tuple[float, float, float]]:
    """{key: (value, low, high)} of every metric of the generated images with a confidence interval (the
    real-vs-real floors and held-out references are the same for every checkpoint and are left out)."""
    found = {}
    for key in metrics:
        match = INTERVAL.match(key)
        base = match.group(1) if match else None
        if base and ("_floor" in base or "_real_" in base):
            continue
        if base and base in metrics and f"{base}_ci_high" in metrics:
            values = (metrics[base], metrics[key], metrics[f"{base}_ci_high"])
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                found[base] = tuple(float(v) for v in values)
    return found


def separation(first: tuple[float, float, float], second: tuple[float, float, float], num_samples: int) -> dict:
    """Δ = second − first, the combined half-width facing each other, separated or not, the N needed."""
    (a, a_low, a_high), (b, b_low, b_high) = first, second
    delta = b - a
    half_a = (a_high - a) if delta > 0 else (a - a_low)
    half_b = (b - b_low) if delta > 0 else (b_high - b)
    combined = math.hypot(half_a, half_b)
    needed = math.inf if delta == 0 else num_samples * (combined / abs(delta)) ** 2
    return {"delta": delta, "half_width": combined, "separated": abs(delta) > combined, "samples_needed": needed}


def comparisons(evaluations: dict[str, dict[int, dict]], milestones: list[int]) -> list[tuple[str, str, int, str, int]]:
    """(name, label a, step a, label b, step b): adjacent unet checkpoints, then unet_tiny against unet."""
    pairs = [(f"unet {a} → {b}", "unet", a, "unet", b) for a, b in zip(milestones, milestones[1:])]
    if "unet_tiny" in evaluations:
        pairs += [(f"unet_tiny → unet @ {step}", "unet_tiny", step, "unet", step) for step in milestones]
    return pairs


def table(rows: list[dict], pairs: list[tuple], num_samples: int) -> str:
    keys = sorted({row["metric"] for row in rows})
    header = "| metric | " + " | ".join(name for name, *_ in pairs) + " | pairs separated |"
    lines = [f"### N = {num_samples} generated images\n", header, "|---|" + "---|" * (len(pairs) + 1)]
    for key in keys:
        cells, count = [], 0
        for name, *_ in pairs:
            row = next((r for r in rows if r["metric"] == key and r["pair"] == name), None)
            if row is None:
                cells.append("n/a")
                continue
            count += row["separated"]
            mark = "**yes**" if row["separated"] else "no"
            needed = "∞" if math.isinf(row["samples_needed"]) else f"{row['samples_needed']:,.0f}"
            cells.append(f"{row['delta']:+.3g} ± {row['half_width']:.2g}: {mark} (N≈{needed})")
        lines.append(f"| `{key}` | " + " | ".join(cells) + f" | {count}/{len(pairs)} |")
    return "\n".join(lines) + "\n"


def best_metric(rows: list[dict], pair_name: str) -> str | None:
    """The metric separating the most pairs; ties broken by the fewest samples needed for ``pair_name``."""
    scores = {}
    for key in {row["metric"] for row in rows}:
        mine = [row for row in rows if row["metric"] == key]
        target = next((row["samples_needed"] for row in mine if row["pair"] == pair_name), math.inf)
        scores[key] = (-sum(row["separated"] for row in mine), target)
    return min(scores, key=scores.get) if scores else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--milestones", type=int, nargs="+", default=[1000, 2000, 3000, 4000, 6000])
    parser.add_argument("--num-samples", type=int, nargs="+", default=[1000])
    parser.add_argument("--compare-tiny", action="store_true", help="also train model=unet_tiny and compare")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the training runs (after --)")
    args = parser.parse_args()
    milestones = sorted(set(args.milestones))
    if len(milestones) < 2 or milestones[0] < 1:
        raise SystemExit(f"--milestones={args.milestones}: give at least two positive step counts")
    if min(args.num_samples) < 2:
        raise SystemExit(f"--num-samples={args.num_samples}: each must be >= 2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = {"unet": []}
    if args.compare_tiny:
        labels["unet_tiny"] = ["model=unet_tiny"]
    configs = {label: train_config(out, label, milestones, [*extra, *args.overrides]) for label, extra in labels.items()}
    checkpoints = {label: train_with_milestones(cfg, milestones) for label, cfg in configs.items()}
    report, results = ["# Resolving power of the evaluation's metrics\n"], {}
    pair_of_interest = f"unet {milestones[-3] if len(milestones) >= 3 else milestones[0]} → {milestones[-1]}"
    for num_samples in args.num_samples:
        evaluations = {label: {step: evaluate_checkpoint(out, label, step, path, num_samples, configs[label])
                               for step, path in paths.items()} for label, paths in checkpoints.items()}
        pairs = comparisons(evaluations, milestones)
        rows = []
        for name, label_a, step_a, label_b, step_b in pairs:
            first = interval_metrics(evaluations[label_a][step_a])
            second = interval_metrics(evaluations[label_b][step_b])
            for key in sorted(first.keys() & second.keys()):
                rows.append({"metric": key, "pair": name, **separation(first[key], second[key], num_samples)})
        best = best_metric(rows, pair_of_interest)
        results[str(num_samples)] = {"rows": rows, "best": best}
        report.append(table(rows, pairs, num_samples))
        report.append(f"Best-resolving metric at N = {num_samples}: `{best}`.\n")
        print(report[-2] + report[-1], flush=True)
    (out / "resolving_power.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "resolving_power.md").write_text("\n".join(report))


if __name__ == "__main__":
    sys.exit(main())
