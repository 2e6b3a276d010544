"""Samplers: short pure functions with one signature, written once for every process.

``sampler(denoise_fn, process, x_T, steps, *, generator, callback, info, **options) -> x_0``

- ``denoise_fn(x_t, t) -> x̂0``: the network wrapped with its prediction type (see
  ``DiffusionModule.denoise``); samplers never see ε/x0/v and never clamp x_t. ``t`` holds one time
  per row of ``x_t`` (rows may differ: ``deq`` stacks a whole trajectory into one batch).
- ``steps``: a number of steps (the process builds its grid) or an explicit descending grid
  of times ending at 0.
- ``generator``: one ``torch.Generator`` per sample (or one for the batch, or None).
- ``info``: a dict or None; the sampler writes ``info["nfe"]`` (network evaluations per sample
  trajectory) and its own statistics (``deq``: ``"iterations"``, ``"residual"``).
Every update is written with the process's diagonal coefficients (A_t, S_t) in its basis, so the
same code serves white, coloured, per-band and flow processes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from spectral_diffusion.utils.validation import (
    ConfigError,
    check_choice,
    check_int,
    check_positive,
)

DenoiseFn = Callable[[Tensor, Tensor], Tensor]

DPM_SOLVER_ORDERS = (1, 2, 3)
# Tikhonov term of the Anderson least-squares problem, relative to the mean residual energy.
ANDERSON_REGULARIZATION = 1e-8


def time_grid(process, steps: int | Tensor) -> Tensor:
    """The descending grid of times a sampler walks, ending at the clean endpoint t = 0."""
    if isinstance(steps, Tensor):
        grid = steps.float()
        if grid.ndim != 1 or len(grid) < 2 or not bool((grid[1:] < grid[:-1]).all()) or grid[-1] != 0:
            raise ConfigError("an explicit sampler grid must be a strictly decreasing 1-D tensor ending at 0")
        return grid
    return process.sampling_times(steps)


def _estimate(denoise_fn: DenoiseFn, process, x: Tensor, t: Tensor, clip_x0: bool) -> tuple[Tensor, Tensor]:
    """(x̂0, ε̂) at (x, t); with ``clip_x0`` the clean estimate is clipped to [-1, 1] and ε̂ re-derived."""
    x0 = denoise_fn(x, t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    return x0, process.eps_from_x0(x, t, x0)


def _posterior_terms(process, t: Tensor, s: Tensor, like: Tensor):
    """Coefficients of q(x_s | x_t, x0) for s < t, element-wise in the process basis.

    With a_{t|s} = a_t/a_s and σ²_{t|s} = σ_t² − a_{t|s}² σ_s² (Kingma et al. 2021, VDM eq. 22–23):
    mean = (a_s σ²_{t|s}/σ_t²) x0 + (a_{t|s} σ_s²/σ_t²) x_t, variance = σ²_{t|s} σ_s²/σ_t².
    """
    a_t, s_t = process.coefficients(t, like)
    a_s, s_s = process.coefficients(s, like)
    a_ts = a_t / a_s
    var_ts = (s_t * s_t - a_ts * a_ts * s_s * s_s).clamp(min=0)
    coef_x0 = a_s * var_ts / (s_t * s_t)
    coef_xt = a_ts * s_s * s_s / (s_t * s_t)
    variance = var_ts * s_s * s_s / (s_t * s_t)
    return coef_x0, coef_xt, variance


def _batch_time(value: Tensor, x: Tensor) -> Tensor:
    return value.to(x.device).expand(x.shape[0])


def _report(info: dict | None, **values) -> None:
    if info is not None:
        info.update(values)


@torch.no_grad()
def ddpm(denoise_fn: DenoiseFn, process, x_T: Tensor, steps: int | Tensor, *, generator=None,
         callback=None, info: dict | None = None, clip_x0: bool = False) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) on any grid.

    Each step draws from the exact Gaussian posterior q(x_s | x_t, x̂0) between consecutive grid
    times, so a strided grid uses the posterior of the *strided* step (not single-step betas);
    on the full grid this is DDPM's μ̃_t and σ̃_t² = β̃_t. The last step (s = 0) returns x̂0.
    """
    grid = time_grid(process, steps)
    x = x_T
    for i in range(len(grid) - 1):
        t, s = _batch_time(grid[i], x), _batch_time(grid[i + 1], x)
        x0, _ = _estimate(denoise_fn, process, x, t, clip_x0)
        c_x, c_x0 = process.to_basis(x), process.to_basis(x0)
        coef_x0, coef_xt, variance = _posterior_terms(process, t, s, c_x)
        c_next = coef_x0 * c_x0 + coef_xt * c_x
        if grid[i + 1] > 0:
            noise = process.to_basis(process.noise(x.shape, generator, device=x.device, dtype=x.dtype))
            c_next = c_next + variance.sqrt() * noise
        x = process.from_basis(c_next)
        if callback is not None:
            callback({"step": i, "t": grid[i], "x": x, "x0": x0})
    _report(info, nfe=len(grid) - 1)
    return x


def _ddim_step(process, x0: Tensor, eps: Tensor, s: Tensor) -> Tensor:
    """Deterministic DDIM update x_s = A_s x̂0 + S_s ε̂ (Song et al. 2021, eq. 12 with σ = 0)."""
    c_x0, c_eps = process.to_basis(x0), process.to_basis(eps)
    a_s, s_s = process.coefficients(s, c_x0)
    return process.from_basis(a_s * c_x0 + s_s * c_eps)


@torch.no_grad()
def ddim(denoise_fn: DenoiseFn, process, x_T: Tensor, steps: int | Tensor, *, generator=None,
         callback=None, info: dict | None = None, eta: float = 0.0, clip_x0: bool = False) -> Tensor:
    """DDIM (Song, Meng & Ermon 2021, eq. 12), η ≥ 0; η = 0 is deterministic, η = 1 equals DDPM.

    Steps (code ↔ paper): ``x0`` = "predicted x0", ``eps`` = ε_θ(x_t),
    ``c`` = σ_t(η) = η·√(posterior variance), x_s = a_s x̂0 + √(σ_s² − c²) ε̂ + c z.
    """
    if eta < 0:
        raise ConfigError(f"sampler.eta={eta!r} is invalid; it must be >= 0")
    grid = time_grid(process, steps)
    x = x_T
    for i in range(len(grid) - 1):
        t, s = _batch_time(grid[i], x), _batch_time(grid[i + 1], x)
        x0, eps = _estimate(denoise_fn, process, x, t, clip_x0)
        if eta > 0 and grid[i + 1] > 0:
            c_x0, c_eps = process.to_basis(x0), process.to_basis(eps)
            a_s, s_s = process.coefficients(s, c_x0)
            _, _, variance = _posterior_terms(process, t, s, c_x0)
            c = eta * variance.sqrt()
            noise = process.to_basis(process.noise(x.shape, generator, device=x.device, dtype=x.dtype))
            x = process.from_basis(a_s * c_x0 + (s_s * s_s - c * c).clamp(min=0).sqrt() * c_eps + c * noise)
        else:
            x = _ddim_step(process, x0, eps, s)
        if callback is not None:
            callback({"step": i, "t": grid[i], "x": x, "x0": x0})
    _report(info, nfe=len(grid) - 1)
    return x


def _check_order(order: int, steps: int) -> None:
    check_choice("sampler.order", order, DPM_SOLVER_ORDERS)
    if steps < order:
        raise ConfigError(
            f"sampler.steps={steps} is invalid for sampler.order={order}: a solver of order {order} needs "
            f"steps >= {order}; raise sampler.steps or lower sampler.order"
        )


@torch.no_grad()
def dpm_solver_pp(denoise_fn: DenoiseFn, process, x_T: Tensor, steps: int | Tensor, *, generator=None,
                  callback=None, info: dict | None = None, order: int = 2, lower_order_final: bool = True,
                  clip_x0: bool = False) -> Tensor:
    """Multistep DPM-Solver++ (Lu et al. 2022, arXiv 2211.01095, Alg. 2 "2M"; "3M" from its reference code).

    Data-prediction solver of the probability-flow ODE in half-log-SNR λ = log(A/S), written per basis
    coefficient, so λ, h and r are tensors. Update from t_{i-1} to t_i (eq. 9 and Alg. 2):
        x_i = (S_i/S_{i-1}) x_{i-1} − A_i (e^{−h_i} − 1) D_i,  h_i = λ_i − λ_{i-1},
        order 1: D_i = x̂0_{i-1}                                     (equals DDIM η = 0)
        order 2: D_i = (1 + 1/(2 r_i)) x̂0_{i-1} − 1/(2 r_i) x̂0_{i-2},  r_i = h_{i-1}/h_i
        order 3: φ-weighted first and second divided differences of x̂0 (``_third_order``, see its note).
    Warm-up steps use the highest order the history allows; with ``lower_order_final`` the last noisy steps
    lower their order too (Lu et al.'s stabilising trick, which they apply below 15 steps; here at every step
    count, because grids end at t = 1/T and that final step in λ is long at any count). The step onto t = 0
    (S = 0, λ = +∞, e^{−h} = 0) is the first-order limit x_0 = A_0 x̂0. A flow start (A = 0, λ = −∞) gives
    h = +∞ and e^{−h} = 0, so the first step is x = A x̂0 and the next step's 1/r = h/h_prev = 0: finite.
    Code ↔ paper: ``lam`` = λ_t, ``h`` = h_i, ``m0, m1, m2`` = x_θ at t_{i-1}, t_{i-2}, t_{i-3}.
    """
    grid = time_grid(process, steps)
    total = len(grid) - 1
    _check_order(order, total)
    x = x_T
    history: list[tuple[Tensor, Tensor]] = []  # (x̂0 coefficients, λ) at earlier grid times, newest first
    for i in range(total):
        t, s = _batch_time(grid[i], x), _batch_time(grid[i + 1], x)
        x0, _ = _estimate(denoise_fn, process, x, t, clip_x0)
        c_x, c_x0 = process.to_basis(x), process.to_basis(x0)
        if grid[i + 1] == 0:
            a_s, _ = process.coefficients(s, c_x0)
            x = process.from_basis(a_s * c_x0)
        else:
            a_t, s_t = (v.double() for v in process.coefficients(t, c_x))
            a_s, s_s = (v.double() for v in process.coefficients(s, c_x))
            lam_t, lam_s = a_t.log() - s_t.log(), a_s.log() - s_s.log()
            h = lam_s - lam_t
            step_order = min(order, i + 1)
            if lower_order_final:
                step_order = min(step_order, total - 1 - i)
            history.insert(0, (c_x0.double(), lam_t))
            del history[3:]
            phi_1 = torch.expm1(-h)  # e^{−h} − 1
            if step_order == 1:
                update = -a_s * phi_1 * history[0][0]
            elif step_order == 2:
                update = -a_s * phi_1 * _second_order(history, h)
            else:
                update = _third_order(history, h, a_s, phi_1)
            x = process.from_basis(((s_s / s_t) * c_x.double() + update).to(x.dtype))
        if callback is not None:
            callback({"step": i, "t": grid[i], "x": x, "x0": x0})
    _report(info, nfe=total)
    return x


def _second_order(history, h: Tensor) -> Tensor:
    """D_i of Alg. 2: x̂0_{i-1} + (1/(2 r_i)) (x̂0_{i-1} − x̂0_{i-2}), with 1/r_i = h_i / h_{i-1}."""
    (m0, lam0), (m1, lam1) = history[0], history[1]
    inverse_r = h / (lam0 - lam1)
    return m0 + 0.5 * inverse_r * (m0 - m1)


def _third_order(history, h: Tensor, a_s: Tensor, phi_1: Tensor) -> Tensor:
    """DPM-Solver++(3M): −A φ₁ D0 + A φ₂ D1 − 2 A φ₃ D2 with φ₂ = φ₁/h + 1, φ₃ = φ₂/h − ½ and divided
    differences D1 ≈ h x̂0', D2 ≈ ½ h² x̂0'' over the last three λ (Lu et al. 2022, multistep third-order update).

    The reference code weights D2 by φ₃ alone; since D2 is ½ h² x̂0'', the quadratic term of eq. 8,
    ∫₀ʰ e^{u−h} u²/2 du · x̂0'' = −h² φ₃ x̂0'', needs 2 φ₃. With it the step integrates quadratic x̂0(λ)
    exactly and the solver converges with order 3 (tests); with φ₃ alone it is second order.
    """
    (m0, lam0), (m1, lam1), (m2, lam2) = history
    r0, r1 = (lam0 - lam1) / h, (lam1 - lam2) / h
    d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    return -a_s * phi_1 * m0 + a_s * phi_2 * d1 - 2.0 * a_s * phi_3 * d2


def _velocity(process, x: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """dx/dt = A'(t) x̂0 + S'(t) ε̂ in the process basis, ε̂ = (x − A x̂0)/S: the probability-flow ODE of a
    Gaussian path x_t = A_t x0 + S_t ε with the denoiser in place of x0 (Karras et al. 2022, eq. 1/4 generalised
    to per-coefficient A, S; for the flow path A' = −1, S' = 1 it is the rectified-flow velocity ε̂ − x̂0)."""
    c_x, c_x0 = process.to_basis(x), process.to_basis(x0)
    a, s = process.coefficients(t, c_x)
    da, ds = process.coefficient_derivatives(t, c_x)
    c_eps = (c_x - a * c_x0) / s
    return da.to(c_x.dtype) * c_x0 + ds.to(c_x.dtype) * c_eps


@torch.no_grad()
def euler(denoise_fn: DenoiseFn, process, x_T: Tensor, steps: int | Tensor, *, generator=None,
          callback=None, info: dict | None = None, clip_x0: bool = False) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dt = A' x̂0 + S' ε̂ along the time grid (Karras et al.
    2022, Alg. 1 without the correction). On the flow path (A = 1 − t, S = t) one step is exactly DDIM η = 0.
    The last step onto t = 0 returns x̂0: that is where the Euler step lands on the flow path and in Karras et
    al.'s σ parameterisation, whereas in t a VP path (S ∝ √t near 0) would leave ≈ S_{t_{N−1}}/2 of ε̂."""
    grid = time_grid(process, steps)
    x = x_T
    for i in range(len(grid) - 1):
        t = _batch_time(grid[i], x)
        x0, _ = _estimate(denoise_fn, process, x, t, clip_x0)
        if grid[i + 1] > 0:
            velocity = _velocity(process, x, t, x0)
            x = process.from_basis(process.to_basis(x) + (grid[i + 1] - grid[i]).item() * velocity)
        else:
            x = x0
        if callback is not None:
            callback({"step": i, "t": grid[i], "x": x, "x0": x0})
    _report(info, nfe=len(grid) - 1)
    return x


@torch.no_grad()
def heun(denoise_fn: DenoiseFn, process, x_T: Tensor, steps: int | Tensor, *, generator=None,
         callback=None, info: dict | None = None, clip_x0: bool = False) -> Tensor:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1, S_churn = 0).

    Steps (code ↔ Alg. 1): ``d`` = d_i (line 7), ``x_euler`` = x_{i+1} (line 8), ``d_next`` = d'_i (line 10),
    x_{i+1} = x_i + (t_{i+1} − t_i)(d_i + d'_i)/2 (line 11); the last step onto t = 0 is Euler's, which
    returns x̂0 (see ``euler``; the derivative at t = 0 is singular for VP paths), so the NFE is 2·steps − 1.
    """
    grid = time_grid(process, steps)
    x = x_T
    for i in range(len(grid) - 1):
        t, s = _batch_time(grid[i], x), _batch_time(grid[i + 1], x)
        dt = (grid[i + 1] - grid[i]).item()
        x0, _ = _estimate(denoise_fn, process, x, t, clip_x0)
        if grid[i + 1] > 0:
            c_x = process.to_basis(x)
            d = _velocity(process, x, t, x0)
            x_euler = process.from_basis(c_x + dt * d)
            x0_next, _ = _estimate(denoise_fn, process, x_euler, s, clip_x0)
            d_next = _velocity(process, x_euler, s, x0_next)
            x = process.from_basis(c_x + dt * 0.5 * (d + d_next))
        else:
            x = x0
        if callback is not None:
            callback({"step": i, "t": grid[i], "x": x, "x0": x0})
    _report(info, nfe=2 * (len(grid) - 1) - 1)
    return x


def _anderson_mix(states: Tensor, images: Tensor, damping: float) -> Tensor:
    """Anderson acceleration's next iterate from per-sample histories (Walker & Ni 2011, eq. 2.1–2.2).

    ``states`` X and ``images`` F = f(X) are (B, n, P) for the last n iterates of each sample. The weights α
    minimise ‖Σ_j α_j (F_j − X_j)‖ with Σ_j α_j = 1 (solved as the bordered normal equations, as in Pokle
    et al. 2022's solver); the next iterate is β Σ α_j F_j + (1 − β) Σ α_j X_j with β = ``damping``.
    """
    residuals = (images - states).double()
    n = residuals.shape[1]
    gram = residuals @ residuals.transpose(1, 2)
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp(min=torch.finfo(torch.float64).tiny)
    gram = gram + ANDERSON_REGULARIZATION * scale[:, None, None] * torch.eye(n, dtype=gram.dtype, device=gram.device)
    system = torch.zeros(len(gram), n + 1, n + 1, dtype=gram.dtype, device=gram.device)
    system[:, 0, 1:] = 1.0
    system[:, 1:, 0] = 1.0
    system[:, 1:, 1:] = gram
    rhs = torch.zeros(len(gram), n + 1, 1, dtype=gram.dtype, device=gram.device)
    rhs[:, 0] = 1.0
    alpha = torch.linalg.solve(system, rhs)[:, 1:].to(states.dtype)  # (B, n, 1)
    mixed_images = (alpha * images).sum(dim=1)
    if damping == 1.0:
        return mixed_images
    return damping * mixed_images + (1.0 - damping) * (alpha * states).sum(dim=1)


@torch.no_grad()
def deq(denoise_fn: DenoiseFn, process, x_T: Tensor, steps: int | Tensor, *, generator=None,
        callback=None, info: dict | None = None, max_iterations: int | None = None, tolerance: float = 1e-3,
        anderson_memory: int = 0, damping: float = 1.0, batch_size: int = 512, clip_x0: bool = False) -> Tensor:
    """Implicit equilibrium sampling: the whole DDIM (η = 0) trajectory as one fixed point (Pokle, Geng & Kolter
    2022, "Deep Equilibrium Approaches to Diffusion Models", eq. 6–7), solved by parallel sweeps.

    Unknowns z = (x_{t_1}, …, x_{t_N}); the map F applies one DDIM step to every state in parallel,
    F(z)_{k+1} = DDIM(x_{t_k}, t_k → t_{k+1}) with x_{t_0} = x_T, the network seeing the stacked states in
    chunks of ``batch_size`` rows. The fixed point z = F(z) is sequential DDIM's trajectory.

    Default (``anderson_memory`` = 0, ``damping`` = 1): Picard/Jacobi sweeps z ← F(z) with a converged front, as
    ParaDiGMS does (Shih et al. 2023, Alg. 1, a window as long as the trajectory). A sweep makes the first state past
    the front exact (its input is), so N sweeps reproduce DDIM exactly (``max_iterations`` = None means N); states
    past it whose relative change ‖F(z)_k − z_k‖/‖F(z)_k‖ fell below ``tolerance``, in an unbroken run, join the
    front too, which is what can finish in fewer than N sweeps. States behind the front are never evaluated again.
    With ``anderson_memory`` > 0 (Anderson acceleration, Walker & Ni 2011, per sample) or ``damping`` < 1 the whole
    trajectory is iterated until its relative residual ‖F(z) − z‖/‖F(z)‖ < ``tolerance`` (Pokle et al.'s solver).
    Each sample is solved on its own and frozen once done, so a sample never depends on its batch. Returns the
    last state. ``info``: "iterations" (sweeps), "residual" (largest final relative residual ‖F(z) − z‖/‖F(z)‖ of
    a trajectory over the batch; with the front, over the states not made exact by propagation) and "nfe" (network
    evaluations per trajectory: the states evaluated, summed over sweeps; with the front at most N(N + 1)/2,
    otherwise iterations·N).
    """
    grid = time_grid(process, steps)
    total, batch = len(grid) - 1, x_T.shape[0]
    max_iterations = total if max_iterations is None else max_iterations
    _check_deq_options(max_iterations, tolerance, anderson_memory, damping, batch_size)
    image_shape = x_T.shape[1:]
    times_in, times_out = grid[:-1].to(x_T.device), grid[1:].to(x_T.device)
    use_front = anderson_memory == 0 and damping == 1.0

    def sweep(trajectory: Tensor, start: Tensor, first: int) -> Tensor:
        """F on states first..N−1 of (b, N, ...) trajectories (one DDIM step each); earlier states are copied."""
        b, count = len(trajectory), total - first
        previous = torch.cat([start[:, None], trajectory[:, :-1]], dim=1)[:, first:]
        inputs = previous.transpose(0, 1).reshape(count * b, *image_shape)
        t = times_in[first:].repeat_interleave(b)
        s = times_out[first:].repeat_interleave(b)
        outputs = []
        for rows in torch.split(torch.arange(count * b, device=x_T.device), batch_size):
            x0, eps = _estimate(denoise_fn, process, inputs[rows], t[rows], clip_x0)
            outputs.append(_ddim_step(process, x0, eps, s[rows]))
        stepped = torch.cat(outputs).reshape(count, b, *image_shape).transpose(0, 1)
        return torch.cat([trajectory[:, :first], stepped], dim=1)

    z = x_T[:, None].expand(batch, total, *image_shape).clone()
    solution = z.clone()
    residual = torch.full((batch,), float("inf"), dtype=torch.float64, device=x_T.device)
    front = torch.zeros(batch, dtype=torch.long, device=x_T.device)  # states known to be converged, per sample
    active = torch.ones(batch, dtype=torch.bool, device=x_T.device)
    state_index = torch.arange(total, device=x_T.device)
    states_history = images_history = None
    if anderson_memory > 0:
        states_history = torch.zeros(batch, anderson_memory, z[0].numel(), dtype=z.dtype, device=z.device)
        images_history = torch.zeros_like(states_history)
    iterations = nfe = 0
    tiny = torch.finfo(torch.float64).tiny
    for k in range(max_iterations):
        rows = active.nonzero().squeeze(1)
        current = z[rows]
        first = int(front[rows].min()) if use_front else 0
        image = sweep(current, x_T[rows], first)
        iterations, nfe = k + 1, nfe + total - first
        if use_front:  # the states behind a sample's own front keep their value, the one at it is now exact
            behind = state_index < front[rows, None]
            image = torch.where(behind.reshape(*behind.shape, *([1] * len(image_shape))), current, image)
            unsure = (state_index > front[rows, None]).reshape(*behind.shape, *([1] * len(image_shape)))
            change = ((image - current) * unsure).double().flatten(2)
        else:
            change = (image - current).double().flatten(2)
        residual[rows] = change.flatten(1).norm(dim=1) / image.double().flatten(1).norm(dim=1).clamp(min=tiny)
        if use_front:
            state_change = change.norm(dim=2) / image.double().flatten(2).norm(dim=2).clamp(min=tiny)
            done = (state_change < tolerance) | (state_index <= front[rows, None])
            front[rows] = done.long().cumprod(dim=1).sum(dim=1)
            z[rows] = image
            solution[rows] = image
            finished = front[rows] == total
        else:
            solution[rows] = image
            if anderson_memory == 0:
                z[rows] = damping * image + (1.0 - damping) * current
            else:
                slot, n = k % anderson_memory, min(k + 1, anderson_memory)
                states_history[rows, slot] = current.flatten(1)
                images_history[rows, slot] = image.flatten(1)
                z[rows] = _anderson_mix(states_history[rows, :n], images_history[rows, :n],
                                        damping).reshape(current.shape)
            finished = residual[rows] < tolerance
        if callback is not None:
            estimate = solution[:, -1]
            callback({"step": k, "t": grid[0], "x": estimate, "x0": estimate, "residual": residual.clone()})
        active[rows] = ~finished
        if not bool(active.any()):
            break
    _report(info, nfe=nfe, iterations=iterations, residual=float(residual.max()))
    return solution[:, -1]


def _check_deq_options(max_iterations, tolerance, anderson_memory, damping, batch_size) -> None:
    if max_iterations is not None:  # None: as many sweeps as steps
        check_int("sampler.max_iterations", max_iterations, 1)
    check_int("sampler.anderson_memory", anderson_memory, 0)
    check_int("sampler.batch_size", batch_size, 1)
    check_positive("sampler.tolerance", tolerance)
    if not 0 < damping <= 1:
        raise ConfigError(f"sampler.damping={damping!r} is invalid; it must lie in (0, 1]")


# Arguments every sampler receives from the caller rather than from its config node.
CALL_ARGUMENTS = ("denoise_fn", "process", "x_T", "generator", "callback", "info")


def validate_sampler(sampler, process) -> None:
    """Check a configured (partial) sampler's options before any training starts."""
    keywords = getattr(sampler, "keywords", {})
    function = getattr(sampler, "func", sampler)
    parameters = inspect.signature(function).parameters
    options = [name for name in parameters if name not in CALL_ARGUMENTS]
    for key in keywords:
        if key not in options:
            raise ConfigError(f"sampler.{key} is not an option of {function.__name__}; its options are {options}")
    if "steps" not in keywords:
        raise ConfigError("sampler.steps is missing; set the number of sampling steps, e.g. sampler.steps=50")
    grid = time_grid(process, keywords["steps"])

    def option(name):
        return keywords.get(name, parameters[name].default if name in parameters else None)

    if "eta" in keywords:
        check_positive("sampler.eta", keywords["eta"], strict=False)
    if "order" in parameters:
        _check_order(option("order"), len(grid) - 1)
    if "max_iterations" in parameters:
        _check_deq_options(option("max_iterations"), option("tolerance"), option("anderson_memory"),
                           option("damping"), option("batch_size"))
