"""The project's `unet` against diffusers' `UNet2DModel` at equal parameter count and resolution (issue 16).

    pip install -e ".[bench]"                       # diffusers, only for this benchmark
    python benchmarks/vs_diffusers.py               # 28x28, batch 64, 5 repetitions of 3 warm-up + 10 timed steps

Both networks train in the same plain loop: x_t = √ᾱ x0 + √(1 − ᾱ) ε at a random t (cosine ᾱ), ε-prediction
MSE, backward, Adam; fp32 and bf16 autocast, every (model, precision) timed in turn within each repetition so
load changes on a shared machine hit all alike. Images/s divide the batch by the median step; GFLOP/s divide
the FLOPs of one step (forward and backward, ``torch.utils.flop_counter.FlopCounterMode``) by it. The project's
`unet` is its default config at this resolution with ``--base-channels``; diffusers' model is ``UNet2DModel``
with down/up blocks without attention, one ResNet per block, attention in the middle block (the same layout),
channels (c, 2c, 4c) with the c whose parameter count is closest.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from spectral_diffusion.models import UNet

try:
    from diffusers import UNet2DModel
except ImportError:  # the optional `bench` dependency group
    UNet2DModel = None


class DiffusersDenoiser(nn.Module):
    """``UNet2DModel`` with the project's call signature f(x_t, noise_level) -> prediction."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        return self.model(x, noise_level).sample


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def diffusers_unet(base: int, image_size: int, channels: int) -> nn.Module:
    groups = next(g for g in (8, 4, 2, 1) if base % g == 0)
    return DiffusersDenoiser(UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(base, 2 * base, 4 * base), norm_num_groups=groups,
        down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3))


def equal_parameter_diffusers(parameters: int, image_size: int, channels: int) -> nn.Module:
    candidates = []
    for base in range(8, 129, 2):
        candidates.append(diffusers_unet(base, image_size, channels))
        if parameter_count(candidates[-1]) > parameters:
            break
    return min(candidates, key=lambda model: abs(parameter_count(model) - parameters))


def training_step(model: nn.Module, batch_size: int, image_size: int, channels: int, bf16: bool):
    """A closure doing one plain ε-prediction training step on random images in [-1, 1]."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        x0 = torch.rand(batch_size, channels, image_size, image_size, generator=generator) * 2 - 1
        eps = torch.randn(x0.shape, generator=generator)
        t = torch.rand(batch_size, generator=generator)
        alpha_bar = torch.cos(0.5 * math.pi * (t + 0.008) / 1.008).square()[:, None, None, None]
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            prediction = model(x_t, 1000 * t)
        loss = (prediction.float() - eps).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--base-channels", type=int, default=18, help="of the project's unet (18: 1.11 M at 28x28)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if UNet2DModel is None:
        print("benchmarks/vs_diffusers.py needs diffusers, which is not installed: pip install -e '.[bench]' "
              "(or pip install 'diffusers>=0.30'). Skipped.")
        return

    torch.manual_seed(0)
    groups = next(g for g in (8, 6, 4, 2, 1) if args.base_channels % g == 0)
    project = UNet(in_channels=args.channels, image_size=args.image_size, base_channels=args.base_channels,
                   channel_mults=(1, 2, 4), attention_resolutions=(), groups=groups)
    models = {"project unet": project,
              "diffusers UNet2DModel": equal_parameter_diffusers(parameter_count(project), args.image_size,
                                                                 args.channels)}
    shape = (args.batch_size, args.image_size, args.channels)
    steps = {(name, bf16): training_step(model, *shape, bf16) for name, model in models.items()
             for bf16 in (False, True)}
    flops = {name: step_flops(training_step(model, *shape, False)) for name, model in models.items()}
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in steps}
    for repetition in range(args.repetitions):
        for key, step in steps.items():
            for _ in range(args.warmup):
                step()
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - start)
        print(f"repetition {repetition + 1}/{args.repetitions} done", file=sys.stderr, flush=True)

    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"{args.image_size}x{args.image_size}x{args.channels}, batch {args.batch_size}, {args.repetitions} "
          f"repetitions x ({args.warmup} warm-up + {args.steps} timed steps), interleaved; "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}")
    print("| model | parameters | GFLOP per step | precision | images/s | GFLOP/s | project / diffusers (images/s) |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, model in models.items():
        for bf16 in (False, True):
            rate = args.batch_size / median[(name, bf16)]
            ratio = median[("diffusers UNet2DModel", bf16)] / median[("project unet", bf16)]
            print(f"| {name} | {parameter_count(model):,} | {flops[name] / 1e9:.2f} | {'bf16' if bf16 else 'fp32'} | "
                  f"{rate:,.0f} | {flops[name] / median[(name, bf16)] / 1e9:.1f} | "
                  f"{ratio:.2f}× |")


if __name__ == "__main__":
    main()
