"""Every key of metrics.json with its one-line definition (report.md), and which names ``optimized_metric``
accepts. The table is the one place a metric is named: a new metric adds its row here.

Patterns read as they print: ``<extractor>`` is the feature extractor's name, ``<n>`` an image count, any other
``<...>`` a word (level, band, component), ``{a,b}`` one of the alternatives. A definition may quote the
extractor and count of the key it describes as ``{extractor}`` and ``{n}``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from spectral_diffusion.utils.validation import ConfigError

log = logging.getLogger(__name__)


def _placeholder(match: re.Match) -> str:
    """The named group of a ``<name>`` placeholder: digits for the count ``<n>``, else a word."""
    name = match.group(1)
    return f"(?P<{name}>" + (r"\d+" if name == "n" else r"\w+") + ")"


@dataclass(frozen=True)
class MetricName:
    """A family of metrics.json keys: its ``pattern``, its ``definition``, the battery ``group`` that computes it
    (None: the run itself - training, sampling, FID/KID and their real-data floor) and its ``direction`` as an
    objective: ``"minimize"``, ``"maximize"`` or None (a ratio or value whose best is a target, or a count)."""

    pattern: str
    definition: str
    group: str | None = None
    direction: str | None = "minimize"

    @cached_property
    def regex(self) -> re.Pattern:
        pattern = re.escape(self.pattern)
        pattern = re.sub(r"\\{([^}]*)\\}", lambda m: "(?:" + m.group(1).replace(",", "|") + ")", pattern)
        return re.compile(re.sub(r"<(\w+)>", _placeholder, pattern))

    def describe(self, key: str) -> str | None:
        """The definition of ``key`` with its extractor and count filled in; None when ``key`` is not in this family."""
        match = self.regex.fullmatch(key)
        if match is None:
            return None
        groups = match.groupdict()
        return re.sub(r"\{(\w+)\}", lambda m: groups.get(m.group(1), m.group(0)), self.definition)


_KID = ("KID, unbiased MMD² with kernel (x·y/d + 1)³, mean and std over ``kid_subsets`` subsets "
        "(Bińkowski et al. 2018).")
_PRECISION_RECALL = ("improved precision/recall (Kynkäänniemi et al. 2019): fraction of generated features "
                     "inside the real k-NN manifold (k = ``precision_recall_k``) and of real features inside the "
                     "generated one.")
_SLOPE = ("β of P(f) ∝ |f|^−β, weighted least squares of log10 P on log10 |f| over every coefficient with |f| in "
          "``slope_band`` (cycles/pixel).")
_BAND_JS = "JS divergence (bits) of the log10 |X| and arg X histograms."
_GLCM = ("Haralick GLCM properties (symmetric, normalised; mean over ``glcm_distances`` × ``glcm_angles`` and over "
         "image channels).")
_LPIPS = ("mean LPIPS (Zhang et al. 2018) between ``lpips_pairs`` random pairs of distinct generated (real) images, "
          "and their ratio.")
_SEVERITY = "overall discrepancy in [0, 1] and its components."
_EQ = ("equivariance (dB) of the EMA denoiser under {transform}: PSNR (peak 2, central disc) between f(T x_t, t) and "
       "T f(x_t, t) on ``equivariance_images`` held-out images, mean over ``equivariance_bins`` times t "
       "(StyleGAN3, Karras et al. 2021).")

# The first row whose pattern matches a key defines it (floor and std rows come before the rows they refine).
METRIC_NAMES: tuple[MetricName, ...] = (
    # FID/KID of the generated images and the real-data floor (metrics.quality)
    MetricName("fid_floor_<extractor>@<n>",
               "FID between {n} training and {n} held-out real images: a perfect model's score"),
    MetricName("kid_std_floor_<extractor>@<n>", "std of the floor KID over random subsets"),
    MetricName("kid_floor_<extractor>@<n>",
               "KID between {n} training and {n} held-out real images ({extractor} features)"),
    MetricName("fid_<extractor>@<n>",
               "Fréchet distance (Heusel et al. 2017) of {extractor} features, {n} generated vs held-out images"),
    MetricName("kid_std_<extractor>@<n>", "std of KID over random subsets"),
    MetricName("kid_<extractor>@<n>",
               "kernel inception distance (Bińkowski et al. 2018) of {extractor} features, {n} generated"),
    MetricName("fid_inf_<extractor>",
               "FID∞ (Chong & Forsyth 2020): FID of {extractor} features on random generated subsets of 10 sizes from "
               "a fifth of the set to all of it, extrapolated linearly in 1/N to 1/N → 0; compares across sample "
               "counts"),
    MetricName("class_accuracy", "fraction of a class-conditional model's generated images that the classifier "
               "assigns to the class they were sampled for (classes cycled; ceiling: classifier_accuracy)",
               direction="maximize"),
    MetricName("<extractor>_accuracy", "held-out accuracy of the {extractor} feature network", direction="maximize"),
    MetricName("recognisable_real_<extractor>@<n>",
               "fraction of {n} held-out real images the {extractor} assigns to one class with probability ≥ 0.9: "
               "a perfect model's recognisability", direction="maximize"),
    MetricName("recognisable_<extractor>@<n>",
               "fraction of {n} generated images the {extractor} assigns to one class with probability ≥ 0.9",
               direction="maximize"),
    # the run
    MetricName("objective", "the value returned to the caller (optimized_metric)", direction=None),
    MetricName("global_step", "optimizer steps trained", direction=None),
    MetricName("train_seconds", "wall-clock seconds of Trainer.fit"),
    MetricName("train_images_per_second", "training images per second", direction="maximize"),
    MetricName("train_loss", "training loss at the last logged step"),
    MetricName("val_loss", "held-out loss of the EMA model (uniform t, fixed seeds)"),
    MetricName("num_parameters", "trainable parameters of the backbone", direction=None),
    MetricName("sample_seconds", "wall-clock seconds to generate all samples"),
    MetricName("sample_seconds_per_image_per_nfe", "sampling seconds per image per network evaluation"),
    MetricName("sample_seconds_per_image", "sampling seconds per image"),
    MetricName("sampler_nfe", "network evaluations per sampling trajectory (NFE)"),
    MetricName("sampler_iterations", "sweeps of the parallel sampler (deq) the slowest batch used"),
    MetricName("peak_memory_mb",
               "peak memory (MiB): CUDA memory allocated while sampling, on CPU the process's peak RSS"),
    MetricName("num_samples", "generated images evaluated", direction=None),
    # the metric battery (metrics.battery), by group
    MetricName("precision_<extractor>@<n>", _PRECISION_RECALL, "features", direction="maximize"),
    MetricName("recall_<extractor>@<n>", _PRECISION_RECALL, "features", direction="maximize"),
    MetricName("spectral_mse", "mean over radial frequency bins f > 0 of (log10 P_gen(f) − log10 P_real(f))², P the "
               "radially averaged power spectrum |rfft2(x, ortho)|² (decades²).", "spectral"),
    MetricName("spectral_slope_{real,fake}", _SLOPE, "spectral", direction=None),
    MetricName("spectral_slope_diff", "|β_gen − β_real|.", "spectral"),
    MetricName("hf_energy_ratio", "mean energy at |f| ≥ ``hf_cutoff`` per image, generated / real.", "spectral",
               direction=None),
    MetricName("wavelet_{lh,hl,hh}_ratio_l<level>", "mean detail energy per image, generated / real; lh = pywt cH "
               "(high-pass along the height), hl = cV (along the width), hh = cD (both).", "wavelet", direction=None),
    MetricName("wavelet_energy_ratio_l<level>", "the same for the three orientations together.", "wavelet",
               direction=None),
    MetricName("band_magnitude_ratio_b<band>", "mean |X| in the ring, generated / real.", "bands", direction=None),
    MetricName("band_{magnitude,phase}_js_b<band>", _BAND_JS, "bands"),
    MetricName("band_phase_coherence_diff_b<band>", "difference of the ring mean of ρ̂², the unbiased squared mean "
               "resultant length of the phase at one frequency across images (0: random phases).", "bands",
               direction=None),
    MetricName("glcm_{contrast,dissimilarity}_{real,fake,ratio}", _GLCM, "texture", direction=None),
    MetricName("glcm_correlation_{real,fake,diff}", _GLCM, "texture", direction=None),
    MetricName("texture_ks_{contrast,dissimilarity,correlation,gradient_magnitude}", "two-sample Kolmogorov–Smirnov "
               "statistic between generated and real per-image values of that texture feature.", "texture"),
    MetricName("texture_ks", "mean of the four texture_ks_<feature> statistics (0: same per-image distributions).",
               "texture"),
    MetricName("gradient_magnitude_{real,fake,ratio}", "mean √(∂x² + ∂y²) per pixel (central differences).",
               "texture", direction=None),
    MetricName("boundary_sharpness_{real,fake,ratio}", "mean gradient magnitude √(∂x² + ∂y²) (numpy.gradient) on "
               "foreground boundary pixels: either side of a 4-neighbour edge across ``boundary_threshold``.",
               "structure", direction=None),
    MetricName("spatial_correlation_{real,fake,ratio}", "mean over images, channels, both axes and lags "
               "1..``correlation_lags`` of the correlation of each pixel with its neighbour at that lag.",
               "structure", direction=None),
    MetricName("background_{std,deviation}_{real,fake}", "on the positions whose real mean lies within "
               "``background_tolerance`` of the smallest real mean m (the data minimum): pooled std of the pixel "
               "values, and |their mean − m|.", "structure", direction=None),
    MetricName("js_divergence", "Jensen–Shannon divergence (bits, in [0, 1]) of the pixel-intensity histograms.",
               "statistics"),
    MetricName("wasserstein", "1-Wasserstein distance of the pixel-intensity distributions (pixel units, ≤ 2).",
               "statistics"),
    MetricName("fdr_fraction", "fraction of pixels (per channel) whose mean differs between real and generated "
               "images by a Welch t-test, under Benjamini–Hochberg FDR control at ``fdr_alpha`` (a difference of "
               "spread alone is seen by js_divergence / texture, not here).", "fdr"),
    MetricName("classifier_auc", "held-out ROC AUC of a small CNN trained (``classifier_epochs``) to tell generated "
               "from real images; 0.5 = indistinguishable, 1 = perfectly separable.", "classifier_auc"),
    MetricName("classifier_auc_dithered", "classifier_auc with uniform noise of one grey level (2/255) added to both "
               "sets first: what remains once 8-bit quantisation of the real images can no longer give them away.",
               "classifier_auc_dithered"),
    MetricName("lpips_diversity", _LPIPS, "lpips", direction=None),
    MetricName("lpips_diversity_{real,ratio}", _LPIPS, "lpips", direction=None),
    MetricName("eq_t", _EQ.format(transform="an odd integer shift (periodic, about size/16 pixels in x and y)"),
               "equivariance", direction="maximize"),
    MetricName("eq_t_frac", _EQ.format(transform="a sub-pixel shift (0.5, 0.25) px by the FFT shift theorem"),
               "equivariance", direction="maximize"),
    MetricName("eq_r", _EQ.format(transform="a rotation by ``equivariance_degrees`` (three FFT shears)"),
               "equivariance", direction="maximize"),
    MetricName("eq_r_generation", "generation rotation equivariance (dB): PSNR (peak 2, central disc) between R(x0(z)) "
               "and x0(R z), DDIM η = 0 with ``equivariance_steps`` steps from ``equivariance_generation_samples`` "
               "prior draws z, R the rotation by ``equivariance_degrees``.", "equivariance", direction="maximize"),
    MetricName("straightness", "E[L² − ‖x0 − x_T‖²] / E‖x0 − x_T‖² of DDIM η = 0 trajectories (``straightness_steps`` "
               "steps, ``straightness_samples`` paths), L the path length: Liu et al. 2023's straightness with the "
               "path's own arc length as clock; 0 = straight.", "straightness"),
    MetricName("straightness_deviation_peak", "largest mean deviation 1 − cos θ over sampling steps, θ the angle of "
               "a step to its path's chord x0 − x_T (0: along it, 2: against it).", "straightness"),
    MetricName("straightness_deviation_peak_t", "start time t of the step with straightness_deviation_peak.",
               "straightness", direction=None),
    MetricName("severity", _SEVERITY, "severity"),
    MetricName("severity_<component>", _SEVERITY, "severity"),
)
# The battery always adds its severity to the groups it runs.
ALWAYS_WITH_BATTERY = ("severity",)


def metric_name(key: str) -> MetricName | None:
    """The table row that defines ``key`` (None: an unknown key)."""
    return next((row for row in METRIC_NAMES if row.regex.fullmatch(key)), None)


# The ends of a bootstrap confidence interval (metrics.bootstrap) of the metric whose key precedes them.
INTERVAL_SUFFIXES = {"_ci_low": "lower", "_ci_high": "upper"}


def interval_of(key: str) -> tuple[str, str] | None:
    """``(metric key, "lower" | "upper")`` for ``<key>_ci_low`` / ``<key>_ci_high``; None for any other key."""
    for suffix, end in INTERVAL_SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], end
    return None


def describe(key: str) -> str:
    """The one-line definition of a metric key for report.md ("" when none is known)."""
    interval = interval_of(key)
    if interval is not None:
        metric, end = interval
        return (f"{end} end of the percentile bootstrap interval (``evaluation.level``, ``evaluation.bootstrap`` "
                f"resamples of both sets) of {metric}")
    row = metric_name(key)
    return row.describe(key) if row is not None else ""


# The default optimized_metric: the metric that resolved the most checkpoint pairs (README "Resolving power").
RECOGNISABLE = "recognisable"


def metric_shorthands(extractor_name: str, num_samples: int, *, val_loss: bool = False) -> dict[str, str]:
    """What ``optimized_metric=fid|kid`` (``recognisable`` with the classifier extractor, and with a training run
    ``val_loss``) means for this many generated images."""
    from spectral_diffusion.metrics.quality import metric_key

    metrics = ("fid", "kid", RECOGNISABLE) if extractor_name == "classifier" else ("fid", "kid")
    names = {metric: metric_key(metric, extractor_name, num_samples) for metric in metrics}
    return {**names, "val_loss": "val_loss"} if val_loss else names


def resolve_optimized_metric(name: str | None, shorthands: Mapping[str, str],
                             battery_groups: Sequence[str] = ()) -> str | None:
    """The metrics.json key ``optimized_metric=name`` selects: a shorthand, the key a shorthand stands for, or
    a key of the table computed by one of the ``battery_groups`` that run; ConfigError otherwise."""
    if name is None:
        return None
    if name in shorthands:
        return shorthands[name]
    row = metric_name(name)
    groups = (*battery_groups, *ALWAYS_WITH_BATTERY) if battery_groups else ()
    if name in shorthands.values() or (row is not None and row.group in groups):
        return name
    allowed = list(shorthands) + [key for short, key in shorthands.items() if key != short]
    battery = (f" or a key of the metric battery groups {list(battery_groups)} (spectral_diffusion.evaluation.names)"
               if battery_groups else "")
    raise ConfigError(f"optimized_metric={name!r} is not a metric this run computes; choose one of {allowed}{battery}")


def metric_direction(key: str) -> str | None:
    """``"minimize"`` or ``"maximize"``: which way ``key`` improves as an objective; None for a key with a target
    value (ratios, slopes), a count or an unknown key."""
    row = metric_name(key)
    return None if row is None else row.direction


# Keys that only exist with a feature extractor: FID/KID/precision/recall, their floors, and the shorthands.
_FEATURE_METRIC = re.compile(r"(?:fid|kid|recognisable)|(?:fid|kid|kid_std|precision|recall|recognisable)(?:_floor)?_\w+@\d+")


def resolve_objective(name: str | None, shorthands: Mapping[str, str], battery_groups: Sequence[str] = (), *,
                      features_available: bool = True, explicit: bool = True,
                      fallbacks: Sequence[str] = ()) -> tuple[str | None, str | None]:
    """``(key, note)``: ``resolve_optimized_metric`` while feature metrics are computed. Without a feature extractor
    (``features=none``) a feature metric named ``explicit``-ly by the user is refused with a ConfigError, and a
    default one falls back to the first of ``fallbacks``; ``note`` then says so (None otherwise). ``recognisable``
    needs the classifier extractor (class labels): with another one a default falls back to FID, an explicit one
    is refused."""
    if name == RECOGNISABLE and features_available and RECOGNISABLE not in shorthands:
        if explicit or "fid" not in shorthands:
            raise ConfigError(f"optimized_metric={name!r} needs class labels and the classifier extractor "
                              f"(features=classifier, or features=auto on labelled data); this run's feature metrics "
                              f"are {list(shorthands)}: choose one of them")
        note = (f"optimized_metric={name!r} needs class labels and the classifier extractor; this run has "
                f"{shorthands['fid'].split('@')[0].removeprefix('fid_')} features, so the objective is "
                f"{shorthands['fid']!r} instead")
        log.warning(note)
        return shorthands["fid"], note
    if features_available or name is None or not _FEATURE_METRIC.fullmatch(name):
        return resolve_optimized_metric(name, shorthands, battery_groups), None
    if explicit or not fallbacks:
        others = f"one of {list(fallbacks)}" if fallbacks else "a key of the metric battery"
        raise ConfigError(f"optimized_metric={name!r} is a feature metric, but features=none builds no feature "
                          f"extractor; choose features=auto|classifier|autoencoder|inception or optimized_metric={others}")
    note = (f"optimized_metric={name!r} needs a feature extractor and features=none builds none; "
            f"the objective is {fallbacks[0]!r} instead")
    log.warning(note)
    return fallbacks[0], note
