"""Reflow (Liu, Gong & Liu 2023, "Flow straight and fast", rectified flow, Alg. 1): draw (noise, sample) pairs
with a teacher's deterministic ODE sampler, train a flow on the straight path between each pair, repeat.

Code ↔ paper: ``noise`` = X_0 ~ π_0 (their t = 0 is noise; here the project's convention, t = 1 is noise),
``data`` = X_1 = ODE map of X_0, the path x_t = (1 − t) x_data + t x_noise, the flow target
u = x_noise − x_data (``FlowPrediction`` on ``FlowProcess``), ``rounds`` = k of the k-rectified flow.

The teacher need not be a flow: its pairs define the coupling (π_0 = the teacher's prior, which is coloured for
``equalized``), and the student is always a flow on the straight path whose prior is that same π_0
(``CoupledFlowProcess``). A fresh student is not needed: it starts from the teacher's weights (a warm start; the
output is re-read as a velocity), as Liu et al.'s 2-rectified flow starts from the 1-rectified one.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from spectral_diffusion.diffusion.processes import FlowProcess
from spectral_diffusion.diffusion.samplers import ddim, dpm_solver_pp, euler, heun, validate_sampler
from spectral_diffusion.distill.base import DistillationMethod, FrozenDenoiser, sampler_node
from spectral_diffusion.losses import LossContext
from spectral_diffusion.utils.random import Generators, sample_generators
from spectral_diffusion.utils.validation import ConfigError, check_int

# Deterministic ODE samplers: the pairs must be a function of the noise (ddim only with eta = 0).
DETERMINISTIC_SAMPLERS = (ddim, euler, heun, dpm_solver_pp)


class CoupledFlowProcess(FlowProcess):
    """The straight path x_t = (1 − t) x0 + t x1 whose noise end x1 follows ``source``'s prior (a reflow student).

    Everything element-wise on the flow path (A = 1 − t, S = t, identity basis) is ``FlowProcess``'s; only the
    law of x1 changes: ``noise`` and ``prior`` draw from ``source.prior``, so a student of an ``equalized``
    teacher starts from the same coloured noise the teacher's pairs started from."""

    name = "coupled_flow"

    def __init__(self, source) -> None:
        super().__init__(schedule=None)
        self.source = source

    def prepare(self, datamodule) -> None:
        super().prepare(datamodule)
        self.source.prepare(datamodule)

    def noise(self, shape, generator: Generators = None, *, device=None, dtype=None) -> Tensor:
        return self.source.prior(shape, generator, device=device, dtype=dtype)

    def prior(self, shape, generator: Generators = None, *, device=None, dtype=None) -> Tensor:
        return self.source.prior(shape, generator, device=device, dtype=dtype)

    def __repr__(self) -> str:
        return f"CoupledFlowProcess(source={self.source!r})"


@torch.no_grad()
def generate_pairs(denoise_fn, process, sampler, shape, count: int, *, seed: int, start: int = 0,
                   batch_size: int = 256, device="cpu", progress=None) -> tuple[Tensor, Tensor]:
    """(noise, data): ``count`` prior draws x1 and the ``sampler``'s ODE solution x0 of each, on the CPU.

    Pair i starts from generator ``seed + start + i`` (``utils.random.sample_generators``), so the pairs do not
    depend on ``batch_size`` and are the same for the same seed. The data end is not clamped: the pair is the
    ODE map itself."""
    noises, samples = [], []
    for first in range(0, count, batch_size):
        size = min(batch_size, count - first)
        generators = sample_generators(seed, start + first, size)
        noise = process.prior((size, *shape), generators, device=device)
        samples.append(sampler(denoise_fn, process, noise, generator=generators).float().cpu())
        noises.append(noise.float().cpu())
        if progress is not None:
            progress(first + size, count)
    return torch.cat(noises), torch.cat(samples)


def check_deterministic(sampler, key: str = "method.sampler"):
    """``sampler`` when it is a deterministic ODE sampler (ddim with eta = 0, euler, heun, dpm_solver_pp)."""
    function = getattr(sampler, "func", sampler)
    if function not in DETERMINISTIC_SAMPLERS:
        name = getattr(function, "__name__", repr(function))
        raise ConfigError(f"{key}={name} is not a deterministic ODE sampler; reflow pairs need one of "
                          f"{[f.__name__ for f in DETERMINISTIC_SAMPLERS]}")
    if getattr(sampler, "keywords", {}).get("eta", 0.0) != 0:
        raise ConfigError(f"{key}.eta={sampler.keywords['eta']} makes DDIM stochastic; reflow pairs need eta=0")
    return sampler


class Reflow(DistillationMethod):
    """k-rectified flow from a teacher: ``rounds`` rounds, each drawing ``num_pairs`` pairs (round 0 from the
    teacher, round r from the round r − 1 student's EMA) with ``sampler`` and training the student on them;
    evaluated with ``student_steps`` Euler steps (1 = one network evaluation)."""

    name = "reflow"

    def __init__(self, sampler, rounds: int = 1, num_pairs: int = 4096, student_steps: int = 1,
                 pair_batch_size: int = 256) -> None:
        super().__init__()
        self.rounds = check_int("method.rounds", rounds, 1)
        self.num_pairs = check_int("method.num_pairs", num_pairs, 1)
        self.steps = check_int("method.student_steps", student_steps, 1)
        self.pair_batch_size = check_int("method.pair_batch_size", pair_batch_size, 1)
        self.sampler = check_deterministic(sampler)
        self.noise: Tensor | None = None  # the current round's pairs (CPU)
        self.data: Tensor | None = None
        self.seed = 0

    @property
    def student_sampler(self) -> dict:
        return sampler_node("spectral_diffusion.diffusion.samplers.euler", self.steps, clip_x0=False)

    def check_teacher(self, teacher) -> None:
        super().check_teacher(teacher)
        try:
            validate_sampler(self.sampler, teacher.process)
        except ConfigError as error:
            raise ConfigError(str(error).replace("sampler.", "method.sampler.")) from None

    def student_config(self, teacher_config: dict) -> dict:
        return {
            "noise": {"_target_": "spectral_diffusion.distill.CoupledFlowProcess", "source": teacher_config["noise"]},
            "prediction": {"_target_": "spectral_diffusion.diffusion.FlowPrediction"},
            "sampler": self.student_sampler,
        }

    def attach(self, teacher, student, *, seed: int) -> None:
        self.teacher = FrozenDenoiser(teacher.ema.module, teacher.process, teacher.prediction)
        self.seed = int(seed)

    def start_round(self, student, round_index: int, *, fresh: bool = True) -> None:
        """Draw this round's pairs: from the teacher in round 0, else from the student's EMA (its flow). A resumed
        round keeps the pairs restored from the checkpoint."""
        if not fresh and self.noise is not None:
            return
        if round_index == 0:
            denoise, process = self.teacher, self.teacher.process
        else:
            denoise, process = functools.partial(student.denoise, use_ema=True), student.process
        was_training = student.training
        student.eval()
        self.noise, self.data = generate_pairs(denoise, process, self.sampler, student.image_shape, self.num_pairs,
                                               seed=self.seed, start=round_index * self.num_pairs,
                                               batch_size=self.pair_batch_size, device=student.device)
        student.train(was_training)

    def loss(self, student, x0: Tensor, step: int) -> Tensor:
        """The rectified-flow objective E‖u_θ(x_t, t) − (x_noise − x_data)‖² (Liu et al. 2023, eq. 1) on pairs drawn
        with a generator of (seed, step), so a resumed run draws what the uninterrupted one would have."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        index = torch.randint(len(self.data), (len(x0),), generator=generator)
        data, noise = self.data[index].to(x0.device), self.noise[index].to(x0.device)
        process, prediction = student.process, student.prediction
        t = process.training_times(len(x0), generator, device=x0.device)
        x_t = process.q_sample(data, t, noise)
        target = prediction.target(data, noise, t, process)
        output = student(x_t, t)
        return student.loss_fn(output, target, LossContext(x0=data, x_t=x_t, t=t, process=process,
                                                           prediction=prediction))

    def extra_state(self) -> dict:
        return {"noise": self.noise, "data": self.data} if self.noise is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.noise, self.data = state["noise"], state["data"]
