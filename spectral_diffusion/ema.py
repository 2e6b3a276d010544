"""Exponential moving average of a network's weights, used for sampling and evaluation.

The decay warms up as min(decay, (1 + n)/(10 + n)) after n updates (the schedule of the TensorFlow
ExponentialMovingAverage ``num_updates`` option, used by DDPM), so early averages are not dominated
by the random initialisation.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from spectral_diffusion.utils.validation import check_range


class EMA(nn.Module):
    """A frozen copy of ``model`` whose floating-point weights track it; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        self.decay = float(check_range("ema.decay", decay, 0.0, 1.0))
        self.module = copy.deepcopy(model).requires_grad_(False).eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        weight = 1.0 - self.current_decay()
        ema_params = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        params = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(ema_params, params, weight)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def train(self, mode: bool = True) -> EMA:
        # The averaged copy is only ever evaluated: keep dropout off whatever the parent does.
        super().train(mode)
        self.module.eval()
        return self
