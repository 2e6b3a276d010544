"""Why does ``noise=equalized`` lose to ``gaussian``? Measurements per radial frequency band (issue 16).

Analytic part (no training, seconds), from the datamodule's images and the project's own process and prediction
objects (``noise=gaussian`` and ``noise=equalized`` as shipped, plus ``--gamma`` variants), per radial band b of
the orthonormal FFT (the process's own basis when it has one):

* log-SNR_b(t) = log(Σ_{c∈b} A_c² E[c0_c²] / Σ_{c∈b} S_c²) on the training grid, the t at which each band's SNR
  crosses 1, and the whole-image log-SNR (equal for both at equal total noise, mean(w²) = 1);
* the prior at t = 1 (variance A_T² + S_T² per coefficient, what ``process.prior`` draws) against the forward
  marginal A_T² E[c0²] + S_T², as a band energy ratio and the Gaussian KL of the band;
* the loss weight of a unit x0 error in band b for each prediction type (eps, x0, v, flow): with the training loss a
  squared error on the prediction, at fixed x_t ‖pred̂ − pred‖² = Σ_c λ_c (x̂0_c − x0_c)², λ_c = 1/g_c², where
  g_c = ∂x̂0_c/∂output_c is read from the prediction's own ``x0_eps`` conversion (times the loss's own
  per-coefficient weight, ``loss.noise_weighting``); reported relative to ``gaussian``, per t-bin and averaged
  over the training times.

Empirical part: models from ``--ckpt NAME=PATH`` (repeated) or trained here with ``--train`` (``sd-train`` per
variant and seed; variants ``--variant NAME='override ...'``, default gaussian and equalized). For each model the
held-out x̂0 error energy per band × t-bin, normalised by the band's data energy; every model sees the same
held-out images, the same times and the same white ε (image i's noise from generator ``--noise-seed + i``; the
colour of a coloured process lives in S_t). FID per run from its ``metrics.json`` (sd-train's evaluation, with
``<key>_ci_low/_ci_high``) or, for a checkpoint without one and ``--num-samples`` > 0, from
``evaluation.evaluate_images``; mean ± Student-t interval over seeds.

Everything lands in ``--out``: analytic.csv, results.csv (resumable: rows of finished models are skipped and an
interrupted sd-train resumes from its last.ckpt), diagnosis.md, snr_curves.png and error_ratio.png (band × t,
mean error of ``--compare`` over ``--reference``).

    python benchmarks/equalized_diagnosis.py --analytic-only --out benchmarks/results/equalized_diagnosis
    python benchmarks/equalized_diagnosis.py --train --steps 6000 --seeds 0 1 2 \
        --out benchmarks/results/equalized_diagnosis
    python benchmarks/equalized_diagnosis.py --ckpt gaussian=outputs/.../last.ckpt --ckpt equalized=... --out ...
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import resumable_run  # noqa: E402
from results_csv import append_result, read_results  # noqa: E402

from spectral_diffusion.cli import CONFIG_DIR  # noqa: E402
from spectral_diffusion.evaluation.compare import t_interval  # noqa: E402
from spectral_diffusion.losses.weighting import is_white  # noqa: E402
from spectral_diffusion.pipeline import instantiate_checked, load_module  # noqa: E402
from spectral_diffusion.spectral.bands import band_edges  # noqa: E402
from spectral_diffusion.spectral.bases import make_basis  # noqa: E402
from spectral_diffusion.utils.random import sample_generators  # noqa: E402

PREDICTIONS = ("eps", "x0", "v", "flow")
DEFAULT_VARIANTS = {"gaussian": ["noise=gaussian"], "equalized": ["noise=equalized"]}
COLUMNS = ["kind", "model", "seed", "band", "t_bin", "t", "error_energy", "data_energy", "normalised_error",
           "images", "fid", "fid_ci_low", "fid_ci_high", "fid_key", "checkpoint"]
ANALYTIC_COLUMNS = ["process", "quantity", "prediction", "band", "t_bin", "t", "value"]


# --- configs and processes ----------------------------------------------------------------------------------
def compose_train(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` with ``overrides`` (no run folder is made)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="train", overrides=list(overrides))


def prepared_process(config: DictConfig, datamodule):
    """The process of ``config.noise``, prepared on ``datamodule`` (its cached S_data)."""
    process = instantiate_checked(config.noise)
    process.prepare(datamodule)
    return process


def analysis_basis(process):
    """The basis the band analysis works in: the process's own when it is a frequency basis, else the FFT
    (a white process is diagonal in every orthonormal basis)."""
    basis = process.basis
    if basis.is_identity:
        return make_basis("fft")
    if not hasattr(basis, "frequency"):
        raise ValueError(f"{process!r}: the band analysis needs a frequency basis (fft, dct) or pixels")
    return basis


@dataclass
class Bands:
    """``num_bands`` radial rings of equal width in |f| over a basis's coefficients (``spectral.bands``)."""

    edges: Tensor  # (K + 1,) cycles per pixel
    index: Tensor  # (H, W) band of every coefficient

    @classmethod
    def of(cls, basis, height: int, width: int, num_bands: int) -> Bands:
        edges = band_edges(num_bands)
        index = torch.bucketize(basis.frequency(height, width), edges[1:-1], right=True)
        return cls(edges, index)

    @property
    def count(self) -> int:
        return len(self.edges) - 1

    def sums(self, values: Tensor) -> Tensor:
        """(..., C, H, W) per-coefficient values → (..., K) sums over each band's coefficients and the channels."""
        height, width = self.index.shape
        values = values.sum(-3)
        flat = values.reshape(*values.shape[:-2], height * width).double()
        one_hot = torch.nn.functional.one_hot(self.index.flatten(), self.count).double()
        return flat @ one_hot

    def sizes(self) -> Tensor:
        return torch.bincount(self.index.flatten(), minlength=self.count).double()

    def labels(self) -> list[str]:
        return [f"{float(a):.3f}–{float(b):.3f}" for a, b in zip(self.edges[:-1], self.edges[1:])]


def coefficient_energy(images: Tensor, basis) -> Tensor:
    """E[c0²] per basis coefficient (C, H, W), float64."""
    coefficients = basis.forward(images.double()) if not basis.is_identity else images.double()
    return coefficients.square().mean(0)


def training_grid(process, points: int = 1000) -> Tensor:
    """The times training draws: i/T, i = 1..T, for a discrete schedule, else ``points`` bin centres of (0, 1]."""
    schedule = getattr(process, "schedule", None)
    if schedule is not None and getattr(schedule, "discrete", False):
        return torch.arange(1, schedule.timesteps + 1, dtype=torch.float64) / schedule.timesteps
    return (torch.arange(points, dtype=torch.float64) + 0.5) / points


def coefficients_on(process, basis, times: Tensor, shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """(A_t², S_t²) per time and analysis-basis coefficient, (T, C, H, W) float64, from ``process.coefficients``.

    A white process (pixel basis) gives scalars, the same in every orthonormal basis."""
    like = torch.zeros(len(times), *shape, dtype=torch.float64)
    alpha, sigma = process.coefficients(times, like)
    if process.basis.is_identity and not is_white(process, times, like):
        raise ValueError(f"{process!r} varies per pixel: the band analysis needs coefficients diagonal in frequency")
    return torch.broadcast_to(alpha.square(), like.shape), torch.broadcast_to(sigma.square(), like.shape)


def band_log_snr(process, images: Tensor, bands: Bands, times: Tensor) -> tuple[Tensor, Tensor]:
    """(per-band log-SNR (T, K), whole-image log-SNR (T,)): log(Σ A² E[c0²] / Σ S²) over the band / image."""
    basis = analysis_basis(process)
    energy = coefficient_energy(images, basis)
    alpha2, sigma2 = coefficients_on(process, basis, times, tuple(images.shape[1:]))
    signal = bands.sums(alpha2 * energy)
    noise = bands.sums(sigma2)
    whole = (alpha2 * energy).flatten(1).sum(1) / sigma2.flatten(1).sum(1)
    return (signal / noise).log(), whole.log()


def monte_carlo_band_snr(process, images: Tensor, bands: Bands, t: float, draws: int, seed: int = 0) -> Tensor:
    """Per-band SNR at time ``t`` estimated directly: x0 drawn from ``images``, ε from ``process.noise``, the
    signal A x0 = q_sample(x0, t, 0) and noise S ε = q_sample(0, t, ε) split by the process itself, their band
    energies measured with the full orthonormal ``torch.fft.fft2`` (bands by the analysis basis's |f| grid)."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(images), (draws,), generator=generator)
    x0 = images[pick].double()
    eps = process.noise(x0.shape, generator, dtype=torch.float64)
    times = torch.full((draws,), float(t), dtype=torch.float64)
    signal = process.q_sample(x0, times, torch.zeros_like(eps))
    noise = process.q_sample(torch.zeros_like(x0), times, eps)
    basis = analysis_basis(process)
    if basis.name != "fft":
        signal, noise = basis.forward(signal), basis.forward(noise)
        return bands.sums(signal.square().mean(0)) / bands.sums(noise.square().mean(0))
    height, width = images.shape[-2:]
    radius = make_basis("fft").frequency(height, width)
    index = torch.bucketize(radius, bands.edges[1:-1], right=True)
    full = Bands(bands.edges, index)
    spectrum = lambda x: torch.fft.fft2(x, norm="ortho").abs().square().mean(0)  # noqa: E731  (C, H, W)
    return full.sums(spectrum(signal)) / full.sums(spectrum(noise))


def crossing_times(log_snr: Tensor, times: Tensor) -> Tensor:
    """Per band, the first t where log-SNR falls to 0 (SNR = 1), interpolated linearly; NaN if it never does."""
    out = torch.full((log_snr.shape[1],), math.nan, dtype=torch.float64)
    for band in range(log_snr.shape[1]):
        curve = log_snr[:, band]
        below = (curve <= 0).nonzero()
        if len(below) == 0:
            continue
        i = int(below[0])
        if i == 0:
            out[band] = float(times[0])
            continue
        a, b = float(curve[i - 1]), float(curve[i])
        out[band] = float(times[i - 1] + (times[i] - times[i - 1]) * a / (a - b))
    return out


def prior_vs_marginal(process, images: Tensor, bands: Bands) -> dict[str, Tensor]:
    """At t = 1: per-band energy of the prior (A² + S² per coefficient, as ``process.prior`` draws), of the forward
    marginal (A² E[c0²] + S²), their ratio and the KL(marginal ‖ prior) of Gaussians with those variances, summed
    over the band (nats)."""
    basis = analysis_basis(process)
    energy = coefficient_energy(images, basis)
    alpha2, sigma2 = coefficients_on(process, basis, torch.ones(1, dtype=torch.float64), tuple(images.shape[1:]))
    prior = (alpha2 + sigma2)[0]
    marginal = (alpha2 * energy + sigma2)[0]
    ratio = marginal / prior
    kl = 0.5 * (ratio - 1 - ratio.log())
    return {"prior_energy": bands.sums(prior), "marginal_energy": bands.sums(marginal),
            "energy_ratio": bands.sums(marginal) / bands.sums(prior), "kl": bands.sums(kl)}


def prediction_object(name: str):
    return instantiate(OmegaConf.load(CONFIG_DIR / "prediction" / f"{name}.yaml"))


def x0_error_weights(process, prediction, basis, times: Tensor, shape: tuple[int, int, int], loss=None) -> Tensor:
    """λ_c(t), (T, C, H, W) float64: the loss cost of a unit x0 error in analysis-basis coefficient c at fixed x_t.

    The conversion x̂0 = x0_eps(x_t, output) is affine and diagonal in the process basis, so with x_t = 0 and an
    output of ones in that basis, x̂0 = g (the slope) per coefficient and λ = 1/g²; a loss with per-coefficient
    weights (``loss.noise_weighting``) multiplies λ by them."""
    like = torch.zeros(len(times), *shape, dtype=torch.float64)
    ones = process.from_basis(torch.ones_like(like))
    slope = process.to_basis(prediction.x0_eps(torch.zeros_like(like), times, ones, process)[0])
    weights = 1.0 / slope.square()
    factor = coefficient_loss_factor(loss, process, prediction, times, like)
    if factor is not None:
        weights = weights * factor
    if process.basis.is_identity:
        weights = torch.broadcast_to(weights.flatten(1).mean(1)[:, None, None, None], like.shape)
    elif basis is not process.basis:
        raise ValueError("x0_error_weights reads coefficients in the process's own basis")
    return weights


def coefficient_loss_factor(loss, process, prediction, times: Tensor, like: Tensor) -> Tensor | None:
    """The per-coefficient factor a loss puts on the squared residual (None: plain MSE on the prediction)."""
    if loss is None or getattr(loss, "noise_weighting", "none") == "none":
        return None
    return loss.residual_weights(times, like, process, prediction)


def band_loss_weights(weights: Tensor, bands: Bands) -> Tensor:
    """(T, K): mean λ over each band's coefficients, the cost of a unit of x0 error energy spread over band b."""
    return bands.sums(weights) / (bands.sizes() * weights.shape[-3])


def time_bins(times: Tensor, bins: int) -> Tensor:
    """The bin (0..bins−1) of every time of (0, 1] in ``bins`` equal bins."""
    return ((times * bins).ceil().long() - 1).clamp(0, bins - 1)


def time_bin_means(values: Tensor, times: Tensor, bins: int) -> Tensor:
    """(T, K) values → (bins, K) means over the times in each equal bin of (0, 1]."""
    index = time_bins(times, bins)
    return torch.stack([values[index == k].mean(0) for k in range(bins)])


@dataclass
class Analytic:
    """Everything the analytic part computes for a set of processes (``reference`` first)."""

    names: list[str]
    bands: Bands
    times: Tensor
    log_snr: dict[str, Tensor]
    whole_log_snr: dict[str, Tensor]
    crossing: dict[str, Tensor]
    prior: dict[str, dict[str, Tensor]]
    weights: dict[tuple[str, str], Tensor]  # (process, prediction) → (T, K)
    gains: dict[str, Tensor]  # process → per-band mean w² (S² / σ² at a mid time)


def analyse(processes: dict, images: Tensor, num_bands: int, losses: dict | None = None) -> Analytic:
    """The analytic part for ``processes`` (name → prepared process; the first is the reference, gaussian)."""
    names = list(processes)
    shape = tuple(images.shape[1:])
    first = processes[names[0]]
    bases = {name: analysis_basis(p) for name, p in processes.items()}
    bands = Bands.of(bases[names[0]], *shape[-2:], num_bands)
    times = training_grid(first)
    result = Analytic(names, bands, times, {}, {}, {}, {}, {}, {})
    for name, process in processes.items():
        own = Bands.of(bases[name], *shape[-2:], num_bands)
        log_snr, whole = band_log_snr(process, images, own, times)
        result.log_snr[name], result.whole_log_snr[name] = log_snr, whole
        result.crossing[name] = crossing_times(log_snr, times)
        result.prior[name] = prior_vs_marginal(process, images, own)
        half = torch.full((1,), 0.5, dtype=torch.float64)
        alpha2, sigma2 = coefficients_on(process, bases[name], half, shape)
        reference_sigma2 = float(sigma2.mean())  # mean(w²) = 1: the white σ² at the same t
        result.gains[name] = band_loss_weights(sigma2 / reference_sigma2, own)[0]
        for prediction_name in PREDICTIONS:
            weights = x0_error_weights(process, prediction_object(prediction_name), bases[name], times, shape,
                                       (losses or {}).get(name))
            result.weights[(name, prediction_name)] = band_loss_weights(weights, own)
    return result


def write_analytic_csv(result: Analytic, path: Path, bins: int) -> None:
    rows = []
    for name in result.names:
        for band in range(result.bands.count):
            rows.append({"process": name, "quantity": "crossing_t", "band": band,
                         "value": float(result.crossing[name][band])})
            rows.append({"process": name, "quantity": "gain_w2", "band": band,
                         "value": float(result.gains[name][band])})
            for key, values in result.prior[name].items():
                rows.append({"process": name, "quantity": f"prior_{key}", "band": band, "value": float(values[band])})
        log_snr_bins = time_bin_means(result.log_snr[name], result.times, bins)
        for k in range(bins):
            for band in range(result.bands.count):
                rows.append({"process": name, "quantity": "log_snr", "band": band, "t_bin": k,
                             "t": (k + 0.5) / bins, "value": float(log_snr_bins[k, band])})
        for prediction in PREDICTIONS:
            weights = result.weights[(name, prediction)]
            binned = time_bin_means(weights, result.times, bins)
            for band in range(result.bands.count):
                rows.append({"process": name, "quantity": "loss_weight_mean", "prediction": prediction, "band": band,
                             "value": float(weights[:, band].mean())})
                for k in range(bins):
                    rows.append({"process": name, "quantity": "loss_weight", "prediction": prediction, "band": band,
                                 "t_bin": k, "t": (k + 0.5) / bins, "value": float(binned[k, band])})
    path.unlink(missing_ok=True)
    for row in rows:
        append_result(path, row, ANALYTIC_COLUMNS)


def fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-2):
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


def analytic_markdown(result: Analytic, bins: int) -> list[str]:
    reference = result.names[0]
    labels = result.bands.labels()
    lines = ["## Analytic part (no training)", "",
             f"Radial bands of |f| (cycles/pixel), {result.bands.count} rings of equal width; times: the training "
             f"grid of `{reference}` ({len(result.times)} points). Band SNR = Σ A² E[c0²] / Σ S² over the band.", ""]
    gap = max(float((result.whole_log_snr[name] - result.whole_log_snr[reference]).abs().max())
              for name in result.names)
    lines += [f"Whole-image log-SNR: largest difference between the processes over the grid {fmt(gap)} "
              "(equal total noise: mean(w²) = 1).", ""]
    header = "| band | " + " | ".join(labels) + " |"
    rule = "|---|" + "---:|" * result.bands.count
    lines += ["### Noise gain w² per band (S²/σ², mean over the band) and t where the band's SNR crosses 1", "",
              header, rule]
    for name in result.names:
        lines.append(f"| w², {name} | " + " | ".join(fmt(float(v)) for v in result.gains[name]) + " |")
    for name in result.names:
        lines.append(f"| t(SNR=1), {name} | " + " | ".join(fmt(float(v)) for v in result.crossing[name]) + " |")
    lines.append("")
    for name in result.names:
        drowned = float((result.log_snr[name].amax(1) < 0).double().mean())
        lines.append(f"- `{name}`: every band below SNR 1 on {100 * drowned:.1f}% of the training times.")
    lines += ["", "### log-SNR per band at t-bin centres (mean over the bin)", ""]
    for name in result.names:
        binned = time_bin_means(result.log_snr[name], result.times, bins)
        lines += [f"`{name}`:", "", "| t | " + " | ".join(labels) + " |", rule]
        for k in range(bins):
            lines.append(f"| {(k + 0.5) / bins:.2f} | " + " | ".join(fmt(float(v)) for v in binned[k]) + " |")
        lines.append("")
    lines += ["### Prior at t = 1 against the forward marginal", "",
              "Energy ratio marginal/prior per band and the Gaussian KL(marginal ‖ prior) summed over the band (nats).",
              "", header, rule]
    for name in result.names:
        lines.append(f"| ratio, {name} | " + " | ".join(fmt(float(v)) for v in result.prior[name]["energy_ratio"])
                     + " |")
        lines.append(f"| KL, {name} | " + " | ".join(fmt(float(v)) for v in result.prior[name]["kl"]) + " |")
    lines += ["", "### Loss weight of a unit x0 error per band, relative to `" + reference + "`", "",
              "λ_b = mean over the band of 1/(∂x̂0/∂output)² (the prediction's own conversion) times the loss's "
              "per-coefficient weight; averaged over the training times. Ratio > 1: the band's x0 errors cost more "
              "than under white noise.", "", header, rule]
    for name in result.names[1:]:
        for prediction in PREDICTIONS:
            ratio = result.weights[(name, prediction)].mean(0) / result.weights[(reference, prediction)].mean(0)
            lines.append(f"| {prediction}, {name} | " + " | ".join(fmt(float(v)) for v in ratio) + " |")
    for name in result.names[1:]:
        for prediction in ("v",):
            lines += ["", f"Per t-bin, prediction `{prediction}`, `{name}` / `{reference}`:", "",
                      "| t | " + " | ".join(labels) + " |", rule]
            ratio = (time_bin_means(result.weights[(name, prediction)], result.times, bins)
                     / time_bin_means(result.weights[(reference, prediction)], result.times, bins))
            for k in range(bins):
                lines.append(f"| {(k + 0.5) / bins:.2f} | " + " | ".join(fmt(float(v)) for v in ratio[k]) + " |")
    lines.append("")
    return lines


def plot_snr(result: Analytic, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(result.names)
    figure, axes = plt.subplots(1, count, figsize=(4.2 * count, 3.6), sharey=True, squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 1, result.bands.count))
    for axis, name in zip(axes[0], result.names):
        for band, label in enumerate(result.bands.labels()):
            axis.plot(result.times.numpy(), result.log_snr[name][:, band].numpy(), color=colours[band], label=label)
        axis.plot(result.times.numpy(), result.whole_log_snr[name].numpy(), color="black", linestyle="--",
                  label="whole image")
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_title(name)
        axis.set_xlabel("t")
        axis.set_ylim(-25, 20)
    axes[0][0].set_ylabel("log SNR per radial band")
    axes[0][-1].legend(fontsize=6, title="|f| band", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- empirical part -----------------------------------------------------------------------------------------
@torch.no_grad()
def held_out_band_errors(module, images: Tensor, times: Tensor, bands: Bands, *, noise_seed: int = 0,
                         batch_size: int = 250) -> tuple[Tensor, Tensor]:
    """(mean x̂0 error energy per t × band (len(times), K), mean data energy per band (K,)), float64.

    x̂0 is the EMA model's estimate (``module.denoise``: its prediction converted through its process) from
    x_t = process.q_sample(x0, t, ε); image i's ε is white noise from generator ``noise_seed + i``, the same for
    every model and every t (a coloured process colours it through S_t). Energies are band sums of squared
    orthonormal-FFT coefficients (Parseval: over all bands they are the pixel sums)."""
    basis = make_basis("fft")
    errors = torch.zeros(len(times), bands.count, dtype=torch.float64)
    was_training = module.training
    module.eval()
    for start in range(0, len(images), batch_size):
        x0 = images[start:start + batch_size].to(module.device, torch.float32)
        count = len(x0)
        eps = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in
                           sample_generators(noise_seed, start, count)]).to(x0.device)
        for k, time in enumerate(times.tolist()):
            t = torch.full((count,), time, device=x0.device)
            x_t = module.process.q_sample(x0, t, eps)
            estimate = module.denoise(x_t, t, use_ema=True)
            residual = basis.forward((estimate - x0).double().cpu())
            errors[k] += bands.sums(residual.square().sum(0))
    module.train(was_training)
    energy = bands.sums(basis.forward(images.double().cpu()).square().sum(0))
    return errors / len(images), energy / len(images)


def fid_from_metrics(metrics: dict) -> dict:
    """FID, its interval and key from an sd-train/sd-eval metrics.json (empty when it holds none)."""
    keys = [key for key in metrics if key.startswith("fid_") and "@" in key and "floor" not in key
            and not key.endswith(("_ci_low", "_ci_high")) and isinstance(metrics[key], (int, float))]
    if not keys:
        return {}
    key = keys[0]
    return {"fid": metrics[key], "fid_ci_low": metrics.get(f"{key}_ci_low", ""),
            "fid_ci_high": metrics.get(f"{key}_ci_high", ""), "fid_key": key}


def run_metrics(checkpoint: Path) -> dict:
    """The metrics.json of the sd-train run a ``checkpoints/last.ckpt`` belongs to ({} when there is none)."""
    path = checkpoint.parent.parent / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def evaluate_fid(module, datamodule, num_samples: int, out: Path) -> dict:
    """sd-train's evaluation of ``num_samples`` images from ``module``'s own sampler (FID with bootstrap interval)."""
    from spectral_diffusion.evaluation import (
        EvaluationConfig,
        build_extractor,
        choose_features,
        evaluate_images,
        timed_generate,
    )

    config = OmegaConf.create(module.config)
    features = choose_features(instantiate_checked(config.features), datamodule)
    extractor = build_extractor(features, datamodule)
    evaluation = EvaluationConfig.from_config({
        "num_samples": num_samples, "batch_size": 500, "kid_subset_size": min(100, num_samples), "seed": 1234,
        "grid_size": 64, "battery": False, "bootstrap": 200, "level": 0.95, "timestep_bins": 0,
        "battery_options": {}})
    samples, runtime = timed_generate(module, num_samples, seed=evaluation.seed, batch_size=evaluation.batch_size)
    return fid_from_metrics(evaluate_images(samples, datamodule, extractor, evaluation, out, metrics=runtime))


def train_run(name: str, seed: int, overrides: list[str], args, runs: Path) -> Path:
    """One ``sd-train`` run of a variant at ``seed`` (skipped when finished, resumed when interrupted)."""
    folder = runs / f"{name}_seed{seed}"
    resumable_run("train", folder, [f"paths.summary_csv={runs / 'summary.csv'}", "trainer.enable_progress_bar=false",
                                    f"trainer.max_steps={args.steps}", f"seed={seed}", *args.train_override,
                                    *overrides], runs / f"{name}_seed{seed}.log")
    return folder / "checkpoints" / "last.ckpt"


def parse_pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"{flag} takes NAME=VALUE, got {value!r}")
        pairs.append((name, rest))
    return pairs


def model_rows(name: str, seed: int, errors: Tensor, energy: Tensor, times: Tensor, images: int,
               checkpoint: Path) -> list[dict]:
    rows = []
    for k, time in enumerate(times.tolist()):
        for band in range(errors.shape[1]):
            rows.append({"kind": "error", "model": name, "seed": seed, "band": band, "t_bin": k, "t": f"{time:.6g}",
                         "error_energy": float(errors[k, band]), "data_energy": float(energy[band]),
                         "normalised_error": float(errors[k, band] / energy[band]), "images": images,
                         "checkpoint": str(checkpoint)})
    return rows


def error_grid(rows: list[dict], model: str, bins: int, num_bands: int) -> tuple[np.ndarray, int]:
    """Mean normalised error of ``model`` over its seeds, (bins, K), and the number of seeds."""
    grids = {}
    for row in rows:
        if row["kind"] == "error" and row["model"] == model:
            grid = grids.setdefault(row["seed"], np.full((bins, num_bands), np.nan))
            grid[int(row["t_bin"]), int(row["band"])] = float(row["normalised_error"])
    if not grids:
        return np.full((bins, num_bands), np.nan), 0
    return np.mean(list(grids.values()), axis=0), len(grids)


def fid_summary(rows: list[dict]) -> list[str]:
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        if row["kind"] == "fid" and row.get("fid") not in ("", None):
            by_model.setdefault(row["model"], []).append(row)
    if not by_model:
        return []
    lines = ["### FID per run and over seeds", "",
             "| model | seeds | FID per seed [95% bootstrap interval] | mean | 95% t-interval over seeds |",
             "|---|---:|---|---:|---|"]
    for model, found in by_model.items():
        found = sorted(found, key=lambda row: int(row["seed"]))
        values = np.array([float(row["fid"]) for row in found])
        per_seed = "; ".join(
            f"{int(row['seed'])}: {float(row['fid']):.2f}"
            + (f" [{float(row['fid_ci_low']):.2f}, {float(row['fid_ci_high']):.2f}]" if row.get("fid_ci_low") else "")
            for row in found)
        low, high = t_interval(values, 0.95)
        interval = "–" if math.isnan(low) else f"[{low:.2f}, {high:.2f}]"
        lines.append(f"| {model} | {len(values)} | {per_seed} | {values.mean():.2f} | {interval} |")
    lines += ["", f"FID key: {next(iter(by_model.values()))[0].get('fid_key', '')}.", ""]
    return lines


def empirical_markdown(rows: list[dict], models: list[str], reference: str, compare: str, bands: Bands,
                       times: Tensor) -> list[str]:
    bins = len(times)
    labels = bands.labels()
    lines = ["## Empirical part", "",
             "Held-out x̂0 error energy per radial band and time, divided by the band's data energy (mean over "
             "seeds); the same images, times and white ε for every model.", ""]
    rule = "|---|" + "---:|" * bands.count
    for model in models:
        grid, seeds = error_grid(rows, model, bins, bands.count)
        if seeds == 0:
            continue
        lines += [f"`{model}` ({seeds} seed(s)):", "", "| t | " + " | ".join(labels) + " |", rule]
        for k in range(bins):
            lines.append(f"| {float(times[k]):.3f} | " + " | ".join(fmt(float(v)) for v in grid[k]) + " |")
        lines.append("")
    ref, n_ref = error_grid(rows, reference, bins, bands.count)
    cmp_, n_cmp = error_grid(rows, compare, bins, bands.count)
    if n_ref and n_cmp:
        lines += [f"Ratio `{compare}` / `{reference}` (> 1: `{compare}` errs more):", "",
                  "| t | " + " | ".join(labels) + " |", rule]
        ratio = cmp_ / ref
        for k in range(bins):
            lines.append(f"| {float(times[k]):.3f} | " + " | ".join(fmt(float(v)) for v in ratio[k]) + " |")
        lines.append("")
    return lines + fid_summary(rows)


def plot_ratio(rows: list[dict], reference: str, compare: str, bands: Bands, times: Tensor, path: Path) -> bool:
    ref, n_ref = error_grid(rows, reference, len(times), bands.count)
    cmp_, n_cmp = error_grid(rows, compare, len(times), bands.count)
    if not (n_ref and n_cmp):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.colors as colors
    import matplotlib.pyplot as plt

    ratio = cmp_ / ref
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    spread = float(np.nanmax(np.abs(np.log(ratio)))) if np.isfinite(ratio).any() else 1.0
    image = axis.imshow(ratio.T, origin="lower", aspect="auto", cmap="RdBu_r",
                        norm=colors.LogNorm(vmin=math.exp(-max(spread, 1e-3)), vmax=math.exp(max(spread, 1e-3))))
    axis.set_xticks(range(len(times)), [f"{float(t):.2f}" for t in times], rotation=45, fontsize=7)
    axis.set_yticks(range(bands.count), bands.labels(), fontsize=7)
    axis.set_xlabel("t")
    axis.set_ylabel("radial band |f| (cycles/pixel)")
    axis.set_title(f"held-out x̂0 error, {compare} / {reference}")
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


# --- main ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/equalized_diagnosis"))
    parser.add_argument("--data-override", nargs="*", default=[],
                        help="sd-train overrides for the data of the analytic part (default: the default MNIST)")
    parser.add_argument("--gamma", type=float, nargs="*", default=[], help="extra equalized processes with this γ")
    parser.add_argument("--shift", type=float, nargs="*", default=[],
                        help="extra equalized processes with this noise.logsnr_shift")
    parser.add_argument("--with-fix", action="store_true",
                        help="also analyse equalized noise trained with loss.noise_weighting=white")
    parser.add_argument("--bands", type=int, default=8, help="radial bands of equal width in |f|")
    parser.add_argument("--t-bins", type=int, default=10, help="time bins (tables, empirical part)")
    parser.add_argument("--analytic-only", action="store_true")
    parser.add_argument("--ckpt", action="append", default=[], metavar="NAME=PATH",
                        help="a trained model (repeat; the same NAME with several seeds' checkpoints is averaged)")
    parser.add_argument("--train", action="store_true", help="train --variant × --seeds with sd-train")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME='OVERRIDES'",
                        help="a model to train: sd-train overrides (default: gaussian, equalized)")
    parser.add_argument("--steps", type=int, default=6000, help="sd-train trainer.max_steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-override", nargs="*", default=[], help="overrides for every sd-train run")
    parser.add_argument("--reference", default="gaussian")
    parser.add_argument("--compare", default="equalized")
    parser.add_argument("--eval-images", type=int, default=500, help="held-out images for the band errors")
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=0,
                        help="FID of a --ckpt without metrics.json from this many samples (0: skip)")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # analytic part
    data_overrides = list(args.data_override)
    config = compose_train(data_overrides)
    datamodule = instantiate_checked(config.data)
    datamodule.setup()
    processes, losses = {}, {}
    names = [("gaussian", ["noise=gaussian"]), ("equalized", ["noise=equalized"])]
    names += [(f"equalized_gamma{g:g}", ["noise=equalized", f"noise.gamma={g}"]) for g in args.gamma]
    names += [(f"equalized_shift{v:g}", ["noise=equalized", f"noise.logsnr_shift={v}"]) for v in args.shift]
    if args.with_fix:
        names.append(("equalized_white_loss", ["noise=equalized", "loss.noise_weighting=white"]))
    for name, overrides in names:
        variant = compose_train(data_overrides + overrides)
        processes[name] = prepared_process(variant, datamodule)
        losses[name] = instantiate_checked(variant.loss)
    analytic = analyse(processes, datamodule.train_images, args.bands, losses)
    write_analytic_csv(analytic, out / "analytic.csv", args.t_bins)
    plot_snr(analytic, out / "snr_curves.png")
    lines = [f"# Why does equalized noise lose? Diagnosis on `{' '.join(data_overrides) or 'data=mnist (default)'}`",
             "", *analytic_markdown(analytic, args.t_bins)]

    if not args.analytic_only and (args.ckpt or args.train):
        results_path = out / "results.csv"
        rows = read_results(results_path)
        done = {(row["kind"], row["model"], int(row["seed"])) for row in rows}
        runs = out / "runs"
        models: list[tuple[str, Path]] = [(name, Path(path)) for name, path in parse_pairs(args.ckpt, "--ckpt")]
        if args.train:
            runs.mkdir(parents=True, exist_ok=True)
            variants = ([(name, shlex.split(value)) for name, value in parse_pairs(args.variant, "--variant")]
                        or list(DEFAULT_VARIANTS.items()))
            for seed in args.seeds:  # seed-major: every variant has a run before any gets its second seed
                for name, overrides in variants:
                    models.append((name, train_run(name, seed, overrides, args, runs)))
        times = None
        eval_data = None
        for name, checkpoint in models:
            module = load_module(checkpoint)
            seed = int((module.config or {}).get("seed", 0))
            if eval_data is None:
                eval_data = instantiate_checked(OmegaConf.create(module.config).data)
                eval_data.setup()
                images = eval_data.val_images[: args.eval_images]
                from spectral_diffusion.evaluation import timestep_grid

                times = timestep_grid(module.process, args.t_bins).double()
                fft_bands = Bands.of(make_basis("fft"), *images.shape[-2:], args.bands)
            if ("error", name, seed) not in done:
                errors, energy = held_out_band_errors(module, images, times, fft_bands, noise_seed=args.noise_seed)
                for row in model_rows(name, seed, errors, energy, times, len(images), checkpoint):
                    append_result(results_path, row, COLUMNS)
                done.add(("error", name, seed))
            if ("fid", name, seed) not in done:
                fid = fid_from_metrics(run_metrics(checkpoint))
                if not fid and args.num_samples > 0:
                    fid = evaluate_fid(module, eval_data, args.num_samples, out / "fid" / f"{name}_seed{seed}")
                if fid:
                    append_result(results_path, {"kind": "fid", "model": name, "seed": seed, **fid,
                                                 "checkpoint": str(checkpoint)}, COLUMNS)
                    done.add(("fid", name, seed))
        rows = read_results(results_path)
        model_names = list(dict.fromkeys(name for name, _ in models))
        lines += empirical_markdown(rows, model_names, args.reference, args.compare, fft_bands, times)
        if plot_ratio(rows, args.reference, args.compare, fft_bands, times, out / "error_ratio.png"):
            lines.append(f"![held-out error ratio]({'error_ratio.png'})")
    lines.append("![log-SNR per band](snr_curves.png)")
    (out / "diagnosis.md").write_text("\n".join(lines) + "\n")
    print((out / "diagnosis.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
