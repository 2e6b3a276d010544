"""Recognisability (metrics.recognisability): the fraction of images a classifier claims with probability ≥ 0.9."""

import pytest
import torch

from spectral_diffusion.metrics.recognisability import confident, recognisability


class FixedClassifier:
    """Class probabilities read off the images: the first pixel is the top class probability of two classes."""

    name = "classifier"

    def probabilities(self, images, batch_size=512):
        top = images.flatten(1)[:, 0].double()
        return torch.stack([top, 1 - top], dim=1)


def test_confident_counts_a_top_probability_of_at_least_the_threshold():
    probabilities = torch.tensor([[0.9, 0.1], [0.05, 0.95], [0.6, 0.4], [0.89, 0.11]], dtype=torch.float64)
    assert confident(probabilities).tolist() == [True, True, False, False]


def test_recognisability_of_generated_and_real_images_with_intervals():
    fake = torch.full((10, 1, 2, 2), 0.5)
    fake[:3, 0, 0, 0] = 0.95  # 3 of 10 recognisable
    real = torch.full((20, 1, 2, 2), 0.99)
    real[:2, 0, 0, 0] = 0.5  # 18 of 20
    results = recognisability(FixedClassifier(), real, fake, resamples=400, level=0.9, seed=0)
    assert results["recognisable_classifier@10"] == pytest.approx(0.3)
    assert results["recognisable_real_classifier@20"] == pytest.approx(0.9)
    # binomial spread: sd √(0.3·0.7/10) = 0.145, the 90 % interval about ±0.24
    low, high = results["recognisable_classifier@10_ci_low"], results["recognisable_classifier@10_ci_high"]
    assert -0.05 <= low < 0.3 < high <= 0.65 and high - low == pytest.approx(2 * 1.645 * 0.145, abs=0.12)
    assert recognisability(FixedClassifier(), real, fake).keys() == {"recognisable_classifier@10",
                                                                     "recognisable_real_classifier@20"}
