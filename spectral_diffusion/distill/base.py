"""What every few-step distillation method shares: a frozen copy of a denoiser, one DDIM step between any two
times, and the method interface the ``DistillationModule`` drives (student config, per-sample loss, rounds).

A method never re-implements the diffusion maths: it reads the teacher's process (its diagonal coefficients
(A_t, S_t) in its basis) and prediction object, so frequency-space teachers (``equalized``, ``banded``) work
unchanged.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from spectral_diffusion.utils.validation import ConfigError


class FrozenDenoiser(nn.Module):
    """``x̂0 = denoiser(x_t, t)`` of a frozen copy of ``network`` read through ``prediction`` and ``process``.

    The copy never trains (no gradients, always in eval mode, whatever the parent module does) and is a
    submodule, so it moves with the LightningModule and is saved in, and restored from, its checkpoints."""

    def __init__(self, network: nn.Module, process, prediction) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).requires_grad_(False).eval()
        self.process = process
        self.prediction = prediction

    def train(self, mode: bool = True) -> FrozenDenoiser:
        super().train(mode)
        self.network.eval()
        return self

    @torch.no_grad()
    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        output = self.network(x_t, self.process.network_time(t)).float()
        return self.prediction.x0_eps(x_t.float(), t, output, self.process)[0]

    def load_network(self, network: nn.Module) -> None:
        """Copy ``network``'s weights into the frozen copy (a new teacher for the next round)."""
        self.network.load_state_dict(network.state_dict())


def ddim_step(denoise_fn, process, x_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """One deterministic DDIM step t → s (Song, Meng & Ermon 2021, eq. 12 with σ = 0), per basis coefficient:
    x_s = A_s x̂0 + S_s ε̂ with x̂0 = denoise_fn(x_t, t) and ε̂ = (x_t − A_t x̂0)/S_t. ``t`` and ``s`` hold one time
    per row; s = 0 gives x̂0 and s = t gives x_t back. The project's ``samplers.ddim`` takes the same step on a
    grid that must end at 0; distillation needs single steps between any two times."""
    x0 = denoise_fn(x_t, t)
    eps = process.eps_from_x0(x_t, t, x0)
    c_x0, c_eps = process.to_basis(x0), process.to_basis(eps)
    a_s, s_s = process.coefficients(s, c_x0)
    return process.from_basis(a_s * c_x0 + s_s * c_eps)


def euler_step(denoise_fn, process, x_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """One Euler step t → s of the probability-flow ODE dx/dt = A' x̂0 + S' ε̂ (Karras et al. 2022, Alg. 1 without
    the correction), per basis coefficient; s = 0 returns x̂0, as ``samplers.euler`` does for its last step (a VP
    path's S' is singular at 0). On the flow path A = 1 − t, S = t it equals ``ddim_step``."""
    x0 = denoise_fn(x_t, t)
    c_t, c_x0 = process.to_basis(x_t), process.to_basis(x0)
    a, s_t = process.coefficients(t, c_t)
    d_a, d_s = process.coefficient_derivatives(t, c_t)
    velocity = d_a.to(c_t.dtype) * c_x0 + d_s.to(c_t.dtype) * (c_t - a * c_x0) / s_t
    step = (s - t).to(c_t.dtype).reshape((-1,) + (1,) * (c_t.ndim - 1))
    stepped = process.from_basis(c_t + step * velocity)
    last = (s == 0).reshape((-1,) + (1,) * (x_t.ndim - 1))
    return torch.where(last, x0, stepped)


ODE_STEPS = {"ddim": ddim_step, "euler": euler_step}


def check_grid(process, key: str, steps: int) -> None:
    """The process can build a grid of ``steps`` times (a discrete schedule of T steps allows at most T), else a
    ConfigError naming ``key``."""
    try:
        process.sampling_times(steps)
    except ConfigError as error:
        raise ConfigError(f"{key}={steps} does not fit the teacher's process: {error}") from None


def sampler_node(function: str, steps: int, **options: Any) -> dict[str, Any]:
    """A ``conf/sampler``-style partial node (guidance scale 1, as every sampler config carries)."""
    return {"_target_": function, "_partial_": True, "steps": int(steps), **options, "guidance_scale": 1.0}


class DistillationMethod(nn.Module, ABC):
    """A few-step distillation method: what student it builds from a teacher, its per-sample loss on a batch of
    training images, and what happens between rounds. An ``nn.Module`` so that the frozen networks it holds
    (teacher, target network) travel and checkpoint with the LightningModule.

    Lifecycle (``distill.run``): construct from ``conf/method`` (every option checked), ``check_teacher`` (options
    that depend on the teacher's process), ``student_config`` (what ``pipeline.build`` instantiates), ``attach``
    (teacher and student built), then ``start_round`` / ``loss`` from the LightningModule during ``Trainer.fit``.
    """

    name: str = ""
    #: how many rounds the training budget trainer.max_steps is split into (round r covers steps
    #: [r·M/R, (r+1)·M/R)); the student is exported at the end of every round
    rounds: int = 1

    def check_teacher(self, teacher) -> None:
        """Reject, with a ConfigError naming the ``method.*`` key, options this teacher cannot serve."""
        if teacher.self_conditioning > 0:
            raise ConfigError(f"teacher_ckpt: the teacher was trained with self_conditioning="
                              f"{teacher.self_conditioning}; "
                              "distillation needs a teacher whose denoiser is a plain function of (x_t, t), so "
                              "distil a checkpoint trained with self_conditioning=0")

    @abstractmethod
    def student_config(self, teacher_config: dict) -> dict:
        """The nodes of the teacher's config the student replaces (``prediction``, ``noise``, ``sampler``)."""

    @abstractmethod
    def attach(self, teacher, student, *, seed: int) -> None:
        """Keep what the method needs of the teacher module (frozen copies) and of the student."""

    @abstractmethod
    def loss(self, student, x0: Tensor, step: int) -> Tensor:
        """The per-sample distillation loss (B,) of ``student`` on a batch of training images at ``step``."""

    def start_round(self, student, round_index: int, *, fresh: bool = True) -> None:
        """Called when training enters round ``round_index`` (``fresh``), and once more with ``fresh=False`` when a
        run resumes inside it (the state dict and ``load_extra_state`` have restored what was saved)."""

    def after_optimizer_step(self, student) -> None:
        """Called after every optimizer step of the student (the consistency target network's EMA)."""

    def round_steps(self, round_index: int) -> int:
        """The student's sampling steps at the end of round ``round_index`` (what its exported checkpoint uses)."""
        return int(self.student_sampler["steps"])

    def student_sampler_at(self, round_index: int) -> dict:
        """The student's sampler node at the end of round ``round_index``."""
        return {**self.student_sampler, "steps": self.round_steps(round_index)}

    def extra_state(self) -> dict[str, Any]:
        """Plain data (tensors) saved in the distillation checkpoint besides the state dict."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` saved (on ``ckpt_path`` resume)."""

    @property
    @abstractmethod
    def student_sampler(self) -> dict:
        """The few-step sampler node the student is evaluated with."""
