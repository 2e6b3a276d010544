"""The metric battery: every sample-quality, spectral, texture and statistical comparison of generated
images against real ones, in one call (``evaluate_battery``) with its figures (``battery_figures``).

Images are [-1, 1] float tensors (N, C, H, W). Groups (``battery.groups``): features (FID, KID and
improved precision/recall of extractor features), spectral, wavelet, bands, texture, structure, statistics, fdr,
classifier_auc, classifier_auc_dithered, lpips, and severity (always); the model groups equivariance and straightness
need the network, not only its images, so ``evaluation.evaluate_images`` computes them when it has a module (here they
are skipped with that reason). "ratio" is always generated / real and 1 is ideal, "diff" is
generated − real and 0 is ideal. Every key each group reports, with its definition and paper, is listed in
``spectral_diffusion.evaluation.names.METRIC_NAMES``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import pywt
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from spectral_diffusion.metrics import figures
from spectral_diffusion.metrics.lpips_metric import (
    BACKBONE_FILES,
    MIN_LPIPS_SIZE,
    LPIPSDiversity,
    load_lpips,
)
from spectral_diffusion.metrics.bootstrap import has_sum_states, streaming_intervals
from spectral_diffusion.metrics.quality import FeaturePair, feature_distances, metric_key
from spectral_diffusion.metrics.spectral import (
    BandStatistics,
    PowerSpectrum,
    WaveletEnergy,
    slope_mask,
)
from spectral_diffusion.metrics.statistics import (
    GREY_LEVEL,
    ClassifierAUC,
    PixelHistogram,
    PixelTests,
    manifold_precision_recall,
)
from spectral_diffusion.metrics.structure import Background, BoundarySharpness, SpatialCorrelation
from spectral_diffusion.metrics.texture import GLCMTexture, GradientMagnitude, TextureKS
from spectral_diffusion.spectral.bands import MAX_RADIUS, band_edges
from spectral_diffusion.spectral.frequency import radial_frequency
from spectral_diffusion.utils.validation import ConfigError, check_choice, check_int, check_int_list, check_range

GROUPS = ("features", "spectral", "wavelet", "bands", "texture", "structure", "statistics", "fdr", "classifier_auc",
          "classifier_auc_dithered", "lpips", "equivariance", "straightness")
# Groups that measure the network itself (its denoiser and sampling trajectories): computed by
# ``evaluation.evaluate_images`` from the module, skipped for images alone.
MODEL_GROUPS = ("equivariance", "straightness")
MODEL_GROUP_REASON = "needs the model, not only images: pass ckpt_path (sd-eval) or run it at the end of sd-train"
# Why these battery metrics carry no bootstrap interval.
NO_INTERVAL = {
    "classifier_auc": "no interval: each resample would retrain the real-vs-generated CNN",
    "classifier_auc_dithered": "no interval: each resample would retrain the real-vs-generated CNN",
    "texture_ks": "no interval: a KS statistic of per-image values has no summed state to resample by blocks",
    "lpips_diversity": "no interval: each resample would rerun LPIPS on its random pairs",
}
# The real-vs-generated classifier needs a training and a held-out part of each set.
MIN_CLASSIFIER_IMAGES = 4


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def config_options(config: Mapping, options: type, key: str) -> dict:
    """The options of a config node (dict or DictConfig, ``_target_`` left out) for the dataclass ``options``;
    a ConfigError names ``key.<option>`` for a key the dataclass does not have."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, Mapping):
        raise ConfigError(f"{key} must be a mapping of options, got {type(config).__name__}")
    values = {name: value for name, value in config.items() if name != "_target_"}
    known = [option.name for option in dataclasses.fields(options)]
    for name in values:
        if name not in known:
            raise ConfigError(f"{key}.{name} is not an option; the options are {sorted(known)}")
    return values


@dataclass
class BatteryConfig:
    """Options of the battery (config node ``battery``); validated on construction (ConfigError).

    The model groups' options: ``equivariance_images`` held-out images at ``equivariance_bins`` times, rotated by
    ``equivariance_degrees``, and ``equivariance_generation_samples`` DDIM samples of ``equivariance_steps`` steps
    (``evaluation.equivariance.model_equivariance``); ``straightness_samples`` deterministic DDIM trajectories of
    ``straightness_steps`` steps (``evaluation.straightness.model_straightness``).
    """

    groups: list[str] = field(default_factory=lambda: list(GROUPS))
    slope_band: list[float] = field(default_factory=lambda: [0.0625, 0.5])
    hf_cutoff: float = 0.25
    num_bands: int = 4
    wavelet: str = "haar"
    wavelet_levels: int = 2
    glcm_levels: int = 32
    glcm_distances: list[int] = field(default_factory=lambda: [1])
    glcm_angles: list[float] = field(default_factory=lambda: [0.0, 45.0, 90.0, 135.0])
    boundary_threshold: float = 0.0
    correlation_lags: int = 2
    background_tolerance: float = 0.02
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
    equivariance_images: int = 64
    equivariance_bins: int = 5
    equivariance_degrees: float = 30.0
    equivariance_steps: int = 20
    equivariance_generation_samples: int = 16
    straightness_samples: int = 64
    straightness_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        """Checks every option directly (no metric is built); ``check_image_shape`` adds the size-dependent ones."""
        self.groups = [check_choice("battery.groups", group, GROUPS) for group in self.groups]
        band = list(self.slope_band)
        if len(band) != 2 or not all(map(_is_number, band)) or not 0 <= band[0] < band[1] <= MAX_RADIUS:
            raise ConfigError(f"battery.slope_band={band} is invalid; give [low, high] cycles per pixel "
                              f"with 0 <= low < high <= {MAX_RADIUS:.4f}")
        self.slope_band = [float(value) for value in band]
        if not _is_number(self.hf_cutoff) or not 0 < self.hf_cutoff <= MAX_RADIUS:
            raise ConfigError(f"battery.hf_cutoff={self.hf_cutoff!r} is invalid; it must lie in (0, {MAX_RADIUS:.4f}] "
                              "cycles per pixel")
        band_edges(check_int("battery.num_bands", self.num_bands, 1), key="battery.num_bands")
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ConfigError(f"battery.wavelet={self.wavelet!r} is not allowed; choose a discrete PyWavelets wavelet "
                              "(pywt.wavelist(kind='discrete'), e.g. haar, db2, sym4)")
        check_int("battery.wavelet_levels", self.wavelet_levels, 1)
        check_int("battery.glcm_levels", self.glcm_levels, 2, 256)
        self.glcm_distances = check_int_list("battery.glcm_distances", self.glcm_distances, 1, allow_empty=False)
        self.glcm_angles = list(self.glcm_angles)
        if not self.glcm_angles or not all(map(_is_number, self.glcm_angles)):
            raise ConfigError(f"battery.glcm_angles={self.glcm_angles} is invalid; give a non-empty list of angles "
                              "in degrees")
        if not _is_number(self.boundary_threshold) or not -1 < self.boundary_threshold < 1:
            raise ConfigError(f"battery.boundary_threshold={self.boundary_threshold!r} is invalid; it must lie "
                              "strictly inside (-1, 1)")
        check_int("battery.correlation_lags", self.correlation_lags, 1)
        if not _is_number(self.background_tolerance) or not 0 <= self.background_tolerance < 2:
            raise ConfigError(f"battery.background_tolerance={self.background_tolerance!r} is invalid; it must lie "
                              "in [0, 2)")
        check_int("battery.histogram_bins", self.histogram_bins, 2)
        if not _is_number(self.fdr_alpha) or not 0 < self.fdr_alpha < 1:
            raise ConfigError(f"battery.fdr_alpha={self.fdr_alpha!r} is invalid; it must lie strictly inside (0, 1)")
        check_int("battery.classifier_epochs", self.classifier_epochs, 1)
        if not _is_number(self.classifier_heldout):
            raise ConfigError(f"battery.classifier_heldout={self.classifier_heldout!r} is invalid; it must be a number")
        check_range("battery.classifier_heldout", self.classifier_heldout, 0.05, 0.95)
        check_choice("battery.lpips_net", self.lpips_net, BACKBONE_FILES)
        check_int("battery.lpips_pairs", self.lpips_pairs, 1)
        check_int("battery.lpips_size", self.lpips_size, MIN_LPIPS_SIZE)
        check_int("battery.precision_recall_k", self.precision_recall_k, 1)
        check_int("battery.kid_subsets", self.kid_subsets, 1)
        check_int("battery.equivariance_images", self.equivariance_images, 1)
        check_int("battery.equivariance_bins", self.equivariance_bins, 1)
        degrees = self.equivariance_degrees
        if not _is_number(degrees) or not math.isfinite(degrees) or not 0 < abs(degrees) <= 180:
            raise ConfigError(f"battery.equivariance_degrees={degrees!r} is invalid; give a rotation angle in degrees "
                              "with 0 < |angle| <= 180")
        self.equivariance_degrees = float(degrees)
        check_int("battery.equivariance_steps", self.equivariance_steps, 1)
        check_int("battery.equivariance_generation_samples", self.equivariance_generation_samples, 1)
        check_int("battery.straightness_samples", self.straightness_samples, 1)
        check_int("battery.straightness_steps", self.straightness_steps, 1)
        check_int("battery.seed", self.seed)

    def check_image_shape(self, image_shape: tuple[int, int, int]) -> None:
        """The options of the enabled groups that depend on the image size (C, H, W): the slope band must hold
        two grid frequencies, the high-frequency cutoff one, the wavelet levels must fit, GLCM distances too.
        Call it as soon as the image shape is known to fail before any sampling."""
        _, height, width = (int(size) for size in image_shape)
        if "spectral" in self.groups:
            radius = radial_frequency(height, width)
            if len(radius[slope_mask(height, width, self.slope_band)].unique()) < 2:
                raise ConfigError(f"battery.slope_band={self.slope_band} holds fewer than 2 distinct frequencies on "
                                  f"a {height}x{width} grid (frequencies are multiples of 1/{height})")
            if self.hf_cutoff > float(radius.max()):
                raise ConfigError(f"battery.hf_cutoff={self.hf_cutoff!r} is invalid; it must lie in "
                                  f"(0, {float(radius.max()):.4f}] cycles per pixel for {height}x{width} images")
        if "wavelet" in self.groups:
            deepest = pywt.dwt_max_level(min(height, width), pywt.Wavelet(self.wavelet).dec_len)
            if self.wavelet_levels > deepest:
                raise ConfigError(f"battery.wavelet_levels={self.wavelet_levels!r} is invalid; for {self.wavelet} "
                                  f"on {height}x{width} images it must be an integer in [1, {deepest}]")
        if "structure" in self.groups and self.correlation_lags >= min(height, width):
            raise ConfigError(f"battery.correlation_lags={self.correlation_lags} must be below the image size "
                              f"{height}x{width}")
        if "equivariance" in self.groups and height != width:
            raise ConfigError(f"battery.groups contains equivariance, which rotates images and needs square ones; "
                              f"the data gives {height}x{width}: remove equivariance from battery.groups")
        if "texture" in self.groups and max(self.glcm_distances) >= max(height, width):
            raise ConfigError(f"battery.glcm_distances={list(self.glcm_distances)} must be below the image size "
                              f"{height}x{width}")

    @classmethod
    def from_config(cls, config: BatteryConfig | Mapping | None) -> BatteryConfig:
        """From None (defaults), a dict or DictConfig (``_target_`` ignored), or a BatteryConfig."""
        if isinstance(config, BatteryConfig):
            return config
        if config is None:
            return cls()
        return cls(**config_options(config, cls, "battery"))

    def build_metrics(self, image_shape: tuple[int, int, int], groups=None) -> dict[str, list[nn.Module]]:
        """The streaming metrics of each group in ``groups`` (default: the enabled ones) for images (C, H, W),
        after ``check_image_shape``."""
        groups = self.groups if groups is None else groups
        self.check_image_shape(image_shape)
        _, height, width = image_shape
        # The battery scores whole image sets on one process (rank zero under DDP): never all-gather.
        local = {"sync_on_compute": False}
        factories = {
            "spectral": lambda: [PowerSpectrum(height, width, self.slope_band, self.hf_cutoff, **local)],
            "wavelet": lambda: [WaveletEnergy(height, width, self.wavelet, self.wavelet_levels, **local)],
            "bands": lambda: [BandStatistics(height, width, self.num_bands, **local)],
            "texture": lambda: [GLCMTexture(self.glcm_levels, self.glcm_distances, self.glcm_angles, **local),
                                GradientMagnitude(**local),
                                TextureKS(self.glcm_levels, self.glcm_distances, self.glcm_angles, **local)],
            "structure": lambda: [BoundarySharpness(self.boundary_threshold, **local),
                                  SpatialCorrelation(self.correlation_lags, **local),
                                  Background(image_shape, self.background_tolerance, **local)],
            "statistics": lambda: [PixelHistogram(self.histogram_bins, **local)],
            "fdr": lambda: [PixelTests(image_shape, self.fdr_alpha, **local)],
            "classifier_auc": lambda: [ClassifierAUC(self.classifier_epochs, self.classifier_heldout, self.seed,
                                                     **local)],
            "classifier_auc_dithered": lambda: [ClassifierAUC(self.classifier_epochs, self.classifier_heldout,
                                                              self.seed, dither=GREY_LEVEL, **local)],
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
      boundary    = u(ℓ(boundary_sharpness_ratio))
      correlation = u(ℓ(spatial_correlation_ratio))
      js          = js_divergence                                   (bits, already in [0, 1])
      wasserstein = wasserstein / 2                                 (pixel range 2)
      fdr         = fdr_fraction
      classifier  = 2 |classifier_auc − 0.5|
      classifier_dithered = 2 |classifier_auc_dithered − 0.5|
      texture_ks  = texture_ks                                      (already in [0, 1])
    severity = mean of the available components (NaN-free: a missing component is left out). The background
    values (structure group) have no component: their natural scale is the real background's spread, which can
    be exactly 0 (MNIST), so a ratio is undefined and any other scale would be arbitrary.
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
    if "boundary_sharpness_ratio" in metrics:
        components["boundary"] = _discrepancy(_log_ratio(metrics["boundary_sharpness_ratio"]))
        components["correlation"] = _discrepancy(_log_ratio(metrics["spatial_correlation_ratio"]))
    if "js_divergence" in metrics:
        components["js"] = min(1.0, metrics["js_divergence"])
        components["wasserstein"] = min(1.0, metrics["wasserstein"] / 2.0)
    if "fdr_fraction" in metrics:
        components["fdr"] = metrics["fdr_fraction"]
    if "classifier_auc" in metrics:
        components["classifier"] = 2.0 * abs(metrics["classifier_auc"] - 0.5)
    if "classifier_auc_dithered" in metrics:
        components["classifier_dithered"] = 2.0 * abs(metrics["classifier_auc_dithered"] - 0.5)
    if "texture_ks" in metrics:
        components["texture_ks"] = metrics["texture_ks"]
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


def _feature_metrics(features: FeaturePair, config: BatteryConfig, kid_subset_size: int | None,
                     skipped: dict[str, str]) -> dict[str, float]:
    values = feature_distances(features.real, features.fake, kid_subset_size=kid_subset_size,
                               kid_subsets=config.kid_subsets, seed=config.seed)
    count = len(features.fake)
    if min(len(features.real), count) > config.precision_recall_k:
        values["precision"], values["recall"] = manifold_precision_recall(features.real, features.fake,
                                                                          config.precision_recall_k)
    else:
        skipped[metric_key("precision", features.name, count)] = skipped[metric_key("recall", features.name, count)] = (
            f"needs more than battery.precision_recall_k={config.precision_recall_k} images per set")
    return {metric_key(metric, features.name, count): value for metric, value in values.items()}


def evaluate_battery(real: Tensor, fake: Tensor, *, features: nn.Module | FeaturePair | None = None,
                     config: BatteryConfig | Mapping | None = None, device: str | torch.device = "cpu",
                     batch_size: int = 256, kid_subset_size: int | None = None, resamples: int | None = None,
                     level: float = 0.95, bootstrap_seed: int = 0) -> BatteryResult:
    """Run every enabled group of the battery on ``real`` vs generated ``fake`` images (keys: see the module
    docstring). ``features`` is an extractor from ``metrics.features`` (extracted here), the ``FeaturePair``
    of these two sets when the caller has extracted them already, or None (the features group is skipped).
    KID uses subsets of ``kid_subset_size`` features (``feature_distances``). Streaming metrics see the images
    in batches of ``batch_size``.

    With ``resamples``, every value of the streaming groups (spectral, wavelet, bands, texture, statistics, fdr) and
    severity gets a bootstrap interval at ``level`` (``<key>_ci_low``, ``<key>_ci_high``; ``metrics.bootstrap.
    streaming_intervals``, seeded by ``bootstrap_seed``), severity's with classifier_auc and LPIPS held at their point
    values. classifier_auc (a CNN trained per call: one per resample is unaffordable) and LPIPS diversity (random
    pairs, a cost per resample like the point value's) get none, and ``skipped`` says so; the features group's
    intervals come from ``metrics.bootstrap.feature_intervals``.
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
            if not isinstance(features, FeaturePair):
                features = FeaturePair.extract(real, fake, features, batch_size=batch_size)
            metrics.update(_feature_metrics(features, config, kid_subset_size, skipped))
        seconds["features"] = time.perf_counter() - start

    for group, group_metrics in streaming.items():
        if group.startswith("classifier_auc") and min(len(real), len(fake)) < MIN_CLASSIFIER_IMAGES:
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

    skipped.update({group: MODEL_GROUP_REASON for group in MODEL_GROUPS if group in config.groups})
    metrics.update(severity(metrics))
    if resamples is not None:
        start = time.perf_counter()
        resampled = [metric for group, group_metrics in streaming.items() if group not in skipped
                     for metric in group_metrics if has_sum_states(metric)]
        point = dict(metrics)
        metrics.update(streaming_intervals(resampled, real, fake, resamples=resamples, level=level,
                                           seed=bootstrap_seed, batch_size=batch_size,
                                           derived=lambda values: severity({**point, **values})))
        for name in ("classifier_auc", "classifier_auc_dithered", "lpips_diversity", "texture_ks"):
            if name in metrics:
                skipped[f"{name}_ci"] = NO_INTERVAL[name]
        seconds["bootstrap"] = time.perf_counter() - start
    return BatteryResult(metrics=metrics, skipped=skipped, figures_data=figures_data, seconds=seconds)


def battery_figures(real: Tensor, fake: Tensor, result: BatteryResult, grid_size: int = 64) -> dict[str, Figure]:
    """Figures of a battery result: ``radial_power_spectrum``, ``wavelet_energy_ratios``, ``band_histograms``
    (each when its group ran) and ``sample_grids`` (always; ``grid_size`` images of each set).
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
    drawn["sample_grids"] = figures.sample_grid_figure(real, fake, grid_size)
    return drawn
