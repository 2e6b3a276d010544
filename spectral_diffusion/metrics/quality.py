"""Sample quality of generated images: FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018).

Both are computed by torchmetrics on features extracted once per image set, and every key names
the feature extractor and the number of generated samples, e.g. ``fid_classifier@1000``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

DEFAULT_KID_SUBSET_SIZE = 1000


class _PrecomputedFeatures(nn.Module):
    """Identity "extractor": lets torchmetrics' FID and KID consume features computed once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def _extractor_device(extractor: nn.Module) -> torch.device:
    for tensor in list(extractor.parameters()) + list(extractor.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(images: Tensor, extractor: nn.Module, *, batch_size: int = 256) -> Tensor:
    """Features (N, D) in float64 on the extractor's device, from [-1, 1] float images (N, C, H, W)."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"expected float images (N, C, H, W) in [-1, 1], got {images.dtype} {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    device = _extractor_device(extractor)
    batches = [extractor(chunk.to(device, torch.float32)).double() for chunk in images.split(batch_size)]
    return torch.cat(batches).reshape(len(images), -1)


def feature_distances(
    real_features: Tensor,
    fake_features: Tensor,
    *,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID (mean, std over random subsets) between two feature sets (N, D).

    KID uses the cubic polynomial kernel (x·y/D + 1)^3 on subsets of
    ``min(kid_subset_size or 1000, n_real, n_fake)`` features; its subset draws are seeded by ``seed``
    and leave the global random stream untouched. When both sets are exactly that size there is a
    single subset (the whole sets) and the std is 0.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n_real, n_fake = len(real_features), len(fake_features)
    if n_real < 2 or n_fake < 2:
        raise ValueError(f"FID/KID need at least 2 real and 2 generated images, got {n_real} and {n_fake}")
    if real_features.shape[1:] != fake_features.shape[1:]:
        raise ValueError(f"feature shapes differ: {tuple(real_features.shape)} vs {tuple(fake_features.shape)}")
    if kid_subset_size is not None and kid_subset_size < 2:
        raise ValueError(f"kid_subset_size={kid_subset_size} must be >= 2")
    subset_size = min(kid_subset_size or DEFAULT_KID_SUBSET_SIZE, n_real, n_fake)
    # The unbiased MMD² of a whole set does not depend on the order of its rows, so when each subset
    # is a full set every subset gives the same value: compute it once.
    subsets = 1 if subset_size == n_real == n_fake else kid_subsets

    feature_input = _PrecomputedFeatures(real_features.shape[1])
    # The inputs are already the whole sets: syncing across DDP ranks would wait for ranks that never call this.
    fid = FrechetInceptionDistance(feature=feature_input, sync_on_compute=False).to(real_features.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(
            feature=feature_input, subsets=subsets, subset_size=subset_size, sync_on_compute=False
        ).to(real_features.device)
    for metric in (fid, kid):
        metric.update(real_features, real=True)
        metric.update(fake_features.to(real_features.device), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": fid.compute().item(), "kid": kid_mean.item(), "kid_std": kid_std.item()}


def metric_key(metric: str, extractor_name: str, count: int, prefix: str | None = None) -> str:
    """``fid_classifier@1000``, or ``fid_floor_classifier@1000`` with ``prefix="floor"``."""
    qualifier = f"{prefix}_" if prefix else ""
    return f"{metric}_{qualifier}{extractor_name}@{count}"


def extractor_name(extractor: nn.Module) -> str:
    """The name metric keys give an extractor: its ``name`` attribute, else its class name."""
    return getattr(extractor, "name", type(extractor).__name__)


@dataclass(frozen=True)
class FeaturePair:
    """Features (N, D) of a real and a generated image set under the extractor called ``name``: extracted once
    and handed to every metric that compares them (FID, KID, precision/recall)."""

    name: str
    real: Tensor
    fake: Tensor

    @classmethod
    def extract(cls, real: Tensor, fake: Tensor, extractor: nn.Module, *, batch_size: int = 256) -> FeaturePair:
        return cls(extractor_name(extractor), extract_features(real, extractor, batch_size=batch_size),
                   extract_features(fake, extractor, batch_size=batch_size))


def distance_metrics(
    features: FeaturePair,
    *,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
    prefix: str | None = None,
) -> dict[str, float]:
    """``feature_distances`` of a feature pair under keys that name the extractor and the generated count."""
    distances = feature_distances(features.real, features.fake, kid_subset_size=kid_subset_size,
                                  kid_subsets=kid_subsets, seed=seed)
    return {metric_key(metric, features.name, len(features.fake), prefix): value
            for metric, value in distances.items()}


def sample_quality(
    real: Tensor,
    fake: Tensor,
    extractor: nn.Module,
    *,
    batch_size: int = 256,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
    prefix: str | None = None,
) -> dict[str, float]:
    """FID, KID and KID std of generated ``fake`` against ``real`` images, both [-1, 1] (N, C, H, W).

    Keys name ``extractor.name`` and the number of generated images: ``fid_classifier@1000``,
    ``kid_classifier@1000``, ``kid_std_classifier@1000``.
    """
    return distance_metrics(FeaturePair.extract(real, fake, extractor, batch_size=batch_size),
                            kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, seed=seed, prefix=prefix)


def floor_indices(num_train: int, num_heldout: int, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Which training and held-out images the real floor compares: min(n, num_train, num_heldout) of each,
    a random choice seeded by ``seed``."""
    if n < 2:
        raise ValueError(f"n={n} must be >= 2")
    count = min(n, num_train, num_heldout)
    generator = torch.Generator().manual_seed(seed)
    return (torch.randperm(num_train, generator=generator)[:count],
            torch.randperm(num_heldout, generator=generator)[:count])


def real_floor(
    train_real: Tensor,
    heldout_real: Tensor,
    extractor: nn.Module,
    n: int,
    *,
    batch_size: int = 256,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
    heldout_features: Tensor | None = None,
) -> dict[str, float]:
    """The same metrics between n training and n held-out real images: what a perfect model would score.

    FID is biased upwards at small n, so a model's FID is read against this floor at the same n.
    When either set holds fewer than ``n`` images the smaller size is used, and the keys say so
    (``fid_floor_classifier@500``). The n images of each set are a random choice seeded by ``seed``
    (``floor_indices``). ``heldout_features``, the features of every held-out image in order, are reused
    instead of extracting the chosen held-out images again; only the chosen training images are extracted.
    """
    pair = floor_features(train_real, heldout_real, extractor, n, batch_size=batch_size, seed=seed,
                          heldout_features=heldout_features)
    return distance_metrics(pair, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, seed=seed, prefix="floor")


def floor_features(
    train_real: Tensor,
    heldout_real: Tensor,
    extractor: nn.Module,
    n: int,
    *,
    batch_size: int = 256,
    seed: int = 0,
    heldout_features: Tensor | None = None,
) -> FeaturePair:
    """The feature pair the real floor compares (``real_floor``): the chosen training images as ``real``, the
    chosen held-out images as ``fake``; held-out features are taken from ``heldout_features`` when given."""
    train_index, heldout_index = floor_indices(len(train_real), len(heldout_real), n, seed)
    if heldout_features is None:
        heldout_subset = extract_features(heldout_real[heldout_index], extractor, batch_size=batch_size)
    else:
        heldout_subset = heldout_features[heldout_index.to(heldout_features.device)]
    train_subset = extract_features(train_real[train_index], extractor, batch_size=batch_size)
    return FeaturePair(extractor_name(extractor), train_subset, heldout_subset)
