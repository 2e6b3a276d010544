"""The metric battery: every sample-quality, spectral, texture and statistical comparison of generated
images against real ones, in one call (``evaluate_battery``) with its figures (``battery_figures``).

Images are [-1, 1] float tensors (N, C, H, W). Groups (``battery.groups``) and their keys; "ratio" is
always generated / real and 1 is ideal, "diff" is generated − real and 0 is ideal:

features (needs a feature extractor; N = number of generated images, <name> = extractor.name)
  fid_<name>@N            Fréchet distance of the feature Gaussians (Heusel et al. 2017).
  kid_<name>@N, kid_std_<name>@N   KID, unbiased MMD² with kernel (x·y/d + 1)³, mean and std over
                          ``kid_subsets`` subsets (Bińkowski et al. 2018).
  precision_<name>@N, recall_<name>@N   improved precision/recall (Kynkäänniemi et al. 2019): fraction
                          of generated features inside the real k-NN manifold (k = ``precision_recall_k``)
                          and of real features inside the generated one.
spectral
  spectral_mse            mean over radial frequency bins f > 0 of (log10 P_gen(f) − log10 P_real(f))²,
                          P the radially averaged power spectrum |rfft2(x, ortho)|² (decades²).
  spectral_slope_real, spectral_slope_fake   β of P(f) ∝ |f|^−β, weighted least squares of log10 P on
                          log10 |f| over every coefficient with |f| in ``slope_band`` (cycles/pixel).
  spectral_slope_diff     |β_gen − β_real|.
  hf_energy_ratio         mean energy at |f| ≥ ``hf_cutoff`` per image, generated / real.
wavelet (``wavelet``, ``wavelet_levels``, pywt ``wavedec2`` with periodization; level 1 = finest)
  wavelet_{lh,hl,hh}_ratio_l<l>   mean detail energy per image, generated / real; lh = pywt cH
                          (high-pass along the height), hl = cV (along the width), hh = cD (both).
  wavelet_energy_ratio_l<l>       the same for the three orientations together.
bands (``num_bands`` equal-width radial rings of the rfft2 grid, k = 0 lowest)
  band_magnitude_ratio_b<k>       mean |X| in the ring, generated / real.
  band_magnitude_js_b<k>, band_phase_js_b<k>   JS divergence (bits) of the log10 |X| and arg X histograms.
  band_phase_coherence_diff_b<k>  difference of the ring mean of ρ̂², the unbiased squared mean resultant
                          length of the phase at one frequency across images (0: random phases).
texture (images quantised to ``glcm_levels`` grey levels)
  glcm_{contrast,dissimilarity}_{real,fake,ratio}, glcm_correlation_{real,fake,diff}   Haralick GLCM
                          properties (symmetric, normalised; mean over ``glcm_distances`` × ``glcm_angles``
                          and over image channels).
  gradient_magnitude_{real,fake,ratio}   mean √(∂x² + ∂y²) per pixel (central differences).
statistics (``histogram_bins`` equal bins on [-1, 1], values clamped)
  js_divergence           Jensen–Shannon divergence (bits, in [0, 1]) of the pixel-intensity histograms.
  wasserstein             1-Wasserstein distance of the pixel-intensity distributions (pixel units, ≤ 2).
fdr
  fdr_fraction            fraction of pixels (per channel) whose mean differs between real and generated
                          images by a Welch t-test, under Benjamini–Hochberg FDR control at ``fdr_alpha``
                          (a difference of spread alone is seen by js_divergence / texture, not here).
classifier_auc
  classifier_auc          held-out ROC AUC of a small CNN trained (``classifier_epochs``) to tell generated
                          from real images; 0.5 = indistinguishable, 1 = perfectly separable.
lpips (``lpips_net`` backbone from ``lpips_weights`` or the torch hub cache, else skipped with a reason)
  lpips_diversity, lpips_diversity_real, lpips_diversity_ratio   mean LPIPS (Zhang et al. 2018) between
                          ``lpips_pairs`` random pairs of distinct generated (real) images, and their ratio.
severity (always; see ``severity``)
  severity, severity_<component>   overall discrepancy in [0, 1] and its components.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from spectral_diffusion.metrics import figures
from spectral_diffusion.metrics.lpips_metric import (
    BACKBONE_FILES,
    LPIPSDiversity,
    load_lpips,
)
from spectral_diffusion.metrics.quality import (
    extract_features,
    feature_distances,
    metric_key,
)
from spectral_diffusion.metrics.spectral import (
    BandStatistics,
    PowerSpectrum,
    WaveletEnergy,
)
from spectral_diffusion.metrics.statistics import (
    ClassifierAUC,
    PixelHistogram,
    PixelTests,
    PrecisionRecall,
    manifold_precision_recall,
)
from spectral_diffusion.metrics.texture import GLCMTexture, GradientMagnitude
from spectral_diffusion.utils.validation import ConfigError, check_choice

GROUPS = ("features", "spectral", "wavelet", "bands", "texture", "statistics", "fdr", "classifier_auc", "lpips")
# The real-vs-generated classifier needs a training and a held-out part of each set.
MIN_CLASSIFIER_IMAGES = 4
# Size-dependent options are checked again for the real image size when the metrics are built.
VALIDATION_SHAPE = (3, 256, 256)


@dataclass
class BatteryConfig:
    """Options of the battery (config node ``battery``); validated on construction (ConfigError)."""

    groups: list[str] = field(default_factory=lambda: list(GROUPS))
    slope_band: list[float] = field(default_factory=lambda: [0.0625, 0.5])
    hf_cutoff: float = 0.25
    num_bands: int = 4
    wavelet: str = "haar"
    wavelet_levels: int = 2
    glcm_levels: int = 32
    glcm_distances: list[int] = field(default_factory=lambda: [1])
    glcm_angles: list[float] = field(default_factory=lambda: [0.0, 45.0, 90.0, 135.0])
    histogram_bins: int = 256
    fdr_alpha: float = 0.05
    classifier_epochs: int = 5
    classifier_heldout: float = 0.3
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    lpips_pairs: int = 256
    lpips_size: int = 64
    precision_recall_k: int = 3
    kid_subsets: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        self.groups = list(self.groups)
        for group in self.groups:
            check_choice("battery.groups", group, GROUPS)
        check_choice("battery.lpips_net", self.lpips_net, BACKBONE_FILES)
        if int(self.kid_subsets) != self.kid_subsets or self.kid_subsets < 1:
            raise ConfigError(f"battery.kid_subsets={self.kid_subsets!r} is invalid; it must be an integer >= 1")
        # Building every group's metrics once runs each option's own check.
        self.build_metrics(VALIDATION_SHAPE, GROUPS)
        LPIPSDiversity(nn.Identity(), pairs=self.lpips_pairs, size=self.lpips_size, seed=self.seed)
        PrecisionRecall(k=self.precision_recall_k)

    @classmethod
    def from_config(cls, config: BatteryConfig | Mapping | None) -> BatteryConfig:
        """From None (defaults), a dict or DictConfig (``_target_`` ignored), or a BatteryConfig."""
        if isinstance(config, BatteryConfig):
            return config
        if config is None:
            return cls()
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        if not isinstance(config, Mapping):
            raise ConfigError(f"battery must be a mapping of options, got {type(config).__name__}")
        options = {key: value for key, value in config.items() if key != "_target_"}
        known = {option.name for option in dataclasses.fields(cls)}
        for key in options:
            if key not in known:
                raise ConfigError(f"battery.{key} is not an option; the options are {sorted(known)}")
        return cls(**options)

    def build_metrics(self, image_shape: tuple[int, int, int], groups=None) -> dict[str, list[nn.Module]]:
        """The streaming metrics of each group in ``groups`` (default: the enabled ones) for images (C, H, W);
        raises ConfigError for options that do not fit that size (slope band, wavelet levels, GLCM distances).
        Call it as soon as the image shape is known to fail before any sampling.
        """
        groups = self.groups if groups is None else groups
        _, height, width = image_shape
        if max(self.glcm_distances, default=0) >= max(height, width):
            raise ConfigError(f"battery.glcm_distances={list(self.glcm_distances)} must be below the image size "
                              f"{height}x{width}")
        # The battery scores whole image sets on one process (rank zero under DDP): never all-gather.
        local = {"sync_on_compute": False}
        factories = {
            "spectral": lambda: [PowerSpectrum(height, width, self.slope_band, self.hf_cutoff, **local)],
            "wavelet": lambda: [WaveletEnergy(height, width, self.wavelet, self.wavelet_levels, **local)],
            "bands": lambda: [BandStatistics(height, width, self.num_bands, **local)],
            "texture": lambda: [GLCMTexture(self.glcm_levels, self.glcm_distances, self.glcm_angles, **local),
                                GradientMagnitude(**local)],
            "statistics": lambda: [PixelHistogram(self.histogram_bins, **local)],
            "fdr": lambda: [PixelTests(image_shape, self.fdr_alpha, **local)],
            "classifier_auc": lambda: [ClassifierAUC(self.classifier_epochs, self.classifier_heldout, self.seed,
                                                     **local)],
        }
        return {group: factory() for group, factory in factories.items() if group in groups}


@dataclass
class BatteryResult:
    """``metrics``: flat name → value; ``skipped``: group or metric → reason; ``figures_data``: arrays for
    ``battery_figures``; ``seconds``: wall time per group.
    """

    metrics: dict[str, float]
    skipped: dict[str, str]
    figures_data: dict
    seconds: dict[str, float]


def _discrepancy(value: float) -> float:
    """1 − e^−|v|: maps a non-negative discrepancy to [0, 1), 0 ↦ 0, ∞ ↦ 1 (NaN ↦ 1)."""
    if math.isnan(value):
        return 1.0
    return 1.0 - math.exp(-abs(value))


def _log_ratio(value: float) -> float:
    """|ln ratio|, the symmetric distance of a ratio from 1 (ratio 0 or ∞ ↦ ∞)."""
    if value <= 0 or math.isinf(value) or math.isnan(value):
        return math.inf
    return abs(math.log(value))


def severity(metrics: Mapping[str, float]) -> dict[str, float]:
    """Overall severity: the mean of the components below whose metrics are present, each in [0, 1] with
    0 for generated images that match the real ones on that aspect.

    With u(v) = 1 − exp(−|v|) and ℓ(r) = |ln r| (distance of a ratio r from 1):
      spectrum    = u(√spectral_mse)                                (RMS log10 power error)
      slope       = u(spectral_slope_diff)
      hf          = u(ℓ(hf_energy_ratio))
      wavelet     = u(mean over levels and lh/hl/hh of ℓ(wavelet_<o>_ratio_l<l>))
      texture     = u(mean of ℓ(glcm_contrast_ratio), ℓ(glcm_dissimilarity_ratio),
                      ℓ(gradient_magnitude_ratio), |glcm_correlation_diff|)
      js          = js_divergence                                   (bits, already in [0, 1])
      wasserstein = wasserstein / 2                                 (pixel range 2)
      fdr         = fdr_fraction
      classifier  = 2 |classifier_auc − 0.5|
    severity = mean of the available components (NaN-free: a missing component is left out).
    Returns ``severity`` and ``severity_<component>``; an empty dict when no component is available.
    """
    components = {}
    if "spectral_mse" in metrics:
        components["spectrum"] = _discrepancy(math.sqrt(metrics["spectral_mse"]))
    if "spectral_slope_diff" in metrics:
        components["slope"] = _discrepancy(metrics["spectral_slope_diff"])
    if "hf_energy_ratio" in metrics:
        components["hf"] = _discrepancy(_log_ratio(metrics["hf_energy_ratio"]))
    wavelet = [_log_ratio(value) for key, value in metrics.items()
               if key.startswith("wavelet_") and key.split("_")[1] in ("lh", "hl", "hh")]
    if wavelet:
        components["wavelet"] = _discrepancy(sum(wavelet) / len(wavelet))
    if "glcm_contrast_ratio" in metrics:
        texture = [_log_ratio(metrics["glcm_contrast_ratio"]), _log_ratio(metrics["glcm_dissimilarity_ratio"]),
                   abs(metrics["glcm_correlation_diff"])]
        if "gradient_magnitude_ratio" in metrics:
            texture.append(_log_ratio(metrics["gradient_magnitude_ratio"]))
        components["texture"] = _discrepancy(sum(texture) / len(texture))
    if "js_divergence" in metrics:
        components["js"] = min(1.0, metrics["js_divergence"])
        components["wasserstein"] = min(1.0, metrics["wasserstein"] / 2.0)
    if "fdr_fraction" in metrics:
        components["fdr"] = metrics["fdr_fraction"]
    if "classifier_auc" in metrics:
        components["classifier"] = 2.0 * abs(metrics["classifier_auc"] - 0.5)
    if not components:
        return {}
    result = {"severity": sum(components.values()) / len(components)}
    result.update({f"severity_{name}": value for name, value in components.items()})
    return result


def _check_image_sets(real: Tensor, fake: Tensor) -> None:
    for name, images in (("real", real), ("fake", fake)):
        if images.ndim != 4 or not images.is_floating_point() or len(images) < 2:
            raise ValueError(f"{name} images must be float (N >= 2, C, H, W) in [-1, 1], got "
                             f"{images.dtype} {tuple(images.shape)}")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and generated images differ in shape: {tuple(real.shape[1:])} vs "
                         f"{tuple(fake.shape[1:])}")


def _feature_metrics(real: Tensor, fake: Tensor, extractor: nn.Module, config: BatteryConfig,
                     batch_size: int, skipped: dict[str, str]) -> dict[str, float]:
    real_features = extract_features(real, extractor, batch_size=batch_size)
    fake_features = extract_features(fake, extractor, batch_size=batch_size)
    values = feature_distances(real_features, fake_features, kid_subsets=config.kid_subsets, seed=config.seed)
    name = getattr(extractor, "name", type(extractor).__name__)
    if min(len(real), len(fake)) > config.precision_recall_k:
        values["precision"], values["recall"] = manifold_precision_recall(real_features, fake_features,
                                                                          config.precision_recall_k)
    else:
        skipped[metric_key("precision", name, len(fake))] = skipped[metric_key("recall", name, len(fake))] = (
            f"needs more than battery.precision_recall_k={config.precision_recall_k} images per set")
    return {metric_key(metric, name, len(fake)): value for metric, value in values.items()}


def evaluate_battery(real: Tensor, fake: Tensor, *, features: nn.Module | None = None,
                     config: BatteryConfig | Mapping | None = None, device: str | torch.device = "cpu",
                     batch_size: int = 256) -> BatteryResult:
    """Run every enabled group of the battery on ``real`` vs generated ``fake`` images (see the module
    docstring for the keys). ``features`` is an extractor from ``metrics.features`` (or None: the
    features group is skipped). Streaming metrics see the images in batches of ``batch_size``.
    """
    config = BatteryConfig.from_config(config)
    _check_image_sets(real, fake)
    metrics, skipped, seconds, figures_data = {}, {}, {}, {}
    streaming = config.build_metrics(tuple(real.shape[1:]))

    if "features" in config.groups:
        start = time.perf_counter()
        if features is None:
            skipped["features"] = "no feature extractor given (FID, KID, precision, recall need one)"
        else:
            metrics.update(_feature_metrics(real, fake, features, config, batch_size, skipped))
        seconds["features"] = time.perf_counter() - start

    for group, group_metrics in streaming.items():
        if group == "classifier_auc" and min(len(real), len(fake)) < MIN_CLASSIFIER_IMAGES:
            skipped[group] = f"needs at least {MIN_CLASSIFIER_IMAGES} real and {MIN_CLASSIFIER_IMAGES} generated images"
            continue
        start = time.perf_counter()
        for metric in group_metrics:
            metric.to(device)
            for images, is_real in ((real, True), (fake, False)):
                for chunk in images.split(batch_size):
                    metric.update(chunk, real=is_real)
            metrics.update(metric.compute())
            if isinstance(metric, PowerSpectrum):
                figures_data["radial_spectrum"] = metric.radial_spectra()
            elif isinstance(metric, WaveletEnergy):
                figures_data["wavelet_energy"] = metric.mean_energies()
            elif isinstance(metric, BandStatistics):
                figures_data["band_histograms"] = metric.histograms()
        seconds[group] = time.perf_counter() - start

    if "lpips" in config.groups:
        start = time.perf_counter()
        model, reason = load_lpips(config.lpips_net, config.lpips_weights, device)
        if model is None:
            skipped["lpips"] = reason
        else:
            diversity = LPIPSDiversity(model, pairs=config.lpips_pairs, size=config.lpips_size, seed=config.seed,
                                       sync_on_compute=False)
            diversity.update(real, real=True)
            diversity.update(fake, real=False)
            metrics.update(diversity.compute())
        seconds["lpips"] = time.perf_counter() - start

    metrics.update(severity(metrics))
    return BatteryResult(metrics=metrics, skipped=skipped, figures_data=figures_data, seconds=seconds)


def battery_figures(real: Tensor, fake: Tensor, result: BatteryResult) -> dict[str, Figure]:
    """Figures of a battery result: ``radial_power_spectrum``, ``wavelet_energy_ratios``, ``band_histograms``
    (each when its group ran) and ``sample_grids`` (always).
    """
    data = result.figures_data
    drawn = {}
    if "radial_spectrum" in data:
        spectrum = data["radial_spectrum"]
        drawn["radial_power_spectrum"] = figures.radial_spectrum_figure(spectrum["frequency"], spectrum["real"],
                                                                        spectrum["fake"])
    if "wavelet_energy" in data:
        drawn["wavelet_energy_ratios"] = figures.wavelet_energy_figure(data["wavelet_energy"]["real"],
                                                                       data["wavelet_energy"]["fake"])
    if "band_histograms" in data:
        drawn["band_histograms"] = figures.band_histogram_figure(data["band_histograms"])
    drawn["sample_grids"] = figures.sample_grid_figure(real, fake)
    return drawn


def peak_memory_mb(device: str | torch.device = "cpu") -> float:
    """Peak memory in MiB: ``torch.cuda.max_memory_allocated`` on a CUDA device, else the process's
    peak resident set size (``getrusage`` ru_maxrss, KiB on Linux).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
