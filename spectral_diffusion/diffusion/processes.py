"""Frequency-space forward processes: equalized noise, band-specific schedules and the flow path.

Each is a ``GaussianProcess`` with other diagonal coefficients (A_t, S_t) in an orthonormal basis, so
the prior, every prediction type (``diffusion.predictions``) and every sampler work unchanged (the
basis-diagonal Gaussian path of Hoogeboom & Salimans 2023, "Blurring diffusion models", §3). ε stays white; the colour of the noise lives in S_t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from spectral_diffusion.diffusion.predictions import EpsPrediction, Prediction
from spectral_diffusion.diffusion.process import (
    GaussianProcess,
    per_sample,
    vp_coefficient_derivatives,
)
from spectral_diffusion.diffusion.schedules import Schedule, check_steps
from spectral_diffusion.spectral.bands import band_edges
from spectral_diffusion.spectral.bases import BASES, make_basis
from spectral_diffusion.utils.validation import (
    ConfigError,
    check_choice,
    check_int,
    check_positive,
    check_range,
)

# A band may keep at most this signal fraction A_b(1)² at t = 1, where the prior N(0, A² + S²) ignores it.
MAX_TERMINAL_SIGNAL = 1e-3


def shifted_vp_coefficients(schedule: Schedule, t: Tensor, like: Tensor, ratio: Tensor | float) -> tuple[Tensor, Tensor]:
    """(A, S) in float64 of the variance-preserving pair with log-SNR λ(t) + log r, λ = log(ᾱ/(1 − ᾱ)):
    A² = r ᾱ/D, S² = (1 − ᾱ)/D, D = r ᾱ + 1 − ᾱ (r may be per coefficient; r = 1 is √ᾱ, √(1 − ᾱ))."""
    t = torch.as_tensor(t, device=like.device)
    alpha_bar = per_sample(schedule.alpha_bar(t.double()), like)
    denominator = ratio * alpha_bar + 1.0 - alpha_bar
    return (ratio * alpha_bar / denominator).sqrt(), ((1.0 - alpha_bar) / denominator).clamp(min=0).sqrt()


def terminal_signal(schedule: Schedule, ratio: Tensor) -> Tensor:
    """The signal fraction A² at t = 1 of a log-SNR shifted by log ``ratio``: r ᾱ(1)/(r ᾱ(1) + 1 − ᾱ(1))."""
    alpha_bar_end = schedule.alpha_bar(torch.ones(()))
    return ratio * alpha_bar_end / (ratio * alpha_bar_end + 1 - alpha_bar_end)


def smooth_log_profile(values: Tensor, half_width: int) -> Tensor:
    """Local linear fit of a log radial profile against log radius over a centred window (Savitzky & Golay
    1964, degree 1); ``values[k]`` belongs to radial bin k + 1 (DC excluded). The window is ``half_width`` bins
    either side, shrunk symmetrically near the ends (min(half_width, k, n − 1 − k)) so that it never leans to
    one side, and a line in log-log is exact: a power law S ∝ |f|^−β passes unchanged (issue 16: a moving
    average of log S that shrank on one side only lowered the first ring's noise gain by about 2×)."""
    if half_width == 0 or len(values) == 0:
        return values
    count = len(values)
    index = torch.arange(count)
    window = torch.minimum(index, count - 1 - index).clamp(max=half_width)
    start, stop = index - window, index + window + 1
    log_radius = torch.arange(1, count + 1, dtype=values.dtype).log()

    def window_mean(series: Tensor) -> Tensor:
        cumulative = torch.cat([torch.zeros(1, dtype=series.dtype), series.cumsum(0)])
        return (cumulative[stop] - cumulative[start]) / (stop - start)

    mean_x, mean_y = window_mean(log_radius), window_mean(values)
    variance = window_mean(log_radius.square()) - mean_x.square()
    covariance = window_mean(log_radius * values) - mean_x * mean_y
    slope = torch.where(window > 0, covariance / torch.where(window > 0, variance, 1.0), 0.0)
    return mean_y + slope * (log_radius - mean_x)


class SpectralWeights:
    """The noise gain w(f) of frequency-equalized noise: w² ∝ S_data(f)^γ, mean(w²) = 1, w_min ≤ w ≤ w_max.

    With S_t = σ(t)·w(f) the per-frequency SNR of x_t is α² S_data(f)/(σ² w(f)²) ∝ S_data^(1−γ): equal at
    every frequency for γ = 1. S_data is the training set's radially averaged power spectrum; its log is
    smoothed by ``smooth_log_profile`` over ``smoothing`` radial bins either side (DC excluded) and read at
    each basis coefficient's |f|: the coefficient's own radial bin for the FFT, linear interpolation between
    bins for the DCT. The floor and ceiling keep the prior well conditioned; the scale c of w = clamp(c·S^(γ/2), w_min, w_max)
    is found by bisection so that mean(w²) = 1 holds after clamping.
    """

    def __init__(self, gamma: float, basis: str, smoothing: int, w_min: float, w_max: float) -> None:
        self.gamma = float(check_range("noise.gamma", gamma, 0.0, 1.0))
        self.basis_name = check_choice("noise.basis", basis, ("fft", "dct"))
        self.smoothing = check_int("noise.smoothing", smoothing, 0)
        check_positive("noise.w_min", w_min)
        if not w_min <= 1.0 <= w_max:
            raise ConfigError(f"noise.w_min={w_min!r}, noise.w_max={w_max!r} are invalid; "
                              "they must satisfy 0 < w_min <= 1 <= w_max so that mean(w²) = 1 is reachable")
        self.w_min, self.w_max = float(w_min), float(w_max)
        self.weights: Tensor | None = None  # (H, W) float64 on the CPU, set by fit
        self._cache: dict[tuple, Tensor] = {}

    def fit(self, frequencies: Tensor, power: Tensor, height: int, width: int, basis) -> Tensor:
        """w (H, W) in float64 for the coefficients of ``basis`` from S_data's radial profile: ``power`` at the
        bin radii ``frequencies`` (cycles/pixel, bins round(|f|·max(H, W)), as ``spectral.radial_power_spectrum``
        and ``DiffusionDataModule.radial_power_spectrum`` give them)."""
        bins = torch.round(frequencies.double().cpu() * max(height, width)).long()
        # non-square grids leave some radial bins empty: interpolate
        log_profile = torch.from_numpy(np.interp(np.arange(int(bins.max()) + 1), bins.numpy(),
                                                 power.double().cpu().log().numpy()))
        log_profile = torch.cat([log_profile[:1], smooth_log_profile(log_profile[1:], self.smoothing)])
        position = (basis.frequency(height, width) * max(height, width)).clamp(max=len(log_profile) - 1)
        if basis.name == "fft":  # FFT coefficients take the value of the radial bin S_data was averaged over
            position = position.round()
        low = position.floor().long().clamp(max=len(log_profile) - 2) if len(log_profile) > 1 else position.long()
        high = (low + 1).clamp(max=len(log_profile) - 1)
        fraction = position - low
        log_power = (1 - fraction) * log_profile[low] + fraction * log_profile[high]
        shape = torch.exp(0.5 * self.gamma * (log_power - log_power.max()))  # ∝ S^(γ/2), max 1
        self.weights = self._normalise(shape)
        self._cache.clear()
        return self.weights

    def _normalise(self, shape: Tensor) -> Tensor:
        """clamp(c·shape, w_min, w_max) with mean square 1; mean square grows monotonically with c."""
        def mean_square(log_c: float) -> float:
            return float((math.exp(log_c) * shape).clamp(self.w_min, self.w_max).square().mean())

        low, high = math.log(self.w_min) - math.log(float(shape.max())), math.log(self.w_max) - math.log(
            float(shape.min()))
        for _ in range(200):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if mean_square(middle) < 1.0 else (low, middle)
        return (math.exp(0.5 * (low + high)) * shape).clamp(self.w_min, self.w_max)

    def __call__(self, like: Tensor) -> Tensor:
        """w on ``like``'s device and dtype, (H, W), cached per device like ``Schedule._table``."""
        if self.weights is None:
            raise RuntimeError("the noise gain w(f) is not estimated yet: call process.prepare(datamodule) "
                               "before using a frequency-equalized process")
        if tuple(like.shape[-2:]) != tuple(self.weights.shape):
            raise ValueError(f"the process was prepared for {tuple(self.weights.shape)} images, "
                             f"got coefficients of shape {tuple(like.shape)}")
        key = (str(like.device), like.dtype)
        if key not in self._cache:
            self._cache[key] = self.weights.to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def __repr__(self) -> str:
        return (f"gamma={self.gamma}, basis={self.basis_name!r}, smoothing={self.smoothing}, "
                f"w_min={self.w_min}, w_max={self.w_max}")


class EqualizedProcess(GaussianProcess):
    """Frequency-equalized noise: A_t = α(t), S_t = σ(t)·w(f) in the orthonormal FFT (or DCT) basis,
    w² ∝ S_data(f)^γ with mean(w²) = 1 (see ``SpectralWeights``; γ = 0 is exactly ``gaussian``).
    ``logsnr_shift`` s ≠ 0 replaces α, σ by the variance-preserving pair of log-SNR λ(t) + s (as one band of
    ``BandedProcess``): every frequency keeps its signal longer (s > 0), the prior still N(0, w²) at t = 1.

    Training noise, the prior x_T (variance A_T² + S_T² per coefficient, i.e. ≈ σ_T² w²) and every
    stochastic sampler step use the same coloured S_t, since all of them go through ``coefficients``.
    """

    name = "equalized"

    def __init__(self, schedule: Schedule, gamma: float = 1.0, basis: str = "fft", smoothing: int = 1,
                 w_min: float = 0.1, w_max: float = 10.0, logsnr_shift: float = 0.0) -> None:
        self.gain = SpectralWeights(gamma, basis, smoothing, w_min, w_max)
        super().__init__(schedule, basis)
        self.logsnr_shift = float(logsnr_shift)
        if not math.isfinite(self.logsnr_shift):
            raise ConfigError(f"noise.logsnr_shift={logsnr_shift} must be a finite number")
        self.ratio = math.exp(self.logsnr_shift)
        terminal = float(terminal_signal(self.schedule, torch.tensor(self.ratio, dtype=torch.float64)))
        if terminal > MAX_TERMINAL_SIGNAL:
            raise ConfigError(
                f"noise.logsnr_shift={self.logsnr_shift} leaves a signal fraction A² = {terminal:.2g} at t = 1 "
                f"(> {MAX_TERMINAL_SIGNAL}); the prior would not match. Lower noise.logsnr_shift")

    def prepare(self, datamodule) -> None:
        """Estimate w(f) from the datamodule's cached radial S_data."""
        super().prepare(datamodule)
        self.gain.fit(*datamodule.radial_power_spectrum(), *datamodule.image_shape[-2:], self.basis)

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        if self.logsnr_shift == 0.0:
            alpha, sigma = super().coefficients(t, like)
        else:
            alpha, sigma = (c.to(like.dtype) for c in shifted_vp_coefficients(self.schedule, t, like, self.ratio))
        return alpha, sigma * self.gain(like)

    def coefficient_derivatives(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        if self.logsnr_shift == 0.0:
            d_alpha, d_sigma = super().coefficient_derivatives(t, like)
        else:
            d_alpha, d_sigma = (d.to(like.dtype) for d in vp_coefficient_derivatives(self.schedule, t, like, self.ratio))
        return d_alpha, d_sigma * self.gain(like)

    def __repr__(self) -> str:
        shift = f", logsnr_shift={self.logsnr_shift}" if self.logsnr_shift else ""
        return f"EqualizedProcess({self.schedule!r}, {self.gain!r}{shift})"


class BandedProcess(GaussianProcess):
    """Band-specific schedules: band b has log-SNR λ_b(t) = λ(t) + shift_b, λ = log(ᾱ/(1 − ᾱ)), so
    A_b² = sigmoid(λ_b), S_b² = sigmoid(−λ_b) — a negative shift destroys the band earlier, as in the
    blurring / inverse-heat-dissipation family (Rissanen et al. 2023; Hoogeboom & Salimans 2023).

    Bands are radial rings of the FFT or DCT frequency |f| (``spectral.bands.band_edges``; band 0 is the
    lowest) or, in the ``dwt`` basis, wavelet scales (band 0 the approximation, band K − 1 the finest
    details, K = levels + 1). Written with r_b = e^{shift_b} as A² = r ᾱ/D, S² = (1 − ᾱ)/D,
    D = r ᾱ + 1 − ᾱ, which is exactly √ᾱ, √(1 − ᾱ) for shift 0 (K = 1 equals ``gaussian``).
    Endpoints: ᾱ(0) = 1 gives A = 1, S = 0 for every shift; at t = 1 each band must keep a signal
    fraction A_b² ≤ 1e-3 (checked at construction), since the prior is N(0, A² + S²) = N(0, I).
    """

    name = "banded"

    def __init__(self, schedule: Schedule, basis: str = "fft", num_bands: int = 3,
                 edges: Sequence[float] | None = None, shifts: Sequence[float] = (0.0, -1.0, -2.0),
                 wavelet: str = "haar") -> None:
        num_bands = check_int("noise.num_bands", num_bands, 1)
        check_choice("noise.basis", basis, ("fft", "dct", "dwt"))
        if basis == "dwt":
            if edges is not None:
                raise ConfigError(f"noise.edges={list(edges)} cannot be used with noise.basis=dwt, whose bands "
                                  "are wavelet levels; set noise.edges=null")
            if num_bands < 2:
                raise ConfigError(f"noise.num_bands={num_bands} is invalid with noise.basis=dwt: the bands are the "
                                  "approximation and >= 1 detail levels, so num_bands = levels + 1 >= 2")
            super().__init__(schedule, make_basis("dwt", wavelet=wavelet, levels=num_bands - 1))
            self.edges = None
        else:
            self.edges = band_edges(num_bands, edges, key="noise.edges")
            super().__init__(schedule, basis)
        shifts = [float(s) for s in shifts]
        if len(shifts) != num_bands:
            raise ConfigError(f"noise.shifts={shifts} must give one log-SNR shift per band "
                              f"(noise.num_bands={num_bands})")
        self.num_bands, self.wavelet = num_bands, str(wavelet)
        self.shifts = torch.tensor(shifts, dtype=torch.float64)
        terminal = terminal_signal(self.schedule, self.shifts.exp())
        if float(terminal.max()) > MAX_TERMINAL_SIGNAL:
            raise ConfigError(
                f"noise.shifts={shifts} leave band {int(terminal.argmax())} with signal fraction "
                f"A² = {float(terminal.max()):.2g} at t = 1 (> {MAX_TERMINAL_SIGNAL}); the prior would not match. "
                "Lower the positive shifts"
            )
        self._ratios: dict[tuple, Tensor] = {}

    def band_of_coefficients(self, height: int, width: int) -> Tensor:
        """(H, W) band index 0..K−1 of every basis coefficient."""
        if self.basis.name == "dwt":
            return self.basis.level(height, width)
        inner = self.edges[1:-1]
        return torch.bucketize(self.basis.frequency(height, width), inner, right=True)

    def _ratio(self, like: Tensor) -> Tensor:
        """(H, W) float64 r = e^{shift_b} per coefficient, cached per size and device."""
        height, width = like.shape[-2:]
        key = (height, width, str(like.device))
        if key not in self._ratios:
            band = self.band_of_coefficients(height, width)
            self._ratios[key] = self.shifts.exp()[band].to(like.device)
        return self._ratios[key]

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = shifted_vp_coefficients(self.schedule, t, like, self._ratio(like))
        return alpha.to(like.dtype), sigma.to(like.dtype)

    def coefficient_derivatives(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        d_alpha, d_sigma = vp_coefficient_derivatives(self.schedule, t, like, self._ratio(like))
        return d_alpha.to(like.dtype), d_sigma.to(like.dtype)

    def __repr__(self) -> str:
        where = f"edges={self.edges.tolist()}" if self.edges is not None else f"wavelet={self.wavelet!r}"
        return (f"BandedProcess({self.schedule!r}, basis={self.basis!r}, num_bands={self.num_bands}, {where}, "
                f"shifts={self.shifts.tolist()})")


class FlowProcess(GaussianProcess):
    """The rectified-flow / flow-matching path A_t = 1 − t, S_t = t (Liu et al. 2023; Lipman et al. 2023,
    eq. 23 with σ_min = 0), optionally with equalized noise S_t = t·w(f) (γ > 0, fft or dct basis).

    The velocity target is u = A' x0 + S' ε = w ε − x0 (``FlowPrediction``). ``schedule`` only chooses the
    times: those of the schedule mapped to the flow time of equal SNR, t' = σ/(α + σ). The default
    ``RectifiedFlowSchedule`` (continuous) maps identically: training t ~ U(0, 1], sampling t = 1, 1 − 1/n,
    …, 1/n, 0 (also what ``schedule=None`` gives); the cosine schedule gives the "CosMap" times of Esser
    et al. 2024, §3.1. The path itself never depends on the schedule.
    """

    name = "flow"

    def __init__(self, schedule: Schedule | None = None, gamma: float = 0.0, basis: str = "identity",
                 smoothing: int = 1, w_min: float = 0.1, w_max: float = 10.0) -> None:
        check_range("noise.gamma", gamma, 0.0, 1.0)
        if gamma > 0:
            self.gain = SpectralWeights(gamma, basis, smoothing, w_min, w_max)
        else:
            check_choice("noise.basis", basis, BASES)
            self.gain = None
        super().__init__(schedule, basis)

    def prepare(self, datamodule) -> None:
        super().prepare(datamodule)
        if self.gain is not None:
            self.gain.fit(*datamodule.radial_power_spectrum(), *datamodule.image_shape[-2:], self.basis)

    def check_prediction(self, prediction: Prediction) -> Prediction:
        super().check_prediction(prediction)
        if isinstance(prediction, EpsPrediction):
            raise ConfigError("prediction=eps cannot be used with noise=flow: sampling starts at t = 1 where "
                              "A_t = 1 − t = 0, so x0 = (x_t − S ε)/A is undefined; choose one of x0, v, flow")
        return prediction

    def _gain(self, like: Tensor) -> Tensor | float:
        return 1.0 if self.gain is None else self.gain(like)

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        t = per_sample(torch.as_tensor(t, device=like.device, dtype=like.dtype), like)
        return 1.0 - t, t * self._gain(like)

    def coefficient_derivatives(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        ones = torch.ones_like(per_sample(torch.as_tensor(t, device=like.device, dtype=like.dtype), like))
        return -ones, ones * self._gain(like)

    def _flow_time(self, t: Tensor) -> Tensor:
        """Schedule time → flow time of equal SNR: α/σ = (1 − t')/t' gives t' = σ/(α + σ).

        A continuous schedule is read unclamped, so t = 1 (ᾱ = 0) maps to t' = 1; for the
        ``RectifiedFlowSchedule`` the map is the identity.
        """
        t64 = t.double()
        alpha_bar = self.schedule.alpha_bar(t64) if self.schedule.discrete else self.schedule.continuous_alpha_bar(t64)
        alpha, sigma = alpha_bar.clamp(0, 1).sqrt(), (1 - alpha_bar).clamp(0, 1).sqrt()
        return (sigma / (alpha + sigma)).to(t.dtype)

    def training_times(self, batch: int, generator=None, device=None) -> Tensor:
        if self.schedule is None:
            t = 1.0 - torch.rand(batch, generator=generator)  # (0, 1]: never the clean endpoint
            return t.to(device) if device is not None else t
        return self._flow_time(self.schedule.training_times(batch, generator, device))

    def sampling_times(self, steps: int) -> Tensor:
        if self.schedule is None:
            return torch.linspace(1.0, 0.0, check_steps(steps) + 1)
        grid = self._flow_time(self.schedule.sampling_times(steps))
        grid[0] = 1.0  # start exactly on the prior (a discrete schedule's last ᾱ is tiny, not 0)
        return grid

    def __repr__(self) -> str:
        gain = f", {self.gain!r}" if self.gain is not None else ""
        return f"FlowProcess(schedule={self.schedule!r}, basis={self.basis!r}{gain})"
