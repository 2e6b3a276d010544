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
import time

import torch
from lightning import Callback, Trainer

from spectral_diffusion.pipeline import build
from timing import compose_config, time_plain_steps


class StepTimer(Callback):
    """Wall time between consecutive training-batch ends inside Trainer.fit."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last = None

    def on_train_batch_end(self, *args) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def main(overrides: list[str], warmup: int = 20, steps: int = 100) -> None:
    cfg = compose_config(overrides)
    plain, components = time_plain_steps(cfg, warmup, steps)
    module, batch_size, precision = components.module, components.datamodule.batch_size, cfg.trainer.precision

    timer = StepTimer()
    fresh = build(cfg)
    trainer = Trainer(max_steps=warmup + steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, precision=precision, accelerator="cpu", limit_val_batches=0,
                      gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[timer])
    trainer.fit(fresh.module, datamodule=fresh.datamodule)
    framework = timer.times[warmup:]

    median_plain, median_framework = statistics.median(plain), statistics.median(framework)
    print(f"config overrides      : {' '.join(overrides) or '(default)'}")
    print(f"parameters            : {module.num_parameters():,}")
    print(f"batch size, precision : {batch_size}, {precision}, {torch.get_num_threads()} threads")
    print(f"plain step  median    : {median_plain * 1e3:.1f} ms  -> {batch_size / median_plain:,.0f} images/s")
    print(f"Lightning step median : {median_framework * 1e3:.1f} ms  -> {batch_size / median_framework:,.0f} images/s")
    print(f"framework overhead    : {median_framework / median_plain:.3f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
