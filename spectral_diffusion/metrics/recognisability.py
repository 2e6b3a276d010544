"""Recognisability: the fraction of images a trained classifier assigns to one class with confidence at least 0.9,
for generated images next to held-out real ones. A malformed digit that FID averages away is an image no class
claims; the real fraction is what a perfect model would score (the classifier is not perfect on real data either).
For class-conditional samples, ``class_accuracy``: how often the classifier names the class that was asked for.
"""

from __future__ import annotations

from torch import Tensor

from spectral_diffusion.metrics.bootstrap import bootstrap_interval, weighted_fraction
from spectral_diffusion.metrics.quality import metric_key

CONFIDENCE = 0.9


def confident(probabilities: Tensor, confidence: float = CONFIDENCE) -> Tensor:
    """Whether each row of class probabilities (N, K) puts at least ``confidence`` on one class (bool, (N,))."""
    return probabilities.max(dim=1).values >= confidence


def recognisability(classifier, real: Tensor, fake: Tensor, *, batch_size: int = 512, resamples: int | None = None,
                    level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """``recognisable_<name>@<N>`` of the N generated images and ``recognisable_real_<name>@<M>`` of the M held-out
    ones under ``classifier`` (a ``metrics.features.ClassifierFeatureExtractor``: ``name`` and ``probabilities``);
    with ``resamples`` each also gets its bootstrap interval (``<key>_ci_low``, ``<key>_ci_high``)."""
    flags = {"fake": confident(classifier.probabilities(fake, batch_size)),
             "real": confident(classifier.probabilities(real, batch_size))}
    keys = {"fake": metric_key("recognisable", classifier.name, len(fake)),
            "real": metric_key("recognisable", classifier.name, len(real), prefix="real")}
    results = {keys[split]: float(flags[split].double().mean()) for split in ("fake", "real")}
    if resamples is not None:
        for split in ("fake", "real"):
            low, high = bootstrap_interval(lambda real_counts, fake_counts, split=split: weighted_fraction(
                flags[split], fake_counts if split == "fake" else real_counts), len(real), len(fake),
                resamples=resamples, level=level, seed=seed)
            results[f"{keys[split]}_ci_low"], results[f"{keys[split]}_ci_high"] = low, high
    return results


def class_accuracy(classifier, fake: Tensor, requested: Tensor, *, batch_size: int = 512,
                   resamples: int | None = None, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """``class_accuracy``: the fraction of class-conditional samples ``fake`` whose ``classifier`` prediction (its
    logits' argmax, ``ClassifierFeatureExtractor.predict``) is the ``requested`` label of that sample; with
    ``resamples`` its percentile bootstrap interval over the samples (``class_accuracy_ci_low`` / ``_ci_high``).
    Its ceiling is the classifier's own held-out accuracy (``classifier_accuracy``)."""
    if requested.shape != (len(fake),):
        raise ValueError(f"{len(fake)} samples but requested labels of shape {tuple(requested.shape)}")
    hits = classifier.predict(fake, batch_size).cpu() == requested.cpu()
    results = {"class_accuracy": float(hits.double().mean())}
    if resamples is not None:
        low, high = bootstrap_interval(lambda real_counts, fake_counts: weighted_fraction(hits, fake_counts),
                                       1, len(fake), resamples=resamples, level=level, seed=seed)
        results["class_accuracy_ci_low"], results["class_accuracy_ci_high"] = low, high
    return results
