"""Learning-rate schedules as plain functions of an optimizer (``_partial_`` nodes in ``conf/scheduler``)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from spectral_diffusion.utils.validation import ConfigError, check_int, check_range, is_int


def warmup_constant(optimizer: Optimizer, warmup_steps: int = 200) -> LambdaLR:
    """lr rises linearly from lr/warmup_steps to lr over ``warmup_steps`` steps, then stays."""
    warmup = check_int("scheduler.warmup_steps", warmup_steps, 0)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)


def warmup_cosine(optimizer: Optimizer, warmup_steps: int = 200, total_steps: int = 10_000,
                  final_lr_fraction: float = 0.05) -> LambdaLR:
    """Linear warm-up, then half a cosine from lr down to ``final_lr_fraction``·lr at ``total_steps``
    (Loshchilov & Hutter 2017, SGDR without restarts)."""
    warmup = check_int("scheduler.warmup_steps", warmup_steps, 0)
    if not is_int(total_steps) or total_steps <= warmup:
        raise ConfigError(
            f"scheduler.total_steps={total_steps!r} is invalid; it must be an integer > "
            f"scheduler.warmup_steps={warmup} (it follows trainer.max_steps by default)"
        )
    final = float(check_range("scheduler.final_lr_fraction", final_lr_fraction, 0.0, 1.0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / (total_steps - warmup))
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
