"""Few-step distillation (issue 17): reflow pairs and the straight map on a Gaussian toy, the progressive target
against two independent DDIM steps, the consistency boundary condition, bad input, and tiny end-to-end runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spectral_diffusion.diffusion import (
    BandedProcess,
    CosineSchedule,
    EpsPrediction,
    EqualizedProcess,
    FlowPrediction,
    FlowProcess,
    GaussianProcess,
    LinearSchedule,
    VPrediction,
    X0Prediction,
)
from spectral_diffusion.diffusion.samplers import ddim, euler
from spectral_diffusion.distill import (
    ConsistencyPrediction,
    CoupledFlowProcess,
    FrozenDenoiser,
    ProgressiveDistillation,
    Reflow,
    consistency_sampling,
    ddim_step,
    euler_step,
    generate_pairs,
    nested_grid,
    progressive_ddim,
    two_step_target,
)
from spectral_diffusion.distill.run import distill
from spectral_diffusion.pipeline import load_module, train
from spectral_diffusion.utils.summary import read_rows
from spectral_diffusion.utils.validation import ConfigError

from .conftest import cli_env, compose_root, compose_train

SHAPE = (1, 4, 4)


class FixedSpectrum:
    """Stands in for a datamodule: a fixed power-law radial S_data (no data needed)."""

    image_shape = SHAPE

    def radial_power_spectrum(self) -> tuple[torch.Tensor, torch.Tensor]:
        frequencies = torch.arange(4, dtype=torch.float64) / 4
        return frequencies, (frequencies.square() + 0.05) ** -1.5


def make_process(name: str):
    if name == "gaussian":
        return GaussianProcess(CosineSchedule())
    if name == "gaussian_linear_continuous":
        return GaussianProcess(LinearSchedule(discrete=False))
    if name == "equalized":
        process = EqualizedProcess(CosineSchedule(), gamma=1.0)
        process.prepare(FixedSpectrum())
        return process
    if name == "banded":
        process = BandedProcess(CosineSchedule(), basis="dct", num_bands=2, shifts=(0.0, -1.5))
        process.prepare(FixedSpectrum())
        return process
    assert name == "flow"
    return FlowProcess()


class TinyNet(nn.Module):
    """A fixed, nonlinear, time-dependent network (x, 1000 t) -> output: any teacher will do for exact identities."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x, t):
        h = torch.tanh(self.conv(x) * (1 + t.reshape(-1, 1, 1, 1) / 1000))
        return self.out(h) + 0.3 * x


# --- Gaussian data: the exact denoiser and the exact (optimal transport) map ----------------------------------
MU = torch.tensor([0.5, -0.3, 0.2, 0.0], dtype=torch.float64)
ROOT = torch.tensor([[0.8, 0.1, 0.0, 0.0], [0.1, 0.5, 0.1, 0.0], [0.0, 0.1, 0.3, 0.05], [0.0, 0.0, 0.05, 0.6]],
                    dtype=torch.float64)
SIGMA = ROOT @ ROOT  # covariance; ROOT is its symmetric square root Σ^{1/2}
GAUSS_SHAPE = (1, 2, 2)


def gaussian_denoiser(process):
    """E[x0 | x_t] for x0 ~ N(μ, Σ) under a white scalar process: μ + Σ A (A² Σ + S² I)^{-1} (x_t − A μ)."""

    def denoise(x_t, t):
        flat = x_t.reshape(len(x_t), -1).double()
        a, s = process.coefficients(t, flat)
        out = []
        for row, a_i, s_i in zip(flat, a.reshape(-1).double(), s.reshape(-1).double()):
            covariance = a_i**2 * SIGMA + s_i**2 * torch.eye(4, dtype=torch.float64)
            out.append(MU + a_i * SIGMA @ torch.linalg.solve(covariance, row - a_i * MU))
        return torch.stack(out).reshape(x_t.shape).to(x_t.dtype)

    return denoise


def test_reflow_pairs_are_deterministic_for_a_seed():
    process = GaussianProcess(CosineSchedule(discrete=False))
    sampler = lambda *args, **kwargs: ddim(*args, steps=20, **kwargs)  # noqa: E731
    denoise = gaussian_denoiser(process)
    noise, data = generate_pairs(denoise, process, sampler, GAUSS_SHAPE, 10, seed=3, batch_size=4)
    again_noise, again_data = generate_pairs(denoise, process, sampler, GAUSS_SHAPE, 10, seed=3, batch_size=7)
    assert torch.equal(noise, again_noise) and torch.equal(data, again_data)  # batching changes nothing
    other_noise, _ = generate_pairs(denoise, process, sampler, GAUSS_SHAPE, 10, seed=4)
    assert not torch.allclose(noise, other_noise)
    # pair i starts from generator seed + start + i: a later slice of the same stream
    tail_noise, tail_data = generate_pairs(denoise, process, sampler, GAUSS_SHAPE, 4, seed=3, start=6)
    assert torch.equal(tail_noise, noise[6:]) and torch.allclose(tail_data, data[6:], atol=1e-6)
    # the pair is the ODE map of its noise
    assert torch.allclose(data, ddim(denoise, process, noise, 20), atol=1e-6)


def test_reflow_rejects_stochastic_pair_samplers():
    from functools import partial

    from spectral_diffusion.diffusion.samplers import ddpm

    with pytest.raises(ConfigError, match="method.sampler.eta"):
        Reflow(partial(ddim, steps=10, eta=0.5))
    with pytest.raises(ConfigError, match="method.sampler=ddpm"):
        Reflow(partial(ddpm, steps=10))
    with pytest.raises(ConfigError, match="method.rounds"):
        Reflow(partial(ddim, steps=10), rounds=0)


def fit_linear_velocity(process, prediction, data, noise, t_value):
    """Least squares of the reflow regression at one time: u(x, t) = W x + c on the examples (x_t, target) built
    as the reflow loss builds them (process.q_sample, prediction.target). Exact when E[target | x_t] is affine."""
    t = torch.full((len(data),), t_value)
    x_t = process.q_sample(data, t, noise).reshape(len(data), -1).double()
    target = prediction.target(data, noise, t, process).reshape(len(data), -1).double()
    design = torch.cat([x_t, torch.ones(len(data), 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, target).solution
    return solution[:-1], solution[-1]


def test_reflowed_flow_one_euler_step_reaches_the_straight_map():
    """Teacher: the exact Gaussian denoiser under a VP process, pairs by 200 DDIM steps, so x0 = M x1 + b. The
    reflow objective's minimiser is u(x, t) = E[x1 − x0 | x_t = x], affine in x at every t since the coupling is a
    deterministic affine map; fitted at t = 1 and t = 1/2 on the method's own regression examples, one Euler step
    from x1 and two Euler steps both land on M x1 + b (a straight flow), which is μ + Σ^{1/2} x1, the optimal
    transport map N(0, I) → N(μ, Σ), to the teacher's discretisation error. The teacher's own DDIM at one and two
    steps is far from it."""
    teacher_process = GaussianProcess(CosineSchedule(discrete=False))
    teacher = gaussian_denoiser(teacher_process)
    sampler = lambda *args, **kwargs: ddim(*args, steps=200, **kwargs)  # noqa: E731
    noise, data = generate_pairs(teacher, teacher_process, sampler, GAUSS_SHAPE, 64, seed=0)
    student_process, prediction = CoupledFlowProcess(teacher_process), FlowPrediction()
    fits = {t: fit_linear_velocity(student_process, prediction, data, noise, t) for t in (1.0, 0.5)}

    def student(x_t, t):  # the fitted flow, read as x̂0 through the flow prediction
        weight, bias = fits[round(float(t[0]), 6)]
        velocity = (x_t.reshape(len(x_t), -1).double() @ weight + bias).reshape(x_t.shape).float()
        return prediction.x0_eps(x_t, t, velocity, student_process)[0]

    x1 = student_process.prior((16, *GAUSS_SHAPE), torch.Generator().manual_seed(99))
    exact = (MU + x1.reshape(16, -1).double() @ ROOT).reshape(x1.shape).float()  # Σ^{1/2} symmetric
    pair_map = ddim(teacher, teacher_process, x1, 200)
    one_step = euler(student, student_process, x1, 1)
    two_steps = euler(student, student_process, x1, torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(one_step, pair_map, atol=1e-4)
    assert torch.allclose(two_steps, pair_map, atol=1e-4)
    assert torch.allclose(one_step, exact, atol=2e-2)
    for steps in (1, 2):
        assert (ddim(teacher, teacher_process, x1, steps) - exact).abs().max() > 0.1


PREDICTIONS = {"eps": EpsPrediction(), "x0": X0Prediction(), "v": VPrediction()}


@pytest.mark.parametrize("process_name", ["gaussian", "equalized", "banded", "gaussian_linear_continuous"])
@pytest.mark.parametrize("prediction_name", ["eps", "x0", "v"])
@pytest.mark.parametrize("times", [(0.6, 0.5, 0.4), (0.2, 0.1, 0.0)], ids=["inner", "last"])
def test_progressive_target_equals_two_independent_ddim_steps(process_name, prediction_name, times):
    """The student's x̃ makes one DDIM step t → s land where two teacher DDIM steps t → mid → s land, both
    computed with the project's ``ddim`` sampler on an explicit grid (callback after the step), and the student's
    target in its prediction space converts back to x̃."""
    process, prediction = make_process(process_name), PREDICTIONS[prediction_name]
    teacher = FrozenDenoiser(TinyNet(), process, prediction)
    method = ProgressiveDistillation(teacher_steps=8, student_steps=4)
    method.teacher = teacher
    t, mid, s = times
    x_t = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))

    def after(grid, denoise, step):
        seen = {}
        ddim(denoise, process, x_t, torch.tensor(grid), callback=lambda d: seen.setdefault(d["step"], d["x"]))
        return seen[step]

    teacher_grid = [t, mid, s] + ([0.0] if s > 0 else [])
    two_teacher_steps = after(teacher_grid, teacher, 1)
    rows = torch.ones(len(x_t))
    x_tilde = method.targets(process, x_t, t * rows, mid * rows, s * rows)
    student_grid = [t, s] + ([0.0] if s > 0 else [])
    one_student_step = after(student_grid, lambda x, time: x_tilde, 0)
    assert torch.allclose(one_student_step, two_teacher_steps, atol=1e-5)
    eps_tilde = process.eps_from_x0(x_t, t * rows, x_tilde)
    target = prediction.target(x_tilde, eps_tilde, t * rows, process)
    assert torch.allclose(prediction.x0_eps(x_t, t * rows, target, process)[0], x_tilde, atol=1e-4)
    # and it is not simply the teacher's own one-step estimate
    assert not torch.allclose(x_tilde, teacher(x_t, t * rows), atol=1e-3)


def test_progressive_target_with_a_different_time_per_row():
    process, prediction = make_process("equalized"), VPrediction()
    teacher = FrozenDenoiser(TinyNet(1), process, prediction)
    x_t = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    t, mid, s = torch.tensor([0.9, 0.3]), torch.tensor([0.7, 0.2]), torch.tensor([0.5, 0.1])
    x_s = ddim_step(teacher, process, ddim_step(teacher, process, x_t, t, mid), mid, s)
    x_tilde = two_step_target(process, x_t, t, s, x_s)
    for row in range(2):
        seen = {}
        ddim(lambda x, time: x_tilde[row : row + 1], process, x_t[row : row + 1],
             torch.tensor([float(t[row]), float(s[row]), 0.0]), callback=lambda d: seen.setdefault(d["step"], d["x"]))
        assert torch.allclose(seen[0], x_s[row : row + 1], atol=1e-5)


@pytest.mark.parametrize("process_name", ["gaussian", "gaussian_linear_continuous", "flow"])
def test_progressive_grids_nest_so_each_teacher_is_queried_on_its_own_grid(process_name):
    """Round r's student grid (n steps) and its teacher's grid (2n steps, the previous student's) nest exactly, also
    on a discrete schedule, where the process's own grids do not (both end at 1/T); the student samples on it."""
    process = make_process(process_name)
    for steps in (1, 2, 4, 8):
        coarse, fine = nested_grid(process, steps), nested_grid(process, 2 * steps)
        assert torch.equal(fine[::2], coarse) and coarse[0] == 1 and coarse[-1] == 0
    if process_name == "gaussian":
        assert not torch.equal(process.sampling_times(4)[::2], process.sampling_times(2))
    denoise = FrozenDenoiser(TinyNet(), process, X0Prediction())
    x_T = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    info = {}
    assert torch.equal(progressive_ddim(denoise, process, x_T, 4, info=info),
                       ddim(denoise, process, x_T, nested_grid(process, 4)))
    assert info["nfe"] == 4


def test_progressive_rejects_step_counts_that_do_not_halve():
    with pytest.raises(ConfigError, match="method.student_steps=3"):
        ProgressiveDistillation(teacher_steps=64, student_steps=3)
    with pytest.raises(ConfigError, match="method.student_steps=8"):
        ProgressiveDistillation(teacher_steps=24, student_steps=8)  # divides, but 3 is not a power of two
    assert ProgressiveDistillation(teacher_steps=64, student_steps=4).rounds == 4


def test_euler_step_matches_the_project_euler_sampler_and_ddim_on_the_flow_path():
    process = make_process("gaussian")
    teacher = FrozenDenoiser(TinyNet(), process, VPrediction())
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(5))
    seen = {}
    euler(teacher, process, x, torch.tensor([0.7, 0.4, 0.0]), callback=lambda d: seen.setdefault(d["step"], d["x"]))
    rows = torch.ones(2)
    assert torch.allclose(euler_step(teacher, process, x, 0.7 * rows, 0.4 * rows), seen[0], atol=1e-5)
    flow = FlowProcess()
    flow_teacher = FrozenDenoiser(TinyNet(), flow, FlowPrediction())
    assert torch.allclose(euler_step(flow_teacher, flow, x, 0.7 * rows, 0.4 * rows),
                          ddim_step(flow_teacher, flow, x, 0.7 * rows, 0.4 * rows), atol=1e-5)


@pytest.mark.parametrize("process_name", ["gaussian", "equalized", "flow"])
@pytest.mark.parametrize("base", ["eps", "x0", "v", "flow"])
def test_consistency_boundary_condition_is_exact(process_name, base):
    """f(x, t_min) = x exactly (t_min = 0) whatever the network outputs, for every base prediction and process;
    away from t_min f depends on the output; the target inverts f for t > 0."""
    process = make_process(process_name)
    if process_name == "flow" and base == "eps":
        pytest.skip("eps cannot be used on the flow path (the process refuses it)")
    prediction = ConsistencyPrediction({**PREDICTIONS, "flow": FlowPrediction()}[base])
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(7))
    output = 5 * torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(8))
    f0 = prediction.x0_eps(x, torch.zeros(3), output, process)[0]
    assert torch.equal(f0, x) if process.basis.is_identity else torch.allclose(f0, x, atol=1e-6)
    t = torch.tensor([0.3, 0.6, 1.0])
    f = prediction.x0_eps(x, t, output, process)[0]
    assert torch.isfinite(f).all() and (f - x).abs().max() > 0.1
    x0, eps = torch.randn(3, *SHAPE), torch.randn(3, *SHAPE)
    t = torch.tensor([0.2, 0.5, 0.8])
    x_t = process.q_sample(x0, t, eps)
    target = prediction.target(x0, eps, t, process)
    assert torch.allclose(prediction.x0_eps(x_t, t, target, process)[0], x0, atol=1e-3)


def test_consistency_sampling_one_step_is_f_of_the_prior_and_multistep_renoises():
    process = make_process("gaussian")
    prediction = ConsistencyPrediction(VPrediction())
    network = TinyNet()

    def f(x, t):
        return prediction.x0_eps(x, t, network(x, process.network_time(t)), process)[0]

    x_T = process.prior((2, *SHAPE), torch.Generator().manual_seed(0))
    info = {}
    one = consistency_sampling(f, process, x_T, 1, info=info)
    assert info["nfe"] == 1 and torch.allclose(one, f(x_T, torch.ones(2)))
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    two = consistency_sampling(f, process, x_T, torch.tensor([1.0, 0.5, 0.0]), generator=generators)
    z = process.noise((2, *SHAPE), [torch.Generator().manual_seed(i) for i in range(2)])
    halfway = process.q_sample(one, torch.full((2,), 0.5), z)
    assert torch.allclose(two, f(halfway, torch.full((2,), 0.5)), atol=1e-6)


# --- bad input, before anything runs -------------------------------------------------------------------------
def compose_distill(overrides: list[str], tmp_path: Path, cache_dir: Path):
    return compose_root("distill", overrides, tmp_path, cache_dir)


def test_bad_input_is_refused_naming_the_key(tmp_path, cache_dir):
    not_sd_train = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, not_sd_train)
    cases = [
        ([], "teacher_ckpt is missing"),
        ([f"teacher_ckpt={tmp_path / 'nothing.ckpt'}"], "teacher_ckpt=.*does not exist"),
        ([f"teacher_ckpt={not_sd_train}"], "teacher_ckpt=.*not written by sd-train"),
        ([f"teacher_ckpt={not_sd_train}", "method.rounds=0"], "teacher_ckpt"),  # the teacher is checked first
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            distill(compose_distill(overrides, tmp_path, cache_dir))
    assert not (tmp_path / "run").exists()  # nothing ran


# --- end to end on a tiny sd-train checkpoint ----------------------------------------------------------------
TINY_EVALUATION = ["evaluation.num_samples=64", "evaluation.batch_size=64", "evaluation.battery=false",
                   "evaluation.bootstrap=20", "evaluation.timestep_bins=2", "evaluation.kid_subset_size=32",
                   "evaluation.grid_size=16"]
QUIET = ["~logger", "~callbacks.lr_monitor", "~callbacks.spectral_eval"]


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, cache_dir) -> Path:
    """A 30-step ``sd-train debug=default`` run (8×8 digits), trained once for this file."""
    root = tmp_path_factory.mktemp("teacher")
    train(compose_train(["debug=default", *QUIET, *TINY_EVALUATION], root, cache_dir))
    return root / "run" / "checkpoints" / "last.ckpt"


def tiny_distill(method: list[str], teacher: Path, tmp_path: Path, cache_dir: Path, extra=()):
    overrides = [f"teacher_ckpt={teacher}", *QUIET, *TINY_EVALUATION, "trainer.max_steps=8",
                 "trainer.val_check_interval=4", "trainer.precision=32-true", "scheduler.warmup_steps=2",
                 "callbacks.sample_grid.every_n_steps=4", "callbacks.model_checkpoint.every_n_train_steps=4",
                 *method, *extra]
    return compose_distill(overrides, tmp_path, cache_dir)


@pytest.mark.slow
def test_configs_that_need_the_teacher_are_refused_before_training(teacher_ckpt, tmp_path, cache_dir):
    cases = [
        (["method=progressive", "method.teacher_steps=2000", "method.student_steps=1000"],
         "method.teacher_steps=2000 does not fit"),
        (["method=consistency", "method.teacher_steps=1001"], "method.teacher_steps=1001 does not fit"),
        (["method=reflow", "method.sampler.steps=1001"], "method.sampler.steps=1001"),
        (["method=reflow", "method.sampler.eta=1.0"], "method.sampler.eta"),
        (["method=reflow", "method.rounds=0"], "method.rounds=0"),
        (["method=progressive", "method.student_steps=3"], "method.student_steps=3"),
        (["method=consistency", "method.solver=heun"], "method.solver"),
        (["method=reflow", "trainer.max_steps=1", "method.rounds=2"], "trainer.max_steps=1"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            distill(tiny_distill(overrides, teacher_ckpt, tmp_path, cache_dir))
        assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method, nfe, rounds", [
    (["method=reflow", "method.num_pairs=64", "method.sampler.steps=5", "method.rounds=2"], 1, 2),
    (["method=progressive", "method.teacher_steps=8", "method.student_steps=2"], 2, 2),
    (["method=consistency", "method.teacher_steps=5", "method.student_steps=2"], 2, 1),
], ids=["reflow", "progressive", "consistency"])
def test_sd_distill_end_to_end(method, nfe, rounds, teacher_ckpt, tmp_path, cache_dir):
    metrics = distill(tiny_distill(method, teacher_ckpt, tmp_path, cache_dir))
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    fid = "fid_classifier@64"
    assert saved["global_step"] == 8 and saved["sampler_nfe"] == nfe and saved["distillation_rounds"] == rounds
    assert np.isfinite(saved[fid]) and saved["objective"] == saved["recognisable_classifier@64"]
    assert saved[f"{fid}_ci_low"] <= saved[fid] <= saved[f"{fid}_ci_high"]
    assert saved["train_cpu_minutes"] > 0 and (run / "report.md").is_file() and (run / "samples.png").is_file()
    rows = read_rows(tmp_path / "summary.csv")
    assert len(rows) == 1 and float(rows[0][fid]) == pytest.approx(metrics[fid])
    for r in range(rounds):
        assert (run / "checkpoints" / f"student_round{r}.ckpt").is_file()
    # the exported student is a plain sd-train checkpoint: load_module rebuilds it and draws the same samples
    student = load_module(run / "checkpoints" / "student.ckpt")
    with np.load(run / "samples.npz") as data:
        images = torch.from_numpy(data["images"][:8])
    assert torch.allclose(student.generate(8, seed=1234), images, atol=1e-5)
    assert student.last_sampling_info["nfe"] == nfe


@pytest.mark.slow
def test_resume_continues_the_round_and_its_teacher(teacher_ckpt, tmp_path, cache_dir):
    """Progressive with 2 rounds: a run that ended at step 6 (in round 1, whose teacher is the round-0 student)
    resumed from its last.ckpt with a budget of 8 steps stays in round 1 with the same teacher (restored from the
    checkpoint, not copied again from the student) and continues the student's EMA."""
    method = ["method=progressive", "method.teacher_steps=8", "method.student_steps=2"]
    first = distill(tiny_distill(method, teacher_ckpt, tmp_path / "a", cache_dir,
                                 ["trainer.max_steps=6", "scheduler.total_steps=8",
                                  "callbacks.model_checkpoint.every_n_train_steps=2"]))
    assert first["global_step"] == 6
    last = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert int(saved["state_dict"]["round_index"]) == 1
    resumed = distill(tiny_distill(method, teacher_ckpt, tmp_path / "b", cache_dir, [f"ckpt_path={last}"]))
    assert resumed["global_step"] == 8
    final = torch.load(tmp_path / "b" / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    teacher_keys = [key for key in final if key.startswith("method.teacher.network.")]
    assert teacher_keys and all(torch.equal(final[key], saved["state_dict"][key]) for key in teacher_keys)
    assert int(final["round_index"]) == 1 and int(final["student.ema.num_updates"]) > 0


@pytest.mark.slow
def test_every_method_distils_an_equalized_teacher(tmp_path, cache_dir):
    """A frequency-space teacher (noise=equalized, FFT basis): each method trains and its student samples finite
    images; reflow's student starts from the teacher's coloured prior."""
    train(compose_train(["debug=default", "noise=equalized", *QUIET, *TINY_EVALUATION], tmp_path / "t", cache_dir))
    teacher = tmp_path / "t" / "run" / "checkpoints" / "last.ckpt"
    for method in (["method=reflow", "method.num_pairs=32", "method.sampler.steps=4"],
                   ["method=progressive", "method.teacher_steps=4", "method.student_steps=1"],
                   ["method=consistency", "method.teacher_steps=4"]):
        folder = tmp_path / method[0].split("=")[1]
        metrics = distill(tiny_distill(method, teacher, folder, cache_dir, ["trainer.max_steps=4"]))
        assert metrics["global_step"] == 4 and np.isfinite(metrics["fid_classifier@64"])
        student = load_module(folder / "run" / "checkpoints" / "student.ckpt")
        assert type(student.process.source if method[0] == "method=reflow" else student.process).__name__ \
            == "EqualizedProcess"


@pytest.mark.slow
def test_sd_distill_command_reports_a_bad_teacher(tmp_path, cache_dir):
    result = subprocess.run([sys.executable, "-m", "spectral_diffusion.cli.distill", f"hydra.run.dir={tmp_path / 'r'}",
                             f"teacher_ckpt={tmp_path / 'missing.ckpt'}"], cwd=tmp_path, env=cli_env(cache_dir),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "sd-distill: teacher_ckpt=" in result.stderr and "does not exist" in result.stderr
