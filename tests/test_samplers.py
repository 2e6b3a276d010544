"""Samplers proven on Gaussian data, whose exact denoiser is known in closed form.

For x0 ~ N(μ, Σ) and a process diagonal in an orthonormal basis Q (c = Q x), E[c0 | c_t] =
m + C A (A C A + S²)⁻¹ (c_t − A m) with m = Qμ, C = QΣQᵀ. With this oracle as the "network" every
deterministic sampler is an affine map x_T ↦ M x_T + b, so the law of its samples is computed exactly
(no Monte-Carlo noise) by pushing 1 + D probe images through it; stochastic samplers are checked by drawing.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from spectral_diffusion.diffusion import CosineSchedule, EpsPrediction, GaussianProcess, LinearSchedule
from spectral_diffusion.diffusion.processes import BandedProcess, EqualizedProcess, FlowProcess
from spectral_diffusion.diffusion.samplers import (
    CALL_ARGUMENTS,
    ddim,
    ddpm,
    deq,
    dpm_solver_pp,
    euler,
    heun,
    validate_sampler,
)
from spectral_diffusion.utils.random import sample_generators
from spectral_diffusion.utils.validation import ConfigError

SHAPE = (1, 4, 4)
D = 16


class FixedSpectrum:
    """Stands in for a datamodule: a fixed power-law radial S_data (no data needed)."""

    image_shape = SHAPE

    def radial_power_spectrum(self) -> tuple[torch.Tensor, torch.Tensor]:
        frequencies = torch.arange(4, dtype=torch.float64) / 4  # radial bins 0..3 of a 4×4 grid
        return frequencies, (frequencies.square() + 0.05) ** -1.5


def make_process(name: str):
    if name == "gaussian_cosine":
        return GaussianProcess(CosineSchedule())
    if name == "gaussian_linear":
        return GaussianProcess(LinearSchedule())
    if name == "equalized":
        process = EqualizedProcess(CosineSchedule(), gamma=1.0)
        process.prepare(FixedSpectrum())
        return process
    if name == "banded":
        process = BandedProcess(CosineSchedule(), basis="fft", num_bands=3, shifts=(0.0, -1.0, -2.0))
        process.prepare(FixedSpectrum())
        return process
    assert name == "flow"
    return FlowProcess()


PROCESSES = ["gaussian_cosine", "gaussian_linear", "equalized", "banded", "flow"]


def structured_gaussian(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and an SPD Σ with spatial correlation (squared-exponential kernel on the 4×4 grid plus a nugget)."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    points = torch.stack([rows.flatten(), cols.flatten()], 1).double()
    distance2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    covariance = 0.25 * torch.exp(-distance2 / 2.0) + 0.02 * torch.eye(D, dtype=torch.float64)
    return 0.3 * torch.randn(D, generator=generator, dtype=torch.float64), covariance


class GaussianOracle:
    """The exact denoiser E[x0 | x_t] of N(μ, Σ) data under ``process``; counts the rows it evaluates."""

    def __init__(self, process, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        self.process = process
        identity = torch.eye(D, dtype=torch.float64).reshape(D, *SHAPE)
        self.Q = process.to_basis(identity).reshape(D, D).T  # column j = coefficients of pixel j
        torch.testing.assert_close(self.Q @ self.Q.T, torch.eye(D, dtype=torch.float64))
        self.m = self.Q @ mean
        self.C = self.Q @ covariance @ self.Q.T
        self.rows = 0

    def diagonal(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = self.process.coefficients(t, like)
        return (v.expand(len(like), *SHAPE).reshape(len(like), D).double() for v in (a, s))

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        coefficients = self.process.to_basis(x)
        a, s = self.diagonal(t, coefficients)
        c = coefficients.reshape(len(x), D).double()
        out = torch.empty_like(c)
        for value in t.unique():
            rows = (t == value).nonzero().squeeze(1)
            a_t, s_t = a[rows[0]], s[rows[0]]
            marginal = a_t[:, None] * self.C * a_t[None, :] + torch.diag(s_t**2)
            gain = torch.linalg.solve(marginal, (self.C * a_t[None, :]).T).T  # C A (A C A + S²)⁻¹
            out[rows] = self.m + (c[rows] - a_t * self.m) @ gain.T
        return self.process.from_basis(out.to(x.dtype).reshape(len(x), *SHAPE))

    def marginal(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance (pixels) of the true x_t."""
        a, s = self.diagonal(torch.tensor([t]), torch.zeros(1, *SHAPE, dtype=torch.float64))
        a, s = a[0], s[0]
        mean = self.Q.T @ (a * self.m)
        covariance = self.Q.T @ (a[:, None] * self.C * a[None, :] + torch.diag(s**2)) @ self.Q
        return mean, covariance


def affine_map(sampler, process, oracle: GaussianOracle, steps, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, M) with sampler(x_T) = M x_T + b, read off from the zero image and the D unit images."""
    probes = torch.cat([torch.zeros(1, D), torch.eye(D)]).double().reshape(D + 1, *SHAPE)
    out = sampler(oracle, process, probes, steps, **options).reshape(D + 1, D)
    return out[0], (out[1:] - out[0]).T


def pushforward(sampler, process, oracle: GaussianOracle, steps, **options):
    """Exact mean and covariance of a deterministic sampler's output when x_T follows the true marginal."""
    mean_T, covariance_T = oracle.marginal(float(process.sampling_times(steps)[0]))
    offset, matrix = affine_map(sampler, process, oracle, steps, **options)
    return offset + matrix @ mean_T, matrix @ covariance_T @ matrix.T


def law_errors(mean, covariance, target_mean, target_covariance) -> tuple[float, float]:
    """(‖mean error‖ / √tr Σ, ‖cov error‖_F / ‖Σ‖_F)."""
    scale = target_covariance.diagonal().sum().sqrt()
    return (float((mean - target_mean).norm() / scale),
            float((covariance - target_covariance).norm() / target_covariance.norm()))


# Covariance error bound at 50 steps for each deterministic sampler (measured values are ~2–3× smaller).
DETERMINISTIC = {
    "ddim": (ddim, 0.15),
    "dpm_solver_pp_2m": (dpm_solver_pp, 0.03),
    "dpm_solver_pp_3m": (functools.partial(dpm_solver_pp, order=3), 0.03),
    "euler": (euler, 0.06),
    "heun": (heun, 0.01),
}


@pytest.mark.parametrize("process_name", PROCESSES)
@pytest.mark.parametrize("sampler_name", list(DETERMINISTIC))
def test_exact_law_of_samples_converges_to_the_data(process_name, sampler_name):
    """With the exact denoiser the samples' law tends to N(μ, Σ); 50 steps beat 10 and meet a bound."""
    sampler, bound = DETERMINISTIC[sampler_name]
    process = make_process(process_name)
    mean, covariance = structured_gaussian()
    oracle = GaussianOracle(process, mean, covariance)
    errors = {steps: law_errors(*pushforward(sampler, process, oracle, steps), mean, covariance) for steps in (10, 50)}
    assert errors[50][1] < errors[10][1]
    assert errors[50][1] < bound
    assert errors[50][0] < max(bound / 2, 1e-12) and errors[50][0] <= errors[10][0] + 1e-12


@pytest.mark.parametrize("sampler_name", list(DETERMINISTIC))
def test_oracle_samplers_are_affine_maps(sampler_name):
    """What ``pushforward`` relies on: with the (affine) oracle a deterministic sampler is affine in x_T."""
    sampler = DETERMINISTIC[sampler_name][0]
    process = make_process("banded")
    oracle = GaussianOracle(process, *structured_gaussian())
    offset, matrix = affine_map(sampler, process, oracle, 7)
    probe = torch.randn(3, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    direct = sampler(oracle, process, probe.reshape(3, *SHAPE), 7).reshape(3, D)
    torch.testing.assert_close(direct, offset + probe @ matrix.T, rtol=1e-8, atol=1e-10)


def monte_carlo_errors(sampler, process_name: str, steps: int, n: int = 4000) -> tuple[float, float]:
    process = make_process(process_name)
    mean, covariance = structured_gaussian(1)
    oracle = GaussianOracle(process, mean, covariance)
    x_T = process.prior((n, *SHAPE), torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sampler(oracle, process, x_T, steps, generator=torch.Generator().manual_seed(1)).reshape(n, D)
    return law_errors(out.mean(0), torch.cov(out.T), mean, covariance)


# Sampling error of 4000 draws: ~1/√n ≈ 0.016 on the mean, ~√(2/n) ≈ 0.03 relative on Σ.
@pytest.mark.parametrize(("sampler", "process_name"), [(dpm_solver_pp, "equalized"), (heun, "flow")])
def test_monte_carlo_samples_from_the_prior_match_the_data(sampler, process_name):
    mean_error, covariance_error = monte_carlo_errors(sampler, process_name, 20)
    assert mean_error < 0.05 and covariance_error < 0.08


@pytest.mark.slow
def test_ddpm_at_1000_steps_samples_the_data_distribution():
    mean_error, covariance_error = monte_carlo_errors(ddpm, "gaussian_cosine", 1000)
    assert mean_error < 0.05 and covariance_error < 0.08


# --- DPM-Solver++ ------------------------------------------------------------------------------------
def reference_dpm_solver_2m(x_T: np.ndarray, alpha: np.ndarray, sigma: np.ndarray, x0_fn) -> np.ndarray:
    """Lu et al. 2022 (arXiv 2211.01095) Algorithm 2, scalar VP, float64, written from the paper.

    ``alpha``/``sigma`` are α, σ at t_0 (noisiest) … t_M (last noisy time); the final evaluation at t_M gives
    x̂0 (this project's step onto t = 0). Warm-up: first-order step; the last step t_{M-1} → t_M first order
    (lower_order_final).
    """
    lam = np.log(alpha / sigma)
    x = x_T
    previous = x0_fn(x, 0)
    steps = len(alpha) - 1
    for i in range(1, steps + 1):
        h = lam[i] - lam[i - 1]
        current = previous if i == 1 else x0_fn(x, i - 1)
        if i == 1 or i == steps:
            d = current
        else:
            r = (lam[i - 1] - lam[i - 2]) / h
            d = (1 + 1 / (2 * r)) * current - 1 / (2 * r) * previous
        x = sigma[i] / sigma[i - 1] * x - alpha[i] * (np.exp(-h) - 1) * d
        previous = current
    return x0_fn(x, steps)


def test_dpm_solver_2m_matches_an_independent_implementation():
    process = GaussianProcess(LinearSchedule())
    steps = 12
    grid = process.sampling_times(steps)
    alpha_bar = process.schedule.alpha_bar(grid[:-1].double()).numpy()
    alpha, sigma = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)

    def eps_net(x, t):  # any smooth deterministic network
        return 0.4 * np.tanh(x) + 0.3 * t

    def x0_numpy(x, i):
        return (x - sigma[i] * eps_net(x, float(grid[i]))) / alpha[i]

    def denoise(x_t, t):
        eps = 0.4 * torch.tanh(x_t) + 0.3 * t.double()[:, None, None, None]
        return EpsPrediction().x0_eps(x_t, t, eps, process)[0]

    x_T = np.random.default_rng(0).standard_normal((3, 1, 2, 2))
    expected = reference_dpm_solver_2m(x_T, alpha, sigma, x0_numpy)
    got = dpm_solver_pp(denoise, process, torch.from_numpy(x_T), steps)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("order", [1, 3])
def test_dpm_solver_integrates_polynomials_in_lambda_exactly(order):
    """Orders 1 and 3 integrate x̂0 polynomials of degree 0 and 2 in λ exactly (the exponential integrator's
    order conditions): x_t = (S_t/S_s) x_s + S_t ∫ e^λ x̂0(λ) dλ (DPM-Solver++ eq. 8), per coefficient.
    (2M's 1/(2r) weight is itself a Taylor approximation, exact to O(h³) only; it is checked against Alg. 2.)"""
    process = make_process("banded")  # per-coefficient λ
    coefficients = torch.tensor([0.3, -0.2, 0.05][:order], dtype=torch.float64)

    def lam(t, like):
        a, s = process.coefficients(t, like)
        return a.log() - s.log()

    def polynomial(values):
        return sum(c * values**k for k, c in enumerate(coefficients))

    def integral(values):  # ∫ e^λ (c0 + c1 λ + c2 λ²) dλ
        terms = [torch.ones_like(values), values - 1, values**2 - 2 * values + 2]
        return values.exp() * sum(c * term for c, term in zip(coefficients, terms, strict=False))

    def denoise(x, t):
        like = process.to_basis(x)
        return process.from_basis(polynomial(lam(t, like)).expand_as(like))

    steps = 8
    grid = process.sampling_times(steps)
    states = []
    x_T = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dpm_solver_pp(denoise, process, x_T, steps, order=order, lower_order_final=False,
                  callback=lambda info: states.append(info["x"]))
    states = [x_T] + states
    for i in range(order - 1, steps - 1):  # full-order steps t_i → t_{i+1}, before the step onto 0
        like = process.to_basis(states[i])
        t, s = grid[i].expand(2), grid[i + 1].expand(2)
        _, s_t = process.coefficients(t, like)
        _, s_s = process.coefficients(s, like)
        exact = s_s / s_t * like + s_s * (integral(lam(s, like)) - integral(lam(t, like)))
        torch.testing.assert_close(process.to_basis(states[i + 1]), exact, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("process_name", ["gaussian_cosine", "banded", "flow"])
def test_first_order_dpm_solver_is_ddim(process_name):
    process = make_process(process_name)
    oracle = GaussianOracle(process, *structured_gaussian())
    x_T = process.prior((5, *SHAPE), torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(dpm_solver_pp(oracle, process, x_T, 15, order=1), ddim(oracle, process, x_T, 15),
                               rtol=1e-10, atol=1e-10)


def test_dpm_solver_flow_start_is_finite_and_options_change_the_result():
    process = make_process("flow")  # A = 0 at t = 1: λ = −∞
    oracle = GaussianOracle(process, *structured_gaussian())
    x_T = process.prior((4, *SHAPE), torch.Generator().manual_seed(0), dtype=torch.float64)
    runs = {}
    for order in (2, 3):
        for lower in (True, False):
            runs[order, lower] = dpm_solver_pp(oracle, process, x_T, 6, order=order, lower_order_final=lower)
            assert torch.isfinite(runs[order, lower]).all()
    assert not torch.allclose(runs[2, True], runs[2, False])
    assert not torch.allclose(runs[2, True], runs[3, True])
    clipped = dpm_solver_pp(lambda x, t: 3 * oracle(x, t), process, x_T, 6, clip_x0=True)
    assert clipped.abs().max() <= 1.0 + 1e-9
    # on a VP grid ending at 1/T the last noisy step spans a huge λ range: lowering its order is what keeps
    # the second-order solver accurate
    process = make_process("gaussian_cosine")
    mean, covariance = structured_gaussian()
    oracle = GaussianOracle(process, mean, covariance)
    lowered = law_errors(*pushforward(dpm_solver_pp, process, oracle, 20), mean, covariance)[1]
    full = law_errors(*pushforward(dpm_solver_pp, process, oracle, 20, lower_order_final=False), mean, covariance)[1]
    assert lowered < full / 3


# --- Euler / Heun ------------------------------------------------------------------------------------
def test_euler_on_the_flow_path_is_ddim():
    process = make_process("flow")
    oracle = GaussianOracle(process, *structured_gaussian())
    x_T = process.prior((5, *SHAPE), torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(euler(oracle, process, x_T, 9), ddim(oracle, process, x_T, 9), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("sampler", "order"), [
    (euler, 1), (heun, 2), (ddim, 1), (functools.partial(dpm_solver_pp, lower_order_final=False), 2),
    (functools.partial(dpm_solver_pp, order=3, lower_order_final=False), 3),
])
def test_convergence_order_against_the_exact_ode_solution(sampler, order):
    """Independent Gaussian coordinates: the probability-flow ODE maps x_t to
    A_s m + √(A_s² c + S_s²)/√(A_t² c + S_t²) (x_t − A_t m) exactly; halving the step divides the error by 2^p."""
    process = GaussianProcess(LinearSchedule(discrete=False))
    generator = torch.Generator().manual_seed(0)
    variance = torch.rand(D, generator=generator, dtype=torch.float64) * 0.5 + 0.05
    mean = 0.3 * torch.randn(D, generator=generator, dtype=torch.float64)
    oracle = GaussianOracle(process, mean, torch.diag(variance))
    x_T = torch.randn(3, *SHAPE, generator=generator, dtype=torch.float64)
    start, end = (float(torch.tensor(v, dtype=torch.float32)) for v in (0.9, 0.1))  # as the float32 grid holds them
    (a0,), (s0,) = oracle.diagonal(torch.tensor([start]), x_T[:1])
    (a1,), (s1,) = oracle.diagonal(torch.tensor([end]), x_T[:1])
    exact = a1 * mean + ((a1**2 * variance + s1**2) / (a0**2 * variance + s0**2)).sqrt() * (
        x_T.reshape(3, D) - a0 * mean)
    errors = []
    for n in (32, 64, 128):
        grid = torch.cat([torch.linspace(start, end, n + 1), torch.zeros(1)])
        states: list[torch.Tensor] = []
        sampler(oracle, process, x_T, grid, callback=lambda info, seen=states: seen.append(info["x"]))
        errors.append(float((states[-2].reshape(3, D) - exact).abs().max()))
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(rate - order) < 0.35 for rate in rates[1:]), (errors, rates)


# --- DEQ --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("process_name", ["gaussian_cosine", "equalized"])
def test_deq_jacobi_sweeps_equal_sequential_ddim(process_name):
    """Without Anderson (memory 0, damping 1) sweep k makes state k exact: N sweeps give DDIM's trajectory."""
    process = make_process(process_name)
    oracle = GaussianOracle(process, *structured_gaussian())
    x_T = process.prior((3, *SHAPE), torch.Generator().manual_seed(0), dtype=torch.float64)
    steps, info = 8, {}
    out = deq(oracle, process, x_T, steps, max_iterations=steps, tolerance=1e-14, anderson_memory=0, info=info,
              batch_size=7)  # chunks that split the stacked trajectories unevenly
    torch.testing.assert_close(out, ddim(oracle, process, x_T, steps), rtol=1e-10, atol=1e-10)
    # sweep k evaluates only the N − k states past the exact front
    assert info["iterations"] == steps and info["nfe"] == steps * (steps + 1) // 2
    short = deq(oracle, process, x_T, steps, max_iterations=steps - 1, tolerance=1e-14, anderson_memory=0)
    assert not torch.allclose(short, out)  # one sweep fewer leaves the last state inexact


def test_deq_with_anderson_reaches_tolerance_and_matches_ddim():
    process = make_process("banded")
    oracle = GaussianOracle(process, *structured_gaussian())
    x_T = process.prior((4, *SHAPE), torch.Generator().manual_seed(0), dtype=torch.float64)
    steps, tolerance = 25, 1e-6
    reference = ddim(oracle, process, x_T, steps)
    stats = {}
    for memory in (0, 5):
        info = {}
        out = deq(oracle, process, x_T, steps, max_iterations=60, tolerance=tolerance, anderson_memory=memory,
                  info=info)
        assert info["residual"] < tolerance
        assert float((out - reference).norm() / reference.norm()) < 100 * tolerance
        stats[memory] = info["iterations"]
    assert stats[5] != stats[0]  # Anderson mixing changes the iteration (the oracle's F is affine and nilpotent
    # in its Jacobian, so plain sweeps already finish in N; Pokle et al.'s speed-ups are for real networks)
    info = {}
    deq(oracle, process, x_T, steps, max_iterations=60, tolerance=tolerance, anderson_memory=5, damping=0.5,
        info=info)
    assert info["iterations"] != stats[5]  # damping changes the iteration


class TinyNetwork:
    """A fixed random nonlinear denoiser x̂0 = tanh(W x + c t): a stand-in for a trained network whose DDIM map
    is not affine, so nothing but the sweeps themselves makes deq agree with DDIM."""

    def __init__(self, size: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(size, size, generator=generator) / size**0.5
        self.bias = torch.randn(size, generator=generator)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return torch.tanh(flat @ self.weight.T + t[:, None] * self.bias).reshape(x.shape)


@pytest.mark.parametrize("process_name", ["gaussian_cosine", "banded", "flow"])
def test_deq_with_its_config_defaults_reproduces_sequential_ddim(process_name):
    """conf/sampler/deq.yaml (Jacobi sweeps with a converged front, tolerance 1e-3, at most ``steps`` sweeps):
    max |deq − ddim| ≤ 1e-5 on a nonlinear denoiser, in at most ``steps`` sweeps and N(N + 1)/2 evaluations."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from spectral_diffusion.cli import CONFIG_DIR

    node = OmegaConf.load(CONFIG_DIR / "sampler" / "deq.yaml")
    node.pop("guidance_scale")
    sampler = instantiate(node)
    process, network = make_process(process_name), TinyNetwork(16)
    x_T = process.prior((6, *SHAPE), sample_generators(0, 0, 6))
    info = {}
    out = sampler(network, process, x_T, info=info)
    steps = node.steps
    assert float((out - ddim(network, process, x_T, steps)).abs().max()) <= 1e-5
    assert info["iterations"] <= steps and info["iterations"] <= info["nfe"] <= steps * (steps + 1) // 2
    # a loose tolerance lets states join the front before the sweeps reach them: fewer sweeps, no longer DDIM
    loose = {}
    early = deq(network, process, x_T, steps, tolerance=0.5, info=loose)
    assert loose["iterations"] < steps and float((early - out).abs().max()) > 1e-4


# --- shared behaviour -------------------------------------------------------------------------------
ALL_SAMPLERS = {
    "ddpm": ddpm, "ddim": ddim, "dpm_solver_pp": dpm_solver_pp, "dpm_solver_pp_3m": functools.partial(
        dpm_solver_pp, order=3), "euler": euler, "heun": heun, "deq": functools.partial(deq, max_iterations=40),
}


def expected_nfe(name: str, steps: int, info: dict) -> int:
    if name == "heun":
        return 2 * steps - 1
    if name == "deq":  # the states past the converged front, summed over sweeps: 1 to N per sweep
        return info["nfe"] if info["iterations"] <= info["nfe"] <= info["iterations"] * steps else -1
    return steps


@pytest.mark.parametrize("name", list(ALL_SAMPLERS))
def test_contract_shapes_batching_point_mass_and_nfe(name):
    sampler = ALL_SAMPLERS[name]
    process = make_process("equalized")
    oracle = GaussianOracle(process, *structured_gaussian())
    x_T = process.prior((5, *SHAPE), sample_generators(3, 0, 5))
    info = {}
    whole = sampler(oracle, process, x_T, 6, generator=sample_generators(9, 0, 5), info=info)
    assert whole.shape == x_T.shape and whole.dtype == x_T.dtype and torch.isfinite(whole).all()
    assert info["nfe"] == expected_nfe(name, 6, info)
    assert oracle.rows <= info["nfe"] * 5  # rows the network saw ≤ NFE × batch (deq freezes converged samples)
    again = sampler(oracle, process, x_T, 6, generator=sample_generators(9, 0, 5))
    assert torch.equal(whole, again)
    parts = torch.cat([sampler(oracle, process, x_T[:2], 6, generator=sample_generators(9, 0, 2)),
                       sampler(oracle, process, x_T[2:], 6, generator=sample_generators(9, 2, 3))])
    torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-4)
    # data concentrated at one image: every sampler lands on it (flow: the ODE samplers exactly)
    flow = make_process("flow")
    point = torch.linspace(-0.8, 0.8, D).reshape(SHAPE)
    out = sampler(lambda x, t: point.expand_as(x), flow, flow.prior((3, *SHAPE), torch.Generator().manual_seed(0)), 6,
                  generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, point.expand_as(out), rtol=1e-5, atol=1e-5)


def test_every_sampler_takes_info_and_call_arguments():
    import inspect

    for function in (ddpm, ddim, dpm_solver_pp, euler, heun, deq):
        parameters = inspect.signature(function).parameters
        assert all(name in parameters for name in CALL_ARGUMENTS + ("steps",)), function.__name__


@pytest.mark.parametrize(("sampler", "key"), [
    (functools.partial(dpm_solver_pp, steps=2, order=3), "sampler.steps"),
    (functools.partial(dpm_solver_pp, steps=10, order=4), "sampler.order"),
    (functools.partial(deq, steps=10, max_iterations=0), "sampler.max_iterations"),
    (functools.partial(deq, steps=10, tolerance=0.0), "sampler.tolerance"),
    (functools.partial(deq, steps=10, anderson_memory=-1), "sampler.anderson_memory"),
    (functools.partial(deq, steps=10, damping=1.5), "sampler.damping"),
    (functools.partial(deq, steps=10, batch_size=0), "sampler.batch_size"),
    (functools.partial(heun, steps=10, order=2), "sampler.order"),
])
def test_bad_options_name_the_key(sampler, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_sampler(sampler, GaussianProcess(CosineSchedule()))


def test_bad_options_are_rejected_by_the_call_too():
    process = GaussianProcess(CosineSchedule())
    with pytest.raises(ConfigError, match=r"sampler\.order"):
        dpm_solver_pp(lambda x, t: x, process, torch.zeros(1, 1), 5, order=0)
    with pytest.raises(ConfigError, match=r"sampler\.steps"):
        dpm_solver_pp(lambda x, t: x, process, torch.zeros(1, 1), 1, order=2)
    with pytest.raises(ConfigError, match=r"sampler\.tolerance"):
        deq(lambda x, t: x, process, torch.zeros(1, 1), 5, tolerance=-1.0)
    validate_sampler(functools.partial(dpm_solver_pp, steps=3, order=3), process)


# --- wiring --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sampler_name", ["dpm_solver_pp", "euler", "heun", "deq"])
def test_sampler_configs_build_and_generate_reports_nfe(sampler_name, tmp_path, cache_dir):
    """Every conf/sampler/*.yaml instantiates and validates; module.generate gathers NFE per batch."""
    from spectral_diffusion.pipeline import build
    from tests.conftest import compose_train

    cfg = compose_train(["debug=default", f"sampler={sampler_name}", "sampler.steps=3"], tmp_path, cache_dir)
    module = build(cfg).module
    samples = module.generate(3, batch_size=2, seed=0)
    info = module.last_sampling_info
    assert samples.shape[0] == 3 and info["batches"] == 2 and len(info["nfe_per_batch"]) == 2
    per_batch = {"heun": 5, "deq": None}.get(sampler_name, 3)
    if per_batch is None:  # deq: 1 to 3 states per sweep, at most 3 sweeps (max_iterations null: steps)
        assert all(it <= nfe <= 3 * it for it, nfe in zip(info["iterations_per_batch"], info["nfe_per_batch"]))
        assert cfg.sampler.max_iterations is None and info["iterations"] <= 3 and "residual" in info
    else:
        assert info["nfe"] == per_batch
    if sampler_name != "dpm_solver_pp":
        return
    with pytest.raises(ConfigError, match=r"sampler\.steps"):
        build(compose_train(["debug=default", "sampler=dpm_solver_pp", "sampler.steps=1"], tmp_path, cache_dir))


@pytest.mark.parametrize("sampler", [euler, heun])
def test_ode_samplers_land_on_the_clean_estimate_at_t0_on_a_vp_path(sampler):
    """The last step onto t = 0 returns x̂0, as Karras et al.'s σ-space Euler step does; the t-space Euler step
    of a VP path would leave about S_{t_{N−1}}/2 of ε̂ instead."""
    process = GaussianProcess(CosineSchedule())
    clean = torch.full((2, 1, 4, 4), 0.25)
    x_T = process.prior((2, 1, 4, 4), torch.Generator().manual_seed(0))
    out = sampler(lambda x, t: clean, process, x_T, 10)
    torch.testing.assert_close(out, clean, rtol=0, atol=0)


def test_deq_refuses_self_conditioning_before_training(tmp_path, cache_dir):
    from spectral_diffusion.pipeline import build

    from .conftest import compose_train

    cfg = compose_train(["debug=default", "sampler=deq", "self_conditioning=0.5"], tmp_path, cache_dir)
    with pytest.raises(ConfigError, match="self_conditioning=0"):
        build(cfg)
