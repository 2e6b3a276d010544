"""Tests for the metric battery: known answers, numpy/scipy/scikit-image references, batch-size
independence of every Metric, option effects, config validation, LPIPS without downloads, figures.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch
import torchvision
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from skimage.feature import graycomatrix, graycoprops
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from torch import nn
from torch.nn import functional as F
from torchmetrics.utilities.data import dim_zero_sum

from spectral_diffusion.data.sources import RandomFields
from spectral_diffusion.metrics import battery as battery_module
from spectral_diffusion.metrics.battery import (
    BatteryConfig,
    battery_figures,
    evaluate_battery,
    severity,
)
from spectral_diffusion.metrics.lpips_metric import (
    BACKBONE_FILES,
    LPIPSDiversity,
    load_lpips,
    lpips_distance,
    random_pairs,
)
from spectral_diffusion.metrics.quality import FeaturePair, feature_distances
from spectral_diffusion.metrics.spectral import (
    BandStatistics,
    PowerSpectrum,
    WaveletEnergy,
    radial_average,
)
from spectral_diffusion.metrics.statistics import (
    ClassifierAUC,
    PixelHistogram,
    PixelTests,
    PrecisionRecall,
    benjamini_hochberg,
    histogram_wasserstein,
    js_divergence,
    manifold_precision_recall,
    pixel_histogram,
    roc_auc,
    welch_t_test,
)
from spectral_diffusion.metrics.texture import (
    GLCMTexture,
    GradientMagnitude,
    glcm_properties,
    quantize,
)
from spectral_diffusion.spectral.frequency import radial_power_spectrum
from spectral_diffusion.utils.validation import ConfigError

SIZE = 16
NO_SLOW_GROUPS = ["spectral", "wavelet", "bands", "texture", "statistics", "fdr"]


def fields(beta: float, count: int = 200, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return RandomFields(image_size=size, num_images=count, beta=beta, seed=seed).load().images


def blur(images: torch.Tensor) -> torch.Tensor:
    """3x3 binomial low-pass ([1, 2, 1]/4 outer product), reflect padding."""
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (kernel[:, None] * kernel[None, :]).expand(images.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="reflect"), kernel, groups=images.shape[1])


def sharpen(images: torch.Tensor) -> torch.Tensor:
    """Unsharp mask: x + (x − blur(x))."""
    return 2 * images - blur(images)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """scikit-learn's 8x8 digits in [-1, 1] (constant borders: degenerate per-pixel tests)."""
    images = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 8 - 1
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))]


class RandomProjection(nn.Module):
    """A fixed random linear feature map: an exactly known extractor."""

    name = "projection"

    def __init__(self, in_features: int = SIZE * SIZE, num_features: int = 8) -> None:
        super().__init__()
        self.num_features = num_features
        weight = torch.randn(in_features, num_features, generator=torch.Generator().manual_seed(1)) / 8
        self.register_buffer("weight", weight)

    def forward(self, images):
        return images.flatten(1) @ self.weight


def run(metric, real, fake, batch_size=None):
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size or len(images)):
            metric.update(chunk, real=is_real)
    return metric.compute()


# ------------------------------------------------------------------------------------------------ known answers


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.0])
def test_spectral_slope_of_random_fields_within_0_1_of_beta(beta):
    result = run(PowerSpectrum(SIZE, SIZE), fields(beta, seed=1), fields(beta, seed=2))
    assert result["spectral_slope_real"] == pytest.approx(beta, abs=0.1)
    assert result["spectral_slope_fake"] == pytest.approx(beta, abs=0.1)
    assert result["spectral_slope_diff"] < 0.1


def test_slope_difference_measures_the_change_of_beta():
    result = run(PowerSpectrum(SIZE, SIZE), fields(1.0), fields(2.5, seed=3))
    assert result["spectral_slope_diff"] == pytest.approx(1.5, abs=0.15)


def test_blurred_copy_loses_and_sharpened_copy_gains_high_frequencies():
    real = fields(2.0)
    config = BatteryConfig(groups=["spectral", "wavelet", "texture"], wavelet_levels=1)
    blurred = evaluate_battery(real, blur(real), config=config).metrics
    sharpened = evaluate_battery(real, sharpen(real), config=config).metrics
    for key in ("hf_energy_ratio", "wavelet_hh_ratio_l1", "wavelet_lh_ratio_l1", "wavelet_hl_ratio_l1",
                "gradient_magnitude_ratio", "glcm_contrast_ratio", "glcm_dissimilarity_ratio"):
        assert blurred[key] < 0.9, key
        assert sharpened[key] > 1.1, key
    assert blurred["spectral_slope_fake"] > blurred["spectral_slope_real"] + 0.2
    assert sharpened["spectral_slope_fake"] < sharpened["spectral_slope_real"] - 0.2


def test_identical_sets_score_as_indistinguishable():
    images = fields(2.0, count=300)
    result = evaluate_battery(images, images.clone(), features=RandomProjection(),
                              config={"groups": [group for group in battery_module.GROUPS
                                                 if group not in ("lpips", *battery_module.MODEL_GROUPS)],
                                      "kid_subsets": 5})
    metrics = result.metrics
    assert metrics["fid_projection@300"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["precision_projection@300"] == 1.0 and metrics["recall_projection@300"] == 1.0
    for key in ("js_divergence", "wasserstein", "fdr_fraction", "spectral_mse", "spectral_slope_diff"):
        assert metrics[key] == pytest.approx(0.0, abs=1e-12), key
    for key, value in metrics.items():
        if "ratio" in key:
            assert value == pytest.approx(1.0, abs=1e-12), key
        if key.startswith(("band_", "glcm_correlation_diff")) and ("js" in key or "diff" in key):
            assert value == pytest.approx(0.0, abs=1e-12), key
    assert metrics["classifier_auc"] == pytest.approx(0.5, abs=0.12)
    assert metrics["severity"] < 0.05
    assert set(result.skipped) == set()
    # images alone cannot measure the network: the model groups are skipped with the reason
    model_only = evaluate_battery(images, images, config={"groups": list(battery_module.MODEL_GROUPS)})
    assert model_only.skipped == {group: battery_module.MODEL_GROUP_REASON for group in battery_module.MODEL_GROUPS}


def test_two_draws_of_one_distribution_have_auc_near_half_and_no_rejections():
    result = evaluate_battery(fields(2.0, 300, seed=4), fields(2.0, 300, seed=5),
                              config={"groups": ["fdr", "classifier_auc"]}).metrics
    assert result["classifier_auc"] == pytest.approx(0.5, abs=0.12)
    assert result["fdr_fraction"] < 0.02


def test_shifted_copy_is_detected_by_tests_and_classifier():
    real = fields(2.0, 300, seed=4)
    result = evaluate_battery(real, fields(2.0, 300, seed=5) + 0.3, config={"groups": ["fdr", "classifier_auc"]})
    assert result.metrics["fdr_fraction"] > 0.95
    assert result.metrics["classifier_auc"] > 0.9
    assert result.metrics["severity"] > 0.9


def test_precision_and_recall_of_disjoint_and_partial_sets():
    real = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    assert manifold_precision_recall(real, real + 100.0) == (0.0, 0.0)
    # generated covers only half the real set: full precision, recall about one half
    half = real[real[:, 0] > 0]
    precision, recall = manifold_precision_recall(real, half)
    assert precision == 1.0
    assert 0.4 < recall < 0.75


# ------------------------------------------------------------------------------------------------ references


def test_radial_average_equals_the_radial_power_spectrum_of_spectral_frequency():
    images = fields(2.0, 20)
    metric = PowerSpectrum(SIZE, SIZE)
    metric.update(images, real=True)
    frequencies, power = radial_average(metric.mean_power("real"), SIZE, SIZE)
    expected_frequencies, expected_power = radial_power_spectrum(images)
    torch.testing.assert_close(frequencies, expected_frequencies)
    torch.testing.assert_close(power, expected_power)


def full_grid_power(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """numpy fft2 (ortho) mean power over images and channels, and |f| on the full grid."""
    power = np.abs(np.fft.fft2(images.double().numpy(), norm="ortho")) ** 2
    height, width = images.shape[-2:]
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])
    return power.mean(axis=(0, 1)), radius


def test_power_spectrum_metric_matches_a_numpy_full_grid_reference():
    real, fake = fields(1.5, 30, size=12), blur(fields(1.5, 20, seed=3, size=12))
    metric = PowerSpectrum(12, 12, slope_band=(0.1, 0.45), hf_cutoff=0.3)
    result = run(metric, real, fake)
    references = {}
    for name, images in (("real", real), ("fake", fake)):
        power, radius = full_grid_power(images)
        band = (radius >= 0.1) & (radius <= 0.45)
        slope = np.polyfit(np.log10(radius[band]), np.log10(power[band]), 1)[0]
        bins = np.round(radius * 12).astype(int)
        radial = np.array([power[bins == b].mean() for b in range(1, bins.max() + 1)])
        references[name] = (-slope, power[radius >= 0.3].sum(), radial)
    assert result["spectral_slope_real"] == pytest.approx(references["real"][0], rel=1e-9)
    assert result["spectral_slope_fake"] == pytest.approx(references["fake"][0], rel=1e-9)
    assert result["hf_energy_ratio"] == pytest.approx(references["fake"][1] / references["real"][1], rel=1e-9)
    expected_mse = np.mean((np.log10(references["fake"][2]) - np.log10(references["real"][2])) ** 2)
    assert result["spectral_mse"] == pytest.approx(expected_mse, rel=1e-9)


def test_wavelet_energy_matches_a_per_image_pywt_loop():
    import pywt

    real, fake = fields(2.0, 12), sharpen(fields(2.0, 9, seed=2))
    result = run(WaveletEnergy(SIZE, SIZE, wavelet="db2", levels=2), real, fake)

    def energies(images):
        total = np.zeros((2, 3))
        for image in images[:, 0].double().numpy():
            coefficients = pywt.wavedec2(image, "db2", mode="periodization", level=2)
            for level, details in enumerate(reversed(coefficients[1:])):
                total[level] += [np.sum(detail**2) for detail in details]
        return total / len(images)

    ratio = energies(fake) / energies(real)
    for level in range(2):
        for index, orientation in enumerate(("lh", "hl", "hh")):
            assert result[f"wavelet_{orientation}_ratio_l{level + 1}"] == pytest.approx(ratio[level, index], rel=1e-9)
    assert result["wavelet_energy_ratio_l2"] == pytest.approx(
        energies(fake)[1].sum() / energies(real)[1].sum(), rel=1e-9)


def test_band_statistics_match_a_numpy_full_grid_reference():
    real, fake = fields(2.0, 40), fields(2.0, 30, seed=9) * 0.7 + 0.1
    result = run(BandStatistics(SIZE, SIZE, num_bands=3), real, fake)
    edges = np.linspace(0, math.sqrt(0.5), 4)
    radius = np.hypot(np.fft.fftfreq(SIZE)[:, None], np.fft.fftfreq(SIZE)[None, :])
    band = np.clip(np.searchsorted(edges[1:-1], radius, side="right"), 0, 2)
    stats = {}
    for name, images in (("real", real), ("fake", fake)):
        spectrum = np.fft.fft2(images[:, 0].double().numpy(), norm="ortho")
        n = len(spectrum)
        resultant = np.abs(np.exp(1j * np.angle(spectrum)).sum(0)) ** 2
        rho_squared = (resultant - n) / (n * (n - 1))
        stats[name] = [(np.abs(spectrum)[:, band == k].mean(), rho_squared[band == k].mean()) for k in range(3)]
    for k in range(3):
        assert result[f"band_magnitude_ratio_b{k}"] == pytest.approx(stats["fake"][k][0] / stats["real"][k][0],
                                                                     rel=1e-9)
        assert result[f"band_phase_coherence_diff_b{k}"] == pytest.approx(stats["fake"][k][1] - stats["real"][k][1],
                                                                          abs=1e-12)
    # copies of one image share every phase: ρ̂² = 1 in all bands, while independent fields have ρ̂² ≈ 0
    copies = run(BandStatistics(SIZE, SIZE, num_bands=3), real, real[:1].repeat(20, 1, 1, 1))
    for k in range(3):
        assert copies[f"band_phase_coherence_diff_b{k}"] == pytest.approx(1.0, abs=0.05)


def test_glcm_properties_equal_scikit_image():
    images = torch.rand(6, 2, 9, 11, generator=torch.Generator().manual_seed(0)) * 2 - 1
    levels_image = quantize(images.flatten(0, 1), 8)
    levels_image[3] = 5  # a constant image: correlation is 1 by scikit-image's convention
    angles = [0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi / 6]
    properties = glcm_properties(levels_image, [1, 2, 3], angles)
    for index, image in enumerate(levels_image.numpy().astype(np.uint8)):
        matrix = graycomatrix(image, [1, 2, 3], angles, levels=8, symmetric=True, normed=True)
        for name in ("contrast", "dissimilarity", "correlation"):
            np.testing.assert_allclose(properties[name][index].numpy(), graycoprops(matrix, name), atol=1e-12)


def test_glcm_metric_averages_scikit_image_properties_over_images():
    real, fake = fields(2.0, 10), blur(fields(2.0, 7, seed=1))
    result = run(GLCMTexture(levels=16, distances=[1, 2], angles=[0, 90]), real, fake)

    def mean_property(images, name):
        values = []
        for image in quantize(images[:, 0], 16).numpy().astype(np.uint8):
            matrix = graycomatrix(image, [1, 2], [0, np.pi / 2], levels=16, symmetric=True, normed=True)
            values.append(graycoprops(matrix, name).mean())
        return np.mean(values)

    assert result["glcm_contrast_real"] == pytest.approx(mean_property(real, "contrast"), rel=1e-9)
    assert result["glcm_dissimilarity_ratio"] == pytest.approx(
        mean_property(fake, "dissimilarity") / mean_property(real, "dissimilarity"), rel=1e-9)
    assert result["glcm_correlation_diff"] == pytest.approx(
        mean_property(fake, "correlation") - mean_property(real, "correlation"), rel=1e-9)


def test_quantize_levels():
    values = torch.tensor([-1.0, -0.75, 0.0, 0.49, 1.0, 3.0])
    assert quantize(values, 4).tolist() == [0, 0, 2, 2, 3, 3]


def test_gradient_magnitude_matches_numpy_gradient():
    real, fake = fields(2.0, 5), fields(3.0, 4, seed=2)
    result = run(GradientMagnitude(), real, fake)

    def reference(images):
        gradient_y, gradient_x = np.gradient(images.double().numpy(), axis=(-2, -1))
        return np.sqrt(gradient_y**2 + gradient_x**2).mean()

    assert result["gradient_magnitude_real"] == pytest.approx(reference(real), rel=1e-12)
    assert result["gradient_magnitude_ratio"] == pytest.approx(reference(fake) / reference(real), rel=1e-12)


def test_pixel_histogram_js_and_wasserstein_match_numpy_and_scipy():
    real, fake = fields(2.0, 20), fields(1.0, 30, seed=2) * 1.3  # some values outside [-1, 1]: clamped
    bins = 32
    edges = np.linspace(-1, 1, bins + 1)
    p = np.histogram(real.double().clamp(-1, 1).numpy(), bins=edges)[0]
    q = np.histogram(fake.double().clamp(-1, 1).numpy(), bins=edges)[0]
    np.testing.assert_array_equal(pixel_histogram(real, bins).numpy(), p)
    result = run(PixelHistogram(bins), real, fake)
    assert result["js_divergence"] == pytest.approx(scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2,
                                                    rel=1e-9)
    centres = (edges[1:] + edges[:-1]) / 2
    assert result["wasserstein"] == pytest.approx(scipy.stats.wasserstein_distance(centres, centres, p, q),
                                                  rel=1e-9)
    raw = scipy.stats.wasserstein_distance(real.clamp(-1, 1).flatten().numpy(), fake.clamp(-1, 1).flatten().numpy())
    assert result["wasserstein"] == pytest.approx(raw, abs=2 / bins)


def test_js_divergence_bounds():
    assert js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == pytest.approx(1.0)
    assert js_divergence(torch.tensor([2.0, 1.0]), torch.tensor([4.0, 2.0])) == pytest.approx(0.0, abs=1e-15)
    assert histogram_wasserstein(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:Precision loss occurred")  # scipy, on the constant border pixels
def test_welch_t_test_and_benjamini_hochberg_match_scipy(digits):
    real, fake = digits[:200], digits[200:320].flip(-1)
    stats = [(float(len(x)), x.double().sum(0), x.double().square().sum(0)) for x in (real, fake)]
    p_values = welch_t_test(*stats[0], *stats[1])
    expected = scipy.stats.ttest_ind(real.double().numpy(), fake.double().numpy(), equal_var=False).pvalue
    defined = ~np.isnan(expected)
    assert (~defined).sum() > 0  # constant border pixels of the digits
    np.testing.assert_allclose(p_values.numpy()[defined], expected[defined], rtol=1e-8, atol=1e-14)
    # where both sets are constant and equal, nothing differs
    assert (p_values.numpy()[~defined] == 1.0).all()
    rejected = benjamini_hochberg(p_values, 0.05)
    expected_rejected = scipy.stats.false_discovery_control(p_values.numpy().ravel()) <= 0.05
    np.testing.assert_array_equal(rejected.numpy().ravel(), expected_rejected)
    metric = run(PixelTests((1, 8, 8), alpha=0.05), real, fake)
    assert metric["fdr_fraction"] == pytest.approx(expected_rejected.mean())
    assert 0.05 < metric["fdr_fraction"] < 0.95
    assert run(PixelTests((1, 8, 8), alpha=0.5), real, fake)["fdr_fraction"] > metric["fdr_fraction"]


def test_constant_pixels_that_differ_count_as_significant():
    zeros, ones = torch.zeros(5, 1, 2, 2), torch.ones(5, 1, 2, 2)
    assert run(PixelTests((1, 2, 2)), zeros, ones)["fdr_fraction"] == 1.0


def test_roc_auc_matches_scikit_learn_with_ties():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (200,), generator=generator).double()
    labels = torch.randint(0, 2, (200,), generator=generator)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), rel=1e-12)


def test_precision_recall_matches_a_scikit_learn_nearest_neighbour_reference():
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.randn(120, 5, generator=generator), 1.3 * torch.randn(90, 5, generator=generator) + 0.4

    def coverage(support, queries, k):
        radii = NearestNeighbors(n_neighbors=k + 1).fit(support).kneighbors(support)[0][:, -1]
        distances = scipy.spatial.distance.cdist(queries, support)
        return float((distances <= radii[None]).any(axis=1).mean())

    precision, recall = manifold_precision_recall(real, fake, k=3)
    assert precision == pytest.approx(coverage(real.numpy(), fake.numpy(), 3))
    assert recall == pytest.approx(coverage(fake.numpy(), real.numpy(), 3))
    assert 0.3 < precision < 1.0 and 0.3 < recall < 1.0
    assert manifold_precision_recall(real, fake, k=10) != (precision, recall)


# ------------------------------------------------------------------------------------------------ batching


METRIC_FACTORIES = {
    "power_spectrum": lambda: PowerSpectrum(SIZE, SIZE),
    "wavelet": lambda: WaveletEnergy(SIZE, SIZE, levels=3),
    "bands": lambda: BandStatistics(SIZE, SIZE),
    "glcm": lambda: GLCMTexture(),
    "gradient": lambda: GradientMagnitude(),
    "histogram": lambda: PixelHistogram(64),
    "pixel_tests": lambda: PixelTests((1, SIZE, SIZE)),
    "classifier_auc": lambda: ClassifierAUC(epochs=1),
    "precision_recall": lambda: PrecisionRecall(RandomProjection()),
}


@pytest.mark.parametrize("name", sorted(METRIC_FACTORIES))
def test_metric_does_not_depend_on_batch_size(name):
    real, fake = fields(2.0, 60), blur(fields(2.0, 45, seed=1))
    whole = run(METRIC_FACTORIES[name](), real, fake)
    batched = run(METRIC_FACTORIES[name](), real, fake, batch_size=7)
    assert whole.keys() == batched.keys()
    for key in whole:
        assert batched[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("name", sorted(METRIC_FACTORIES))
def test_merged_states_equal_one_metric_over_all_images(name):
    """What DDP does: each rank accumulates part of the images, the states are reduced (sum or cat)."""
    real, fake = fields(2.0, 40), blur(fields(2.0, 30, seed=1))
    whole = run(METRIC_FACTORIES[name](), real, fake)
    first, second = METRIC_FACTORIES[name](), METRIC_FACTORIES[name]()
    for metric, part in ((first, slice(0, 25)), (second, slice(25, None))):
        metric.update(real[part], real=True)
        metric.update(fake[part], real=False)
    first.merge_state(second)
    merged = first.compute()
    for key in whole:
        assert merged[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("name", sorted(set(METRIC_FACTORIES) - {"classifier_auc", "precision_recall"}))
def test_streaming_states_are_float64_sums_kept_apart(name):
    metric = METRIC_FACTORIES[name]()
    for state, reduction in metric._reductions.items():
        assert state.endswith(("_real", "_fake"))
        assert getattr(metric, state).dtype == torch.float64, state
        assert reduction is dim_zero_sum, state
    metric.update(fields(2.0, 4), real=True)
    assert all(getattr(metric, state).abs().sum() == 0 for state in metric._reductions if state.endswith("_fake"))
    assert any(getattr(metric, state).abs().sum() > 0 for state in metric._reductions if state.endswith("_real"))


# ------------------------------------------------------------------------------------------------ options


def test_every_option_changes_the_computation():
    real, fake = fields(2.0, 120), blur(fields(2.5, 80, seed=1))
    base = {"groups": NO_SLOW_GROUPS}
    reference = evaluate_battery(real, fake, config=base).metrics
    changes = {
        "slope_band": ([0.2, 0.5], "spectral_slope_real"),
        "hf_cutoff": (0.4, "hf_energy_ratio"),
        "num_bands": (2, "band_magnitude_ratio_b1"),
        "wavelet": ("db2", "wavelet_hh_ratio_l1"),
        "glcm_levels": (8, "glcm_contrast_real"),
        "glcm_distances": ([2], "glcm_contrast_real"),
        "glcm_angles": ([0], "glcm_contrast_real"),
        "histogram_bins": (16, "js_divergence"),
    }
    for option, (value, key) in changes.items():
        changed = evaluate_battery(real, fake, config={**base, option: value}).metrics
        assert changed[key] != pytest.approx(reference[key], rel=1e-6), option
    deeper = evaluate_battery(real, fake, config={"groups": ["wavelet"], "wavelet_levels": 3}).metrics
    assert "wavelet_hh_ratio_l3" in deeper and "wavelet_hh_ratio_l3" not in reference
    assert "band_magnitude_ratio_b3" in reference


def test_classifier_options_change_the_auc():
    real, fake = fields(2.0, 150), fields(2.4, 150, seed=1)
    auc = {}
    for options in ({}, {"classifier_epochs": 1}, {"seed": 1}, {"classifier_heldout": 0.5}):
        config = {"groups": ["classifier_auc"], **options}
        auc[str(options)] = evaluate_battery(real, fake, config=config).metrics["classifier_auc"]
    assert len(set(auc.values())) == len(auc)


def test_feature_group_options_and_metric_names():
    real, fake = fields(2.0, 120), blur(fields(2.0, 80, seed=1))
    config = {"groups": ["features"], "kid_subsets": 3}
    first = evaluate_battery(real, fake, features=RandomProjection(), config=config).metrics
    assert set(first) == {f"{m}_projection@80" for m in ("fid", "kid", "kid_std", "precision", "recall")}
    other = evaluate_battery(real, fake, features=RandomProjection(),
                             config={**config, "precision_recall_k": 10, "kid_subsets": 4}).metrics
    assert other["precision_projection@80"] != first["precision_projection@80"]
    assert other["kid_std_projection@80"] != first["kid_std_projection@80"]
    skipped = evaluate_battery(real, fake, config=config)
    assert "features" in skipped.skipped and not skipped.metrics


def test_groups_select_what_runs():
    real, fake = fields(2.0, 30), fields(2.0, 30, seed=1)
    result = evaluate_battery(real, fake, config={"groups": ["statistics"]})
    assert set(result.metrics) == {"js_divergence", "wasserstein", "severity", "severity_js", "severity_wasserstein"}
    assert set(result.seconds) == {"statistics"}


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"groups": ["spectral", "fid"]}, "battery.groups"),
        ({"slope_band": [0.3, 0.2]}, "battery.slope_band"),
        ({"slope_band": [0.1]}, "battery.slope_band"),
        ({"hf_cutoff": 0.0}, "battery.hf_cutoff"),
        ({"num_bands": 0}, "battery.num_bands"),
        ({"wavelet": "morlet"}, "battery.wavelet"),
        ({"wavelet_levels": 0}, "battery.wavelet_levels"),
        ({"glcm_levels": 1}, "battery.glcm_levels"),
        ({"glcm_distances": [0]}, "battery.glcm_distances"),
        ({"glcm_angles": []}, "battery.glcm_angles"),
        ({"histogram_bins": 1}, "battery.histogram_bins"),
        ({"fdr_alpha": 0.0}, "battery.fdr_alpha"),
        ({"classifier_epochs": 0}, "battery.classifier_epochs"),
        ({"classifier_heldout": 0.99}, "battery.classifier_heldout"),
        ({"lpips_net": "resnet"}, "battery.lpips_net"),
        ({"lpips_pairs": 0}, "battery.lpips_pairs"),
        ({"lpips_size": 16}, "battery.lpips_size"),
        ({"precision_recall_k": 0}, "battery.precision_recall_k"),
        ({"kid_subsets": 0}, "battery.kid_subsets"),
        ({"no_such_option": 1}, "battery.no_such_option"),
    ],
)
def test_bad_options_raise_config_error_naming_the_key(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        BatteryConfig.from_config(options)


def test_size_dependent_options_are_checked_for_the_image_shape():
    config = BatteryConfig(wavelet_levels=4)
    config.build_metrics((1, 16, 16))
    with pytest.raises(ConfigError, match=r"battery\.wavelet_levels"):
        config.build_metrics((1, 8, 8))
    with pytest.raises(ConfigError, match=r"battery\.slope_band"):
        BatteryConfig(groups=["spectral"], slope_band=[0.3, 0.33]).build_metrics((1, 8, 8))
    with pytest.raises(ConfigError, match=r"battery\.glcm_distances"):
        BatteryConfig(glcm_distances=[8]).build_metrics((1, 8, 8))


def test_options_are_validated_without_building_a_metric(monkeypatch):
    from spectral_diffusion.metrics.statistics import TwoSampleMetric

    def refuse(self, *args, **kwargs):
        raise AssertionError("a metric was built")

    monkeypatch.setattr(TwoSampleMetric, "__init__", refuse)
    config = BatteryConfig.from_config({"precision_recall_k": 5, "lpips_pairs": 8, "wavelet_levels": 3})
    config.check_image_shape((1, 16, 16))
    with pytest.raises(ConfigError, match=r"battery\.precision_recall_k"):
        BatteryConfig(precision_recall_k=0)
    with pytest.raises(AssertionError, match="a metric was built"):  # the patch is live
        config.build_metrics((1, 16, 16))


def test_size_checks_cover_only_the_groups_that_run():
    BatteryConfig(groups=["statistics"], glcm_distances=[8], wavelet_levels=9,
                  slope_band=[0.3, 0.33]).check_image_shape((1, 8, 8))
    with pytest.raises(ConfigError, match=r"battery\.hf_cutoff"):  # beyond the largest frequency of a 1x8 grid
        BatteryConfig(groups=["spectral"], hf_cutoff=0.7).check_image_shape((1, 1, 8))


def test_precomputed_features_equal_extraction_and_kid_subset_size_is_honoured():
    real, fake = fields(2.0, 120), blur(fields(2.0, 80, seed=1))
    extractor = RandomProjection()
    config = {"groups": ["features"], "kid_subsets": 5}
    extracted = evaluate_battery(real, fake, features=extractor, config=config).metrics
    pair = FeaturePair.extract(real, fake, extractor)
    assert evaluate_battery(real, fake, features=pair, config=config).metrics == extracted
    smaller = evaluate_battery(real, fake, features=pair, config=config, kid_subset_size=20).metrics
    # Without a subset size KID draws subsets of min(1000, 120, 80) = 80; with 20 the draws, and KID, change.
    assert smaller["kid_projection@80"] != extracted["kid_projection@80"]
    expected = feature_distances(pair.real, pair.fake, kid_subset_size=20, kid_subsets=5)
    assert (smaller["kid_projection@80"], smaller["kid_std_projection@80"]) == (expected["kid"], expected["kid_std"])
    assert smaller["fid_projection@80"] == extracted["fid_projection@80"]


def test_config_from_dictconfig_with_target():
    node = OmegaConf.create({"_target_": "spectral_diffusion.metrics.battery.BatteryConfig", "hf_cutoff": 0.3,
                             "groups": ["spectral"]})
    config = BatteryConfig.from_config(node)
    assert config.hf_cutoff == 0.3 and config.groups == ["spectral"]
    assert BatteryConfig.from_config(None) == BatteryConfig()


def test_tiny_sets_skip_what_needs_more_images_with_a_reason():
    result = evaluate_battery(fields(2.0, 3), fields(2.0, 3, seed=1), features=RandomProjection(),
                              config={"groups": ["features", "classifier_auc", "statistics"], "kid_subsets": 2})
    assert "fid_projection@3" in result.metrics and "js_divergence" in result.metrics
    assert {"classifier_auc", "precision_projection@3", "recall_projection@3"} <= set(result.skipped)


def test_mismatched_image_sets_are_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_battery(fields(2.0, 4), fields(2.0, 4, size=8))


# ------------------------------------------------------------------------------------------------ severity


def test_severity_definition_on_hand_made_values():
    metrics = {"spectral_mse": 0.25, "spectral_slope_diff": 0.5, "hf_energy_ratio": math.e,
               "wavelet_hh_ratio_l1": 1.0, "wavelet_lh_ratio_l1": math.exp(-2), "wavelet_energy_ratio_l1": 7.0,
               "glcm_contrast_ratio": 1.0, "glcm_dissimilarity_ratio": 1.0, "glcm_correlation_diff": -0.4,
               "gradient_magnitude_ratio": 1.0, "js_divergence": 0.2, "wasserstein": 0.5, "fdr_fraction": 0.3,
               "classifier_auc": 0.2}
    result = severity(metrics)
    expected = {
        "spectrum": 1 - math.exp(-0.5),
        "slope": 1 - math.exp(-0.5),
        "hf": 1 - math.exp(-1),
        "wavelet": 1 - math.exp(-1),  # mean of |ln 1| and |ln e^-2|; the all-orientation ratio is not used
        "texture": 1 - math.exp(-0.1),
        "js": 0.2,
        "wasserstein": 0.25,
        "fdr": 0.3,
        "classifier": 0.6,
    }
    for name, value in expected.items():
        assert result[f"severity_{name}"] == pytest.approx(value), name
    assert result["severity"] == pytest.approx(sum(expected.values()) / len(expected))
    assert severity({}) == {}
    assert severity({"hf_energy_ratio": 0.0})["severity"] == 1.0


# ------------------------------------------------------------------------------------------------ LPIPS


@pytest.fixture
def squeeze_backbone(tmp_path, monkeypatch):
    """A random torchvision SqueezeNet 1.1 state dict stored under its hub file name in a private TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = tmp_path / "torch" / "hub" / "checkpoints" / BACKBONE_FILES["squeeze"]
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    return path


def test_lpips_loads_a_local_backbone_and_equals_the_lpips_package(squeeze_backbone):
    import lpips

    model, reason = load_lpips("squeeze")  # found in $TORCH_HOME/hub/checkpoints
    assert reason is None
    # the package's own path: torchvision finds the same cached file and does not download
    with pytest.warns(UserWarning):  # torchvision's deprecated `pretrained=` path inside lpips
        reference = lpips.LPIPS(net="squeeze", verbose=False).eval()
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(5, 1, 16, 16, generator=generator) * 2 - 1
    second = torch.rand(5, 1, 16, 16, generator=generator) * 2 - 1
    distances = lpips_distance(model, first, second, size=64)
    with torch.no_grad():
        up = [F.interpolate(x.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear") for x in (first, second)]
        expected = reference(*up).flatten().double()
    torch.testing.assert_close(distances, expected)
    assert lpips_distance(model, first, first).abs().max() < 1e-6
    explicit, _ = load_lpips("squeeze", squeeze_backbone)
    torch.testing.assert_close(lpips_distance(explicit, first, second), distances)


def test_lpips_diversity_is_the_mean_over_seeded_pairs_and_batch_independent(squeeze_backbone):
    model, _ = load_lpips("squeeze")
    real, fake = fields(2.0, 12), blur(fields(2.0, 10, seed=1))
    metric = LPIPSDiversity(model, pairs=20, size=32, seed=3)
    result = run(metric, real, fake, batch_size=3)
    first, second = random_pairs(10, 20, 3)
    assert (first != second).all()
    expected = lpips_distance(model, fake[first], fake[second], size=32).mean()
    assert result["lpips_diversity"] == pytest.approx(float(expected), rel=1e-6)
    assert run(LPIPSDiversity(model, pairs=20, size=32, seed=3), real, fake) == pytest.approx(result)
    assert result["lpips_diversity_ratio"] == pytest.approx(result["lpips_diversity"] / result["lpips_diversity_real"])
    assert result["lpips_diversity_ratio"] < 1  # a blurred set is less diverse


def test_lpips_without_weights_is_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    real, fake = fields(2.0, 10), fields(2.0, 10, seed=1)
    result = evaluate_battery(real, fake, config={"groups": ["lpips"]})
    assert "alexnet-owt-7be5be79.pth" in result.skipped["lpips"] and not result.metrics
    missing = evaluate_battery(real, fake, config={"groups": ["lpips"], "lpips_weights": str(tmp_path / "no.pth")})
    assert "battery.lpips_weights" in missing.skipped["lpips"]


def test_lpips_in_the_battery_with_a_weights_path(squeeze_backbone):
    real, fake = fields(2.0, 10), fields(2.0, 10, seed=1)
    config = {"groups": ["lpips"], "lpips_net": "squeeze", "lpips_weights": str(squeeze_backbone), "lpips_pairs": 8}
    result = evaluate_battery(real, fake, config=config)
    assert result.metrics["lpips_diversity"] > 0 and not result.skipped


# ------------------------------------------------------------------------------------------------ figures, runtime


def test_battery_figures_are_drawn_and_saved(tmp_path):
    real, fake = fields(2.0, 40), blur(fields(2.0, 30, seed=1))
    result = evaluate_battery(real, fake, config={"groups": NO_SLOW_GROUPS})
    drawn = battery_figures(real, fake, result)
    assert set(drawn) == {"radial_power_spectrum", "wavelet_energy_ratios", "band_histograms", "sample_grids"}
    for name, figure in drawn.items():
        assert isinstance(figure, Figure)
        figure.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    # the spectrum figure plots exactly the radial spectra the metric used
    line = drawn["radial_power_spectrum"].axes[0].lines[0]
    spectrum = result.figures_data["radial_spectrum"]
    np.testing.assert_allclose(line.get_ydata(), spectrum["real"][spectrum["frequency"] > 0].numpy())
    only_grid = battery_figures(real, fake, evaluate_battery(real, fake, config={"groups": ["statistics"]}))
    assert set(only_grid) == {"sample_grids"}
