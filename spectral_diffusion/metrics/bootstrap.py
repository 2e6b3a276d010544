"""Bootstrap confidence intervals of two-sample metrics (Efron & Tibshirani 1993, ch. 13, the percentile interval,
shifted by the bootstrap bias estimate of ch. 10):
both the real and the generated set are resampled with replacement, the metric recomputed on every resample.

A resample is a vector of counts c (how often each row was drawn, Σc = n), so a metric of features is a weighted
statistic of the features extracted once: FID from weighted moments, KID from a weighted kernel sum, precision and
recall from weighted per-sample manifold memberships. Intervals are deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from spectral_diffusion.metrics.quality import FeaturePair, metric_key
from spectral_diffusion.metrics.statistics import inside_manifold, knn_radii

# Elements of the largest temporary a batched statistic builds at once (float64: 128 MiB).
CHUNK_ELEMENTS = 2**24


def resample_counts(n: int, resamples: int, generator: torch.Generator) -> Tensor:
    """Counts (resamples, n), float64: row b says how often each of n items is drawn in bootstrap resample b."""
    draws = torch.randint(n, (resamples, n), generator=generator)
    return torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones_like(draws,
                                                                                                dtype=torch.float64))


def percentile_interval(replicates: Tensor, level: float, point: float | None = None) -> tuple[float, float]:
    """The (1 − level)/2 and (1 + level)/2 quantiles of the bootstrap replicates (NaN replicates ignored); with the
    ``point`` value of the statistic, shifted by the bootstrap estimate of bias, mean(replicates) − point
    (Efron & Tibshirani 1993, Eq. 10.2), so that the interval is centred like the point value.

    The shift matters for FID: a resample repeats about a third of its rows, which adds to FID's own small-sample
    bias, and without it an interval of two identical sets (FID 0) would lie wholly above 0. For statistics that are
    means (fractions, mean differences) the bias estimate is ~0 and the interval is the plain percentile one.
    """
    values = replicates[~replicates.isnan()].double()
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = torch.quantile(values, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    bias = float(values.mean()) - point if point is not None and point == point else 0.0
    return float(low) - bias, float(high) - bias


def bootstrap_interval(
    replicate: Callable[[Tensor, Tensor], Tensor],
    num_real: int,
    num_fake: int,
    *,
    resamples: int,
    level: float,
    seed: int,
) -> tuple[float, float]:
    """Bias-shifted percentile interval (``percentile_interval``) of a two-sample statistic:
    ``replicate(real_counts, fake_counts)`` maps counts (B, num_real) and (B, num_fake) to the B replicate values;
    all counts 1 give the point value. Real and generated sets are resampled independently from one generator
    seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    real_counts = resample_counts(num_real, resamples, generator)
    fake_counts = resample_counts(num_fake, resamples, generator)
    point = replicate(torch.ones(1, num_real, dtype=torch.float64), torch.ones(1, num_fake, dtype=torch.float64))
    return percentile_interval(replicate(real_counts, fake_counts), level, float(point[0]))


def weighted_moments(features: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (B, D) and unbiased covariance (B, D, D) of ``features`` (N, D) repeated ``counts`` (B, N) times:
    Σ = (Σ_i c_i x_i x_iᵀ − n μ μᵀ) / (n − 1), as torchmetrics' FID computes it for an unweighted set."""
    features = features.double()
    counts = counts.to(features.device)
    n = counts.sum(dim=1)
    mean = counts @ features / n[:, None]
    width = features.shape[1]
    chunk = max(1, CHUNK_ELEMENTS // (width * len(features)))
    second = torch.cat([(features.T[None] * block[:, None, :]) @ features for block in counts.split(chunk)])
    covariance = (second - n[:, None, None] * mean[:, :, None] * mean[:, None, :]) / (n - 1)[:, None, None]
    return mean, covariance


def frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½) (Heusel et al. 2017, Eq. 6; Dowson & Landau 1982), batched over
    leading dimensions. tr (Σ₁Σ₂)^½ is Σ √λ over the eigenvalues λ of the symmetric Σ₁^½ Σ₂ Σ₁^½ (similar to Σ₁Σ₂),
    computed with two symmetric eigendecompositions, several times faster than the general one torchmetrics uses;
    round-off negatives count as 0 (torchmetrics: the real part of their complex root, also 0)."""
    values, vectors = torch.linalg.eigh(cov1)
    root1 = (vectors * values.clamp_min(0).sqrt()[..., None, :]) @ vectors.transpose(-2, -1)
    trace_sqrt = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum(dim=-1)
    return ((mean1 - mean2).square().sum(dim=-1) + cov1.diagonal(dim1=-2, dim2=-1).sum(-1)
            + cov2.diagonal(dim1=-2, dim2=-1).sum(-1) - 2 * trace_sqrt)


def fid_replicates(real: Tensor, fake: Tensor, real_counts: Tensor, fake_counts: Tensor) -> Tensor:
    """FID of every resample pair (B,)."""
    real_mean, real_cov = weighted_moments(real, real_counts)
    fake_mean, fake_cov = weighted_moments(fake, fake_counts)
    return frechet_distance(real_mean, real_cov, fake_mean, fake_cov).cpu()


def _kernel_forms(left: Tensor, right: Tensor, left_counts: Tensor, right_counts: Tensor) -> Tensor:
    """cᵀ K c' for every resample b, K_ij = (x_i·y_j / D + 1)³, K built in row blocks (never held whole)."""
    width = left.shape[1]
    rows = max(1, CHUNK_ELEMENTS // max(len(right), len(left_counts)))
    total = torch.zeros(len(left_counts), dtype=torch.float64, device=left.device)
    for start in range(0, len(left), rows):
        kernel = (left[start:start + rows] @ right.T / width + 1.0) ** 3
        total += ((left_counts[:, start:start + rows] @ kernel) * right_counts).sum(dim=1)
    return total


def kid_replicates(real: Tensor, fake: Tensor, real_counts: Tensor, fake_counts: Tensor) -> Tensor:
    """Unbiased MMD² with KID's cubic kernel (Bińkowski et al. 2018, Eq. 3) of every resample pair (B,).

    Pairs of draws of the same item would add k(x, x) to the within-set sums (the bias the unbiased estimator
    removes), so they are left out: Σ_{i≠j} c_i c_j k_ij over n² − Σ c_i² pairs. With all counts 1 this is the
    unbiased MMD² of the two whole sets.
    """
    real, fake = real.double(), fake.double()
    real_counts, fake_counts = real_counts.to(real.device), fake_counts.to(real.device)
    width = real.shape[1]

    def within(features: Tensor, counts: Tensor) -> Tensor:
        self_kernel = ((features * features).sum(dim=1) / width + 1.0) ** 3
        pairs = counts.sum(dim=1) ** 2 - counts.square().sum(dim=1)
        return (_kernel_forms(features, features, counts, counts) - counts.square() @ self_kernel) / pairs

    cross = _kernel_forms(real, fake, real_counts, fake_counts) / (real_counts.sum(1) * fake_counts.sum(1))
    return (within(real, real_counts) + within(fake, fake_counts) - 2 * cross).cpu()


def weighted_fraction(flags: Tensor, counts: Tensor) -> Tensor:
    """Fraction of flagged items in every resample (B,): Σ c_i f_i / Σ c_i."""
    counts = counts.to(flags.device)
    return (counts @ flags.double() / counts.sum(dim=1)).cpu()


def feature_intervals(
    features: FeaturePair,
    *,
    resamples: int,
    level: float,
    seed: int,
    precision_recall_k: int | None = None,
    prefix: str | None = None,
) -> dict[str, float]:
    """``<key>_ci_low`` and ``<key>_ci_high`` of FID, KID and (with ``precision_recall_k``) precision and recall
    for a feature pair, under the keys of ``metrics.quality.metric_key``.

    KID's interval is that of the unbiased MMD² of the whole sets (``kid_replicates``), which the point KID (a mean
    over random subsets) estimates too. Precision and recall resample the per-sample memberships with each manifold
    (the k-NN balls of the other set) held fixed: the interval covers the sampling of the scored set, not of the
    manifold's own radii (a bootstrap with repeated rows would shrink k-NN radii to zero).
    """
    real, fake = features.real.double(), features.fake.double()
    replicates: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "fid": lambda rc, fc: fid_replicates(real, fake, rc, fc),
        "kid": lambda rc, fc: kid_replicates(real, fake, rc, fc),
    }
    if precision_recall_k is not None and min(len(real), len(fake)) > precision_recall_k:
        in_real = inside_manifold(fake, real, knn_radii(real, precision_recall_k))
        in_fake = inside_manifold(real, fake, knn_radii(fake, precision_recall_k))
        replicates["precision"] = lambda rc, fc: weighted_fraction(in_real, fc)
        replicates["recall"] = lambda rc, fc: weighted_fraction(in_fake, rc)
    intervals = {}
    for metric, replicate in replicates.items():
        low, high = bootstrap_interval(replicate, len(real), len(fake), resamples=resamples, level=level, seed=seed)
        key = metric_key(metric, features.name, len(fake), prefix)
        intervals[f"{key}_ci_low"], intervals[f"{key}_ci_high"] = low, high
    return intervals


def _block_states(metric, images: Tensor, blocks: list[Tensor], split: str, batch_size: int) -> dict[str, Tensor]:
    """The ``split`` states of a sum-state metric after each block of images alone, stacked (G, ...)."""
    stacked: dict[str, list[Tensor]] = {}
    for block in blocks:
        metric.reset()
        for chunk in images[block].split(batch_size):
            metric.update(chunk, real=split == "real")
        for name, value in metric.metric_state.items():
            if name.endswith(f"_{split}"):
                stacked.setdefault(name, []).append(value.detach().clone())
    metric.reset()
    return {name: torch.stack(values) for name, values in stacked.items()}


def has_sum_states(metric) -> bool:
    """Whether every state of a torchmetrics Metric is a tensor (summed), none a list (concatenated samples)."""
    return all(isinstance(value, Tensor) for value in metric.metric_state.values())


def streaming_intervals(
    metrics: list,
    real: Tensor,
    fake: Tensor,
    *,
    resamples: int,
    level: float,
    seed: int,
    batch_size: int = 256,
    blocks: int = 200,
    derived: Callable[[dict[str, float]], dict[str, float]] | None = None,
) -> dict[str, float]:
    """``<key>_ci_low``/``<key>_ci_high`` of every value of streaming two-sample ``metrics`` (torchmetrics Metrics with
    ``update(images, real)`` and summed states only; see ``has_sum_states``) by resampling images.

    Each set is shuffled (seeded) into ``blocks`` blocks of nearly equal size and every block's state contribution is
    recorded once; a resample draws blocks with replacement and its states are the count-weighted sums, from which
    each metric's ``compute`` runs again. Blocks of randomly assigned images are independent and identically
    distributed, so resampling them gives the variance of the whole-set sums (a batch-means bootstrap) at the cost of
    ``blocks`` updates, not ``resamples`` passes over the images. ``derived(values)`` adds values computed from the
    metrics' values (severity) to every replicate. The metrics are left reset.
    """
    generator = torch.Generator().manual_seed(seed)
    partitions = {split: list(torch.randperm(len(images), generator=generator).tensor_split(min(blocks, len(images))))
                  for split, images in (("real", real), ("fake", fake))}
    states = [{**_block_states(metric, real, partitions["real"], "real", batch_size),
               **_block_states(metric, fake, partitions["fake"], "fake", batch_size)} for metric in metrics]
    counts = {split: resample_counts(len(partitions[split]), resamples, generator) for split in partitions}
    ones = {split: torch.ones(1, len(partitions[split]), dtype=torch.float64) for split in partitions}

    def replicate(weights: dict[str, Tensor], row: int) -> dict[str, float]:
        values: dict[str, float] = {}
        for metric, metric_states in zip(metrics, states):
            for name, stacked in metric_states.items():
                weight = weights[name.rsplit("_", 1)[1]][row].to(stacked)
                setattr(metric, name, torch.tensordot(weight, stacked, dims=1))
            values.update(type(metric).compute(metric))  # the unwrapped compute: no cache, no update-count check
        if derived is not None:
            values.update(derived(values))
        return values

    point = replicate(ones, 0)
    replicates = [replicate(counts, row) for row in range(resamples)]
    for metric in metrics:
        metric.reset()
    intervals = {}
    for key, value in point.items():
        if isinstance(value, float) or isinstance(value, int) and not isinstance(value, bool):
            low, high = percentile_interval(torch.tensor([values[key] for values in replicates], dtype=torch.float64),
                                            level, float(value))
            intervals[f"{key}_ci_low"], intervals[f"{key}_ci_high"] = low, high
    return intervals
