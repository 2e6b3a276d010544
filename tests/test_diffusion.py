"""The diffusion maths: schedules, the forward process, prediction conversions and samplers.

References are written here independently of the package (numpy, closed-form Gaussian algebra,
the papers' update rules), so a wrong coefficient in the package makes these fail.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from spectral_diffusion.diffusion.predictions import EpsPrediction, VPrediction, X0Prediction
from spectral_diffusion.diffusion.process import GaussianProcess
from spectral_diffusion.diffusion.samplers import ddim, ddpm, validate_sampler
from spectral_diffusion.diffusion.schedules import CosineSchedule, LinearSchedule
from spectral_diffusion.utils.random import sample_generators
from spectral_diffusion.utils.validation import ConfigError

SCHEDULES = {
    "linear": lambda: LinearSchedule(),
    "cosine": lambda: CosineSchedule(),
    "linear_continuous": lambda: LinearSchedule(discrete=False),
    "cosine_continuous": lambda: CosineSchedule(discrete=False),
}


# --- schedules -------------------------------------------------------------------------------------
def test_linear_schedule_matches_ddpm_table():
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - betas)
    t = torch.tensor([1, 10, 500, 1000]) / 1000
    got = LinearSchedule().alpha_bar(t).numpy()
    np.testing.assert_allclose(got, alpha_bar[[0, 9, 499, 999]], rtol=1e-12)
    assert LinearSchedule().alpha_bar(torch.tensor(0.0)).item() == 1.0


def test_cosine_schedule_matches_improved_ddpm_formula():
    s, T = 0.008, 1000
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    steps = np.arange(T + 1)
    betas = np.minimum(1 - f(steps[1:]) / f(steps[:-1]), 0.999)
    alpha_bar = np.cumprod(1 - betas)
    got = CosineSchedule().alpha_bar(torch.arange(1, T + 1) / T).numpy()
    np.testing.assert_allclose(got, alpha_bar, rtol=1e-10)
    cont = CosineSchedule(discrete=False).alpha_bar(torch.tensor([0.25, 0.5])).numpy()
    np.testing.assert_allclose(cont, f(np.array([250.0, 500.0])) / f(0.0), rtol=1e-12)


def test_continuous_linear_is_the_limit_of_discrete():
    t = torch.linspace(0.01, 1, 50)
    discrete = LinearSchedule().alpha_bar(torch.round(t * 1000) / 1000).log()
    continuous = LinearSchedule(discrete=False).alpha_bar(torch.round(t * 1000) / 1000).log()
    # log(1 − β) ≈ −β − β²/2 and Σβ_j vs ∫β: gaps of order β_max/2 relative, ~1e-4 absolute
    np.testing.assert_allclose(continuous.numpy(), discrete.numpy(), rtol=0.02, atol=5e-4)


def test_sampling_grid_visits_every_step_and_ends_clean():
    schedule = LinearSchedule(timesteps=20)
    grid = schedule.sampling_times(20)
    np.testing.assert_allclose(grid.numpy(), np.r_[np.arange(20, 0, -1) / 20, 0.0], atol=1e-7)
    strided = schedule.sampling_times(5)
    assert len(strided) == 6 and strided[0] == 1.0 and strided[-1] == 0.0
    assert bool((strided[1:] < strided[:-1]).all())
    cont = LinearSchedule(discrete=False).sampling_times(4)
    np.testing.assert_allclose(cont.numpy(), [1, 0.75, 0.5, 0.25, 0])


@pytest.mark.parametrize("steps", [0, -3, 2.5, 1001])
def test_bad_step_counts_name_the_key(steps):
    with pytest.raises(ConfigError, match="sampler.steps"):
        LinearSchedule().sampling_times(steps)


def test_bad_schedule_values_name_the_key():
    with pytest.raises(ConfigError, match="noise.schedule.beta_end"):
        LinearSchedule(beta_start=0.02, beta_end=0.01)
    with pytest.raises(ConfigError, match="noise.schedule.timesteps"):
        CosineSchedule(timesteps=0)


# --- forward process ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_forward_marginals_match_alpha_and_sigma(name):
    process = GaussianProcess(SCHEDULES[name]())
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.8, -0.5, 0.1])
    n = 200_000
    for t_value in [0.05, 0.3, 0.7, 1.0]:
        t = torch.full((n,), t_value)
        eps = torch.randn(n, 3, generator=gen)
        x_t = process.q_sample(x0.expand(n, 3), t, eps)
        alpha_bar = process.schedule.alpha_bar(torch.tensor(t_value)).item()
        np.testing.assert_allclose(x_t.mean(0).numpy(), math.sqrt(alpha_bar) * x0.numpy(), atol=0.01)
        np.testing.assert_allclose(x_t.var(0).numpy(), 1 - alpha_bar, rtol=0.02, atol=1e-4)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("prediction", [EpsPrediction(), X0Prediction(), VPrediction()], ids=repr)
def test_prediction_round_trips(name, prediction):
    process = GaussianProcess(SCHEDULES[name]())
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, 1, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(64, 1, 4, 4, generator=gen, dtype=torch.float64)
    t = torch.linspace(0.02, 0.98, 64, dtype=torch.float64)
    x_t = process.q_sample(x0, t, eps)
    target = prediction.target(x0, eps, t, process)
    x0_hat, eps_hat = prediction.x0_eps(x_t, t, target, process)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(process.eps_from_x0(x_t, t, x0), eps, rtol=1e-6, atol=1e-6)


def test_v_target_is_salimans_ho():
    process = GaussianProcess(CosineSchedule())
    x0, eps, t = torch.randn(8, 1, 2, 2), torch.randn(8, 1, 2, 2), torch.full((8,), 0.4)
    alpha_bar = process.schedule.alpha_bar(torch.tensor(0.4)).float()
    expected = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    torch.testing.assert_close(VPrediction().target(x0, eps, t, process), expected)


def test_unknown_prediction_names_the_key():
    process = GaussianProcess(LinearSchedule())
    with pytest.raises(ConfigError, match="prediction='score'.*eps, x0, v, flow"):
        process.check_prediction("score")


def test_every_prediction_option_instantiates_its_type(tmp_path, cache_dir):
    from hydra.utils import instantiate

    from spectral_diffusion.diffusion.predictions import Prediction

    from .conftest import compose_train
    from .test_configs import options

    assert options("prediction") == ["eps", "flow", "v", "x0"]
    for option in options("prediction"):
        prediction = instantiate(compose_train([f"prediction={option}"], tmp_path, cache_dir).prediction)
        assert isinstance(prediction, Prediction) and prediction.name == option


def test_prior_is_standard_normal_for_vp():
    process = GaussianProcess(LinearSchedule())
    x = process.prior((20_000, 4), torch.Generator().manual_seed(0))
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01


# --- samplers ---------------------------------------------------------------------------------------
def gaussian_denoiser(process, mean: float, std: float):
    """E[x0 | x_t] for data x0 ~ N(mean, std²) i.i.d. per pixel: the exact (Bayes-optimal) denoiser."""

    def denoise(x, t):
        a, s = process.coefficients(t, x)
        gain = a * std**2 / (a * a * std**2 + s * s)
        return mean + gain * (x - a * mean)

    return denoise


class SamplerContract:
    """Every sampler: shapes, determinism, per-sample independence of batching, correct marginals."""

    sampler = None
    stochastic = False

    def run(self, process, x_T, steps, generator=None, **kw):
        return type(self).sampler(gaussian_denoiser(process, 0.3, 0.5), process, x_T, steps, generator=generator, **kw)

    def test_shape_and_determinism(self):
        process = GaussianProcess(CosineSchedule())
        x_T = process.prior((6, 1, 4, 4), torch.Generator().manual_seed(0))
        a = self.run(process, x_T, 10, sample_generators(7, 0, 6))
        b = self.run(process, x_T, 10, sample_generators(7, 0, 6))
        assert a.shape == x_T.shape and torch.equal(a, b)

    def test_sample_does_not_depend_on_batch(self):
        process = GaussianProcess(LinearSchedule())
        x_T = process.prior((6, 1, 4, 4), sample_generators(3, 0, 6))
        whole = self.run(process, x_T, 8, sample_generators(11, 0, 6))
        parts = torch.cat([self.run(process, x_T[:2], 8, sample_generators(11, 0, 2)),
                           self.run(process, x_T[2:], 8, sample_generators(11, 2, 4))])
        torch.testing.assert_close(whole, parts)

    def test_point_mass_data_is_recovered_exactly(self):
        # data concentrated at x* (std → 0): the oracle denoiser returns x*; the last step must land on it
        process = GaussianProcess(CosineSchedule())
        x_T = process.prior((4, 1, 3, 3), torch.Generator().manual_seed(2))
        out = type(self).sampler(lambda x, t: torch.full_like(x, 0.7), process, x_T, 7,
                                 generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, torch.full_like(out, 0.7))

    @pytest.mark.parametrize("name", ["linear", "cosine_continuous"])
    def test_gaussian_data_marginals(self, name):
        """With the exact denoiser of N(0.3, 0.5²) data, samples reach that law, better with more steps."""
        process = GaussianProcess(SCHEDULES[name]())
        x_T = process.prior((20_000, 1), torch.Generator().manual_seed(0), dtype=torch.float64)
        errors = []
        for steps in (20, 200):
            out = self.run(process, x_T, steps, torch.Generator().manual_seed(1))
            errors.append(abs(out.std().item() - 0.5))
            assert abs(out.mean().item() - 0.3) < 0.015
        assert errors[1] < 0.02
        assert errors[1] < errors[0]


class TestDDPM(SamplerContract):
    sampler = staticmethod(ddpm)
    stochastic = True


class TestDDIM(SamplerContract):
    sampler = staticmethod(ddim)


class TestDDIMStochastic(SamplerContract):
    sampler = staticmethod(functools.partial(ddim, eta=0.5))
    stochastic = True


def test_ddim_matches_the_paper_update():
    """DDIM η = 0 against eq. (12) of Song et al. written with ᾱ and a toy ε-network."""
    T, steps = 1000, 10
    schedule = LinearSchedule()
    process = GaussianProcess(schedule)
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, T))

    def eps_net(x, i):  # any deterministic function of (x, t) will do
        return 0.3 * np.tanh(x) + 0.001 * i

    indices = np.round(np.linspace(T, 1, steps)).astype(int)  # 1-based DDPM step numbers
    x_T = np.random.default_rng(0).standard_normal((3, 1, 2, 2))
    x = x_T.copy()
    for k, i in enumerate(indices):
        a_t = alpha_bar[i - 1]
        a_prev = alpha_bar[indices[k + 1] - 1] if k + 1 < len(indices) else 1.0
        eps = eps_net(x, i)
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps

    def denoise(x_t, t):
        i = torch.round(t.double() * T)[:, None, None, None]
        eps = 0.3 * torch.tanh(x_t) + 0.001 * i
        return EpsPrediction().x0_eps(x_t, t, eps, process)[0]

    got = ddim(denoise, process, torch.from_numpy(x_T), steps)
    np.testing.assert_allclose(got.numpy(), x, rtol=1e-9, atol=1e-9)


def test_ddpm_full_grid_uses_textbook_posterior():
    """On the full grid the posterior coefficients equal Ho et al. eq. (7)."""
    from spectral_diffusion.diffusion.samplers import _posterior_terms

    T = 1000
    betas = np.linspace(1e-4, 0.02, T)
    alpha_bar = np.cumprod(1 - betas)
    process = GaussianProcess(LinearSchedule())
    like = torch.zeros(1, 1, dtype=torch.float64)
    for i in [2, 10, 500, 1000]:  # 1-based step numbers
        coef_x0, coef_xt, var = _posterior_terms(process, torch.tensor([i / T]), torch.tensor([(i - 1) / T]), like)
        ab_t, ab_prev = alpha_bar[i - 1], alpha_bar[i - 2]
        assert coef_x0.item() == pytest.approx(np.sqrt(ab_prev) * betas[i - 1] / (1 - ab_t), rel=1e-9)
        assert coef_xt.item() == pytest.approx(np.sqrt(1 - betas[i - 1]) * (1 - ab_prev) / (1 - ab_t), rel=1e-9)
        assert var.item() == pytest.approx((1 - ab_prev) / (1 - ab_t) * betas[i - 1], rel=1e-9)


def test_strided_ddpm_step_is_the_exact_gaussian_posterior():
    """One strided step with a known x0 must sample q(x_s | x_t, x0), derived here by Bayes' rule."""
    process = GaussianProcess(LinearSchedule())
    t, s = 0.8, 0.3  # a stride of 500 DDPM steps
    a_t, a_s = (process.schedule.alpha_bar(torch.tensor(v)).item() ** 0.5 for v in (t, s))
    var_t, var_s = 1 - a_t**2, 1 - a_s**2
    x0, x_t, n = 0.6, -0.4, 400_000
    # prior x_s ~ N(a_s x0, var_s); likelihood x_t | x_s ~ N((a_t/a_s) x_s, var_t − (a_t/a_s)² var_s)
    a_ts = a_t / a_s
    var_lik = var_t - a_ts**2 * var_s
    post_var = 1 / (1 / var_s + a_ts**2 / var_lik)
    post_mean = post_var * (a_s * x0 / var_s + a_ts * x_t / var_lik)
    grid = torch.tensor([t, s, 0.0])
    seen = []
    ddpm(lambda x, tt: torch.full_like(x, x0), process, torch.full((n, 1), x_t, dtype=torch.float64), grid,
         generator=torch.Generator().manual_seed(0), callback=lambda info: seen.append(info["x"]))
    first = seen[0]
    assert first.mean().item() == pytest.approx(post_mean, abs=3e-3)
    assert first.var().item() == pytest.approx(post_var, rel=1e-2)


def test_ddpm_equals_ddim_with_eta_one():
    process = GaussianProcess(CosineSchedule())
    x_T = process.prior((5, 1, 4, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
    denoise = gaussian_denoiser(process, 0.1, 0.7)
    a = ddpm(denoise, process, x_T, 25, generator=sample_generators(5, 0, 5))
    b = ddim(denoise, process, x_T, 25, generator=sample_generators(5, 0, 5), eta=1.0)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_eta_changes_the_trajectory_and_clip_only_touches_x0():
    process = GaussianProcess(LinearSchedule())
    x_T = process.prior((4, 1, 4, 4), torch.Generator().manual_seed(0))
    denoise = gaussian_denoiser(process, 0.0, 3.0)  # wide data: x̂0 often leaves [-1, 1]
    det = ddim(denoise, process, x_T, 10)
    sto = ddim(denoise, process, x_T, 10, eta=1.0, generator=torch.Generator().manual_seed(0))
    clipped = ddim(denoise, process, x_T, 10, clip_x0=True)
    assert not torch.allclose(det, sto)
    assert det.abs().max() > 1.5  # no clamping of x_t by default
    assert clipped.abs().max() <= 1.0 + 1e-6  # final x̂0 was clipped; x_t itself never is


def test_sampler_validation_names_keys():
    process = GaussianProcess(LinearSchedule())
    with pytest.raises(ConfigError, match="sampler.steps"):
        validate_sampler(functools.partial(ddim, steps=0), process)
    with pytest.raises(ConfigError, match="sampler.eta"):
        validate_sampler(functools.partial(ddim, steps=10, eta=-0.1), process)
    with pytest.raises(ConfigError, match="sampler.eta"):
        ddim(lambda x, t: x, process, torch.zeros(1, 1), 3, eta=-1.0)
    validate_sampler(functools.partial(ddpm, steps=1000), process)
