"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, "Consistency models", Alg. 2 and Alg. 1):
a student f_θ(x_t, t) that maps every point of a teacher's probability-flow ODE trajectory to its clean end.

The consistency function, for any process of the project (per basis coefficient, σ = S_t/A_t the EDM noise level
of x_t/A_t, their App. C parameterisation with σ_min = 0 because t_min = 0 is the clean endpoint A = 1, S = 0):

    f(x_t, t) = c_skip(t) · x_t/A_t + (1 − c_skip(t)) · x̂0_θ(x_t, t),   c_skip = σ_data² / (σ² + σ_data²),

with x̂0_θ the network output read through the teacher's prediction type (so the student starts from the
teacher's denoiser). Written as c_skip·x_t/A = σ_data² A x_t/(S² + σ_data² A²) it stays finite where A = 0 (the
flow path's t = 1); at t = 0, S = 0 gives f(x, 0) = x exactly, the boundary condition (their eq. 4).

Code ↔ paper: ``t``, ``s`` = t_{n+1}, t_n (adjacent times of the N-step grid), ``x_s`` = x̂^φ_{t_n} (one teacher ODE
step, DDIM or Euler), ``target_network`` = θ⁻ with EMA rate μ = ``target_decay``, d = squared ℓ2, λ(t_n) = 1.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from spectral_diffusion.diffusion.predictions import Prediction, check_prediction, per_sample_alpha_sigma
from spectral_diffusion.diffusion.samplers import time_grid
from spectral_diffusion.distill.base import (
    ODE_STEPS,
    DistillationMethod,
    FrozenDenoiser,
    check_grid,
    sampler_node,
)
from spectral_diffusion.utils.validation import check_choice, check_int, check_positive, check_range


class ConsistencyPrediction(Prediction):
    """The consistency parameterisation f(x_t, t) around a ``base`` prediction type (see the module docstring):
    ``x0_eps`` returns (f, ε̂ implied by f), so ``DiffusionModule.denoise`` is the consistency function and every
    sampler can read it."""

    name = "consistency"

    def __init__(self, base: Prediction, sigma_data: float = 0.5) -> None:
        self.base = check_prediction(base, "prediction.base")
        self.sigma_data = float(check_positive("method.sigma_data", sigma_data))

    def skip_out(self, process, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip/A_t, c_out) in the basis of coefficients ``like``: the weights of x_t and of x̂0_θ."""
        a, s = process.coefficients(t, like)
        variance = self.sigma_data ** 2
        denominator = s * s + variance * a * a
        return variance * a / denominator, s * s / denominator

    def consistency(self, x_t: Tensor, t: Tensor, x0: Tensor, process) -> Tensor:
        """f from x_t and the base x̂0; where c_out = 0 (t = 0) f is x_t itself, whatever x̂0 holds."""
        c_t, c_x0 = process.to_basis(x_t), process.to_basis(x0)
        skip, out = self.skip_out(process, t, c_t)
        return process.from_basis(skip * c_t + torch.where(out == 0, 0.0, out * c_x0))

    def x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, process) -> tuple[Tensor, Tensor]:
        f = self.consistency(x_t, t, self.base.x0_eps(x_t, t, output, process)[0], process)
        return f, process.eps_from_x0(x_t, t, f)

    def target(self, x0: Tensor, eps: Tensor, t: Tensor, process) -> Tensor:
        """The output that makes f(x_t, t) = x0 at x_t = A x0 + S ε: the base target of the clean estimate
        x̂0 = (x0 − c_skip x_t/A)/c_out (defined for t > 0, where c_out > 0)."""
        x_t = process.q_sample(x0, t, eps)
        c_t, c0 = process.to_basis(x_t), process.to_basis(x0)
        skip, out = self.skip_out(process, t, c_t)
        base_x0 = process.from_basis((c0 - skip * c_t) / out)
        return self.base.target(base_x0, process.eps_from_x0(x_t, t, base_x0), t, process)

    def x0_error_scale(self, t: Tensor, x0: Tensor, process) -> Tensor:
        """Δf = c_out Δx̂0_θ, so λ = λ_base / c_out² (c_out from the per-sample α, σ)."""
        alpha, sigma = per_sample_alpha_sigma(process, t, x0)
        out = sigma.square() / (sigma.square() + self.sigma_data ** 2 * alpha.square())
        return self.base.x0_error_scale(t, x0, process) / out.square()

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and other.base == self.base  # type: ignore[attr-defined]
                and other.sigma_data == self.sigma_data)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.base, self.sigma_data))

    def __repr__(self) -> str:
        return f"ConsistencyPrediction({self.base!r}, sigma_data={self.sigma_data})"


@torch.no_grad()
def consistency_sampling(denoise_fn, process, x_T: Tensor, steps, *, generator=None, callback=None,
                         info: dict | None = None) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1) on the process's grid of ``steps`` times:
    x ← f(x_T, T); then at each later time τ, x_τ = A_τ x + S_τ z with fresh z (the forward process from the
    current clean estimate) and x ← f(x_τ, τ). ``steps`` = 1 is one-step generation; NFE = steps."""
    grid = time_grid(process, steps)
    x = x_T
    for i in range(len(grid) - 1):
        t = grid[i].to(x.device).expand(x.shape[0])
        x0 = denoise_fn(x, t)
        if grid[i + 1] > 0:
            s = grid[i + 1].to(x.device).expand(x.shape[0])
            x = process.q_sample(x0, s, process.noise(x.shape, generator, device=x.device, dtype=x.dtype))
        else:
            x = x0
        if callback is not None:
            callback({"step": i, "t": grid[i], "x": x, "x0": x0})
    if info is not None:
        info["nfe"] = len(grid) - 1
    return x


class ConsistencyDistillation(DistillationMethod):
    """Consistency distillation on the teacher's ``teacher_steps``-step grid (the process's ``sampling_times``,
    t_min = 0), with a teacher ``solver`` step (ddim | euler) between adjacent times and a target network θ⁻
    tracking the student with EMA rate ``target_decay``; evaluated by ``student_steps``-step consistency sampling."""

    name = "consistency"

    def __init__(self, teacher_steps: int = 18, student_steps: int = 1, solver: str = "ddim",
                 target_decay: float = 0.95, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.teacher_steps = check_int("method.teacher_steps", teacher_steps, 1)
        self.steps = check_int("method.student_steps", student_steps, 1)
        self.solver = check_choice("method.solver", solver, sorted(ODE_STEPS))
        self.target_decay = float(check_range("method.target_decay", target_decay, 0.0, 1.0))
        self.sigma_data = float(check_positive("method.sigma_data", sigma_data))

    @property
    def student_sampler(self) -> dict:
        return sampler_node("spectral_diffusion.distill.consistency_sampling", self.steps)

    def check_teacher(self, teacher) -> None:
        super().check_teacher(teacher)
        check_grid(teacher.process, "method.teacher_steps", self.teacher_steps)

    def student_config(self, teacher_config: dict) -> dict:
        return {
            "prediction": {"_target_": "spectral_diffusion.distill.ConsistencyPrediction",
                           "base": teacher_config["prediction"], "sigma_data": self.sigma_data},
            "sampler": self.student_sampler,
        }

    def attach(self, teacher, student, *, seed: int) -> None:
        self.teacher = FrozenDenoiser(teacher.ema.module, teacher.process, teacher.prediction)
        self.target_network = copy.deepcopy(student.model).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> ConsistencyDistillation:
        super().train(mode)
        if hasattr(self, "target_network"):
            self.target_network.eval()
        return self

    @torch.no_grad()
    def after_optimizer_step(self, student) -> None:
        """θ⁻ ← stopgrad(μ θ⁻ + (1 − μ) θ) (Alg. 2, last line)."""
        target = [p for p in self.target_network.parameters() if p.dtype.is_floating_point]
        online = [p.detach() for p in student.model.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(target, online, 1.0 - self.target_decay)

    def target_function(self, student, x: Tensor, t: Tensor) -> Tensor:
        """f_θ⁻(x, t): the student's consistency function with the target network's weights."""
        output = self.target_network(x, student.process.network_time(t)).float()
        return student.prediction.x0_eps(x, t, output, student.process)[0]

    def loss(self, student, x0: Tensor, step: int) -> Tensor:
        process, prediction = student.process, student.prediction
        grid = process.sampling_times(self.teacher_steps).to(x0.device)
        index = torch.randint(len(grid) - 1, (len(x0),), device=x0.device)
        t, s = grid[index], grid[index + 1]
        eps = process.noise(x0.shape, device=x0.device, dtype=x0.dtype)
        x_t = process.q_sample(x0, t, eps)
        with torch.no_grad():
            x_s = ODE_STEPS[self.solver](self.teacher, process, x_t, t, s)
            target = self.target_function(student, x_s, s)
        f = prediction.x0_eps(x_t, t, student(x_t, t).float(), process)[0]
        return (f - target).square().flatten(1).mean(1)

