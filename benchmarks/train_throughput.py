"""Parameter count and training throughput (images/s) of a config, median over timed steps.

    python benchmarks/train_throughput.py                       # the default sd-train config
    python benchmarks/train_throughput.py model=unet_tiny trainer.precision=32-true

Times full optimisation steps (forward, loss, backward, gradient clipping, Adam, EMA) of the
LightningModule on the configured data batch size and precision, after warm-up steps, outside
Lightning's loop, and the same steps inside ``Trainer.fit`` to show the framework's overhead.
"""

from __future__ import annotations

import statistics
import sys

import torch
from timing import compose_config, time_lightning_steps, time_plain_steps


def main(overrides: list[str], warmup: int = 20, steps: int = 100) -> None:
    cfg = compose_config(overrides)
    plain, components = time_plain_steps(cfg, warmup, steps)
    module, batch_size, precision = components.module, components.datamodule.batch_size, cfg.trainer.precision

    framework = time_lightning_steps(cfg, warmup, steps)

    median_plain, median_framework = statistics.median(plain), statistics.median(framework)
    print(f"config overrides      : {' '.join(overrides) or '(default)'}")
    print(f"parameters            : {module.num_parameters():,}")
    print(f"batch size, precision : {batch_size}, {precision}, {torch.get_num_threads()} threads")
    print(f"plain step  median    : {median_plain * 1e3:.1f} ms  -> {batch_size / median_plain:,.0f} images/s")
    print(f"Lightning step median : {median_framework * 1e3:.1f} ms  -> {batch_size / median_framework:,.0f} images/s")
    print(f"framework overhead    : {median_framework / median_plain:.3f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
