"""Structure metrics (metrics.structure, battery group ``structure``) against numpy / scikit-image references, batch
size invariance, and the direction of known degradations."""

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from skimage.feature import graycomatrix, graycoprops
from skimage.segmentation import find_boundaries

from spectral_diffusion.metrics.battery import BatteryConfig, evaluate_battery, severity
from spectral_diffusion.metrics.structure import (
    Background,
    BoundarySharpness,
    SpatialCorrelation,
    boundary_mask,
    lag_correlations,
)
from spectral_diffusion.metrics.statistics import GREY_LEVEL, ClassifierAUC
from spectral_diffusion.metrics.texture import TextureKS, ks_statistic
from spectral_diffusion.utils.validation import ConfigError


def strokes(n, seed, size=12):
    """Images at −1 with bright random rectangles (foreground), like digits on black."""
    rng = np.random.default_rng(seed)
    images = -np.ones((n, 1, size, size))
    for image in images:
        top, left = rng.integers(1, size // 2, size=2)
        image[0, top:top + rng.integers(2, size // 2), left:left + rng.integers(2, size // 2)] = rng.uniform(0.3, 1)
    return torch.from_numpy(images)


def run(metric, real, fake, batch_size):
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            metric.update(chunk, real=is_real)
    return metric.compute()


def test_boundary_mask_is_scikit_image_thick_boundaries():
    images = strokes(5, 0) + torch.from_numpy(np.random.default_rng(1).normal(0, 0.3, (5, 1, 12, 12)))
    mask = boundary_mask(images).numpy()
    for image, image_mask in zip(images.numpy(), mask):
        expected = find_boundaries((image[0] > 0).astype(int), connectivity=1, mode="thick")
        np.testing.assert_array_equal(image_mask[0], expected)


def test_boundary_sharpness_equals_numpy_and_is_batch_invariant():
    real, fake = strokes(9, 2), torch.from_numpy(ndimage.uniform_filter(strokes(7, 3).numpy(), size=(1, 1, 3, 3)))

    def reference(images):
        images = images.numpy()
        gradient_y, gradient_x = np.gradient(images, axis=(2, 3))
        magnitude = np.sqrt(gradient_y**2 + gradient_x**2)
        masks = [find_boundaries((image[0] > 0).astype(int), connectivity=1, mode="thick") for image in images]
        return magnitude[:, 0][np.array(masks)].mean()

    whole = run(BoundarySharpness(), real, fake, 100)
    assert whole["boundary_sharpness_real"] == pytest.approx(reference(real), rel=1e-12)
    assert whole["boundary_sharpness_fake"] == pytest.approx(reference(fake), rel=1e-12)
    assert whole == pytest.approx(run(BoundarySharpness(), real, fake, 2))
    assert whole["boundary_sharpness_ratio"] < 1  # blurred strokes have softer edges


def test_spatial_correlation_equals_numpy_and_drops_with_noise():
    real = strokes(6, 4)
    noisy = real + torch.from_numpy(np.random.default_rng(5).normal(0, 0.5, real.shape))
    expected = []
    for image in noisy.numpy()[:, 0]:
        centred = image - image.mean()
        energy = (centred**2).sum()
        values = [(centred[lag:] * centred[:-lag]).sum() / energy for lag in (1, 2, 3)]
        values += [(centred[:, lag:] * centred[:, :-lag]).sum() / energy for lag in (1, 2, 3)]
        expected.append(np.mean(values))
    np.testing.assert_allclose(lag_correlations(noisy, 3)[:, 0].numpy(), expected, rtol=1e-12)
    assert lag_correlations(torch.zeros(1, 1, 4, 4), 1).item() == 0.0  # a constant image
    whole = run(SpatialCorrelation(3), real, noisy, 100)
    assert whole == pytest.approx(run(SpatialCorrelation(3), real, noisy, 4))
    assert whole["spatial_correlation_fake"] == pytest.approx(np.mean(expected), rel=1e-12)
    assert whole["spatial_correlation_ratio"] < 0.8


def test_background_on_the_real_data_minimum():
    real = strokes(10, 6)
    fake = real.clone() + torch.from_numpy(np.random.default_rng(7).uniform(0, 0.1, real.shape))
    values = run(Background((1, 12, 12), tolerance=0.02), real, fake, 3)
    real_mean = real.numpy().mean(axis=0)
    background = real_mean <= real_mean.min() + 0.02
    pixels = fake.numpy()[:, background]
    assert values["background_std_real"] == pytest.approx(0.0, abs=1e-12)
    assert values["background_deviation_real"] == pytest.approx(0.0, abs=1e-12)
    assert values["background_std_fake"] == pytest.approx(pixels.std(), rel=1e-9)
    assert values["background_deviation_fake"] == pytest.approx(abs(pixels.mean() + 1), rel=1e-9)
    assert values == pytest.approx(run(Background((1, 12, 12), tolerance=0.02), real, fake, 100))


def test_structure_group_in_the_battery_and_severity():
    real, fake = strokes(8, 8).float(), strokes(8, 9).float()
    metrics = evaluate_battery(real, fake, config={"groups": ["structure"], "correlation_lags": 2}).metrics
    assert {"boundary_sharpness_ratio", "spatial_correlation_ratio", "background_std_fake",
            "severity_boundary", "severity_correlation"} <= set(metrics)
    assert severity({"boundary_sharpness_ratio": 1.0, "spatial_correlation_ratio": 1.0})["severity"] == 0.0
    halved = severity({"boundary_sharpness_ratio": 0.5, "spatial_correlation_ratio": 1.0})
    assert halved["severity_boundary"] == pytest.approx(0.5)  # u(ln 2) = 1 − 1/2
    with pytest.raises(ConfigError, match="battery.correlation_lags=12"):
        BatteryConfig(groups=["structure"], correlation_lags=12).check_image_shape((1, 12, 12))
    with pytest.raises(ConfigError, match="battery.boundary_threshold"):
        BatteryConfig(boundary_threshold=1.5)


def test_ks_statistic_is_scipys_including_ties():
    rng = np.random.default_rng(10)
    for first, second in [(rng.normal(size=30), rng.normal(0.5, size=45)),
                          (rng.integers(0, 4, 20).astype(float), rng.integers(0, 5, 17).astype(float))]:
        expected = stats.ks_2samp(first, second).statistic
        assert ks_statistic(torch.from_numpy(first), torch.from_numpy(second)) == pytest.approx(expected, abs=1e-12)


def test_texture_ks_equals_scipy_on_scikit_image_per_image_values_and_is_batch_invariant():
    real = strokes(12, 11).float()
    fake = (real + torch.from_numpy(np.random.default_rng(12).normal(0, 0.4, real.shape)).float()).clamp(-1, 1)
    metric = run(TextureKS(levels=8, distances=[1], angles=[0.0, 90.0]), real, fake, 5)
    assert metric == pytest.approx(run(TextureKS(levels=8, distances=[1], angles=[0.0, 90.0]), real, fake, 100))

    def contrast(images):
        values = []
        for image in images.numpy()[:, 0]:
            levels = np.clip(np.floor((np.clip(image, -1, 1) + 1) * 4), 0, 7).astype(np.uint8)
            matrix = graycomatrix(levels, [1], [0.0, np.pi / 2], levels=8, symmetric=True, normed=True)
            values.append(graycoprops(matrix, "contrast").mean())
        return np.array(values)

    assert metric["texture_ks_contrast"] == pytest.approx(stats.ks_2samp(contrast(fake), contrast(real)).statistic)
    gradient = [np.sqrt(sum(g**2 for g in np.gradient(x.numpy()[:, 0].astype(np.float64), axis=(1, 2))))
                .mean(axis=(1, 2)) for x in (fake, real)]
    assert metric["texture_ks_gradient_magnitude"] == pytest.approx(stats.ks_2samp(*gradient).statistic)
    assert metric["texture_ks"] == pytest.approx(np.mean([metric[f"texture_ks_{name}"] for name in
                                                          ("contrast", "dissimilarity", "correlation",
                                                           "gradient_magnitude")]))
    assert run(TextureKS(levels=8), real, real, 4)["texture_ks"] == 0.0


def test_dithered_classifier_auc_adds_one_grey_level_of_noise():
    real, fake = strokes(16, 13).float(), strokes(16, 14).float()
    plain = run(ClassifierAUC(epochs=1, seed=3), real, fake, 8)
    dithered = run(ClassifierAUC(epochs=1, seed=3, dither=GREY_LEVEL), real, fake, 8)
    assert set(plain) == {"classifier_auc"} and set(dithered) == {"classifier_auc_dithered"}
    assert 0 <= dithered["classifier_auc_dithered"] <= 1
    assert dithered == run(ClassifierAUC(epochs=1, seed=3, dither=GREY_LEVEL), real, fake, 16)  # seeded dither
    assert severity({"classifier_auc_dithered": 0.75})["severity_classifier_dithered"] == pytest.approx(0.5)
