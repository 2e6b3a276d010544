"""Training throughput (images/s) of each loss option relative to mse, median over timed steps.

    python benchmarks/loss_throughput.py                         # default config, 20 warm-up + 50 timed steps
    python benchmarks/loss_throughput.py --warmup 3 --steps 10 model=unet_tiny

Times full optimisation steps (forward, loss, backward, gradient clipping, optimizer, EMA) of the
LightningModule outside Lightning's loop, as ``train_throughput.py`` does, once per loss variant.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from timing import compose_config, time_plain_steps

VARIANTS = {
    "mse": ["loss=mse"],
    "lp (p=1.5)": ["loss=lp"],
    "frequency_balanced": ["loss=frequency_balanced"],
    "mse + ffl": ["loss=ffl"],
    "mse + ffl (patch 4)": ["loss=ffl", "loss.terms.ffl.patch_factor=4"],
    "mse + phase": ["loss=phase"],
    "lp + ffl, Kendall": ["loss=lp_ffl_kendall"],
    "mse, min-SNR-5": ["loss=mse", "loss.min_snr_gamma=5"],
    "mse, self-cond 0.5": ["loss=mse", "self_conditioning=0.5"],
}


def step_seconds(overrides: list[str], warmup: int, steps: int) -> tuple[list[float], int]:
    times, components = time_plain_steps(compose_config(overrides), warmup, steps)
    return times, components.datamodule.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every variant")
    args = parser.parse_args()
    # mse runs first and last: the first run of a process pays one-off costs, and the baseline is their mean
    names = [*VARIANTS, "mse"]
    rates: dict[str, list[tuple[float, float]]] = {}
    for name in names:
        times, batch_size = step_seconds([*args.overrides, *VARIANTS[name]], args.warmup, args.steps)
        # median: the typical step; mean: what a run gets when steps differ (self-conditioning draws a
        # second forward pass only on some steps)
        rates.setdefault(name, []).append((batch_size / statistics.median(times), batch_size / statistics.mean(times)))
    median_base = statistics.mean(r[0] for r in rates["mse"])
    mean_base = statistics.mean(r[1] for r in rates["mse"])
    print(f"overrides: {' '.join(args.overrides) or '(default)'}; {args.warmup} warm-up + {args.steps} timed steps, "
          f"{torch.get_num_threads()} threads")
    print("| loss | images/s (median step) | relative to mse | images/s (mean step) | relative to mse |")
    print("|---|---:|---:|---:|---:|")
    for name in VARIANTS:
        median_rate = statistics.mean(r[0] for r in rates[name])
        mean_rate = statistics.mean(r[1] for r in rates[name])
        print(f"| {name} | {median_rate:,.0f} | {median_rate / median_base:.2f} | {mean_rate:,.0f} | {mean_rate / mean_base:.2f} |")


if __name__ == "__main__":
    main()
