"""Progressive distillation (Salimans & Ho 2022, "Progressive distillation for fast sampling of diffusion
models", Alg. 2): a student learns to take in one DDIM step what its teacher takes in two; each round halves the
steps and the student becomes the next round's teacher, from ``teacher_steps`` down to ``student_steps``.

Code ↔ paper: ``t``, ``mid``, ``s`` = t, t' = t − 0.5/N, t'' = t − 1/N; ``x_mid``, ``x_s`` = z_{t'}, z_{t''} (two
teacher DDIM steps); ``x_tilde`` = x̃, the clean image that makes one student DDIM step t → t'' land on z_{t''}
(their eq. for x̃, written here per basis coefficient with the process's diagonal (A_t, S_t), so frequency-space
processes work as teachers). The student regresses x̃ through its own prediction type (ε, x0, v or flow) and the
run's loss, so a v-prediction student gets Salimans & Ho's "SNR + 1" weighting of the x0 error.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spectral_diffusion.diffusion.samplers import ddim
from spectral_diffusion.diffusion.schedules import check_steps
from spectral_diffusion.distill.base import DistillationMethod, FrozenDenoiser, check_grid, ddim_step, sampler_node
from spectral_diffusion.losses import LossContext
from spectral_diffusion.utils.validation import ConfigError, check_int


def two_step_target(process, x_t: Tensor, t: Tensor, s: Tensor, x_s: Tensor) -> Tensor:
    """x̃ with DDIM(x_t, x̂0 = x̃, t → s) = x_s: in the basis, x_s = A_s x̃ + S_s (x_t − A_t x̃)/S_t, so
    x̃ = (x_s − (S_s/S_t) x_t) / (A_s − (S_s/S_t) A_t) (Salimans & Ho 2022, Alg. 2). The denominator is positive
    whenever s has a higher SNR than t; s = 0 gives x̃ = x_s."""
    c_t, c_s = process.to_basis(x_t), process.to_basis(x_s)
    a_t, s_t = process.coefficients(t, c_t)
    a_s, s_s = process.coefficients(s, c_t)
    ratio = s_s / s_t
    return process.from_basis((c_s - ratio * c_t) / (a_s - ratio * a_t))


def nested_grid(process, steps: int) -> Tensor:
    """Times 1, 1 − 1/n, …, 1/n, 0 (n = ``steps``), snapped to a discrete schedule's grid i/T: the grid of 2n steps
    contains the grid of n steps, so each round's teacher (the previous student) is queried on the times it was
    trained on. The processes' own discrete grids do not nest (their last noisy time is 1/T at every n)."""
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    schedule = getattr(process, "schedule", None)
    if schedule is not None and getattr(schedule, "discrete", False):
        grid = (grid * schedule.timesteps).round() / schedule.timesteps
    return grid.float()


@torch.no_grad()
def progressive_ddim(denoise_fn, process, x_T: Tensor, steps: int | Tensor, *, generator=None, callback=None,
                     info: dict | None = None) -> Tensor:
    """DDIM (η = 0) on ``nested_grid``, the grid a progressive student is trained on (``samplers.ddim`` itself)."""
    grid = steps if isinstance(steps, Tensor) else nested_grid(process, check_steps(steps))
    return ddim(denoise_fn, process, x_T, grid, generator=generator, callback=callback, info=info)


class ProgressiveDistillation(DistillationMethod):
    """Rounds r = 0 … R − 1 with R = log2(teacher_steps / student_steps): in round r the student learns the
    grid of n_r = teacher_steps / 2^(r+1) steps (``nested_grid``) from a teacher that steps twice per student step,
    on the grid of 2·n_r steps. At the end of a round the student's EMA
    becomes the frozen teacher and the student goes on from it (Alg. 2: η ← θ)."""

    name = "progressive"

    def __init__(self, teacher_steps: int = 64, student_steps: int = 4) -> None:
        super().__init__()
        self.teacher_steps = check_int("method.teacher_steps", teacher_steps, 2)
        self.final_steps = check_int("method.student_steps", student_steps, 1)
        ratio = self.teacher_steps // self.final_steps
        if self.teacher_steps % self.final_steps or ratio < 2 or ratio & (ratio - 1):
            raise ConfigError(
                f"method.student_steps={self.final_steps} must divide method.teacher_steps={self.teacher_steps} with "
                "a power-of-two quotient >= 2 (each round halves the steps), e.g. teacher_steps=64 student_steps=4")
        self.rounds = int(math.log2(ratio))
        self.register_buffer("grid", torch.zeros(0), persistent=False)
        self.register_buffer("middle", torch.zeros(0), persistent=False)

    @property
    def student_sampler(self) -> dict:
        return sampler_node("spectral_diffusion.distill.progressive_ddim", self.final_steps)

    def round_steps(self, round_index: int) -> int:
        return self.teacher_steps // 2 ** (round_index + 1)

    def check_teacher(self, teacher) -> None:
        super().check_teacher(teacher)
        check_grid(teacher.process, "method.teacher_steps", self.teacher_steps)

    def student_config(self, teacher_config: dict) -> dict:
        return {"sampler": self.student_sampler}

    def attach(self, teacher, student, *, seed: int) -> None:
        self.teacher = FrozenDenoiser(teacher.ema.module, teacher.process, teacher.prediction)

    def start_round(self, student, round_index: int, *, fresh: bool = True) -> None:
        if fresh and round_index > 0:  # the previous student (its EMA) is this round's teacher and the student's start
            self.teacher.load_network(student.ema.module)
            student.model.load_state_dict(student.ema.module.state_dict())
            student.ema.num_updates.zero_()
        self.set_grid(student.process, round_index, student.device)

    def set_grid(self, process, round_index: int, device=None) -> None:
        steps = self.round_steps(round_index)
        self.grid = nested_grid(process, steps).to(device)
        self.middle = nested_grid(process, 2 * steps)[1::2].to(device)

    def targets(self, process, x_t: Tensor, t: Tensor, mid: Tensor, s: Tensor) -> Tensor:
        """x̃ from two teacher DDIM steps t → mid → s (per-row times)."""
        x_mid = ddim_step(self.teacher, process, x_t, t, mid)
        x_s = ddim_step(self.teacher, process, x_mid, mid, s)
        return two_step_target(process, x_t, t, s, x_s)

    def loss(self, student, x0: Tensor, step: int) -> Tensor:
        process, prediction = student.process, student.prediction
        index = torch.randint(len(self.grid) - 1, (len(x0),), device=x0.device)
        t, mid, s = self.grid[index], self.middle[index], self.grid[index + 1]
        eps = process.noise(x0.shape, device=x0.device, dtype=x0.dtype)
        x_t = process.q_sample(x0, t, eps)
        with torch.no_grad():
            x_tilde = self.targets(process, x_t, t, mid, s)
            eps_tilde = process.eps_from_x0(x_t, t, x_tilde)
            target = prediction.target(x_tilde, eps_tilde, t, process)
        output = student(x_t, t)
        return student.loss_fn(output, target, LossContext(x0=x_tilde, x_t=x_t, t=t, process=process,
                                                           prediction=prediction))
