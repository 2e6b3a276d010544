"""Distribution statistics of real vs generated images: pixel-intensity JS divergence and Wasserstein
distance, per-pixel two-sample tests under Benjamini–Hochberg FDR control, a real-vs-generated
classifier AUC, and k-NN precision/recall in feature space.

Every metric is a ``torchmetrics.Metric`` fed with ``update(images, real=True|False)``; real and
generated states are kept apart, sums are float64 and reduce with ``"sum"`` across DDP ranks. The
functional cores (``js_divergence``, ``histogram_wasserstein``, ``welch_t_test``,
``benjamini_hochberg``, ``roc_auc``, ``manifold_precision_recall``) work on plain tensors.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import scipy.stats
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from spectral_diffusion.metrics.features import SmallClassifier
from spectral_diffusion.utils.validation import ConfigError, check_range

SPLITS = ("real", "fake")


def check_images(images: Tensor) -> None:
    if images.ndim != 4 or not images.is_floating_point() or images.shape[0] == 0:
        raise ValueError(f"expected float images (N, C, H, W) in [-1, 1], got {images.dtype} {tuple(images.shape)}")


def safe_ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with 0/0 = 1 (two empty quantities agree) and x/0 = inf."""
    if denominator == 0:
        return 1.0 if numerator == 0 else math.inf
    return numerator / denominator


class TwoSampleMetric(Metric):
    """A metric over a real and a generated image set: ``update(images, real)`` routes a batch to one set.

    Subclasses declare paired states with ``_add_pair`` and implement ``_update(images, split)``;
    ``self.state(name, split)`` reads and ``self._accumulate(name, split, value)`` adds to a state.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def _add_pair(self, name: str, default: Tensor | None, reduce: str = "sum") -> None:
        for split in SPLITS:
            if reduce == "cat":
                self.add_state(f"{name}_{split}", default=[], dist_reduce_fx="cat")
            else:
                self.add_state(f"{name}_{split}", default=default.clone(), dist_reduce_fx=reduce)

    def update(self, images: Tensor, real: bool) -> None:
        check_images(images)
        self._update(images.detach(), "real" if real else "fake")

    @abstractmethod
    def _update(self, images: Tensor, split: str) -> None:
        """Accumulate a batch of images (already checked and detached) into the ``split`` ("real"/"fake") states."""

    def state(self, name: str, split: str) -> Tensor:
        value = getattr(self, f"{name}_{split}")
        if isinstance(value, list):
            return dim_zero_cat(value) if value else torch.empty(0)
        return value

    def _accumulate(self, name: str, split: str, value: Tensor) -> None:
        attribute = f"{name}_{split}"
        setattr(self, attribute, getattr(self, attribute) + value.to(getattr(self, attribute)))

    def _append(self, name: str, split: str, value: Tensor) -> None:
        getattr(self, f"{name}_{split}").append(value)

    def _require(self, name: str, minimum: int = 1, splits: tuple[str, ...] = SPLITS) -> None:
        for split in splits:
            count = self.state(name, split)
            count = len(count) if count.ndim else float(count)
            if count < minimum:
                raise ValueError(f"{type(self).__name__} needs at least {minimum} {split} samples, got {count:g}")


# ---------------------------------------------------------------------------------------------------------------------
# Pixel-intensity distributions


def pixel_histogram(images: Tensor, bins: int) -> Tensor:
    """Counts (float64, ``bins``) of pixel values on [-1, 1] in equal bins; values outside are clamped in.

    Bin i holds -1 + 2i/bins <= x < -1 + 2(i+1)/bins, the last bin also x = 1 (as ``np.histogram``).
    """
    values = images.detach().to(torch.float64).clamp(-1.0, 1.0).flatten()
    index = ((values + 1.0) * (bins / 2.0)).floor().long().clamp_(0, bins - 1)
    return torch.bincount(index, minlength=bins).to(torch.float64)


def js_divergence(p: Tensor, q: Tensor) -> float:
    """Jensen–Shannon divergence in bits (Lin 1991): ½ KL(p‖m) + ½ KL(q‖m), m = ½(p + q); lies in [0, 1].

    ``p`` and ``q`` are histograms (normalised here). Equals ``scipy.spatial.distance.jensenshannon(p, q,
    base=2) ** 2`` (scipy returns the square root, the JS distance).
    """
    p = p.to(torch.float64) / p.sum()
    q = q.to(torch.float64) / q.sum()
    m = 0.5 * (p + q)

    def kl(a: Tensor) -> Tensor:
        positive = a > 0
        return (a[positive] * torch.log2(a[positive] / m[positive])).sum()

    return float((0.5 * kl(p) + 0.5 * kl(q)).clamp_min(0.0))


def histogram_wasserstein(p: Tensor, q: Tensor, low: float = -1.0, high: float = 1.0) -> float:
    """1-Wasserstein distance between two histograms on equal bins of [low, high], mass at bin centres.

    W1 = Σ_i |F_p(i) − F_q(i)| Δ with cumulative distributions F and bin width Δ (Vallender 1974);
    equals ``scipy.stats.wasserstein_distance(centres, centres, p, q)``.
    """
    p = p.to(torch.float64) / p.sum()
    q = q.to(torch.float64) / q.sum()
    width = (high - low) / len(p)
    return float((torch.cumsum(p, 0) - torch.cumsum(q, 0))[:-1].abs().sum() * width)


class PixelHistogram(TwoSampleMetric):
    """Pixel-intensity histograms of both sets: ``js_divergence`` (bits) and ``wasserstein`` (W1, pixel units)."""

    def __init__(self, bins: int = 256, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(bins) != bins or bins < 2:
            raise ConfigError(f"battery.histogram_bins={bins!r} is invalid; it must be an integer >= 2")
        self.bins = int(bins)
        self._add_pair("histogram", torch.zeros(self.bins, dtype=torch.float64))

    def _update(self, images: Tensor, split: str) -> None:
        self._accumulate("histogram", split, pixel_histogram(images, self.bins))

    def compute(self) -> dict[str, float]:
        real, fake = self.state("histogram", "real"), self.state("histogram", "fake")
        if real.sum() == 0 or fake.sum() == 0:
            raise ValueError("PixelHistogram needs real and generated images")
        return {"js_divergence": js_divergence(real, fake), "wasserstein": histogram_wasserstein(real, fake)}


# ---------------------------------------------------------------------------------------------------------------------
# Per-pixel two-sample tests with FDR control


def welch_t_test(count_a: Tensor, sum_a: Tensor, square_a: Tensor, count_b: Tensor, sum_b: Tensor,
                 square_b: Tensor) -> Tensor:
    """Two-sided p-values of Welch's unequal-variance t-test (Welch 1947) from sufficient statistics.

    t = (x̄_a − x̄_b) / √(s_a²/n_a + s_b²/n_b) with unbiased variances s², and Welch–Satterthwaite
    degrees of freedom ν = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1));
    p = 2 P(T_ν > |t|). Equals ``scipy.stats.ttest_ind(a, b, equal_var=False)``. Where both sets are
    constant the test is undefined; p = 1 if the two constants agree, else 0.
    """
    n_a, n_b = float(count_a), float(count_b)
    mean_a, mean_b = sum_a / n_a, sum_b / n_b
    var_a = ((square_a - n_a * mean_a**2) / (n_a - 1)).clamp_min(0.0)
    var_b = ((square_b - n_b * mean_b**2) / (n_b - 1)).clamp_min(0.0)
    error_a, error_b = var_a / n_a, var_b / n_b
    standard_error = (error_a + error_b).sqrt()
    degenerate = standard_error <= 1e-12 * (mean_a.abs() + mean_b.abs() + 1.0)
    safe_error = torch.where(degenerate, torch.ones_like(standard_error), standard_error)
    t = (mean_a - mean_b) / safe_error
    dof = (error_a + error_b) ** 2 / (error_a**2 / (n_a - 1) + error_b**2 / (n_b - 1)).clamp_min(1e-300)
    p = 2.0 * scipy.stats.t.sf(t.abs().cpu().numpy(), dof.cpu().numpy())
    p = torch.as_tensor(p, dtype=torch.float64)
    equal = (mean_a - mean_b).abs().cpu() <= 1e-12
    return torch.where(degenerate.cpu(), equal.to(torch.float64), p)


def benjamini_hochberg(p_values: Tensor, alpha: float) -> Tensor:
    """Rejections (bool, same shape) of the Benjamini–Hochberg step-up procedure at FDR level ``alpha``
    (Benjamini & Hochberg 1995): reject the k smallest p-values, k = max{i : p_(i) ≤ i α / m}.
    Agrees with ``scipy.stats.false_discovery_control(p) <= alpha``.
    """
    flat = p_values.flatten().to(torch.float64)
    m = flat.numel()
    order = torch.argsort(flat)
    thresholds = alpha * torch.arange(1, m + 1, dtype=torch.float64) / m
    passing = torch.nonzero(flat[order] <= thresholds)
    rejected = torch.zeros(m, dtype=torch.bool)
    if len(passing):
        rejected[order[: int(passing.max()) + 1]] = True
    return rejected.reshape(p_values.shape)


class MeanRatioMetric(TwoSampleMetric):
    """A mean per image set and its ratio: ``<prefix>_real``, ``<prefix>_fake`` and ``<prefix>_ratio`` = fake / real.

    Subclasses add each batch's sum and count of values with ``_add_values``; ``empty_is_nan`` reports a set whose
    count stayed 0 as nan instead of refusing to compute.
    """

    prefix: str
    empty_is_nan = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._add_pair("count", torch.zeros((), dtype=torch.float64))
        self._add_pair("total", torch.zeros((), dtype=torch.float64))

    def _add_values(self, split: str, total: Tensor, count: Tensor | float) -> None:
        self._accumulate("count", split, torch.as_tensor(count, dtype=torch.float64))
        self._accumulate("total", split, total)

    def compute(self) -> dict[str, float]:
        if not self.empty_is_nan:
            self._require("count")
        means = {split: float(self.state("total", split) / self.state("count", split))
                 if float(self.state("count", split)) > 0 else float("nan") for split in SPLITS}
        return {f"{self.prefix}_real": means["real"], f"{self.prefix}_fake": means["fake"],
                f"{self.prefix}_ratio": safe_ratio(means["fake"], means["real"])}


class PixelTests(TwoSampleMetric):
    """``fdr_fraction``: the fraction of pixels (per channel) whose real and generated values differ
    significantly — Welch t-test per pixel, Benjamini–Hochberg at FDR ``alpha``.
    """

    def __init__(self, image_shape: tuple[int, int, int], alpha: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        self.alpha = float(check_range("battery.fdr_alpha", alpha, 0.0, 1.0))
        if self.alpha in (0.0, 1.0):
            raise ConfigError(f"battery.fdr_alpha={alpha!r} is invalid; it must lie strictly inside (0, 1)")
        self.image_shape = tuple(int(size) for size in image_shape)
        self._add_pair("count", torch.zeros((), dtype=torch.float64))
        self._add_pair("sum", torch.zeros(self.image_shape, dtype=torch.float64))
        self._add_pair("square", torch.zeros(self.image_shape, dtype=torch.float64))

    def _update(self, images: Tensor, split: str) -> None:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"PixelTests was built for images {self.image_shape}, got {tuple(images.shape[1:])}")
        values = images.to(self.device, torch.float64)
        self._accumulate("count", split, torch.tensor(float(len(values)), dtype=torch.float64))
        self._accumulate("sum", split, values.sum(0))
        self._accumulate("square", split, values.square().sum(0))

    def p_values(self) -> Tensor:
        self._require("count", 2)
        return welch_t_test(*(self.state(name, "real") for name in ("count", "sum", "square")),
                            *(self.state(name, "fake") for name in ("count", "sum", "square")))

    def compute(self) -> dict[str, float]:
        rejected = benjamini_hochberg(self.p_values(), self.alpha)
        return {"fdr_fraction": float(rejected.double().mean())}


# ---------------------------------------------------------------------------------------------------------------------
# Real-vs-generated classifier


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative) + ½ P(tie): the
    Mann–Whitney U statistic over n₁n₀ (Hanley & McNeil 1982), with tied ranks averaged.
    """
    scores = scores.detach().to(torch.float64).cpu().numpy()
    labels = labels.detach().cpu().numpy().astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("roc_auc needs both classes")
    ranks = scipy.stats.rankdata(scores)
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def classifier_auc(real: Tensor, fake: Tensor, *, epochs: int = 5, heldout: float = 0.3, seed: int = 0,
                   batch_size: int = 128, lr: float = 3e-3) -> float:
    """Held-out ROC AUC of a small CNN trained to tell generated (label 1) from real (label 0) images.

    The CNN is the feature classifier's architecture (``features.SmallClassifier``, width 16) with one logit.

    Each set is split by a seeded permutation into a training part and a ``heldout`` fraction; Adam on
    class-balanced binary cross-entropy (positive weight n_real/n_fake) for ``epochs``. 0.5 means the
    classifier cannot tell the sets apart, 1.0 that it separates them perfectly. Leaves the global
    random stream untouched; the same inputs and seed give the same AUC.
    """
    generator = torch.Generator().manual_seed(seed)

    def split(images: Tensor) -> tuple[Tensor, Tensor]:
        order = torch.randperm(len(images), generator=generator)
        cut = max(1, round(len(images) * heldout))
        return images[order[cut:]], images[order[:cut]]

    real_train, real_test = split(real.float().cpu())
    fake_train, fake_test = split(fake.float().cpu())
    if min(len(real_train), len(fake_train)) < 1:
        raise ValueError(f"classifier AUC needs more images (got {len(real)} real, {len(fake)} generated)")
    images = torch.cat([real_train, fake_train])
    labels = torch.cat([torch.zeros(len(real_train)), torch.ones(len(fake_train))])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallClassifier(real.shape[1], num_classes=1, width=16, feature_dim=32)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        pos_weight = torch.tensor(len(real_train) / len(fake_train))
        for _ in range(epochs):
            for batch in torch.randperm(len(images), generator=generator).split(batch_size):
                logits = model(images[batch]).squeeze(1)
                loss = F.binary_cross_entropy_with_logits(logits, labels[batch], pos_weight=pos_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        test = torch.cat([real_test, fake_test])
        scores = torch.cat([model(chunk).squeeze(1) for chunk in test.split(512)])
    test_labels = torch.cat([torch.zeros(len(real_test)), torch.ones(len(fake_test))])
    return roc_auc(scores, test_labels)


# One grey level of 8-bit data in [-1, 1] units.
GREY_LEVEL = 2.0 / 255.0


class ClassifierAUC(TwoSampleMetric):
    """``classifier_auc``: see ``classifier_auc``. Keeps the images (``cat`` states) and trains at compute.

    With ``dither`` > 0 the key is ``classifier_auc_dithered``: both sets get uniform noise U(−dither/2, dither/2)
    (seeded) before the classifier sees them. Real images stored as 8-bit hold only 256 grey levels while generated
    ones are continuous; a dither of one grey level (``GREY_LEVEL``) hides that tell, so what the classifier still
    finds is a difference of content (Schuchman 1964: subtractive-free uniform dither makes the quantisation error
    independent of the signal).
    """

    def __init__(self, epochs: int = 5, heldout: float = 0.3, seed: int = 0, dither: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dither = float(dither)
        if int(epochs) != epochs or epochs < 1:
            raise ConfigError(f"battery.classifier_epochs={epochs!r} is invalid; it must be an integer >= 1")
        self.epochs = int(epochs)
        self.heldout = float(check_range("battery.classifier_heldout", heldout, 0.05, 0.95))
        self.seed = int(seed)
        self._add_pair("images", None, reduce="cat")

    def _update(self, images: Tensor, split: str) -> None:
        self._append("images", split, images.to(self.device, torch.float32))

    def compute(self) -> dict[str, float]:
        self._require("images", 4)  # a training and a held-out part of each set
        real, fake = self.state("images", "real"), self.state("images", "fake")
        if self.dither > 0:
            generator = torch.Generator().manual_seed(self.seed)
            real, fake = ((images + (torch.rand(images.shape, generator=generator) - 0.5).to(images) * self.dither)
                          for images in (real, fake))
        auc = classifier_auc(real, fake, epochs=self.epochs, heldout=self.heldout, seed=self.seed)
        return {"classifier_auc_dithered" if self.dither > 0 else "classifier_auc": auc}


# ---------------------------------------------------------------------------------------------------------------------
# Improved precision and recall (Kynkäänniemi et al. 2019)


def knn_radii(features: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance of every row to its k-th nearest other row (Euclidean, float64)."""
    radii = []
    for start in range(0, len(features), chunk):
        distances = torch.cdist(features[start:start + chunk], features)
        # the k+1-th smallest includes the zero distance to itself
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def inside_manifold(queries: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """Whether each query lies inside the union of balls of ``radii`` around the ``support`` rows (bool, (N,))."""
    inside = [(torch.cdist(queries[start:start + chunk], support) <= radii[None]).any(dim=1)
              for start in range(0, len(queries), chunk)]
    return torch.cat(inside)


def _coverage(queries: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    return inside_manifold(queries, support, radii, chunk).double().mean()


def manifold_precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Eq. 1–2).

    The real manifold is the union of balls around each real feature φ_r with radius NND_k(φ_r), the
    distance to its k-th nearest real neighbour; precision = fraction of generated features inside it.
    Recall swaps the roles (balls around generated features, fraction of real features inside).
    """
    real, fake = real.to(torch.float64), fake.to(torch.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} real and generated features")
    precision = _coverage(fake, real, knn_radii(real, k))
    recall = _coverage(real, fake, knn_radii(fake, k))
    return float(precision), float(recall)


class PrecisionRecall(TwoSampleMetric):
    """``precision`` and ``recall`` of generated vs real features; ``extractor`` (or identity) maps images to
    features in ``update``. Features are kept (``cat`` states), as k-NN needs all of them.
    """

    def __init__(self, extractor: nn.Module | None = None, k: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(k) != k or k < 1:
            raise ConfigError(f"battery.precision_recall_k={k!r} is invalid; it must be an integer >= 1")
        self.k = int(k)
        self.extractor = extractor
        self._add_pair("features", None, reduce="cat")

    def update(self, inputs: Tensor, real: bool) -> None:
        # inputs are images when an extractor is set, else features (N, D): no image check here
        self._update(inputs.detach(), "real" if real else "fake")

    def _update(self, inputs: Tensor, split: str) -> None:
        with torch.no_grad():
            features = inputs if self.extractor is None else self.extractor(inputs)
        self._append("features", split, features.detach().reshape(len(features), -1).to(torch.float64))

    def compute(self) -> dict[str, float]:
        precision, recall = manifold_precision_recall(self.state("features", "real"),
                                                      self.state("features", "fake"), self.k)
        return {"precision": precision, "recall": recall}

