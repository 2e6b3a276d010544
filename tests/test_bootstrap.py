"""Bootstrap intervals (metrics.bootstrap): replicates equal the point metrics on the unresampled sets, intervals
cover a known answer at close to the nominal rate, and they are deterministic for a seed."""

import numpy as np
import pytest
import torch
from scipy import linalg

from spectral_diffusion.metrics.battery import evaluate_battery
from spectral_diffusion.metrics.bootstrap import (
    bootstrap_interval,
    feature_intervals,
    fid_replicates,
    kid_replicates,
    percentile_interval,
    resample_counts,
    streaming_intervals,
    weighted_fraction,
)
from spectral_diffusion.metrics.quality import FeaturePair, feature_distances
from spectral_diffusion.metrics.statistics import PixelHistogram
from spectral_diffusion.metrics.texture import GradientMagnitude


def gaussian_features(n, dim, shift=0.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator, dtype=torch.float64) + shift


def test_resample_counts_sum_to_n_and_are_seeded():
    counts = resample_counts(7, 50, torch.Generator().manual_seed(3))
    assert counts.shape == (50, 7)
    assert torch.all(counts.sum(dim=1) == 7)
    assert torch.equal(counts, resample_counts(7, 50, torch.Generator().manual_seed(3)))
    assert not torch.equal(counts, resample_counts(7, 50, torch.Generator().manual_seed(4)))


def test_unit_counts_reproduce_the_point_fid_and_kid():
    real, fake = gaussian_features(60, 5, seed=1), gaussian_features(60, 5, shift=0.3, seed=2)
    ones = torch.ones(1, 60, dtype=torch.float64)
    point = feature_distances(real, fake, kid_subset_size=60)  # one subset: the whole sets
    assert fid_replicates(real, fake, ones, ones).item() == pytest.approx(point["fid"], rel=1e-6)
    assert kid_replicates(real, fake, ones, ones).item() == pytest.approx(point["kid"], rel=1e-6, abs=1e-9)


def test_fid_replicate_equals_scipy_on_the_resampled_rows():
    real, fake = gaussian_features(40, 3, seed=5), gaussian_features(30, 3, shift=0.5, seed=6)
    generator = torch.Generator().manual_seed(0)
    real_counts, fake_counts = resample_counts(40, 2, generator), resample_counts(30, 2, generator)
    values = fid_replicates(real, fake, real_counts, fake_counts)
    for b in range(2):
        rows_real = np.repeat(real.numpy(), real_counts[b].long().numpy(), axis=0)
        rows_fake = np.repeat(fake.numpy(), fake_counts[b].long().numpy(), axis=0)
        cov_real, cov_fake = np.cov(rows_real, rowvar=False), np.cov(rows_fake, rowvar=False)
        expected = (np.sum((rows_real.mean(0) - rows_fake.mean(0)) ** 2) + np.trace(cov_real) + np.trace(cov_fake)
                    - 2 * np.trace(linalg.sqrtm(cov_real @ cov_fake).real))
        assert values[b].item() == pytest.approx(expected, rel=1e-8)


def test_kid_replicate_leaves_out_pairs_of_the_same_item():
    real, fake = gaussian_features(8, 2, seed=7), gaussian_features(9, 2, seed=8)
    generator = torch.Generator().manual_seed(1)
    real_counts, fake_counts = resample_counts(8, 1, generator), resample_counts(9, 1, generator)

    def kernel(a, b):
        return (a @ b.T / 2 + 1) ** 3

    index_real = np.repeat(np.arange(8), real_counts[0].long().numpy())
    index_fake = np.repeat(np.arange(9), fake_counts[0].long().numpy())

    def within(x, index):
        k = kernel(x[index], x[index]).numpy()
        distinct = index[:, None] != index[None, :]
        return k[distinct].mean()

    expected = (within(real, index_real) + within(fake, index_fake)
                - 2 * kernel(real[index_real], fake[index_fake]).mean().item())
    assert kid_replicates(real, fake, real_counts, fake_counts).item() == pytest.approx(expected, rel=1e-9)


def test_percentile_interval_is_numpy_quantiles_shifted_by_the_bootstrap_bias():
    values = torch.arange(101, dtype=torch.float64)
    assert percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(torch.tensor([float("nan"), 1.0, 3.0]), 0.5) == pytest.approx((1.5, 2.5))
    # mean of the replicates 50, point 40: the bootstrap says the statistic runs 10 high, the interval moves down
    assert percentile_interval(values, 0.9, point=40.0) == pytest.approx((-5.0, 85.0))


def test_fid_interval_of_identical_sets_holds_zero():
    """Resampling inflates FID (repeated rows); the bias shift keeps the interval of FID 0 around 0."""
    features = FeaturePair("toy", gaussian_features(150, 4, seed=3), gaussian_features(150, 4, seed=3))
    intervals = feature_intervals(features, resamples=200, level=0.95, seed=0)
    assert intervals["fid_toy@150_ci_low"] < 0 < intervals["fid_toy@150_ci_high"]
    generator = torch.Generator().manual_seed(0)
    counts = resample_counts(150, 200, generator), resample_counts(150, 200, generator)
    assert torch.all(fid_replicates(features.real, features.fake, *counts) > 0)  # the unshifted replicates


def test_interval_coverage_of_a_mean_difference_is_close_to_nominal():
    """Two normal samples with a known mean difference: the 90 % percentile interval must contain it in close to
    90 % of 300 independent trials. With 300 trials the observed rate has a standard error of 1.7 %; the band
    [0.84, 0.95] allows the known small-sample undercoverage of the percentile interval (n = 40) and 3 standard
    errors, and fails for a wrong interval (e.g. one set not resampled covers ~ 70 %, a 95 % level ~ 95-96 %)."""
    trials, n, level, true_difference = 300, 40, 0.9, 0.5
    covered = 0
    for trial in range(trials):
        real = gaussian_features(n, 1, seed=2 * trial)[:, 0]
        fake = gaussian_features(n, 1, shift=true_difference, seed=2 * trial + 1)[:, 0]

        def mean_difference(real_counts, fake_counts):
            return weighted_fraction(fake, fake_counts) - weighted_fraction(real, real_counts)

        low, high = bootstrap_interval(mean_difference, n, n, resamples=400, level=level, seed=trial)
        covered += low <= true_difference <= high
    assert 0.84 <= covered / trials <= 0.95


def test_feature_interval_contains_the_point_value_and_is_deterministic():
    features = FeaturePair("toy", gaussian_features(200, 4, seed=1), gaussian_features(100, 4, shift=0.4, seed=2))
    first = feature_intervals(features, resamples=200, level=0.95, seed=0, precision_recall_k=3)
    assert first == feature_intervals(features, resamples=200, level=0.95, seed=0, precision_recall_k=3)
    assert first != feature_intervals(features, resamples=200, level=0.95, seed=1, precision_recall_k=3)
    point = feature_distances(features.real, features.fake, kid_subset_size=100)
    assert first["fid_toy@100_ci_low"] < point["fid"] < first["fid_toy@100_ci_high"]
    assert first["kid_toy@100_ci_low"] < first["kid_toy@100_ci_high"]
    assert set(first) == {f"{m}_toy@100_ci_{s}" for m in ("fid", "kid", "precision", "recall") for s in ("low", "high")}
    for metric in ("precision", "recall"):
        assert 0 <= first[f"{metric}_toy@100_ci_low"] <= first[f"{metric}_toy@100_ci_high"] <= 1


def random_images(n, seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=generator) * 2 - 1) * scale


def test_streaming_interval_of_a_mean_matches_the_normal_theory_interval():
    """gradient_magnitude_fake is the mean over 400 images of a per-image value: its 95 % bootstrap interval must
    match mean ± 1.96 s/√n computed with numpy.gradient (within 15 % in half-width; the bootstrap sd itself has a
    relative error of about 1/√(2·1000) = 2 % and the normal approximation is close at n = 400)."""
    real, fake = random_images(300, 0), random_images(400, 1, scale=0.5)
    intervals = streaming_intervals([GradientMagnitude()], real, fake, resamples=1000, level=0.95, seed=0, blocks=400)
    gradient_y, gradient_x = np.gradient(fake[:, 0].double().numpy(), axis=(1, 2))
    per_image = np.sqrt(gradient_y**2 + gradient_x**2).mean(axis=(1, 2))
    half_width = 1.96 * per_image.std(ddof=1) / np.sqrt(len(per_image))
    low, high = intervals["gradient_magnitude_fake_ci_low"], intervals["gradient_magnitude_fake_ci_high"]
    assert (low + high) / 2 == pytest.approx(per_image.mean(), abs=0.1 * half_width)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)
    assert intervals["gradient_magnitude_ratio_ci_low"] < 0.5 < intervals["gradient_magnitude_ratio_ci_high"] * 1.05


def test_streaming_intervals_do_not_depend_on_batch_size_and_leave_metrics_reset():
    real, fake = random_images(60, 2), random_images(50, 3, scale=0.8)
    metric = PixelHistogram(32)
    first = streaming_intervals([metric], real, fake, resamples=50, level=0.9, seed=4, batch_size=7, blocks=20)
    second = streaming_intervals([PixelHistogram(32)], real, fake, resamples=50, level=0.9, seed=4, batch_size=64,
                                 blocks=20)
    assert first.keys() == second.keys() == {f"{key}_ci_{end}" for key in ("js_divergence", "wasserstein")
                                             for end in ("low", "high")}
    for key, value in first.items():
        assert second[key] == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert float(metric.histogram_real.sum()) == 0  # reset


def test_battery_intervals_bracket_the_point_values_and_name_what_has_none():
    real, fake = random_images(40, 5), random_images(40, 6, scale=0.7)
    config = {"groups": ["spectral", "texture", "statistics", "classifier_auc"], "classifier_epochs": 1}
    result = evaluate_battery(real, fake, config=config, resamples=50, level=0.95, bootstrap_seed=1, batch_size=16)
    metrics = result.metrics
    for key in ("spectral_mse", "hf_energy_ratio", "glcm_contrast_ratio", "js_divergence", "severity"):
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    assert "classifier_auc_ci_low" not in metrics and "classifier_auc_ci" in result.skipped
    plain = evaluate_battery(real, fake, config=config, batch_size=16)
    assert not any(key.endswith("_ci_low") for key in plain.metrics)
    assert plain.metrics["spectral_mse"] == metrics["spectral_mse"]
