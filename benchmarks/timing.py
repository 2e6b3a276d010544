"""Shared by the benchmarks: compose a config and time plain optimisation steps of its module.

A plain step is what ``Trainer.fit`` does per batch (forward under the configured autocast, loss,
backward, gradient clipping, optimizer step, EMA update), without Lightning's loop around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from lightning import Callback, Trainer
from omegaconf import DictConfig

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.pipeline import Components, build


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="train", overrides=["paths.root_dir=.", "paths.output_dir=/tmp/sd-bench",
                                                       *overrides])


def plain_step(cfg: DictConfig) -> tuple[Callable[[], None], Components]:
    """One plain optimisation step of the module built from ``cfg`` as a closure (each call draws the next
    batch), and the built components; several closures can be timed interleaved in one process."""
    torch.manual_seed(0)
    components = build(cfg)
    module, datamodule = components.module, components.datamodule
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=str(cfg.trainer.precision).startswith("bf16"))
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    clip = float(cfg.trainer.gradient_clip_val or 1e9)
    batches = iter(datamodule.train_dataloader())
    module.train()

    def step() -> None:
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(datamodule.train_dataloader())
            batch = next(batches)
        with autocast:
            loss = module._common_step(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, clip)
        optimizer.step()
        module.ema.update(module.model)

    return step, components


def time_steps(step: Callable[[], None], warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def time_plain_steps(cfg: DictConfig, warmup: int, steps: int) -> tuple[list[float], Components]:
    """Seconds of each of ``steps`` timed steps after ``warmup`` untimed ones, and the built components."""
    step, components = plain_step(cfg)
    return time_steps(step, warmup, steps), components


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


def time_lightning_steps(cfg: DictConfig, warmup: int, steps: int, accelerator: str = "cpu") -> list[float]:
    """Seconds of each of ``steps`` timed steps inside ``Trainer.fit`` (no logger, checkpoints or validation)
    after ``warmup`` untimed ones, on freshly built components (on the CPU, like ``time_plain_steps``, unless
    ``accelerator`` says otherwise)."""
    torch.manual_seed(0)
    components = build(cfg)
    timer = StepTimer()
    trainer = Trainer(max_steps=warmup + steps + 1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, precision=cfg.trainer.precision,
                      accelerator=accelerator, devices=1, limit_val_batches=0, gradient_clip_val=cfg.trainer.gradient_clip_val,
                      callbacks=[timer])
    trainer.fit(components.module, datamodule=components.datamodule)
    return timer.times[warmup:]
