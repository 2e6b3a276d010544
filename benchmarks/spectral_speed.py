"""Step time of every spectral option against the default `unet` and against a `unet` of equal parameters (issue 16).

    python benchmarks/spectral_speed.py                          # 5 repetitions of 3 warm-up + 10 timed steps
    python benchmarks/spectral_speed.py --repetitions 3 --steps 5 trainer.precision=32-true

Each config is built once; then every repetition times a few plain steps (``timing.plain_step``: forward under
the configured autocast, loss, backward, clipping, optimizer, EMA) of every config in turn, so a load change on
the shared machine hits all configs alike. A config's time is the median over all its timed steps; ratios
divide medians. The equal-parameter `unet` of a model is the default `unet` with the even ``base_channels``
whose parameter count is closest to the model's (``groups``: the largest of 8, 4, 2 dividing it).

Targets: each spectral option alone and the three together ≤ 1.15× the default step; `unet_spectral` (both
complex modes) and `unet_hybrid` ≤ 1.5× the step of their equal-parameter `unet`.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from hydra.utils import instantiate
from timing import compose_config, plain_step, time_steps

OPTION_TARGET, MODEL_TARGET = 1.15, 1.5
OPTIONS = {
    "unet (default)": [],
    "noise=equalized": ["noise=equalized"],
    "loss=frequency_balanced": ["loss=frequency_balanced"],
    "loss=ffl": ["loss=ffl"],
    "model.freq_attention=true": ["model.freq_attention=true"],
    "all three": ["noise=equalized", "loss=frequency_balanced", "model.freq_attention=true"],
}
MODELS = {
    "unet_hybrid": ["model=unet_hybrid"],
    "unet_spectral (complex)": ["model=unet_spectral", "model.complex_mode=complex"],
    "unet_spectral (dual_real)": ["model=unet_spectral", "model.complex_mode=dual_real"],
}


def parameter_count(overrides: list[str]) -> int:
    return sum(p.numel() for p in instantiate(compose_config(overrides).model).parameters())


def equal_parameter_unet(parameters: int, common: list[str]) -> tuple[list[str], int]:
    """Overrides of the default `unet` whose parameter count is closest to ``parameters``, and that count."""
    candidates = []
    for base in range(8, 65, 2):
        groups = next(g for g in (8, 4, 2) if base % g == 0)
        overrides = [*common, f"model.base_channels={base}", f"model.groups={groups}"]
        count = parameter_count(overrides)
        candidates.append((abs(count - parameters), overrides, count))
        if count > parameters:
            break
    _, overrides, count = min(candidates, key=lambda candidate: candidate[0])
    return overrides, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each repetition's timed ones")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per config and repetition")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every config")
    args = parser.parse_args()

    configs = {name: [*args.overrides, *overrides] for name, overrides in {**OPTIONS, **MODELS}.items()}
    reference = {}
    for name in MODELS:
        overrides, count = equal_parameter_unet(parameter_count(configs[name]), args.overrides)
        reference[name] = f"unet ({count / 1e6:.2f} M, {overrides[-2].split('.')[-1]})"
        configs[reference[name]] = overrides
    steps, parameters = {}, {}
    for name, overrides in configs.items():
        steps[name], components = plain_step(compose_config(overrides))
        parameters[name] = components.module.num_parameters()
    times: dict[str, list[float]] = {name: [] for name in configs}
    for repetition in range(args.repetitions):
        for name, step in steps.items():
            times[name] += time_steps(step, args.warmup, args.steps)
        print(f"repetition {repetition + 1}/{args.repetitions} done", flush=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    default = median["unet (default)"]
    print(f"\noverrides: {' '.join(args.overrides) or '(default)'}; {args.repetitions} repetitions x "
          f"({args.warmup} warm-up + {args.steps} timed steps), interleaved; {torch.get_num_threads()} threads")
    print("| config | parameters | step vs default | step vs equal-parameter unet | target | met |")
    print("|---|---:|---:|---:|---:|:---:|")
    for name in configs:
        ratio = median[name] / default
        if name in MODELS:
            versus = median[name] / median[reference[name]]
            print(f"| {name} | {parameters[name]:,} | {ratio:.2f}× | {versus:.2f}× ({reference[name]}) | "
                  f"≤ {MODEL_TARGET}× | {'yes' if versus <= MODEL_TARGET else 'no'} |")
        elif name in OPTIONS and name != "unet (default)":
            print(f"| {name} | {parameters[name]:,} | {ratio:.2f}× | | ≤ {OPTION_TARGET}× | "
                  f"{'yes' if ratio <= OPTION_TARGET else 'no'} |")
        else:
            print(f"| {name} | {parameters[name]:,} | {ratio:.2f}× | | | |")


if __name__ == "__main__":
    main()
